// Product mode: direct messages, history sync, typing, signal, and payload validation
// (product-contract.md "Events" and "Errors"). Node started with --max-event-bytes 1024.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll } from "./fixture.js";
import { startProductNode, connectUser, ack, uid, assertDmWorks, traces, safeJson, sleep } from "./product-fixture.js";

const T = { timeout: 30_000 };
let node;
before(async () => {
  node = await startProductNode({ name: "messages", nodeId: "msg-node", flags: ["--max-event-bytes", "1024"] });
});
after(async () => {
  closeAll();
  await node?.stop();
});
afterEach(() => closeAll());

/**
 * alice (d1, d2) and bob (b1, b2), fresh user names. The second socket of each uses polling,
 * unless `second` says otherwise (volatile events may legitimately be dropped on a polling
 * transport that has no GET pending, so typing/signal use websocket everywhere).
 */
async function pairOfUsers({ second = ["polling"] } = {}) {
  const alice = uid("alice");
  const bob = uid("bob");
  const a1 = await connectUser(node, alice, { device: "d1" });
  const a2 = await connectUser(node, alice, { device: "d2", transports: second });
  const b1 = await connectUser(node, bob, { device: "b1" });
  const b2 = await connectUser(node, bob, { device: "b2", transports: second });
  return { alice, bob, a1, a2, b1, b2 };
}

function assertMessageShape(m, { from, to, text, messageId, createdAt }, trace = "") {
  assert.deepEqual(
    m,
    { messageId, from, to, text, createdAt },
    `message payload ${safeJson(m)}\n${trace}`,
  );
}

describe("message:send", T, () => {
  test("ack {ok, messageId, createdAt}; every socket of the recipient gets message:received; the sender's other socket gets message:sent, the sending socket does not", async () => {
    const { alice, bob, a1, a2, b1, b2 } = await pairOfUsers();
    const before = Date.now();
    const res = await ack(a1, "message:send", { to: bob, text: "hi" });
    assert.equal(res?.ok, true, safeJson(res));
    assert.equal(typeof res.messageId, "number", `messageId ${safeJson(res)}`);
    assert.ok(Number.isInteger(res.messageId), "messageId is an integer");
    assert.equal(typeof res.createdAt, "number");
    assert.ok(res.createdAt >= before - 2_000 && res.createdAt <= Date.now() + 2_000, `createdAt ${res.createdAt} is epoch ms`);
    const expected = { messageId: res.messageId, from: alice, to: bob, text: "hi", createdAt: res.createdAt };
    const trace = () => traces(a1.log, a2.log, b1.log, b2.log);
    const [[r1], [r2], [sent]] = await Promise.all([
      b1.log.next("message:received"),
      b2.log.next("message:received"),
      a2.log.next("message:sent"),
    ]);
    assertMessageShape(r1, expected, trace());
    assertMessageShape(r2, expected, trace());
    assertMessageShape(sent, expected, trace());
    await a1.log.none("message:sent", 300, { why: "the sending socket already has the ack" });
    await a1.log.none("message:received", 0, { why: "alice is not the recipient" });
    await b1.log.none("message:sent", 0);
    await b2.log.none("message:sent", 0);
    assert.equal(b1.log.count("message:received"), 1, trace());
    assert.equal(b2.log.count("message:received"), 1, trace());
  });

  test("clientMsgId: a retry is answered with the first messageId (duplicate: true) and delivered once; a bad one is invalid_payload", async () => {
    const { alice, bob, a1, b1 } = await pairOfUsers();
    const cid = `cid-${Date.now()}`;
    const first = await ack(a1, "message:send", { to: bob, text: "once", clientMsgId: cid });
    assert.equal(first?.ok, true, safeJson(first));
    assert.equal(first.duplicate, undefined, safeJson(first));
    const retry = await ack(a1, "message:send", { to: bob, text: "once", clientMsgId: cid });
    assert.deepEqual(retry, { ok: true, messageId: first.messageId, createdAt: first.createdAt, duplicate: true });
    await b1.log.next("message:received");
    await b1.log.none("message:received", 500, { why: "the retry is not delivered again" });
    const synced = await ack(b1, "message:sync", { after: first.messageId - 1 });
    assert.deepEqual(synced.messages.map((m) => [m.messageId, m.from, m.text]), [[first.messageId, alice, "once"]]);
    for (const bad of ["", "a\u0007b", "x".repeat(256), 42]) {
      const res = await ack(a1, "message:send", { to: bob, text: "x", clientMsgId: bad });
      assert.equal(res?.error?.code, "invalid_payload", `clientMsgId ${safeJson(bad)}: ${safeJson(res)}`);
    }
  });

  test("messageIds increase with every message (and across senders)", async () => {
    const { bob, alice, a1, b1 } = await pairOfUsers();
    const ids = [];
    for (let i = 0; i < 4; i++) {
      const r = await ack(a1, "message:send", { to: bob, text: `n${i}` });
      assert.equal(r?.ok, true, safeJson(r));
      ids.push(r.messageId);
    }
    const r = await ack(b1, "message:send", { to: alice, text: "back" });
    ids.push(r.messageId);
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], `ids not increasing: ${ids}`);
  });

  test("a message to an offline user is acked ok (and kept for sync)", async () => {
    const a = await connectUser(node, uid("lonely"));
    const r = await ack(a, "message:send", { to: uid("offline"), text: "are you there" });
    assert.equal(r?.ok, true, safeJson(r));
    assert.equal(typeof r.messageId, "number");
  });

  test("text is sanitised: control characters other than \\n and \\t are removed", async () => {
    const { alice, bob, a1, b1 } = await pairOfUsers();
    const r = await ack(a1, "message:send", { to: bob, text: "a\u0000b\u0007c\nd\te\u001b[31m\u007f!" });
    assert.equal(r?.ok, true, safeJson(r));
    const [m] = await b1.log.next("message:received");
    assert.equal(m.from, alice);
    assert.equal(m.text, "abc\nd\te[31m!", `sanitised text ${safeJson(m.text)}`);
  });

  test("unicode text is delivered unchanged", async () => {
    const { bob, a1, b1 } = await pairOfUsers();
    const text = "héllo 👋 日本語 — ok";
    await ack(a1, "message:send", { to: bob, text });
    const [m] = await b1.log.next("message:received");
    assert.equal(m.text, text);
  });
});

