// Cluster mode: Redis is killed (-9) and started again empty on the same port while the nodes keep
// running. Delivery must resume on its own (the bridge's subscriber reconnects with backoff ≤ 5 s
// and re-subscribes) and presence must be rebuilt (each node notices its vanished liveness key and
// re-asserts its live sockets) — DESIGN.md "Redis keys": "After Redis loses its data, every node
// re-asserts its live sockets."

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { connectUser, ack, api, assertStatus, uid, token, safeJson } from "./product-fixture.js";
import { startCluster, traceOf, sleep, eventually } from "./cluster-fixture.js";

/** Per test; the suite gets the sum. */
const T = { timeout: 90_000 };
const SUITE = { timeout: 600_000 };
/** Bound for delivery and presence to be back after the restart. */
const RECOVERY_BOUND_MS = 20_000;
/** How long Redis stays down. */
const OUTAGE_MS = 3_000;

describe("cluster survives a Redis restart", SUITE, () => {
  test("kill -9 redis-server and start it again: delivery resumes, presence and subscriptions are rebuilt", T, async (t) => {
    const c = await startCluster({ name: "redis-restart" });
    t.after(() => c.stop());
    const [n1, n2, n3] = c.nodes;
    const k = c.key;
    const alice = uid("alice");
    const bob = uid("bob");
    const carol = uid("carol");
    const room = uid("room");
    const a = await connectUser(n1, alice, { token: token(alice, { rooms: [room] }), label: "alice@n1" });
    const b = await connectUser(n2, bob, { token: token(bob, { rooms: [room] }), device: "b-phone", label: "bob@n2" });
    const cw = await connectUser(n3, carol, { label: "carol@n3" });
    const all = () => traceOf(a, b, cw);
    assert.deepEqual(await ack(cw, "presence:subscribe", { userIds: [bob] }), { ok: true, statuses: { [bob]: "online" } });

    // Baseline.
    const r0 = await ack(a, "message:send", { to: bob, text: "before" });
    assert.equal(r0?.ok, true, safeJson(r0));
    await b.log.next("message:received", { pred: (m) => m.text === "before" });
    const bobSocket = b.authInfo.socketId;
    assert.ok(await c.redis.exists(k(`user:${bob}:sockets`)));

    // Kill Redis and keep it down for a while (the subscriber's reconnect backoff grows), then
    // start it again, empty, on the same port.
    const t0 = Date.now();
    await c.redis.kill();
    await sleep(OUTAGE_MS / 2);
    // During the outage the nodes stay up and answer; an ack still comes back (ok or an error).
    for (const n of c.nodes) assert.equal(n.alive(), true, `${n.nodeId} survived the Redis kill`);
    let outageAck;
    try {
      outageAck = await ack(a, "message:send", { to: bob, text: "during-outage" }, { timeout: 5_000 });
    } catch (e) {
      outageAck = { noAck: e.message.split("\n")[0] };
    }
    t.diagnostic(`message:send during the outage -> ${safeJson(outageAck)}`);
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - t0)));
    const restartAt = Date.now();
    await c.redis.start();
    const downMs = Date.now() - t0;
    assert.deepEqual(await c.redis.keys(k("user:*")), [], "precondition: the restarted Redis is empty");

    // Delivery: retry alice → bob until one arrives (bounded).
    let firstArrival = null;
    let attempts = 0;
    const acks = [];
    while (Date.now() - restartAt < RECOVERY_BOUND_MS) {
      attempts += 1;
      const text = `probe-${attempts}`;
      let r;
      try {
        r = await ack(a, "message:send", { to: bob, text }, { timeout: 2_000 });
      } catch (e) {
        r = { noAck: e.message.split("\n")[0] };
      }
      acks.push(r);
      try {
        await b.log.next("message:received", { pred: (m) => m.text.startsWith("probe-"), timeout: 500, failOn: [] });
        firstArrival = Date.now() - t0;
        break;
      } catch {
        /* not yet */
      }
    }
    assert.ok(
      firstArrival !== null,
      `no alice → bob message arrived within ${RECOVERY_BOUND_MS} ms after Redis was started again (${attempts} attempts; acks ${safeJson(acks.slice(-5))})\n${all()}`,
    );
    t.diagnostic(
      `Redis down for ${downMs} ms; first cross-node delivery ${firstArrival} ms after the kill = ${firstArrival - (restartAt - t0)} ms after the restart (${attempts} attempt(s))`,
    );

    // A fresh message arrives exactly once.
    await sleep(300);
    b.log.drain();
    const fresh = `fresh-${Date.now()}`;
    const r1 = await ack(a, "message:send", { to: bob, text: fresh });
    assert.equal(r1?.ok, true, `message:send after recovery ${safeJson(r1)}`);
    await b.log.next("message:received", { pred: (m) => m.text === fresh, timeout: 5_000 });
    await sleep(600);
    assert.equal(b.log.count("message:received", (m) => m.text === fresh), 1, `exactly once\n${all()}`);

    // Presence is rebuilt in Redis.
    await eventually(
      async () => {
        const sockets = await c.redis.smembers(k(`user:${bob}:sockets`));
        if (!sockets.includes(bobSocket)) throw new Error(`user:${bob}:sockets = ${safeJson(sockets)}`);
        return true;
      },
      { timeout: Math.max(1_000, RECOVERY_BOUND_MS - (Date.now() - restartAt)), interval: 100, what: `user:${bob}:sockets re-asserted` },
    );
    const rebuilt = Date.now() - t0;
    t.diagnostic(`presence re-asserted in Redis ${rebuilt - (restartAt - t0)} ms after the restart`);
    assert.deepEqual(await c.redis.hgetall(k(`socket:${bobSocket}:user`)), {
      userId: bob,
      deviceId: "b-phone",
      connectedAt: (await c.redis.hgetall(k(`socket:${bobSocket}:user`))).connectedAt,
      serverInstance: n2.nodeId,
    });
    const socketTtl = await c.redis.ttl(k(`socket:${bobSocket}:user`));
    assert.ok(socketTtl > 0 && socketTtl <= 3600, `socket hash TTL ${socketTtl}`);
    assert.deepEqual(await c.redis.smembers(k(`user:${bob}:devices`)), ["b-phone"]);
    assert.ok((await c.redis.smembers(k(`node:${n2.nodeId}:sockets`))).includes(bobSocket), "node:node-2:sockets re-asserted");
    await eventually(
      async () => {
        const nodes = await c.redis.smembers(k("nodes"));
        if (safeJson(nodes) !== safeJson(c.ids)) throw new Error(`nodes = ${safeJson(nodes)}`);
        return true;
      },
      { timeout: 5_000, what: "every node back in the `nodes` set" },
    );
    for (const [s, user] of [[a, alice], [cw, carol]]) {
      assert.ok((await c.redis.smembers(k(`user:${user}:sockets`))).includes(s.authInfo.socketId), `${user} re-asserted`);
    }
    const q = await ack(cw, "presence:query", { userIds: [bob, alice] });
    assert.deepEqual(q, { ok: true, statuses: { [bob]: "online", [alice]: "online" } }, "presence:query from node 3");
    const online = await api(n1, "GET", "/api/v1/online", { key: c.apiKey });
    assertStatus(online, 200);
    assert.deepEqual(online.json.users, [alice, bob, carol].sort(), online.text);

    // Subscriptions are back too: room channel and watch channel.
    const re = await ack(a, "room:emit", { room, data: "after-restart" });
    assert.deepEqual(re, { ok: true });
    await b.log.next("room:msg", { pred: (m) => m.data === "after-restart", timeout: 5_000 });
    cw.log.drain();
    assert.deepEqual(await ack(b, "status:set", { status: "away" }), { ok: true });
    const [st] = await cw.log.next("friend:status", { timeout: 5_000 });
    assert.deepEqual(st, { userId: bob, status: "away" });
    const onlineAgain = cw.log.count("friend:online");
    if (onlineAgain > 0) t.diagnostic(`carol got ${onlineAgain} friend:online for bob after the restart (re-assertion seen as a new online transition)`);

    // Nobody was disconnected by the outage.
    for (const s of [a, b, cw]) {
      assert.equal(s.connected, true, `${s.log.label} still connected`);
      assert.equal(s.log.count("disconnect"), 0, `${s.log.label} was disconnected\n${all()}`);
    }
    // And a new user can connect and be reached through another node.
    const dan = uid("dan");
    const d = await connectUser(n3, dan, { label: "dan@n3" });
    const r2 = await ack(b, "message:send", { to: dan, text: "hi dan" });
    assert.equal(r2?.ok, true, safeJson(r2));
    await d.log.next("message:received", { pred: (m) => m.text === "hi dan" });
  });
});

