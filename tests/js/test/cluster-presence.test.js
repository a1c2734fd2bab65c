// Cluster mode: presence is cluster-wide with multi-device semantics (first socket anywhere →
// friend:online, last socket anywhere → friend:offline), and the sockets of a node that dies are
// swept by the survivors (DESIGN.md "Redis keys": node:{id}:alive with a TTL, node:{id}:sockets).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { connectUser, ack, api, assertStatus, uid, safeJson } from "./product-fixture.js";
import { startCluster, traceOf, sleep } from "./cluster-fixture.js";

/** Per test; the suite gets the sum. */
const T = { timeout: 60_000 };
const SUITE = { timeout: 600_000 };
/** Silence window for "no (second) notification". */
const QUIET_MS = 700;
/** The contract bound for a dead node's users to be reported offline. */
const SWEEP_BOUND_MS = 15_000;

async function cluster(t, opts) {
  const c = await startCluster({ name: "presence", ...opts });
  t.after(() => c.stop());
  return c;
}

async function query(socket, userIds) {
  const r = await ack(socket, "presence:query", { userIds });
  assert.equal(r?.ok, true, `presence:query ${safeJson(r)}`);
  return r.statuses;
}

async function apiOnline(c, node) {
  const res = await api(node, "GET", "/api/v1/online?limit=1000", { key: c.apiKey });
  assertStatus(res, 200, `GET /api/v1/online at ${node.nodeId}`);
  return res.json;
}

async function apiPresence(c, node, users) {
  const res = await api(node, "GET", `/api/v1/presence?userIds=${users.join(",")}`, { key: c.apiKey });
  assertStatus(res, 200, `GET /api/v1/presence at ${node.nodeId}`);
  return res.json.statuses;
}

