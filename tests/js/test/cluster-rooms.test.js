// Cluster mode: client rooms and durable room memberships across nodes (DESIGN.md "Rooms":
// `room:join` allowed by the token's `rooms` claim or a prefix pattern such as "doc:*",
// `room:presence` cluster-wide, server-API memberships applied to the user's sockets on every
// node, `GET /api/v1/rooms/{room}/members` answering for the whole cluster). Three nodes and
// their own redis-server (cluster-fixture).
//
//   - `room:join` on node 1, 2 and 3 (claim pattern "doc:*"; a room outside it is forbidden);
//     `room:presence` from every node lists every member; `room:emit` reaches the members on
//     every node exactly once; `room:leave` on node 2 removes the user from presence as every
//     node sees it, and from the emits;
//   - a durable membership added through node 3 applies to the user's sockets on nodes 1 and 2
//     (and to a socket the user opens later); removed through node 1, it is gone everywhere;
//     the members API answers the same from every node.
//
//   - a `room:join` is answered once the node receives what is sent to the room, and a CONNECT
//     once it receives what is sent to the user and the token's rooms: an emit from another node
//     right after the answer arrives, every time.
//
// Room presence in Redis may trail a join by a moment, so presence checks wait for it; a server-
// API membership reaches other nodes' sockets after the API answers, so those tests wait until
// every node with a member is subscribed to `sb:room:{room}` (PUBSUB NUMSUB).

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { closeAll } from "./fixture.js";
import { connectUser, token, ack, api, assertStatus, uid, safeJson } from "./product-fixture.js";
import { startCluster, traceOf, eventually, sleep } from "./cluster-fixture.js";

const T = { timeout: 60_000 };
const SUITE = { timeout: 300_000 };
/** How long to keep listening after a delivery, to catch duplicates or strays. */
const QUIET_MS = 600;
const enc = encodeURIComponent;
const sorted = (xs) => [...xs].sort();

