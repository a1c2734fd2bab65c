// Connection state recovery with the stock socket.io-client (DESIGN.md "Connection state
// recovery"): the CONNECT answer carries a `pid`, every recoverable event its offset as the last
// argument; a client whose transport dies (the engine closed under it, not a clean disconnect)
// reconnects with `{pid, offset}` and gets `recovered === true`, its socket id and rooms back,
// and every recoverable event it missed exactly once, in order, before the live ones.
//
// A sender keeps emitting numbered `room:emit`s (to a room the member joined with `room:join`)
// and the server API numbered emits to the member's user the whole time: before the transport
// dies, while the member is away, and after it is back. The member must see each series without
// a gap or a duplicate, in order. While it is away it also misses a direct message, a watched
// user coming online, volatile `room:emit`s and `signal`s; the first two come back, the volatile
// ones never do.
//
// Where: on one node (websocket, and polling); in a cluster, coming back on another node, and
// coming back on another node after the first was SIGKILLed. Not recovered: after the window, with
// another user's pid (the JWT decides who connects), and with recovery off.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll } from "./fixture.js";
import {
  startProductNode,
  connectUser,
  userSocket,
  connectAuthed,
  token,
  ack,
  api,
  assertStatus,
  uid,
  safeJson,
  withoutOffset,
  OFFSET,
  sleep,
  eventually,
} from "./product-fixture.js";
import { startCluster } from "./cluster-fixture.js";

const KEY = "recovery-tests-api-key-0123456789abcdef";
const T = { timeout: 60_000 };
const SUITE = { timeout: 300_000 };
/** Pause between two sends of the background senders. */
const TICK_MS = 15;

/** Each numbered series arrives without a gap or duplicate, in order, ending at `last`. */
function assertSeries(seen, last, what, trace) {
  const want = Array.from({ length: last }, (_, i) => i + 1);
  assert.deepEqual(seen, want, `${what}: every one exactly once, in order\n${trace()}`);
}

/**
 * The member's side of one scenario: `memberNode` is where it connects first; `apiNode` and
 * `senderNode` are where the emits come from; `away()` kills the member's transport (and may do
 * more, e.g. SIGKILL its node) and returns the node to come back to.
 */
