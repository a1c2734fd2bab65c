// Cluster mode: Redis hygiene. After users connect and disconnect on several nodes, subscribe,
// set statuses, send messages and emit to rooms, then all leave, Redis holds only what the live
// nodes own (`nodes`, `node:{id}:alive`, `node:{id}:sockets`) and keys with a TTL (rate limit
// windows). No `user:*`, `socket:*` or `online_users` entries remain; every key and channel
// carries the configured --redis-prefix; the nodes stay subscribed only to their own channels.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { health } from "./fixture.js";
import { connectUser, ack, api, assertStatus, uid, token, safeJson } from "./product-fixture.js";
import { startCluster, traceOf, sleep, eventually } from "./cluster-fixture.js";

/** Per test; the suite gets the sum. */
const T = { timeout: 60_000 };
const SUITE = { timeout: 600_000 };
const PREFIX = "sbt:";
/** How long after the last disconnect Redis may take to be clean. */
const CLEAN_BOUND_MS = 5_000;

/**
 * A raw websocket client that sends the Socket.IO CONNECT (with a token) as soon as the Engine.IO
 * open packet arrives and closes the transport right after it, without waiting for the answer:
 * the server sees the CONNECT and the close back to back.
 */
function connectAndVanish(node, user) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${node.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
    const done = () => resolve();
    const t = setTimeout(() => {
      ws.terminate();
      done();
    }, 3_000);
    ws.on("message", (data) => {
      const text = data.toString();
      if (text.startsWith("0")) {
        ws.send(`40${JSON.stringify({ token: token(user) })}`);
        ws.close();
      }
    });
    ws.on("close", () => {
      clearTimeout(t);
      done();
    });
    ws.on("error", () => {});
  });
}

/** Everything wrong with the cluster's Redis keys when nobody is connected. */
async function keyProblems(c) {
  const r = c.redis;
  const problems = [];
  const keys = await r.keys();
  const live = c.nodes.filter((n) => !n.killed).map((n) => n.nodeId);
  const owned = new Set([
    `${PREFIX}nodes`,
    ...live.flatMap((id) => [`${PREFIX}node:${id}:alive`, `${PREFIX}node:${id}:sockets`]),
  ]);
  for (const key of keys) {
    if (!key.startsWith(PREFIX)) {
      problems.push(`${key}: not under the --redis-prefix ${PREFIX}`);
      continue;
    }
    const name = key.slice(PREFIX.length);
    if (/^(user|socket):/.test(name)) {
      problems.push(`${key}: ${await r.type(key)} left for a disconnected user/socket (ttl ${await r.ttl(key)})`);
      continue;
    }
    if (name === "online_users") {
      const n = await r.zcard(key);
      if (n !== 0) problems.push(`${key}: ${n} member(s) left: ${await r.cmd("zrange", key, "0", "-1")}`);
      continue;
    }
    if (/^node:[^:]+:sockets$/.test(name)) {
      const members = await r.smembers(key);
      if (members.length) problems.push(`${key}: still lists sockets ${safeJson(members)}`);
    }
    const ttl = await r.ttl(key);
    if (/^rate_limit:.*:bytes:\d+$/.test(name)) {
      // The day's message bytes live two days (the day, and the next for clock skew).
      if (!(ttl > 0 && ttl <= 2 * 86_400)) problems.push(`${key}: daily bytes with TTL ${ttl} (expected 1..172800)`);
      continue;
    }
    if (name.startsWith("rate_limit:")) {
      if (!(ttl > 0 && ttl <= 60)) problems.push(`${key}: rate limit window with TTL ${ttl} (expected 1..60)`);
      continue;
    }
    if (owned.has(key)) {
      if (/:alive$/.test(name) && !(ttl > 0 && ttl <= 10)) problems.push(`${key}: liveness key with TTL ${ttl}`);
      continue;
    }
    if (!(ttl > 0)) problems.push(`${key}: ${await r.type(key)} without a TTL (ttl ${ttl}) and owned by no live node`);
  }
  const nodes = await r.smembers(`${PREFIX}nodes`);
  if (safeJson(nodes) !== safeJson([...live].sort())) problems.push(`${PREFIX}nodes = ${safeJson(nodes)}, live nodes ${safeJson(live)}`);
  // Channels: only each node's own channel and the broadcast channel stay subscribed.
  const channels = (await r.cmd("pubsub", "channels")).split("\n").filter(Boolean).sort();
  const expectedChannels = [`${PREFIX}sb:broadcast`, ...live.map((id) => `${PREFIX}sb:node:${id}`)].sort();
  if (safeJson(channels) !== safeJson(expectedChannels)) {
    problems.push(`subscribed channels ${safeJson(channels)}, expected only ${safeJson(expectedChannels)}`);
  }
  return { problems, keys };
}