describe("cluster rooms", SUITE, () => {
  let c;
  before(async () => {
    c = await startCluster({ nodes: 3, name: "rooms" });
  });
  after(async () => {
    await c?.stop();
  });
  afterEach(() => closeAll());

  /** A socket of a new user on `node` whose token allows every room "doc:*" (not yet joined). */
  const docUser = (node, label) => {
    const user = uid(label);
    return connectUser(node, user, { token: token(user, { rooms: ["doc:*"] }), label: `${label}@${node.nodeId}` });
  };

  /** room:presence from `socket`: {users (sorted), sockets}. */
  const presence = async (socket, room) => {
    const p = await ack(socket, "room:presence", { room });
    assert.equal(p?.ok, true, `room:presence from ${socket.log.label}: ${safeJson(p)}`);
    assert.equal(p.room, room);
    return { users: sorted(p.users), sockets: p.sockets };
  };

  /** GET members at `node`, arrays sorted. */
  const members = async (node, room) => {
    const res = await api(node, "GET", `/api/v1/rooms/${enc(room)}/members`, { key: c.apiKey });
    assertStatus(res, 200, `GET members of ${room} at ${node.nodeId}`);
    return { ...res.json, users: sorted(res.json.users ?? []), members: sorted(res.json.members ?? []) };
  };

  /** Wait until `get()` deep-equals `expected` (bounded); fails with the last value seen. */
  const becomes = async (get, expected, what) => {
    let last;
    try {
      await eventually(async () => isDeepStrictEqual((last = await get()), expected), { timeout: 5_000, what });
    } catch (e) {
      throw new Error(`${e.message}\nlast:     ${safeJson(last)}\nexpected: ${safeJson(expected)}`);
    }
  };

  /** Wait until `n` nodes are subscribed to the room's channel. */
  const subscribed = (room, n) => {
    const ch = c.key(`sb:room:${room}`);
    return eventually(async () => (await c.redis.numsub(ch))[ch] === n, { timeout: 5_000, what: `${n} node(s) subscribed to ${ch}` });
  };

  /** `from` emits; each of `to` gets it exactly once, none of `notTo` gets it. */
  const assertEmit = async (from, room, to, notTo, all) => {
    const data = { n: uid("d") };
    assert.deepEqual(await ack(from, "room:emit", { room, data }), { ok: true }, `room:emit from ${from.log.label}`);
    const is = (m) => m?.data?.n === data.n;
    for (const s of to) {
      const [m] = await s.log.next("room:msg", { pred: is });
      assert.deepEqual(m, { room, from: from.authInfo.userId, data }, `${s.log.label}\n${traceOf(...all)}`);
    }
    await sleep(QUIET_MS);
    for (const s of to) assert.equal(s.log.count("room:msg", is), 1, `${s.log.label} got it exactly once\n${traceOf(...all)}`);
    for (const s of notTo) assert.equal(s.log.count("room:msg", is), 0, `${s.log.label} is not a member\n${traceOf(...all)}`);
  };

  test("room:join on nodes 1, 2 and 3 (claim pattern doc:*): room:presence from every node lists every member, room:emit reaches each once, room:leave removes the user everywhere", T, async () => {
    const [n1, n2, n3] = c.nodes;
    const room = `doc:${uid("spec")}`;
    const a = await docUser(n1, "ann");
    const b = await docUser(n2, "ben");
    const d = await docUser(n3, "dot");
    const idle = await docUser(n2, "idle"); // allowed to join, never joins
    const all = [a, b, d, idle];
    const [ua, ub, ud] = [a, b, d].map((s) => s.authInfo.userId);

    // The pattern allows doc:* only.
    const refused = await ack(a, "room:join", { room: `secret:${uid("x")}` });
    assert.equal(refused?.ok, false, safeJson(refused));
    assert.equal(refused.error?.code, "forbidden", safeJson(refused));

    for (const s of [a, b, d]) assert.deepEqual(await ack(s, "room:join", { room }), { ok: true }, `room:join from ${s.log.label}`);
    // No wait: the answers mean every node receives the room's events.
    await assertEmit(a, room, [a, b, d], [idle], all);

    // Presence is cluster-wide: each node's members see all three.
    const everyone = { users: sorted([ua, ub, ud]), sockets: 3 };
    for (const s of [a, b, d]) {
      await becomes(() => presence(s, room), everyone, `room:presence from ${s.log.label} lists ${everyone.users.join(", ")}`);
    }

    await assertEmit(b, room, [a, b, d], [idle], all);

    // ben leaves on node 2.
    assert.deepEqual(await ack(b, "room:leave", { room }), { ok: true });
    const rest = { users: sorted([ua, ud]), sockets: 2 };
    for (const s of [a, d]) {
      await becomes(() => presence(s, room), rest, `room:presence from ${s.log.label} without ${ub}`);
    }
    for (const node of c.nodes) {
      const m = await members(node, room);
      assert.deepEqual([m.users, m.sockets], [rest.users, 2], `members API at ${node.nodeId}: ${safeJson(m)}`);
    }
    const gone = await ack(b, "room:presence", { room });
    assert.equal(gone?.error?.code, "not_member", `room:presence after room:leave ${safeJson(gone)}`);
    await subscribed(room, 2); // node 2 holds no member any more
    await assertEmit(d, room, [a, d], [b, idle], all);
  });

  test("a durable membership added through node 3 applies to the user's sockets on nodes 1 and 2 (and later ones); the members API answers the same from every node", T, async () => {
    const [n1, n2, n3] = c.nodes;
    const room = uid("team"); // matches no claim pattern: only the API makes members
    const eve = uid("eve");
    const e1 = await connectUser(n1, eve, { device: "phone", label: "eve@node-1" });
    const e2 = await connectUser(n2, eve, { device: "laptop", transports: ["polling"], label: "eve@node-2" });
    const spk = uid("speaker");
    const s3 = await connectUser(n3, spk, { token: token(spk, { rooms: [room] }), label: "speaker@node-3" });
    const other = await connectUser(n1, uid("other"), { label: "other@node-1" });
    const all = [e1, e2, s3, other];

    const before = await ack(e1, "room:emit", { room, data: 0 });
    assert.equal(before?.error?.code, "not_member", `before the API join ${safeJson(before)}`);

    const add = await api(n3, "POST", `/api/v1/rooms/${enc(room)}/members`, { key: c.apiKey, body: { userId: eve } });
    assertStatus(add, 200, "add eve through node 3");
    assert.equal(add.json?.ok, true, add.text);

    const expected = { room, members: [eve], users: sorted([eve, spk]), sockets: 3 };
    await becomes(() => members(n3, room), expected, `members of ${room} at node-3 == ${safeJson(expected)}`);
    for (const node of c.nodes) assert.deepEqual(await members(node, room), expected, `members API at ${node.nodeId}`);
    assert.deepEqual(await presence(e1, room), { users: expected.users, sockets: 3 }, "room:presence from eve@node-1");
    assert.deepEqual(await presence(e2, room), { users: expected.users, sockets: 3 }, "room:presence from eve@node-2");

    await subscribed(room, 3);
    await assertEmit(s3, room, [e1, e2, s3], [other], all);
    await assertEmit(e2, room, [e1, e2, s3], [other], all);

    // A socket eve opens later, on node 2, is a member from the start.
    const e2b = await connectUser(n2, eve, { device: "tablet", label: "eve-tablet@node-2" });
    all.push(e2b);
    await eventually(async () => (await members(n1, room)).sockets === 4, { timeout: 5_000, what: "4 member sockets" });
    await assertEmit(s3, room, [e1, e2, e2b, s3], [other], all);
    const four = { room, members: [eve], users: sorted([eve, spk]), sockets: 4 };
    for (const node of c.nodes) assert.deepEqual(await members(node, room), four, `members API at ${node.nodeId}`);

    // Removed through node 1: gone on every node.
    assertStatus(await api(n1, "DELETE", `/api/v1/rooms/${enc(room)}/members/${enc(eve)}`, { key: c.apiKey }), 200, "remove eve through node 1");
    const after = { room, members: [], users: [spk], sockets: 1 };
    await becomes(() => members(n2, room), after, `members of ${room} at node-2 == ${safeJson(after)}`);
    for (const node of c.nodes) assert.deepEqual(await members(node, room), after, `members API at ${node.nodeId}`);
    await assertEmit(s3, room, [s3], [e1, e2, e2b, other], all);
    for (const s of [e1, e2, e2b]) {
      const r = await ack(s, "room:emit", { room, data: "still in?" });
      assert.equal(r?.error?.code, "not_member", `${s.log.label}: ${safeJson(r)}`);
    }
  });
  test("an emit from another node right after a room:join answer, or right after a CONNECT answer, always arrives", T, async () => {
    const [n1, n2] = c.nodes;
    const ROUNDS = 25;
    const sender = await docUser(n1, "sender");
    const lost = [];
    for (let i = 0; i < ROUNDS; i++) {
      // A fresh room each round: node 2 has never subscribed to it.
      const room = `doc:${uid("race")}`;
      const m = await docUser(n2, `joiner${i}`);
      assert.deepEqual(await ack(m, "room:join", { room }), { ok: true });
      assert.deepEqual(await ack(sender, "room:join", { room }), { ok: true });
      assert.deepEqual(await ack(sender, "room:emit", { room, data: i }), { ok: true });
      try {
        await m.log.next("room:msg", { pred: (p) => p?.room === room, timeout: 3_000 });
      } catch {
        lost.push(`join round ${i}`);
      }
      m.disconnect();
    }
    for (let i = 0; i < ROUNDS; i++) {
      // Connect on node 2 with a room in the token; the server API on node 1 emits to the room
      // and to the user the moment the CONNECT is answered.
      const room = uid("claimed");
      const user = uid(`claimer${i}`);
      const m = await connectUser(n2, user, { token: token(user, { rooms: [room] }), label: `claimer${i}@node-2` });
      const emit = (to, event) => api(n1, "POST", "/api/v1/emit", { key: c.apiKey, body: { to, event, data: i } });
      assertStatus(await emit({ room }, "to:room"), 202, "emit to the claimed room");
      assertStatus(await emit({ user }, "to:user"), 202, "emit to the user");
      for (const event of ["to:room", "to:user"]) {
        try {
          await m.log.next(event, { timeout: 3_000 });
        } catch {
          lost.push(`connect round ${i} (${event})`);
        }
      }
      m.disconnect();
    }
    assert.deepEqual(lost, [], `events lost right after an answer: ${lost.join(", ")}`);
  });
});
