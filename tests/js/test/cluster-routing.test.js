// Cluster mode: direct messages, room emits and server-API actions cross nodes through Redis and
// reach every target socket exactly once (DESIGN.md "Cross-node routing"; product-contract.md
// "Events" and "Server API", which apply in cluster mode too).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { connectUser, ack, api, assertStatus, uid, token, safeJson, withoutOffset } from "./product-fixture.js";
import { startCluster, withText, traceOf as traces, sleep } from "./cluster-fixture.js";
import { eventually } from "./fixture.js";

/** Per test; the suite gets the sum. */
const T = { timeout: 60_000 };
const SUITE = { timeout: 600_000 };
/** How long to keep listening after a first delivery, to catch duplicates. */
const DUP_WAIT_MS = 600;

async function cluster(t, opts) {
  const c = await startCluster({ name: "routing", ...opts });
  t.after(() => c.stop());
  return c;
}

describe("cluster routing", SUITE, () => {
  test("a DM from node 1 reaches the recipient's devices on nodes 2 and 3 once each; the sender's other device gets message:sent once", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2, n3] = c.nodes;
    const alice = uid("alice");
    const bob = uid("bob");
    const a1 = await connectUser(n1, alice, { device: "a-phone", label: "alice@n1" });
    const a2 = await connectUser(n2, alice, { device: "a-laptop", label: "alice@n2" });
    const b2 = await connectUser(n2, bob, { device: "b-phone", label: "bob@n2" });
    const b3 = await connectUser(n3, bob, { device: "b-laptop", label: "bob@n3" });
    for (const [s, n] of [[a1, n1], [a2, n2], [b2, n2], [b3, n3]]) {
      assert.equal(s.authInfo.serverInstance, n.nodeId, `authenticated.serverInstance ${safeJson(s.authInfo)}`);
    }

    const text = `hello-${Date.now()}`;
    const res = await ack(a1, "message:send", { to: bob, text });
    assert.equal(res?.ok, true, `message:send ack ${safeJson(res)}`);
    assert.equal(typeof res.messageId, "number");

    const expected = { messageId: res.messageId, from: alice, to: bob, text, createdAt: res.createdAt };
    for (const s of [b2, b3]) {
      const [m] = await s.log.next("message:received", { pred: withText(text), timeout: 5_000 });
      assert.deepEqual(m, expected, `${s.log.label} message:received`);
    }
    const [sent] = await a2.log.next("message:sent", { pred: withText(text), timeout: 5_000 });
    assert.deepEqual(sent, expected, "alice's other device gets message:sent with the same fields");

    await sleep(DUP_WAIT_MS);
    const all = traces(a1, a2, b2, b3);
    assert.equal(b2.log.count("message:received"), 1, `bob@n2 must get the DM exactly once\n${all}`);
    assert.equal(b3.log.count("message:received"), 1, `bob@n3 must get the DM exactly once\n${all}`);
    assert.equal(a2.log.count("message:sent"), 1, `alice@n2 must get message:sent exactly once\n${all}`);
    assert.equal(a1.log.count("message:sent"), 0, `the sending socket gets no message:sent\n${all}`);
    assert.equal(a1.log.count("message:received"), 0, `the sending socket gets no message:received\n${all}`);
    assert.equal(a2.log.count("message:received"), 0, `alice's other device gets no message:received\n${all}`);
    assert.equal(b2.log.count("message:sent") + b3.log.count("message:sent"), 0, `bob gets no message:sent\n${all}`);
  });

  test("a recipient that also has a socket on the sender's node gets it once there too (no echo of the node's own publication)", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2] = c.nodes;
    const alice = uid("alice");
    const bob = uid("bob");
    const a1 = await connectUser(n1, alice, { label: "alice@n1" });
    const a1b = await connectUser(n1, alice, { label: "alice#2@n1" });
    const b1 = await connectUser(n1, bob, { label: "bob@n1" });
    const b2 = await connectUser(n2, bob, { label: "bob@n2" });
    const texts = [];
    for (let i = 0; i < 3; i += 1) {
      const text = `m${i}-${Date.now()}`;
      texts.push(text);
      const res = await ack(a1, "message:send", { to: bob, text });
      assert.equal(res?.ok, true, safeJson(res));
    }
    for (const s of [b1, b2]) {
      for (const text of texts) await s.log.next("message:received", { pred: withText(text) });
    }
    for (const text of texts) await a1b.log.next("message:sent", { pred: withText(text) });
    await sleep(DUP_WAIT_MS);
    const all = traces(a1, a1b, b1, b2);
    assert.equal(b1.log.count("message:received"), 3, all);
    assert.equal(b2.log.count("message:received"), 3, all);
    assert.equal(a1b.log.count("message:sent"), 3, all);
    assert.equal(a1.log.count("message:sent"), 0, all);
    // Order is kept per sender: the three arrive in send order on both nodes.
    assert.deepEqual(b1.log.all("message:received").map(([m]) => m.text), texts);
    assert.deepEqual(b2.log.all("message:received").map(([m]) => m.text), texts);
  });

  test("a socket receives cross-node DMs as soon as it is authenticated (no subscription gap)", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2] = c.nodes;
    const rounds = 15;
    const missed = [];
    for (let i = 0; i < rounds; i += 1) {
      const sender = uid("sender");
      const rcpt = uid("rcpt");
      const s = await connectUser(n1, sender, { label: `sender${i}@n1` });
      const r = await connectUser(n2, rcpt, { label: `rcpt${i}@n2` });
      // `authenticated` arrived: r is ready. Send at once, from the other node.
      const text = `first-${i}`;
      const res = await ack(s, "message:send", { to: rcpt, text });
      assert.equal(res?.ok, true, safeJson(res));
      try {
        await r.log.next("message:received", { pred: withText(text), timeout: 2_000 });
      } catch {
        missed.push(i);
      }
      s.disconnect();
      r.disconnect();
    }
    assert.deepEqual(missed, [], `DMs sent right after the recipient's "authenticated" were lost in rounds ${missed.join(",")} of ${rounds}`);
  });

  test("room:emit from node 1 reaches every member on nodes 1, 2 and 3 exactly once (sender included); a non-member gets nothing", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2, n3] = c.nodes;
    const room = uid("room");
    const other = uid("other-room");
    const member = (n, user, label, rooms = [room]) => connectUser(n, user, { token: token(user, { rooms }), label });
    const m1 = await member(n1, uid("m1"), "m1@n1");
    const m2 = await member(n2, uid("m2"), "m2@n2");
    const m2b = await member(n2, uid("m2b"), "m2b@n2", [other, room]);
    const m3 = await member(n3, uid("m3"), "m3@n3");
    const outsider = await member(n2, uid("x"), "outsider@n2", [other]);
    const plain = await connectUser(n3, uid("plain"), { label: "plain@n3" });

    const data = { n: 1, at: Date.now() };
    const res = await ack(m1, "room:emit", { room, data });
    assert.deepEqual(res, { ok: true });
    const expected = { room, from: m1.authInfo.userId, data };
    for (const s of [m1, m2, m2b, m3]) {
      const [msg] = await s.log.next("room:msg", { timeout: 5_000 });
      assert.deepEqual(msg, expected, `${s.log.label} room:msg`);
    }
    await sleep(DUP_WAIT_MS);
    const all = traces(m1, m2, m2b, m3, outsider, plain);
    for (const s of [m1, m2, m2b, m3]) assert.equal(s.log.count("room:msg"), 1, `${s.log.label} exactly once\n${all}`);
    assert.equal(outsider.log.count("room:msg"), 0, `member of another room only: nothing\n${all}`);
    assert.equal(plain.log.count("room:msg"), 0, `no rooms: nothing\n${all}`);

    // The other room reaches only its own members, from node 2.
    const res2 = await ack(outsider, "room:emit", { room: other, data: "o" });
    assert.deepEqual(res2, { ok: true });
    await outsider.log.next("room:msg", { pred: (m) => m.room === other });
    await m2b.log.next("room:msg", { pred: (m) => m.room === other });
    await sleep(DUP_WAIT_MS);
    for (const s of [m1, m2, m3, plain]) assert.equal(s.log.count("room:msg", (m) => m.room === other), 0, traces(m1, m2, m3, plain));
  });

  test("server API at a node holding none of the targets: emit to a user, a room, everyone", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2, n3] = c.nodes;
    const eve = uid("eve");
    const room = uid("room");
    const e2 = await connectUser(n2, eve, { device: "e-phone", label: "eve@n2" });
    const e3 = await connectUser(n3, eve, { device: "e-laptop", label: "eve@n3" });
    const r2 = await connectUser(n2, uid("r2"), { token: token(uid("r2u"), { rooms: [room] }), label: "member@n2" });
    const r3 = await connectUser(n3, uid("r3"), { token: token(uid("r3u"), { rooms: [room] }), label: "member@n3" });
    const o1 = await connectUser(n1, uid("o1"), { label: "other@n1" });
    const o3 = await connectUser(n3, uid("o3"), { label: "other@n3" });
    const everyone = [e2, e3, r2, r3, o1, o3];
    const all = () => traces(...everyone);
    const emit = (body) => api(n1, "POST", "/api/v1/emit", { key: c.apiKey, body });

    // {user}
    assertStatus(await emit({ to: { user: eve }, event: "invoice:paid", data: { id: 42 } }), 202, "emit to user");
    for (const s of [e2, e3]) assert.deepEqual(withoutOffset(await s.log.next("invoice:paid")), [{ id: 42 }]);
    await sleep(DUP_WAIT_MS);
    for (const s of everyone) {
      assert.equal(s.log.count("invoice:paid"), [e2, e3].includes(s) ? 1 : 0, `${s.log.label}: emit {user:eve}\n${all()}`);
    }

    // {room}
    assertStatus(await emit({ to: { room }, event: "room:news", data: "headline" }), 202, "emit to room");
    for (const s of [r2, r3]) assert.deepEqual(withoutOffset(await s.log.next("room:news")), ["headline"]);
    await sleep(DUP_WAIT_MS);
    for (const s of everyone) {
      assert.equal(s.log.count("room:news"), [r2, r3].includes(s) ? 1 : 0, `${s.log.label}: emit {room}\n${all()}`);
    }

    // {all:true}
    assertStatus(await emit({ to: { all: true }, event: "announce", data: { v: 1 } }), 202, "emit to all");
    for (const s of everyone) assert.deepEqual(withoutOffset(await s.log.next("announce")), [{ v: 1 }], s.log.label);
    await sleep(DUP_WAIT_MS);
    for (const s of everyone) assert.equal(s.log.count("announce"), 1, `${s.log.label}: emit {all} exactly once\n${all()}`);
  });

  test("server API at node 1: room membership and disconnect take effect for the user's sockets on nodes 2 and 3", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2, n3] = c.nodes;
    const eve = uid("eve");
    const room = uid("vip");
    const e2 = await connectUser(n2, eve, { device: "e-phone", label: "eve@n2" });
    const e3 = await connectUser(n3, eve, { device: "e-laptop", label: "eve@n3" });
    const watcher = await connectUser(n1, uid("watcher"), { label: "watcher@n1" });
    const bystander = await connectUser(n2, uid("bystander"), { label: "bystander@n2" });
    const all = () => traces(e2, e3, watcher, bystander);

    // Before: eve is not a member.
    const before = await ack(e2, "room:emit", { room, data: 0 });
    assert.equal(before?.ok, false, safeJson(before));
    assert.equal(before.error?.code, "not_member");

    assertStatus(await api(n1, "POST", `/api/v1/rooms/${room}/members`, { key: c.apiKey, body: { userId: eve } }), 200, "add member");
    // The join reaches nodes 2 and 3 asynchronously; poll with room:emit from each socket until
    // it is accepted (bounded), then check deliveries.
    for (const s of [e2, e3]) {
      const deadline = Date.now() + 3_000;
      for (;;) {
        const r = await ack(s, "room:emit", { room, data: `probe-${s.log.label}` });
        if (r?.ok === true) break;
        assert.equal(r?.error?.code, "not_member", safeJson(r));
        assert.ok(Date.now() < deadline, `${s.log.label} never became a member of ${room} after the API join at node 1\n${all()}`);
        await sleep(100);
      }
    }
    for (const s of [e2, e3]) s.log.drain();
    assertStatus(await api(n1, "POST", "/api/v1/emit", { key: c.apiKey, body: { to: { room }, event: "vip:news", data: 1 } }), 202, "emit to room");
    for (const s of [e2, e3]) await s.log.next("vip:news");
    const res = await ack(e3, "room:emit", { room, data: "from-e3" });
    assert.deepEqual(res, { ok: true });
    for (const s of [e2, e3]) await s.log.next("room:msg", { pred: (m) => m.data === "from-e3" });
    await sleep(DUP_WAIT_MS);
    for (const s of [e2, e3]) {
      assert.equal(s.log.count("vip:news"), 1, all());
      assert.equal(s.log.count("room:msg", (m) => m.data === "from-e3"), 1, all());
    }
    assert.equal(bystander.log.count("vip:news") + watcher.log.count("vip:news"), 0, all());

    // Leave through node 1 as well.
    assertStatus(await api(n1, "DELETE", `/api/v1/rooms/${room}/members/${eve}`, { key: c.apiKey }), 200, "remove member");
    for (const s of [e2, e3]) {
      const deadline = Date.now() + 3_000;
      for (;;) {
        const r = await ack(s, "room:emit", { room, data: "after-leave" });
        if (r?.ok === false && r.error?.code === "not_member") break;
        assert.ok(Date.now() < deadline, `${s.log.label} still a member of ${room} after the API removal at node 1: ${safeJson(r)}\n${all()}`);
        await sleep(100);
      }
    }
    await sleep(300);
    for (const s of [e2, e3]) s.log.drain();
    assertStatus(await api(n1, "POST", "/api/v1/emit", { key: c.apiKey, body: { to: { room }, event: "vip:late", data: 2 } }), 202);
    await sleep(DUP_WAIT_MS);
    assert.equal(e2.log.count("vip:late") + e3.log.count("vip:late"), 0, `no longer members\n${all()}`);

    // Disconnect through node 1.
    await ack(watcher, "presence:subscribe", { userIds: [eve] });
    const res2 = await api(n1, "POST", `/api/v1/users/${eve}/disconnect`, { key: c.apiKey });
    assertStatus(res2, 200, "disconnect user");
    assert.equal(res2.json?.ok, true, res2.text);
    for (const s of [e2, e3]) {
      const [reason] = await s.log.next("disconnect", { timeout: 5_000, failOn: [] });
      assert.equal(reason, "io server disconnect", `${s.log.label}\n${all()}`);
    }
    const [off] = await watcher.log.next("friend:offline", { timeout: 5_000 });
    assert.deepEqual(off, { userId: eve });
    assert.equal(bystander.connected, true, "other users on node 2 stay connected");
    const pres = await api(n1, "GET", `/api/v1/presence?userIds=${eve}`, { key: c.apiKey });
    assert.deepEqual(pres.json, { statuses: { [eve]: "offline" } });
  });

  test("message ids are unique across nodes and message:sync sees messages sent through any node", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2, n3] = c.nodes;
    const alice = uid("alice");
    const bob = uid("bob");
    const a1 = await connectUser(n1, alice, { label: "alice@n1" });
    const a2 = await connectUser(n2, alice, { label: "alice@n2" });
    const b3 = await connectUser(n3, bob, { label: "bob@n3" });
    const r1 = await ack(a1, "message:send", { to: bob, text: "via-n1" });
    const r2 = await ack(a2, "message:send", { to: bob, text: "via-n2" });
    assert.equal(r1?.ok, true, safeJson(r1));
    assert.equal(r2?.ok, true, safeJson(r2));
    assert.notEqual(r1.messageId, r2.messageId, `two different messages got the same messageId: ${safeJson([r1, r2])}`);
    const expected = [
      { messageId: r1.messageId, from: alice, to: bob, text: "via-n1", createdAt: r1.createdAt },
      { messageId: r2.messageId, from: alice, to: bob, text: "via-n2", createdAt: r2.createdAt },
    ].sort((x, y) => x.messageId - y.messageId);
    // The recipient syncs on node 3, which stored neither message.
    const sync = await ack(b3, "message:sync", { after: 0 });
    assert.deepEqual(sync, { ok: true, messages: expected, hasMore: false }, "message:sync on node 3");
    const sync1 = await ack(a1, "message:sync", { after: 0 });
    assert.deepEqual(sync1, { ok: true, messages: expected, hasMore: false }, "message:sync on node 1");
  });

  // Documented semantics: the API's effects are cluster-wide, while its counts and the room
  // member list describe the node that served the request (no cross-node request/response yet).
  test("server API effects reach other nodes; counts and member lists describe the serving node", T, async (t) => {
    const c = await cluster(t);
    const [n1, n2, n3] = c.nodes;
    const eve = uid("eve");
    const room = uid("team");
    const e2 = await connectUser(n2, eve, { device: "e-phone", label: "eve@n2" });
    const e3 = await connectUser(n3, eve, { device: "e-laptop", label: "eve@n3" });
    const speaker = uid("speaker");
    const sp = await connectUser(n1, speaker, { token: token(speaker, { rooms: [room] }), label: "sp@n1" });

    const join = await api(n1, "POST", `/api/v1/rooms/${room}/members`, { key: c.apiKey, body: { userId: eve } });
    assertStatus(join, 200);
    assert.deepEqual(join.json, { ok: true, sockets: 0 }, "node 1 holds none of eve's sockets");
    // Members are listed cluster-wide, whichever node answers: eve's two sockets and the speaker's.
    const here = await api(n2, "GET", `/api/v1/rooms/${room}/members`, { key: c.apiKey });
    await eventually(async () => {
      const r = await api(n2, "GET", `/api/v1/rooms/${room}/members`, { key: c.apiKey });
      return r.json?.sockets === 3 && safeJson(r.json.users) === safeJson([eve, speaker].sort()) &&
        safeJson(r.json.members) === safeJson([eve]);
    }, { what: `node 2 lists eve and the speaker in ${room} (first answer ${here.text})` });

    // The membership added through node 1 is real on nodes 2 and 3.
    sp.emit("room:emit", { room, data: "hi" });
    const [[m2], [m3]] = await Promise.all([e2.log.next("room:msg"), e3.log.next("room:msg")]);
    assert.deepEqual(m2, { room, from: speaker, data: "hi" });
    assert.deepEqual(m3, { room, from: speaker, data: "hi" });

    const disc = await api(n1, "POST", `/api/v1/users/${eve}/disconnect`, { key: c.apiKey });
    assertStatus(disc, 200);
    assert.deepEqual(disc.json, { ok: true, disconnected: 0 }, "node 1 holds none of eve's sockets");
    const [[r2], [r3]] = await Promise.all([
      e2.log.next("disconnect", { failOn: [] }),
      e3.log.next("disconnect", { failOn: [] }),
    ]);
    assert.equal(r2, "io server disconnect");
    assert.equal(r3, "io server disconnect");
  });
});
