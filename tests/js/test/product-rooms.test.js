// Product mode: rooms from the token's `rooms` claim, room:emit, and membership changes
// through the server API (product-contract.md "Auth at CONNECT", "Events", "Server API").

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll } from "./fixture.js";
import { startProductNode, connectUser, token, ack, api, assertStatus, uid, safeJson, traces, assertDmWorks, eventually } from "./product-fixture.js";

const T = { timeout: 30_000 };
const KEY = "rooms-api-key-0123456789abcdef-rooms";
let node;
before(async () => {
  node = await startProductNode({ name: "rooms", nodeId: "rooms-node", flags: ["--api-key", KEY] });
});
after(async () => {
  closeAll();
  await node?.stop();
});
afterEach(() => closeAll());

const withRooms = (user, rooms) => token(user, { rooms });
const enc = encodeURIComponent;

describe("rooms", T, () => {
  test('token claim rooms:["r1"] → room:emit reaches every member socket (sender included) as room:msg {room, from, data}; non-members get nothing', async () => {
    const r1 = uid("r1");
    const u1 = uid("u1");
    const u2 = uid("u2");
    const u3 = uid("u3");
    const a = await connectUser(node, u1, { device: "a", token: withRooms(u1, [r1]) });
    const a2 = await connectUser(node, u1, { device: "b", token: withRooms(u1, [r1]), transports: ["polling"] });
    const b = await connectUser(node, u2, { token: withRooms(u2, ["other", r1]) });
    const outsider = await connectUser(node, u3, { token: withRooms(u3, ["other"]) });
    const data = { text: "hello room", n: [1, 2, 3] };
    a.emit("room:emit", { room: r1, data });
    const got = await Promise.all([a, a2, b].map((s) => s.log.next("room:msg")));
    for (const [m] of got) assert.deepEqual(m, { room: r1, from: u1, data }, traces(a.log, a2.log, b.log));
    await outsider.log.none("room:msg", 400, { why: "not a member of r1" });
    for (const s of [a, a2, b]) assert.equal(s.log.count("room:msg"), 1, s.log.trace());
  });

  test("room:emit with an ack → ack ok; data may be any JSON value", async () => {
    const r = uid("room");
    const u = uid("u");
    const s = await connectUser(node, u, { token: withRooms(u, [r]) });
    const res = await ack(s, "room:emit", { room: r, data: "just a string" });
    assert.equal(res?.ok, true, safeJson(res));
    const [m] = await s.log.next("room:msg");
    assert.deepEqual(m, { room: r, from: u, data: "just a string" });
  });

  test("non-member room:emit → error not_member (event; ack instead when asked); nothing delivered; connection still works", async () => {
    const r = uid("closed");
    const member = uid("member");
    const intruder = uid("intruder");
    const m = await connectUser(node, member, { token: withRooms(member, [r]) });
    const x = await connectUser(node, intruder, { token: withRooms(intruder, []) });
    x.emit("room:emit", { room: r, data: "let me in" });
    const [err] = await x.log.next("error");
    assert.equal(err?.code, "not_member", safeJson(err));
    assert.equal(typeof err.message, "string");
    const res = await ack(x, "room:emit", { room: r, data: "let me in" });
    assert.equal(res?.ok, false, safeJson(res));
    assert.equal(res.error?.code, "not_member", safeJson(res));
    await x.log.none("error", 300, { why: "the ack replaced the event" });
    await m.log.none("room:msg", 0);
    await assertDmWorks(x, intruder, m, member);
  });

  test("server API adds a user to r2 → all their current sockets get room:msg for r2; removal stops it", async () => {
    const r2 = uid("r2");
    const speaker = uid("speaker");
    const joiner = uid("joiner");
    const sp = await connectUser(node, speaker, { token: withRooms(speaker, [r2]) });
    const j1 = await connectUser(node, joiner, { device: "1" });
    const j2 = await connectUser(node, joiner, { device: "2", transports: ["polling"] });

    sp.emit("room:emit", { room: r2, data: "before" });
    await sp.log.next("room:msg");
    await j1.log.none("room:msg", 300, { why: "not added yet" });
    await j2.log.none("room:msg", 0, { why: "not added yet" });

    const add = await api(node, "POST", `/api/v1/rooms/${enc(r2)}/members`, { key: KEY, body: { userId: joiner } });
    assertStatus(add, 200, "add member");
    assert.deepEqual(add.json, { ok: true, sockets: 2 });

    sp.emit("room:emit", { room: r2, data: "after add" });
    const [[m1], [m2]] = await Promise.all([j1.log.next("room:msg"), j2.log.next("room:msg")]);
    assert.deepEqual(m1, { room: r2, from: speaker, data: "after add" });
    assert.deepEqual(m2, { room: r2, from: speaker, data: "after add" });

    // the joiner is now a member and may emit too
    const r = await ack(j1, "room:emit", { room: r2, data: "joiner speaks" });
    assert.equal(r?.ok, true, safeJson(r));
    // every member socket gets it, the sender's included
    for (const s of [sp, j1, j2]) {
      const [heard] = await s.log.next("room:msg", { pred: (m) => m?.data === "joiner speaks" });
      assert.deepEqual(heard, { room: r2, from: joiner, data: "joiner speaks" });
    }

    const del = await api(node, "DELETE", `/api/v1/rooms/${enc(r2)}/members/${enc(joiner)}`, { key: KEY });
    assertStatus(del, 200, "remove member");
    assert.deepEqual(del.json, { ok: true, sockets: 2 });

    sp.emit("room:emit", { room: r2, data: "after remove" });
    await sp.log.next("room:msg", { pred: (m) => m?.data === "after remove" });
    await j1.log.none("room:msg", 400, { why: "removed from r2" });
    await j2.log.none("room:msg", 0, { why: "removed from r2" });
    const again = await ack(j1, "room:emit", { room: r2, data: "still here?" });
    assert.equal(again?.error?.code, "not_member", safeJson(again));
  });

  test("the API can also remove a user from a room they joined through the token claim", async () => {
    const r = uid("claimroom");
    const u = uid("u");
    const v = uid("v");
    const su = await connectUser(node, u, { token: withRooms(u, [r]) });
    const sv = await connectUser(node, v, { token: withRooms(v, [r]) });
    const del = await api(node, "DELETE", `/api/v1/rooms/${enc(r)}/members/${enc(v)}`, { key: KEY });
    assertStatus(del, 200);
    assert.deepEqual(del.json, { ok: true, sockets: 1 });
    su.emit("room:emit", { room: r, data: 1 });
    await su.log.next("room:msg");
    await sv.log.none("room:msg", 400);
  });

  test("GET members lists the users of a room (claim and API members) and the socket count; leaving updates it", async () => {
    const r = uid("listroom");
    const u = uid("u");
    const v = uid("v");
    const u1 = await connectUser(node, u, { device: "1", token: withRooms(u, [r]) });
    await connectUser(node, u, { device: "2", token: withRooms(u, [r]) });
    await connectUser(node, v);
    const add = await api(node, "POST", `/api/v1/rooms/${enc(r)}/members`, { key: KEY, body: { userId: v } });
    assert.deepEqual(add.json, { ok: true, sockets: 1 });
    const list = await api(node, "GET", `/api/v1/rooms/${enc(r)}/members`, { key: KEY });
    assertStatus(list, 200);
    assert.equal(list.json?.room, r, list.text);
    assert.deepEqual([...list.json.users].sort(), [u, v].sort(), list.text);
    assert.equal(list.json.sockets, 3, list.text);
    u1.disconnect();
    await eventually(
      async () => {
        const l = await api(node, "GET", `/api/v1/rooms/${enc(r)}/members`, { key: KEY });
        return l.json?.sockets === 2 && [...l.json.users].sort().join() === [u, v].sort().join();
      },
      { timeout: 3_000, what: "members after one socket left: 2 sockets, same users" },
    );
  });
});