describe("message:sync", T, () => {
  test("bob offline, alice sends 5; bob connects and syncs {after:0} → all 5 ascending; paging with limit 2 + hasMore", async () => {
    const alice = uid("alice");
    const bob = uid("bob");
    const a1 = await connectUser(node, alice, { device: "d1" });
    const sent = [];
    for (let i = 1; i <= 5; i++) {
      const r = await ack(a1, "message:send", { to: bob, text: `m${i}` });
      assert.equal(r?.ok, true, safeJson(r));
      sent.push({ messageId: r.messageId, from: alice, to: bob, text: `m${i}`, createdAt: r.createdAt });
    }
    const b = await connectUser(node, bob, { device: "b1" });
    const all = await ack(b, "message:sync", { after: 0 });
    assert.equal(all?.ok, true, safeJson(all));
    assert.deepEqual(all.messages, sent, `sync {after:0}: ${safeJson(all)}`);
    assert.equal(all.hasMore, false);

    // defaults: after 0, limit 100
    const dflt = await ack(b, "message:sync", {});
    assert.deepEqual(dflt, { ok: true, messages: sent, hasMore: false });

    // paging
    const p1 = await ack(b, "message:sync", { after: 0, limit: 2 });
    assert.deepEqual(p1, { ok: true, messages: sent.slice(0, 2), hasMore: true }, safeJson(p1));
    const p2 = await ack(b, "message:sync", { after: p1.messages[1].messageId, limit: 2 });
    assert.deepEqual(p2, { ok: true, messages: sent.slice(2, 4), hasMore: true }, safeJson(p2));
    const p3 = await ack(b, "message:sync", { after: p2.messages[1].messageId, limit: 2 });
    assert.deepEqual(p3, { ok: true, messages: sent.slice(4), hasMore: false }, safeJson(p3));
    const p4 = await ack(b, "message:sync", { after: sent[4].messageId, limit: 2 });
    assert.deepEqual(p4, { ok: true, messages: [], hasMore: false });
    // bob did not get the messages live (he was offline)
    assert.equal(b.log.count("message:received"), 0, b.log.trace());
  });

  test("sync returns messages to AND from the user, and only theirs", async () => {
    const alice = uid("alice");
    const bob = uid("bob");
    const carol = uid("carol");
    const a = await connectUser(node, alice);
    const b = await connectUser(node, bob);
    const c = await connectUser(node, carol);
    const m1 = await ack(a, "message:send", { to: bob, text: "a->b" });
    const m2 = await ack(b, "message:send", { to: alice, text: "b->a" });
    const m3 = await ack(c, "message:send", { to: alice, text: "c->a (not bob's)" });
    const m4 = await ack(b, "message:send", { to: carol, text: "b->c" });
    const res = await ack(b, "message:sync", { after: 0 });
    assert.equal(res?.ok, true);
    assert.deepEqual(
      res.messages.map((m) => [m.messageId, m.from, m.to, m.text]),
      [
        [m1.messageId, alice, bob, "a->b"],
        [m2.messageId, bob, alice, "b->a"],
        [m4.messageId, bob, carol, "b->c"],
      ],
    );
    const ra = await ack(a, "message:sync", { after: m1.messageId });
    assert.deepEqual(ra.messages.map((m) => m.messageId), [m2.messageId, m3.messageId]);
  });

  test("sync with invalid arguments → ack {ok:false, error:{code:invalid_payload}}", async () => {
    const s = await connectUser(node, uid("syncbad"));
    for (const bad of [{ after: "x" }, { limit: "many" }, "not an object"]) {
      const r = await ack(s, "message:sync", bad);
      assert.equal(r?.ok, false, `${safeJson(bad)} → ${safeJson(r)}`);
      assert.equal(r.error?.code, "invalid_payload", `${safeJson(bad)} → ${safeJson(r)}`);
    }
  });
});

