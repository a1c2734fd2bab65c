// Cluster mode: the per-user message limit (30 message:send / minute across all the user's
// sockets, product-contract.md "Rate limits") is exact across nodes: one sliding window in Redis
// (rate_limit:{user}:messages, a ZSET with a TTL).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { connectUser, ack, uid, safeJson } from "./product-fixture.js";
import { startCluster, traceOf, sleep, eventually } from "./cluster-fixture.js";

/** Per test; the suite gets the sum. */
const T = { timeout: 60_000 };
const SUITE = { timeout: 600_000 };

describe("cluster rate limit", SUITE, () => {
  test("16 + 16 message:send from one user's sockets on nodes 1 and 2 → exactly 30 accepted, 2 rate_limited; the recipient on node 3 gets 30", T, async (t) => {
    const c = await startCluster({ name: "ratelimit" });
    t.after(() => c.stop());
    const [n1, n2, n3] = c.nodes;
    const alice = uid("alice");
    const bob = uid("bob");
    const s1 = await connectUser(n1, alice, { device: "a1", label: "alice@n1" });
    const s2 = await connectUser(n2, alice, { device: "a2", label: "alice@n2", transports: ["polling"] });
    const b = await connectUser(n3, bob, { label: "bob@n3" });
    const all = () => traceOf(s1, s2, b);

    // Interleave the two sockets and send everything at once.
    const sends = [];
    for (let i = 0; i < 16; i += 1) {
      for (const [s, tag] of [[s1, "n1"], [s2, "n2"]]) {
        const text = `${tag}-${i}`;
        sends.push(ack(s, "message:send", { to: bob, text }, { timeout: 10_000 }).then((r) => ({ text, r })));
      }
    }
    const results = await Promise.all(sends);
    const ok = results.filter((x) => x.r?.ok === true);
    const limited = results.filter((x) => x.r?.ok === false && x.r.error?.code === "rate_limited");
    const other = results.filter((x) => !ok.includes(x) && !limited.includes(x));
    assert.deepEqual(other, [], `unexpected acks\n${all()}`);
    assert.equal(ok.length, 30, `accepted ${ok.length} of 32 (expected exactly 30 across both nodes)\n${safeJson(results)}`);
    assert.equal(limited.length, 2, `rate_limited acks ${limited.length}\n${safeJson(results)}`);
    for (const x of limited) {
      assert.equal(typeof x.r.error.retryAfterMs, "number", safeJson(x.r));
      assert.ok(x.r.error.retryAfterMs > 0 && x.r.error.retryAfterMs <= 60_000, `retryAfterMs ${safeJson(x.r)}`);
    }
    // Each refusal also comes as a rate_limited event, on the socket that was refused.
    await eventually(() => s1.log.count("rate_limited") + s2.log.count("rate_limited") === 2, {
      timeout: 3_000,
      what: "two rate_limited events in all",
    });
    for (const x of limited) {
      const s = x.text.startsWith("n1") ? s1 : s2;
      assert.ok(s.log.count("rate_limited") >= 1, `${s.log.label} was refused "${x.text}" but got no rate_limited event\n${all()}`);
    }

    // bob gets exactly the 30 accepted messages, once each.
    await eventually(() => b.log.count("message:received") >= 30, { timeout: 5_000, what: "bob received 30 messages" });
    await sleep(800);
    const got = b.log.all("message:received").map(([m]) => m.text).sort();
    assert.deepEqual(got, ok.map((x) => x.text).sort(), `bob must get exactly the accepted messages, once each\n${all()}`);
    for (const x of limited) assert.ok(!got.includes(x.text), `refused "${x.text}" was delivered`);

    // The window lives in Redis with a TTL (≤ the 60 s window) and counts 30 hits.
    const key = c.key(`rate_limit:${alice}:messages`);
    assert.equal(await c.redis.type(key), "zset");
    assert.equal(await c.redis.zcard(key), 30);
    const ttl = await c.redis.ttl(key);
    assert.ok(ttl > 0 && ttl <= 60, `TTL of ${key}: ${ttl}`);

    // Still limited from a third node (the window is shared, not per node).
    const s3 = await connectUser(n3, alice, { device: "a3", label: "alice@n3" });
    const r3 = await ack(s3, "message:send", { to: bob, text: "from-n3" });
    assert.equal(r3?.ok, false, `a fresh socket on node 3 is within the same window: ${safeJson(r3)}`);
    assert.equal(r3.error?.code, "rate_limited");
    // Other users are not affected.
    const carol = await connectUser(n1, uid("carol"), { label: "carol@n1" });
    const rc = await ack(carol, "message:send", { to: bob, text: "from-carol" });
    assert.equal(rc?.ok, true, safeJson(rc));
  });
});
