// Product mode: rate limits (product-contract.md "Rate limits").
// Per socket 100 events / 10 s (token bucket, any event); per user 30 message:send / minute
// across all the user's sockets (sliding window).

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll } from "./fixture.js";
import { startProductNode, connectUser, ack, uid, safeJson, traces, sleep, assertDmWorks } from "./product-fixture.js";

const T = { timeout: 40_000 };

describe("default limits", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "ratelimit", nodeId: "rl-node" });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("101 typing events in a burst from one socket → rate_limited {retryAfterMs > 0}; after retryAfterMs the socket works again", async () => {
    const alice = uid("alice");
    const bob = uid("bob");
    const a = await connectUser(node, alice);
    const b = await connectUser(node, bob);
    for (let i = 0; i < 101; i++) a.emit("typing", { to: bob });
    const [rl] = await a.log.next("rate_limited", { timeout: 5_000 });
    assert.equal(typeof rl?.retryAfterMs, "number", `rate_limited payload ${safeJson(rl)}`);
    assert.ok(rl.retryAfterMs > 0, `retryAfterMs ${rl.retryAfterMs}`);
    assert.ok(rl.retryAfterMs <= 10_000, `retryAfterMs ${rl.retryAfterMs} is beyond the 10 s window`);
    await sleep(300); // let the rest of the burst arrive
    const limited = a.log.count("rate_limited");
    const delivered = b.log.count("typing");
    assert.ok(delivered <= 100, `bob got ${delivered} typing events; at most 100 may pass\n${traces(a.log)}`);
    assert.ok(limited >= 1, `rate_limited events: ${limited}`);
    assert.equal(a.connected, true, "the socket stays connected");
    await sleep(rl.retryAfterMs + 50);
    await assertDmWorks(a, alice, b, bob);
    assert.equal(a.log.count("disconnect"), 0, a.log.trace());
  });

  test("over the socket limit, an event with an ack gets {ok:false, error:{code:rate_limited, retryAfterMs}} AND the rate_limited event", async () => {
    const alice = uid("alice");
    const bob = uid("bob");
    const a = await connectUser(node, alice);
    const b = await connectUser(node, bob);
    for (let i = 0; i < 100; i++) a.emit("typing", { to: bob });
    const r = await ack(a, "message:send", { to: bob, text: "over the limit" });
    assert.equal(r?.ok, false, `ack ${safeJson(r)}\n${a.log.trace()}`);
    assert.equal(r.error?.code, "rate_limited", `ack ${safeJson(r)}`);
    assert.equal(typeof r.error.message, "string");
    assert.ok(typeof r.error.retryAfterMs === "number" && r.error.retryAfterMs > 0, `ack ${safeJson(r)}`);
    const [rl] = await a.log.next("rate_limited");
    assert.ok(rl?.retryAfterMs > 0, safeJson(rl));
    await b.log.none("message:received", 300, { why: "a rate-limited event is not processed" });
  });

  test("the socket limit is per socket: another socket of the same user is not limited", async () => {
    const alice = uid("alice");
    const bob = uid("bob");
    const a1 = await connectUser(node, alice, { device: "1" });
    const a2 = await connectUser(node, alice, { device: "2" });
    const b = await connectUser(node, bob);
    for (let i = 0; i < 110; i++) a1.emit("typing", { to: bob });
    await a1.log.next("rate_limited");
    await assertDmWorks(a2, alice, b, bob);
    await a2.log.none("rate_limited", 0);
  });

  test("per user: 16 message:send from each of two sockets → exactly 30 delivered, the 31st and 32nd get rate_limited", async () => {
    const alice = uid("alice");
    const bob = uid("bob");
    const s1 = await connectUser(node, alice, { device: "1" });
    const s2 = await connectUser(node, alice, { device: "2", transports: ["polling"] });
    const b = await connectUser(node, bob);
    const results = [];
    for (const s of [s1, s2]) {
      for (let i = 0; i < 16; i++) {
        results.push(await ack(s, "message:send", { to: bob, text: `${s === s1 ? "a" : "b"}${i}` }));
      }
    }
    const ok = results.filter((r) => r?.ok === true);
    const refused = results.filter((r) => r?.ok === false);
    assert.equal(ok.length, 30, `acks: ${safeJson(results)}`);
    assert.equal(refused.length, 2, `acks: ${safeJson(results)}`);
    assert.deepEqual(results.slice(30).map((r) => r?.ok), [false, false], "the last two (31st, 32nd) are refused");
    for (const r of refused) {
      assert.equal(r.error?.code, "rate_limited", safeJson(r));
      assert.ok(r.error.retryAfterMs > 0 && r.error.retryAfterMs <= 60_000, `retryAfterMs ${safeJson(r)}`);
    }
    // the rate_limited event is always sent, to the socket whose event was refused
    await s2.log.next("rate_limited");
    await s2.log.next("rate_limited");
    await s1.log.none("rate_limited", 0);

    await sleep(500);
    assert.equal(b.log.count("message:received"), 30, `bob received ${b.log.count("message:received")}\n${traces(b.log)}`);
    // the refused messages are not stored either
    const sync = await ack(b, "message:sync", { after: 0 });
    assert.equal(sync.messages.length, 30, safeJson(sync).slice(0, 300));
    // other events still go through for alice, and the connection is open
    s2.emit("typing", { to: bob });
    await b.log.next("typing");
    assert.equal(s2.connected, true);
    // another user is not limited by alice's quota
    const carol = uid("carol");
    const c = await connectUser(node, carol);
    await assertDmWorks(c, carol, b, bob);
  });
});

describe("configured limits (--socket-event-limit 5 --socket-event-window-ms 1000, --user-message-limit 3 --user-message-window-ms 1500)", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({
      name: "ratelimit-cfg",
      nodeId: "rl-node-cfg",
      flags: [
        "--socket-event-limit", "5",
        "--socket-event-window-ms", "1000",
        "--user-message-limit", "3",
        "--user-message-window-ms", "1500",
      ],
    });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("6th event in a burst is limited; after the window the socket sends again", async () => {
    const bob = uid("bob");
    const a = await connectUser(node, uid("alice"));
    const b = await connectUser(node, bob);
    for (let i = 0; i < 6; i++) a.emit("typing", { to: bob });
    const [rl] = await a.log.next("rate_limited");
    assert.ok(rl.retryAfterMs > 0 && rl.retryAfterMs <= 1_000, safeJson(rl));
    await sleep(300);
    assert.equal(a.log.count("rate_limited"), 1, a.log.trace());
    assert.ok(b.log.count("typing") <= 5, b.log.trace());
    await sleep(1_100);
    a.log.drain();
    for (let i = 0; i < 5; i++) a.emit("typing", { to: bob });
    await a.log.none("rate_limited", 400, { why: "the bucket refilled after the window" });
  });

  test("4th message:send within 1.5 s is refused; after the window it is accepted again", async () => {
    const alice = uid("alice");
    const bob = uid("bob");
    const a = await connectUser(node, alice);
    const b = await connectUser(node, bob);
    const res = [];
    for (let i = 0; i < 4; i++) res.push(await ack(a, "message:send", { to: bob, text: `m${i}` }));
    assert.deepEqual(res.map((r) => r?.ok), [true, true, true, false], safeJson(res));
    assert.equal(res[3].error?.code, "rate_limited");
    assert.ok(res[3].error.retryAfterMs > 0 && res[3].error.retryAfterMs <= 1_500, safeJson(res[3]));
    await sleep(res[3].error.retryAfterMs + 100);
    await assertDmWorks(a, alice, b, bob, "after the window");
  });
});