// Readiness (issue #20): a cluster node without Redis refuses every CONNECT, so after a grace
// period (15 s, long enough for a restart or a failover) it reports not ready; a database
// outage never does (tests/tests/persistence.rs). /health says why.
describe("readiness follows Redis after a grace period", SUITE, () => {
  test("Redis killed: ready (degraded) at first, 503 after 15 s, ready again once Redis is back", T, async (t) => {
    const c = await startCluster({ name: "readiness", nodes: 1 });
    t.after(() => c.stop());
    const [n1] = c.nodes;
    const probe = async (path) => {
      const res = await fetch(`${n1.url}${path}`);
      return { status: res.status, body: await res.json() };
    };
    assert.equal((await probe("/health/ready")).status, 200);
    await c.redis.kill();
    const killed = Date.now();
    // Down, but within the grace period: still ready, and /health says degraded.
    await eventually(async () => (await probe("/health")).body.redis === "down", { timeout: 10_000, what: "/health sees Redis down" });
    const early = await probe("/health");
    assert.equal(early.status, 200, JSON.stringify(early.body));
    assert.equal(early.body.status, "degraded");
    // Past the grace period: not ready.
    await eventually(async () => (await probe("/health/ready")).status === 503, { timeout: 30_000, interval: 500, what: "/health/ready 503 without Redis" });
    const after = (Date.now() - killed) / 1000;
    assert.ok(after >= 14, `not ready only after the grace period (${after.toFixed(1)} s)`);
    assert.equal((await probe("/health")).body.status, "unavailable");
    await c.redis.start();
    await eventually(async () => (await probe("/health/ready")).status === 200, { timeout: 30_000, interval: 500, what: "ready again with Redis back" });
    assert.equal((await probe("/health")).body.status, "ok");
  });
});