async function lossless({ memberNode, senderNode, apiNode, apiKey, transports = ["websocket"], away }) {
  const room = `doc:${uid("recover")}`;
  const member = uid("member");
  const sender = uid("sender");
  const friend = uid("friend");
  const claim = (u) => token(u, { rooms: ["doc:*"] });
  const m = userSocket(memberNode, member, { token: claim(member), transports, label: "member" });
  m.authInfo = await connectAuthed(m);
  const s = await connectUser(senderNode, sender, { token: claim(sender), label: "sender" });
  const trace = () => `${m.log.trace()}\n${s.log.trace()}`;

  // Recovery is on: a pid, and offsets on what the member receives.
  assert.equal(typeof m._pid, "string", "the CONNECT answer carries a pid");
  assert.deepEqual(await ack(m, "room:join", { room }), { ok: true });
  assert.deepEqual(await ack(s, "room:join", { room }), { ok: true });
  const watched = await ack(m, "presence:subscribe", { userIds: [friend] });
  assert.equal(watched?.ok, true, safeJson(watched));
  const firstId = m.id;

  // What the member receives, by series.
  const rooms = [];
  const notices = [];
  const volatile = [];
  const signals = [];
  const bad = [];
  m.on("room:msg", (msg, offset) => {
    if (!OFFSET.test(String(offset))) bad.push(["room:msg", msg, offset]);
    if (msg?.data?.volatile) volatile.push(msg.data.v);
    else rooms.push(msg.data.n);
  });
  m.on("notice", (data, offset) => {
    if (!OFFSET.test(String(offset))) bad.push(["notice", data, offset]);
    notices.push(data.k);
  });
  m.on("signal", (p) => signals.push(p));

  // Senders that run the whole time; each stops at its first failure (recorded) or when told.
  let n = 0;
  let k = 0;
  let sending = true;
  const failures = [];
  const loop = async (step) => {
    try {
      while (sending) {
        await step();
        await sleep(TICK_MS);
      }
    } catch (e) {
      failures.push(e.message);
    }
  };
  const roomLoop = loop(async () => {
    n += 1;
    const res = await ack(s, "room:emit", { room, data: { n } });
    if (res?.ok !== true) throw new Error(`room:emit ${n}: ${safeJson(res)}`);
  });
  const apiLoop = loop(async () => {
    k += 1;
    const res = await api(apiNode, "POST", "/api/v1/emit", { key: apiKey, body: { to: { user: member }, event: "notice", data: { k } } });
    if (res.status !== 202) throw new Error(`api emit ${k}: ${res.status} ${res.text}`);
  });
  let dm;
  try {
    await eventually(() => rooms.length >= 5 && notices.length >= 5, { timeout: 5_000, what: "live events before the cut" });

    // The transport dies under the client.
    const gone = m.log.next("disconnect", { failOn: [] });
    const back = await away(m);
    const [reason] = await gone;
    // "forced close": the engine closed under the socket; "transport close/error": the node died.
    assert.ok(["forced close", "transport close", "transport error"].includes(reason), `the client saw its transport die (${reason})\n${trace()}`);

    // Missed while away: a direct message, a watched user coming online, volatile events.
    dm = await ack(s, "message:send", { to: member, text: "while you were away" });
    assert.equal(dm?.ok, true, safeJson(dm));
    await connectUser(senderNode, friend, { label: "friend" });
    for (let v = 1; v <= 3; v++) {
      const res = await ack(s, "room:emit", { room, data: { volatile: true, v }, volatile: true });
      assert.equal(res?.ok, true, safeJson(res));
    }
    const sig = await ack(s, "signal", { to: member, data: { while: "away" } });
    assert.equal(sig?.ok, true, safeJson(sig));
    await sleep(300);

    // Back, wherever `away` says.
    m.io.uri = back.url;
    const again = m.log.next("connect", { timeout: 10_000, failOn: ["connect_error"] });
    m.connect();
    await again;
    const [hello] = await m.log.next("authenticated");
    assert.equal(m.recovered, true, `socket.recovered\n${trace()}`);
    assert.equal(hello.recovered, true, `authenticated says recovered: ${safeJson(hello)}`);
    assert.equal(m.id, firstId, "the recovered socket keeps its id");

    // Live again for a while.
    const cut = n;
    await eventually(() => rooms.length > 0 && rooms.at(-1) > cut + 5, { timeout: 10_000, what: "live room events after the recovery" });
  } finally {
    sending = false;
    await Promise.all([roomLoop, apiLoop]);
  }
  assert.deepEqual(failures, [], "every send was accepted");
  await eventually(() => rooms.at(-1) === n && notices.at(-1) === k, { timeout: 10_000, what: `room event ${n} and notice ${k}` });
  await sleep(300);
  assert.deepEqual(bad, [], "every recoverable event carries its offset last");
  assertSeries(rooms, n, "room:emit (the member's room:join came back with it)", trace);
  assertSeries(notices, k, "server-API emits to the member", trace);
  const [received] = await m.log.next("message:received", { pred: (msg) => msg?.text === "while you were away" });
  assert.equal(received.messageId, dm.messageId);
  assert.equal(m.log.count("message:received", (msg) => msg?.text === "while you were away"), 1, "the direct message once");
  const [online] = await m.log.next("friend:online", { pred: (p) => p?.userId === friend });
  assert.deepEqual(online, { userId: friend });
  assert.deepEqual(volatile, [], `volatile room:emit is never replayed\n${trace()}`);
  assert.deepEqual(signals, [], `signal is volatile: never replayed\n${trace()}`);
}