describe("typing and signal", T, () => {
  test("typing {to} → every socket of `to` gets typing {from}", async () => {
    const { alice, bob, a1, a2, b1, b2 } = await pairOfUsers({ second: ["websocket"] });
    a1.emit("typing", { to: bob });
    const [[t1], [t2]] = await Promise.all([b1.log.next("typing"), b2.log.next("typing")]);
    assert.deepEqual(t1, { from: alice });
    assert.deepEqual(t2, { from: alice });
    await a2.log.none("typing", 300);
    await a1.log.none("typing", 0);
  });

  test("signal {to, data} → every socket of `to` gets signal {from, data}", async () => {
    const { alice, bob, a1, b1, b2 } = await pairOfUsers({ second: ["websocket"] });
    const data = { type: "offer", sdp: "v=0\r\no=- 1 2 IN IP4 127.0.0.1", n: [1, 2, { x: null }] };
    a1.emit("signal", { to: bob, data });
    const [[s1], [s2]] = await Promise.all([b1.log.next("signal"), b2.log.next("signal")]);
    assert.deepEqual(s1, { from: alice, data });
    assert.deepEqual(s2, { from: alice, data });
  });
});

describe("invalid payloads: error event, or error ack instead when an ack was asked; the connection stays usable", T, () => {
  const cases = [
    ["message:send without to", "message:send", (u) => ({ text: "hi" }), "invalid_payload"],
    ["message:send with numeric to", "message:send", (u) => ({ to: 42, text: "hi" }), "invalid_payload"],
    ["message:send with non-string text", "message:send", (u) => ({ to: u, text: 123 }), "invalid_payload"],
    ["message:send with empty text", "message:send", (u) => ({ to: u, text: "" }), "invalid_payload"],
    ["message:send without text", "message:send", (u) => ({ to: u }), "invalid_payload"],
    ["message:send with a string payload", "message:send", (u) => "hello", "invalid_payload"],
    ["message:send with an array payload", "message:send", (u) => [u, "hi"], "invalid_payload"],
    ["message:send over --max-event-bytes 1024", "message:send", (u) => ({ to: u, text: "x".repeat(2_000) }), "payload_too_large"],
    ["typing without to", "typing", (u) => ({}), "invalid_payload"],
    ["signal without to", "signal", (u) => ({ data: 1 }), "invalid_payload"],
    ["presence:subscribe with userIds not an array", "presence:subscribe", (u) => ({ userIds: u }), "invalid_payload"],
    ["presence:query with non-string ids", "presence:query", (u) => ({ userIds: [1, 2] }), "invalid_payload"],
    ["status:set with an unknown status", "status:set", (u) => ({ status: "busy" }), "invalid_payload"],
    ["room:emit without room", "room:emit", (u) => ({ data: 1 }), "invalid_payload"],
    ["signal with data over --max-event-bytes 1024", "signal", (u) => ({ to: u, data: { blob: "z".repeat(1_500) } }), "payload_too_large"],
    ["unknown event", "no:such:event", (u) => ({ x: 1 }), "unknown_event"],
  ];

  for (const [name, event, payload, code] of cases) {
    test(`${name} → ${code}`, async () => {
      const { alice, bob, a1, b1 } = await pairOfUsers();

      // 1. without an ack: an `error` event
      a1.emit(event, payload(bob));
      const [err] = await a1.log.next("error", { timeout: 3_000 });
      assert.equal(err?.code, code, `error event ${safeJson(err)}\n${a1.log.trace()}`);
      assert.equal(typeof err.message, "string", `error.message ${safeJson(err)}`);

      // 2. with an ack: the ack carries the error, and there is no error event
      const r = await ack(a1, event, payload(bob), { timeout: 3_000 });
      assert.equal(r?.ok, false, `ack ${safeJson(r)}`);
      assert.equal(r.error?.code, code, `ack ${safeJson(r)}`);
      assert.equal(typeof r.error.message, "string", `ack ${safeJson(r)}`);
      await a1.log.none("error", 300, { why: "the ack replaced the error event" });

      // 3. nothing was delivered, and the connection still works
      assert.equal(b1.log.count("message:received"), 0, b1.log.trace());
      await assertDmWorks(a1, alice, b1, bob);
      assert.equal(a1.log.count("disconnect"), 0, a1.log.trace());
    });
  }

  test("a message just under --max-event-bytes is accepted", async () => {
    const { bob, a1, b1 } = await pairOfUsers();
    const text = "y".repeat(900); // ["message:send",{"to":"bob-…","text":"yyy…"}] < 1024 bytes
    const r = await ack(a1, "message:send", { to: bob, text });
    assert.equal(r?.ok, true, safeJson(r));
    const [m] = await b1.log.next("message:received");
    assert.equal(m.text, text);
  });

  test("several invalid events in a row, then valid traffic in both directions", async () => {
    const { alice, bob, a1, b1 } = await pairOfUsers();
    a1.emit("message:send", {});
    a1.emit("message:send", { to: bob, text: 1 });
    a1.emit("bogus");
    for (let i = 0; i < 3; i++) await a1.log.next("error");
    await sleep(100);
    await assertDmWorks(a1, alice, b1, bob);
    await assertDmWorks(b1, bob, a1, alice);
  });
});