describe("cluster Redis hygiene", SUITE, () => {
  test("after a busy run on three nodes and everyone leaving, only owned keys and keys with a TTL remain", T, async (t) => {
    const c = await startCluster({ name: "keys", prefix: PREFIX });
    t.after(() => c.stop());
    const [n1, n2, n3] = c.nodes;
    const k = c.key;
    const [u1, u2, u3, u4] = [uid("u1"), uid("u2"), uid("u3"), uid("u4")];
    const room = uid("room");
    const room2 = uid("room2");

    // u1 on three nodes, two of them with the same device id.
    const u1a = await connectUser(n1, u1, { device: "d1", label: "u1/d1@n1" });
    const u1b = await connectUser(n2, u1, { device: "d1", label: "u1/d1@n2", transports: ["polling"] });
    const u1c = await connectUser(n3, u1, { device: "d2", label: "u1/d2@n3" });
    const s2 = await connectUser(n2, u2, { label: "u2@n2" });
    const s3 = await connectUser(n3, u3, { token: token(u3, { rooms: [room] }), label: "u3@n3" });
    const s4 = await connectUser(n1, u4, { token: token(u4, { rooms: [room] }), label: "u4@n1" });
    const all = () => traceOf(u1a, u1b, u1c, s2, s3, s4);

    // Every key carries the prefix while everyone is connected, too.
    const busyKeys = await c.redis.keys();
    assert.deepEqual(busyKeys.filter((key) => !key.startsWith(PREFIX)), [], `unprefixed keys ${safeJson(busyKeys)}`);
    assert.deepEqual(await c.redis.smembers(k(`user:${u1}:devices`)), ["d1", "d2"]);
    assert.equal((await c.redis.smembers(k(`user:${u1}:sockets`))).length, 3);
    const statusTtl = await c.redis.ttl(k(`user:${u1}:status`));
    assert.ok(statusTtl > 0 && statusTtl <= 300, `user:{id}:status TTL ${statusTtl}`);

    // Presence subscriptions, statuses, messages, room emits, API calls.
    assert.equal((await ack(s2, "presence:subscribe", { userIds: [u1, u3] }))?.ok, true);
    assert.equal((await ack(s4, "presence:subscribe", { userIds: [u1] }))?.ok, true);
    assert.deepEqual(await ack(s2, "presence:unsubscribe", { userIds: [u3] }), { ok: true });
    assert.deepEqual(await ack(u1b, "status:set", { status: "away" }), { ok: true });
    await s2.log.next("friend:status");
    assert.deepEqual(await ack(u1c, "status:set", { status: "online" }), { ok: true });
    await s2.log.next("friend:status");
    for (let i = 0; i < 5; i += 1) assert.equal((await ack(u1a, "message:send", { to: u2, text: `m${i}` }))?.ok, true);
    assert.equal((await ack(s2, "message:send", { to: u3, text: "hi" }))?.ok, true);
    assert.equal((await ack(s3, "message:send", { to: u1, text: "yo" }))?.ok, true);
    s3.emit("typing", { to: u1 });
    s3.emit("signal", { to: u1, data: { sdp: "x" } });
    assert.deepEqual(await ack(s4, "room:emit", { room, data: 1 }), { ok: true });
    await s3.log.next("room:msg");
    assertStatus(await api(n3, "POST", `/api/v1/rooms/${room2}/members`, { key: c.apiKey, body: { userId: u2 } }), 200);
    assertStatus(await api(n1, "POST", "/api/v1/emit", { key: c.apiKey, body: { to: { user: u1 }, event: "note", data: 1 } }), 202);
    for (const s of [u1a, u1b, u1c]) await s.log.next("note");
    await s2.log.next("message:received", { pred: (m) => m.text === "m4" });

    // Devices: d1 stays while another socket still uses it.
    u1a.disconnect();
    await eventually(async () => (await c.redis.smembers(k(`user:${u1}:sockets`))).length === 2, { what: "u1 has 2 sockets" });
    assert.deepEqual(await c.redis.smembers(k(`user:${u1}:devices`)), ["d1", "d2"], "d1 is still used by the node 2 socket");
    u1b.disconnect();
    await eventually(async () => (await c.redis.smembers(k(`user:${u1}:sockets`))).length === 1, { what: "u1 has 1 socket" });
    assert.deepEqual(await c.redis.smembers(k(`user:${u1}:devices`)), ["d2"], "d1 is gone with its last socket");

    // The API disconnects u3 from node 1; u3 lives on node 3.
    assertStatus(await api(n1, "POST", `/api/v1/users/${u3}/disconnect`, { key: c.apiKey }), 200);
    await s3.log.next("disconnect", { failOn: [] });

    // Churn: short-lived sockets on every node.
    for (let i = 0; i < 6; i += 1) {
      const s = await connectUser(c.nodes[i % 3], uid(`brief${i}`), { label: `brief${i}` });
      s.disconnect();
    }

    // Everyone leaves: a client disconnect, a transport close without 41, and a polling client.
    u1c.io.engine.close();
    s2.disconnect();
    s4.disconnect();
    const leftAt = Date.now();

    let last;
    try {
      await eventually(
        async () => {
          last = await keyProblems(c);
          return last.problems.length === 0;
        },
        { timeout: CLEAN_BOUND_MS, interval: 200, what: "Redis clean after everyone left" },
      );
    } catch {
      assert.fail(
        `Redis is not clean ${Date.now() - leftAt} ms after the last disconnect:\n  ${last.problems.join("\n  ")}\nall keys: ${safeJson(last.keys)}\n${all()}`,
      );
    }
    t.diagnostic(`Redis clean ${Date.now() - leftAt} ms after the last disconnect; keys left: ${safeJson(last.keys)}`);
    // Rate-limit windows exist for the senders (with a TTL, checked above).
    assert.ok(last.keys.includes(k(`rate_limit:${u1}:messages`)), `rate_limit key for u1 in ${safeJson(last.keys)}`);
    for (const n of c.nodes) assert.equal((await health(n.url)).sessions, 0, `${n.nodeId} has sessions left`);

    // The key set stays clean after a node tick or two (no late re-assertion of gone sockets).
    await sleep(2_500);
    const later = await keyProblems(c);
    assert.deepEqual(later.problems, [], `after 2.5 s more: ${safeJson(later.keys)}`);
  });

  test("a socket that closes while its CONNECT is being admitted leaves no presence behind", T, async (t) => {
    const c = await startCluster({ name: "keys-vanish", prefix: PREFIX });
    t.after(() => c.stop());
    const users = Array.from({ length: 12 }, (_, i) => uid(`vanish${i}`));
    const w = await connectUser(c.nodes[0], uid("watcher"), { label: "watcher@n1" });
    assert.equal((await ack(w, "presence:subscribe", { userIds: users }))?.ok, true);
    for (let i = 0; i < users.length; i += 1) await connectAndVanish(c.nodes[i % 3], users[i]);
    w.disconnect();
    const leftAt = Date.now();
    let last;
    try {
      await eventually(
        async () => {
          last = await keyProblems(c);
          return last.problems.length === 0;
        },
        { timeout: CLEAN_BOUND_MS, interval: 200, what: "Redis clean" },
      );
    } catch {
      const online = w.log.all("friend:online").map(([e]) => e.userId);
      const offline = w.log.all("friend:offline").map(([e]) => e.userId);
      const shown = last.problems.slice(0, 12);
      assert.fail(
        `${CLEAN_BOUND_MS} ms after ${users.length} sockets sent CONNECT and closed at once, Redis still holds presence ` +
          `(${last.problems.length} problem(s)); the watcher got friend:online for ${safeJson(online)} and friend:offline only for ${safeJson(offline)}:\n  ` +
          `${shown.join("\n  ")}${last.problems.length > shown.length ? "\n  …" : ""}`,
      );
    }
    const online = await api(c.nodes[1], "GET", "/api/v1/online", { key: c.apiKey });
    assert.deepEqual(online.json?.users, [], `GET /api/v1/online ${online.text}`);
  });
});