describe("connection state recovery, one node", SUITE, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "recovery", nodeId: "recovery-node", flags: ["--api-key", KEY] });
  });
  after(async () => {
    await node?.stop();
  });
  afterEach(() => closeAll());

  for (const transports of [["websocket"], ["polling"]]) {
    test(`${transports[0]}: transport killed, back on the same node: recovered, every missed event once and in order, volatile ones never`, T, async () => {
      await lossless({
        memberNode: node,
        senderNode: node,
        apiNode: node,
        apiKey: KEY,
        transports,
        away: async (m) => {
          m.io.engine.close();
          return node;
        },
      });
    });
  }

  test("another user's pid recovers nothing: a new socket of the token's user, without the other's rooms", T, async () => {
    const owner = uid("owner");
    const thief = uid("thief");
    const room = `doc:${uid("private")}`;
    const o = await connectUser(node, owner, { token: token(owner, { rooms: ["doc:*"] }), label: "owner" });
    assert.deepEqual(await ack(o, "room:join", { room }), { ok: true });
    // The client sends its pid with the offset of the last event it got: it needs one.
    assert.deepEqual(await ack(o, "room:emit", { room, data: "hello" }), { ok: true });
    await o.log.next("room:msg");
    const pid = o._pid;
    const ownerId = o.id;
    assert.equal(typeof pid, "string");
    o.io.engine.close();
    await o.log.next("disconnect", { failOn: [] });

    const t = userSocket(node, thief, { auth: { pid, offset: "0-0" }, label: "thief" });
    const hello = await connectAuthed(t);
    assert.equal(t.recovered, false, "not recovered with another user's pid");
    assert.equal(hello.userId, thief);
    assert.notEqual(t.id, ownerId, "a new socket id");
    const r = await ack(t, "room:emit", { room, data: "mine now?" });
    assert.equal(r?.error?.code, "not_member", `the owner's room did not come along: ${safeJson(r)}`);

    // The owner's state was not consumed by the attempt: the owner still recovers.
    const again = o.log.next("connect");
    o.connect();
    await again;
    assert.equal(o.recovered, true, "the owner still recovers its own session");
    assert.equal(o.id, ownerId);
  });

  test("an unknown pid or a malformed offset: a normal new session, never an error", T, async () => {
    for (const auth of [{ pid: "no-such-pid", offset: "1-1" }, { pid: "x", offset: "not-an-offset" }, { pid: 42, offset: [] }]) {
      const u = uid("stranger");
      const s = userSocket(node, u, { auth, label: `stranger ${safeJson(auth)}` });
      const hello = await connectAuthed(s);
      assert.equal(s.recovered, false, safeJson(auth));
      assert.equal(hello.userId, u);
      assert.equal(typeof s._pid, "string", "a fresh pid to recover next time");
      s.disconnect();
    }
  });
});

describe("connection state recovery, window and off", SUITE, () => {
  const nodes = [];
  after(async () => {
    for (const n of nodes) await n.stop();
  });
  afterEach(() => closeAll());

  test("past SWITCHBOARD_RECOVERY_SECS: not recovered, a new socket, nothing replayed", T, async () => {
    const node = await startProductNode({ name: "recovery-window", nodeId: "window-node", flags: ["--recovery-secs", "1", "--api-key", KEY] });
    nodes.push(node);
    const u = uid("late");
    const m = await connectUser(node, u, { label: "late" });
    const firstId = m.id;
    m.io.engine.close();
    await m.log.next("disconnect", { failOn: [] });
    assertStatus(await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { user: u }, event: "notice", data: 1 } }), 202);
    await sleep(2_500);
    const back = m.log.next("connect");
    m.connect();
    await back;
    await m.log.next("authenticated");
    assert.equal(m.recovered, false, "the window has passed");
    assert.notEqual(m.id, firstId, "a new socket id");
    await m.log.none("notice", 300, { why: "nothing is replayed into a new session" });
  });

  test("SWITCHBOARD_RECOVERY_SECS=0: no pid, no offsets, no recovery", T, async () => {
    const node = await startProductNode({ name: "recovery-off", nodeId: "off-node", flags: ["--recovery-secs", "0", "--api-key", KEY] });
    nodes.push(node);
    const u = uid("plain");
    const m = await connectUser(node, u, { label: "plain" });
    assert.equal(m._pid, undefined, "no pid in the CONNECT answer");
    const args = [];
    m.on("notice", (...a) => args.push(a));
    assertStatus(await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { user: u }, event: "notice", data: 1 } }), 202);
    await eventually(() => args.length === 1, { what: "the notice" });
    assert.deepEqual(args, [[1]], "no offset argument");
    m.io.engine.close();
    await m.log.next("disconnect", { failOn: [] });
    const back = m.log.next("connect");
    m.connect();
    await back;
    assert.notEqual(m.recovered, true);
  });
});

describe("connection state recovery, cluster", SUITE, () => {
  let c;
  before(async () => {
    c = await startCluster({ nodes: 3, name: "recovery" });
  });
  after(async () => {
    await c?.stop();
  });
  afterEach(() => closeAll());

  test("transport killed on node 1, back on node 2: recovered from Redis, every missed event once and in order", T, async () => {
    const [n1, n2, n3] = c.nodes;
    await lossless({
      memberNode: n1,
      senderNode: n3,
      apiNode: n3,
      apiKey: c.apiKey,
      away: async (m) => {
        m.io.engine.close();
        return n2;
      },
    });
  });

  test("node 1 SIGKILLed under the member: back on node 2, recovered, every missed event once and in order", T, async () => {
    const [n1, n2, n3] = c.nodes;
    await lossless({
      memberNode: n1,
      senderNode: n3,
      apiNode: n2,
      apiKey: c.apiKey,
      away: async () => {
        await c.killNode(0);
        return n2;
      },
    });
  });
});