describe("cluster presence", SUITE, () => {
  test("multi-device presence across nodes: one friend:online, one friend:offline, statuses and the API agree everywhere", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2, n3] = c.nodes;
    const carol = uid("carol");
    const dave = uid("dave");
    const wendy = uid("wendy");
    const quinn = uid("quinn");
    // Watchers on every node: carol on node 1 (the brief's), wendy on nodes 2 and 3 (the same
    // nodes as dave's devices: local + remote notifications must not double up).
    const cw = await connectUser(n1, carol, { label: "carol@n1" });
    const w2 = await connectUser(n2, wendy, { device: "w2", label: "wendy@n2" });
    const w3 = await connectUser(n3, wendy, { device: "w3", label: "wendy@n3" });
    const q = await connectUser(n3, quinn, { label: "quinn@n3" });
    const watchers = [cw, w2, w3];
    const all = () => traceOf(cw, w2, w3, q);
    for (const w of watchers) {
      const sub = await ack(w, "presence:subscribe", { userIds: [dave] });
      assert.deepEqual(sub, { ok: true, statuses: { [dave]: "offline" } }, w.log.label);
    }
    assert.deepEqual(await query(q, [dave]), { [dave]: "offline" });

    // dave device 1 on node 2 → one friend:online per watcher socket.
    const d1 = await connectUser(n2, dave, { device: "d-phone", label: "dave@n2" });
    for (const w of watchers) {
      const [on] = await w.log.next("friend:online", { timeout: 5_000 });
      assert.deepEqual(on, { userId: dave }, w.log.label);
    }
    assert.deepEqual(await query(q, [dave]), { [dave]: "online" }, "presence:query from node 3");
    const everyoneOnline = [carol, dave, quinn, wendy].sort();
    for (const n of c.nodes) {
      const page = await apiOnline(c, n);
      assert.deepEqual(page, { count: 4, users: everyoneOnline, nextCursor: null }, `GET /api/v1/online at ${n.nodeId} is cluster-wide`);
      assert.deepEqual(await apiPresence(c, n, [dave, carol, "nobody-x"]), { [dave]: "online", [carol]: "online", "nobody-x": "offline" });
    }

    // dave device 2 on node 3 → no second friend:online.
    const d2 = await connectUser(n3, dave, { device: "d-laptop", label: "dave@n3" });
    await cw.log.none("friend:online", QUIET_MS, { why: "dave's second device (node 3) is not a new online transition" });
    for (const w of [w2, w3]) await w.log.none("friend:online", 0, { why: "second device" });
    assert.deepEqual(await query(q, [dave]), { [dave]: "online" });

    // status:set away on node 2 → friend:status everywhere, once.
    assert.deepEqual(await ack(d1, "status:set", { status: "away" }), { ok: true });
    for (const w of watchers) {
      const [st] = await w.log.next("friend:status", { timeout: 5_000 });
      assert.deepEqual(st, { userId: dave, status: "away" }, w.log.label);
    }
    assert.deepEqual(await query(q, [dave]), { [dave]: "away" });
    assert.deepEqual(await apiPresence(c, n1, [dave]), { [dave]: "away" });
    // Setting the same status again is not a change.
    assert.deepEqual(await ack(d2, "status:set", { status: "away" }), { ok: true });

    // device 1 leaves → nothing (device 2 still there).
    d1.disconnect();
    await cw.log.none("friend:offline", QUIET_MS, { why: "dave still has device 2 on node 3" });
    for (const w of [w2, w3]) await w.log.none("friend:offline", 0, { why: "dave still has device 2" });
    assert.deepEqual(await query(q, [dave]), { [dave]: "away" }, "still online (away) with one device left");

    // device 2 leaves → friend:offline once per watcher socket.
    d2.disconnect();
    for (const w of watchers) {
      const [off] = await w.log.next("friend:offline", { timeout: 5_000 });
      assert.deepEqual(off, { userId: dave }, w.log.label);
    }
    assert.deepEqual(await query(q, [dave]), { [dave]: "offline" });
    for (const n of c.nodes) {
      assert.deepEqual(await apiOnline(c, n), { count: 3, users: [carol, quinn, wendy].sort(), nextCursor: null });
      assert.deepEqual(await apiPresence(c, n, [dave]), { [dave]: "offline" });
    }

    await sleep(QUIET_MS);
    for (const w of watchers) {
      assert.equal(w.log.count("friend:online"), 1, `${w.log.label}: exactly one friend:online\n${all()}`);
      assert.equal(w.log.count("friend:offline"), 1, `${w.log.label}: exactly one friend:offline\n${all()}`);
      assert.equal(w.log.count("friend:status"), 1, `${w.log.label}: exactly one friend:status\n${all()}`);
    }
    assert.equal(q.log.count("friend:online") + q.log.count("friend:offline"), 0, "quinn only queried, never subscribed");

    // Unsubscribe on node 1 → no more notifications there; the others still get them.
    assert.deepEqual(await ack(cw, "presence:unsubscribe", { userIds: [dave] }), { ok: true });
    await connectUser(n2, dave, { label: "dave-again@n2" });
    for (const w of [w2, w3]) await w.log.next("friend:online", { timeout: 5_000 });
    await cw.log.none("friend:online", QUIET_MS, { why: "carol unsubscribed" });
  });

  test("GET /api/v1/online pages through users connected to different nodes", T, async (t) => {
    const c = await cluster(t);
    const users = [];
    for (let i = 0; i < 6; i += 1) {
      const u = `pager-${String(i).padStart(2, "0")}-${uid("p")}`;
      users.push(u);
      await connectUser(c.nodes[i % 3], u, { label: `${u}@${c.nodes[i % 3].nodeId}` });
    }
    users.sort();
    const seen = [];
    let cursor = null;
    for (let page = 0; page < 5; page += 1) {
      // Each page from a different node.
      const node = c.nodes[page % 3];
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const res = await api(node, "GET", `/api/v1/online?limit=4${q}`, { key: c.apiKey });
      assertStatus(res, 200);
      assert.equal(res.json.count, 6, res.text);
      seen.push(...res.json.users);
      cursor = res.json.nextCursor;
      if (!cursor) break;
    }
    assert.deepEqual(seen, users);
  });

  test("SIGKILL a node: its users are reported offline within 15 s and its keys are swept", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2, n3] = c.nodes;
    const frank = uid("frank");
    const fiona = uid("fiona");
    const kim = uid("kim");
    const gina = uid("gina");
    const g = await connectUser(n1, gina, { label: "gina@n1" });
    const f = await connectUser(n2, frank, { label: "frank@n2" });
    const f2 = await connectUser(n2, fiona, { label: "fiona@n2" });
    const k2 = await connectUser(n2, kim, { device: "k-phone", label: "kim@n2" });
    const k3 = await connectUser(n3, kim, { device: "k-laptop", label: "kim@n3" });
    const sub = await ack(g, "presence:subscribe", { userIds: [frank, fiona, kim] });
    assert.deepEqual(sub, { ok: true, statuses: { [frank]: "online", [fiona]: "online", [kim]: "online" } });

    const frankSocket = f.authInfo.socketId;
    const deadNode = n2.nodeId;
    const k = c.key;
    assert.ok(await c.redis.exists(k(`user:${frank}:sockets`)), "precondition: frank registered in Redis");
    assert.ok(await c.redis.exists(k(`socket:${frankSocket}:user`)));
    assert.deepEqual(
      (await c.redis.smembers(k(`node:${deadNode}:sockets`))).sort(),
      [frankSocket, f2.authInfo.socketId, k2.authInfo.socketId].sort(),
      "precondition: node 2's socket set",
    );
    const aliveTtl = await c.redis.ttl(k(`node:${deadNode}:alive`));
    assert.ok(aliveTtl > 0 && aliveTtl <= 10, `node:${deadNode}:alive TTL ${aliveTtl} (expected 1..10 s)`);

    const t0 = Date.now();
    await c.killNode(1);
    const [off] = await g.log.next("friend:offline", { pred: (e) => e.userId === frank, timeout: SWEEP_BOUND_MS, failOn: ["disconnect"] });
    const elapsed = Date.now() - t0;
    t.diagnostic(`friend:offline for a user of the SIGKILLed node arrived after ${elapsed} ms (bound ${SWEEP_BOUND_MS} ms)`);
    assert.deepEqual(off, { userId: frank });
    assert.ok(elapsed <= SWEEP_BOUND_MS, `friend:offline after ${elapsed} ms`);
    await g.log.next("friend:offline", { pred: (e) => e.userId === fiona, timeout: 2_000 });
    await g.log.none("friend:offline", QUIET_MS, { pred: (e) => e.userId === kim, why: "kim still has a socket on node 3" });
    await sleep(QUIET_MS);
    assert.equal(g.log.count("friend:offline", (e) => e.userId === frank), 1, traceOf(g));
    assert.equal(g.log.count("friend:offline", (e) => e.userId === fiona), 1, traceOf(g));

    // Redis: frank's and fiona's keys are gone, the dead node is forgotten, kim keeps node 3's socket.
    const keys = await c.redis.keys();
    const leftovers = keys.filter(
      (key) =>
        key.startsWith(k(`user:${frank}:`)) ||
        key.startsWith(k(`user:${fiona}:`)) ||
        key === k(`socket:${frankSocket}:user`) ||
        key === k(`socket:${f2.authInfo.socketId}:user`) ||
        key === k(`socket:${k2.authInfo.socketId}:user`) ||
        key.startsWith(k(`node:${deadNode}:`)),
    );
    assert.deepEqual(leftovers, [], `keys of the dead node's sockets remain; all keys: ${safeJson(keys)}`);
    assert.deepEqual(await c.redis.smembers(k("nodes")), [n1.nodeId, n3.nodeId].sort(), "the dead node id is removed from `nodes`");
    assert.deepEqual(await c.redis.smembers(k(`user:${kim}:sockets`)), [k3.authInfo.socketId], "kim keeps only the node 3 socket");
    assert.deepEqual(await c.redis.smembers(k(`user:${kim}:devices`)), ["k-laptop"], "kim's devices: only the live one");
    const online = await apiOnline(c, n3);
    assert.deepEqual(online.users, [gina, kim].sort(), `GET /api/v1/online after the sweep: ${safeJson(online)}`);
    assert.deepEqual(await query(g, [frank, fiona, kim]), { [frank]: "offline", [fiona]: "offline", [kim]: "online" });

    // The survivors keep working, and frank can come back on another node.
    const f3 = await connectUser(n3, frank, { label: "frank-again@n3" });
    const [on] = await g.log.next("friend:online", { pred: (e) => e.userId === frank, timeout: 5_000 });
    assert.deepEqual(on, { userId: frank });
    const res = await ack(g, "message:send", { to: frank, text: "welcome back" });
    assert.equal(res?.ok, true, safeJson(res));
    await f3.log.next("message:received", { pred: (m) => m.text === "welcome back" });
    assert.equal(k3.connected, true);
  });
});