describe("message:sync defaults and the 500 cap (node with raised rate limits)", { timeout: 60_000 }, () => {
  let big;
  before(async () => {
    big = await startProductNode({
      name: "messages-sync",
      nodeId: "msg-sync-node",
      flags: ["--user-message-limit", "100000", "--socket-event-limit", "100000"],
    });
  });
  after(async () => {
    closeAll();
    await big?.stop();
  });

  test("601 messages: sync {} returns the first 100 (hasMore); limit 1000 is capped at 500 (hasMore); the rest follows", async () => {
    const alice = uid("alice");
    const bob = uid("bob");
    const a = await connectUser(big, alice);
    const ids = [];
    for (let i = 0; i < 601; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, 601 - i) }, (_, j) => ack(a, "message:send", { to: bob, text: `t${i + j}` }, { timeout: 10_000 })),
      );
      for (const r of batch) {
        assert.equal(r?.ok, true, safeJson(r));
        ids.push(r.messageId);
      }
    }
    ids.sort((x, y) => x - y);
    const b = await connectUser(big, bob);
    const d = await ack(b, "message:sync", {});
    assert.equal(d?.ok, true, safeJson(d).slice(0, 300));
    assert.equal(d.messages.length, 100, "default limit 100");
    assert.equal(d.hasMore, true);
    assert.deepEqual(d.messages.map((m) => m.messageId), ids.slice(0, 100));
    const capped = await ack(b, "message:sync", { after: 0, limit: 1000 });
    assert.equal(capped?.ok, true, safeJson(capped).slice(0, 300));
    assert.equal(capped.messages.length, 500, "limit is capped at 500");
    assert.equal(capped.hasMore, true);
    assert.deepEqual(capped.messages.map((m) => m.messageId), ids.slice(0, 500));
    const rest = await ack(b, "message:sync", { after: ids[499], limit: 500 });
    assert.deepEqual(rest.messages.map((m) => m.messageId), ids.slice(500));
    assert.equal(rest.hasMore, false);
  });
});
