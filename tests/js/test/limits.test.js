// Per-user limits (issue #17, finding 2): sockets per user across the cluster
// (SWITCHBOARD_MAX_SOCKETS_PER_USER: more are refused with connect_refused / too_many_sockets)
// and users watched together by one user's sockets on a node
// (SWITCHBOARD_MAX_WATCHES_PER_USER: a presence:subscribe over it gets invalid_payload and
// changes nothing). Other users are never affected.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll, RawWs } from "./fixture.js";
import { startProductNode, connectUser, userSocket, connectAuthed, expectConnectError, ack, uid, safeJson, token } from "./product-fixture.js";
import { startCluster } from "./cluster-fixture.js";

const T = { timeout: 60_000 };

/** The connect_error of one socket too many. */
async function expectTooMany(socket) {
  const err = await expectConnectError(socket);
  assert.deepEqual(err, { message: "connect_refused", data: { reason: "too_many_sockets" } }, safeJson(err));
}

const ids = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

describe("per-user limits, one node", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({
      name: "limits",
      nodeId: "limits-node",
      flags: ["--max-sockets-per-user", "3", "--max-watches-per-user", "1500"],
    });
  });
  after(async () => {
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("the fourth socket of a user is refused (too_many_sockets); one closes, one more fits; other users are unaffected", async () => {
    const u = uid("many");
    const sockets = [];
    for (let i = 0; i < 3; i++) sockets.push(await connectUser(node, u, { device: `d${i}` }));
    await expectTooMany(userSocket(node, u, { device: "d3" }));
    await expectTooMany(userSocket(node, u, { device: "d4", transports: ["polling"] }));
    const other = await connectUser(node, uid("other"));
    assert.equal(other.connected, true);
    for (const s of sockets) assert.equal(s.connected, true, "the first three stay connected");

    sockets[0].disconnect();
    let again;
    for (let i = 0; i < 50 && !again; i++) {
      const s = userSocket(node, u, { device: "d5" });
      try {
        await connectAuthed(s, { timeout: 2_000 });
        again = s;
      } catch {
        s.close();
        await new Promise((r) => setTimeout(r, 50)); // the disconnect reaches presence shortly
      }
    }
    assert.ok(again, "a socket fits again once one closed");
  });

  test("watches: a user's sockets watch at most 1500 users together; over it invalid_payload and nothing changes", async () => {
    const u = uid("watcher");
    const a = await connectUser(node, u, { device: "a" });
    const b = await connectUser(node, u, { device: "b" });
    const first = await ack(a, "presence:subscribe", { userIds: ids(uid("f"), 1000) });
    assert.equal(first?.ok, true, safeJson(first).slice(0, 200));
    const over = await ack(b, "presence:subscribe", { userIds: ids(uid("g"), 600) });
    assert.equal(over?.ok, false, safeJson(over));
    assert.equal(over.error.code, "invalid_payload", safeJson(over));
    const fits = await ack(b, "presence:subscribe", { userIds: ids(uid("h"), 500) });
    assert.equal(fits?.ok, true, "500 more fit exactly");

    // The refused subscribe took no budget: exactly one more user is still over it.
    const refusedUser = uid("g-late");
    const late = await ack(b, "presence:subscribe", { userIds: [refusedUser] });
    assert.equal(late?.error?.code, "invalid_payload", "the budget is spent");

    // Another user is not affected by u's budget.
    const v = await connectUser(node, uid("free"));
    const ok = await ack(v, "presence:subscribe", { userIds: ids(uid("k"), 1000) });
    assert.equal(ok?.ok, true);

    // Unwatching gives budget back.
    assert.deepEqual(await ack(a, "presence:unsubscribe", { userIds: first ? Object.keys(first.statuses) : [] }), { ok: true });
    const after = await ack(a, "presence:subscribe", { userIds: ids(uid("m"), 900) });
    assert.equal(after?.ok, true, `budget freed by the unsubscribe: ${safeJson(after).slice(0, 300)}`);
  });
});

describe("per-user socket limit across a cluster", T, () => {
  let c;
  before(async () => {
    c = await startCluster({ nodes: 3, name: "limits", flags: ["--max-sockets-per-user", "2"] });
  });
  after(async () => {
    await c?.stop();
  });
  afterEach(() => closeAll());

  test("two sockets on two nodes use the whole allowance: a third, on the third node, is refused", async () => {
    const [n1, n2, n3] = c.nodes;
    const u = uid("roamer");
    await connectUser(n1, u, { device: "phone" });
    await connectUser(n2, u, { device: "laptop" });
    await expectTooMany(userSocket(n3, u, { device: "tablet" }));
    const other = await connectUser(n3, uid("other"));
    assert.equal(other.connected, true);
  });
});

// Logins (issue #17, finding 1): each CONNECT costs a token check, so a connection is closed
// after 3 refused logins (close reason login_refused) and after 8 CONNECTs without a login,
// and one address gets SWITCHBOARD_LOGIN_FAILURES_PER_IP refused logins a minute; past them its
// CONNECTs are refused unchecked with too_many_attempts, and every other address logs in.
describe("logins", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "logins", nodeId: "logins-node", flags: ["--login-failures-per-ip", "5", "--max-sockets-per-user", "1"] });
  });
  after(async () => {
    await node?.stop();
  });
  afterEach(() => closeAll());

  /** A raw websocket session that sent its open packet. */
  async function rawSession(localAddress = "127.0.0.1") {
    const ws = new RawWs(node.url, { wsOptions: { localAddress } });
    await ws.open();
    return ws;
  }

  test("a connection is closed after three refused logins (login_refused); the refusals are answered first", async () => {
    const ws = await rawSession();
    for (let i = 0; i < 3; i++) {
      ws.send(`40${JSON.stringify({ token: `bad-token-${i}` })}`);
      const refusal = await ws.nextText((t) => t.startsWith("44"));
      assert.deepEqual(JSON.parse(refusal.slice(2)), { message: "auth_failed", data: { reason: "malformed" } });
    }
    const closed = await ws.waitClosed(5_000);
    assert.ok(closed, `closed after the third refusal\n${ws.traceText()}`);
    assert.equal(closed.reason, "login_refused", ws.traceText());
    ws.close();
  });

  test("past the address's budget a valid token is refused too (too_many_attempts), the connection closed; other addresses log in", async () => {
    // 5 failures allowed a minute; the first test spent 3 of them from 127.0.0.1.
    for (let i = 0; i < 2; i++) {
      const ws = await rawSession();
      ws.send(`40${JSON.stringify({ token: "bad" })}`);
      await ws.nextText((t) => t.startsWith("44"));
      ws.close();
    }
    const ws = await rawSession();
    ws.send(`40${JSON.stringify({ token: token(uid("valid")) })}`);
    const refusal = await ws.nextText((t) => t.startsWith("44"));
    assert.deepEqual(JSON.parse(refusal.slice(2)), { message: "auth_failed", data: { reason: "too_many_attempts" } }, ws.traceText());
    assert.equal((await ws.waitClosed(5_000))?.reason, "login_refused", ws.traceText());
    ws.close();

    // Another loopback address has its own budget.
    const other = await rawSession("127.0.0.2");
    other.send(`40${JSON.stringify({ token: token(uid("elsewhere")) })}`);
    const answer = await other.nextText((t) => t.startsWith("40") || t.startsWith("44"));
    assert.ok(answer.startsWith("40{"), `connected from 127.0.0.2: ${other.traceText()}`);
    other.close();
  });

  test("a connection that keeps sending CONNECTs without logging in is closed after eight", async () => {
    // Refusals that are not login failures (the user has its one socket) leave only the
    // CONNECT budget to close the connection.
    // From an address the tests above did not spend the budget of.
    const u = uid("busy");
    const first = await rawSession("127.0.0.3");
    first.send(`40${JSON.stringify({ token: token(u) })}`);
    assert.ok((await first.nextText((t) => t.startsWith("4"))).startsWith("40{"), first.traceText());
    const ws = await rawSession("127.0.0.3");
    for (let i = 0; i < 8; i++) {
      ws.send(`40${JSON.stringify({ token: token(u) })}`);
      const refusal = await ws.nextText((t) => t.startsWith("44"));
      assert.equal(JSON.parse(refusal.slice(2)).data?.reason, "too_many_sockets", ws.traceText());
    }
    ws.send(`40${JSON.stringify({ token: token(u) })}`);
    const closed = await ws.waitClosed(5_000);
    assert.equal(closed?.reason, "login_refused", ws.traceText());
    ws.close();
    first.close();
  });
});

// Storage (issue #17, finding 10): a user's message text per UTC day is capped
// (SWITCHBOARD_USER_DAILY_MESSAGE_BYTES); past it message:send is rate_limited until midnight.
describe("daily message bytes", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "quota", nodeId: "quota-node", flags: ["--user-daily-message-bytes", "100"] });
  });
  after(async () => {
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("a user's 100 bytes a day: 60 stored, 60 more refused rate_limited until midnight UTC, 40 fit; other users unaffected", async () => {
    const a = await connectUser(node, uid("writer"));
    const to = uid("reader");
    const ok = await ack(a, "message:send", { to, text: "x".repeat(60) });
    assert.equal(ok?.ok, true, safeJson(ok));
    const refused = await ack(a, "message:send", { to, text: "y".repeat(60) });
    assert.equal(refused?.error?.code, "rate_limited", safeJson(refused));
    const untilMidnight = 86_400_000 - (Date.now() % 86_400_000);
    assert.ok(Math.abs(refused.error.retryAfterMs - untilMidnight) < 60_000, `retryAfterMs ${refused.error.retryAfterMs} vs ${untilMidnight}`);
    assert.equal((await ack(a, "message:send", { to, text: "z".repeat(40) }))?.ok, true, "the refused bytes were not counted");
    const b = await connectUser(node, uid("other-writer"));
    assert.equal((await ack(b, "message:send", { to, text: "w".repeat(60) }))?.ok, true);
  });
});

// Per-address limits (issue #17, finding 11): handshakes per minute and open sessions per
// client address (SWITCHBOARD_HANDSHAKES_PER_IP_PER_MIN, SWITCHBOARD_MAX_SESSIONS_PER_IP),
// answered 429; the address is the peer's, or behind SWITCHBOARD_TRUSTED_PROXIES the last
// untrusted one in X-Forwarded-For.
describe("per-address limits", T, () => {
  const nodes = [];
  after(async () => {
    for (const n of nodes) await n.stop();
  });

  async function handshake(node, headers = {}) {
    const res = await fetch(`${node.url}/socket.io/?EIO=4&transport=polling`, { headers });
    const body = await res.text();
    return { status: res.status, body, sid: res.status === 200 ? JSON.parse(body.slice(1)).sid : null };
  }

  test("open sessions per address: the fourth handshake is 429 (code 4), a forged X-Forwarded-For does not help, a closed session frees its place", async () => {
    const node = await startProductNode({ name: "addr-sessions", nodeId: "addr-sessions", flags: ["--max-sessions-per-ip", "3"] });
    nodes.push(node);
    const open = [];
    for (let i = 0; i < 3; i++) {
      const h = await handshake(node);
      assert.equal(h.status, 200, h.body);
      open.push(h.sid);
    }
    const refused = await handshake(node, { "x-forwarded-for": "203.0.113.9" });
    assert.equal(refused.status, 429, refused.body);
    assert.deepEqual(JSON.parse(refused.body), { code: 4, message: "Too many sessions from this address" });
    // The client's own close packet ends one session.
    const res = await fetch(`${node.url}/socket.io/?EIO=4&transport=polling&sid=${open[0]}`, { method: "POST", body: "1" });
    assert.equal(res.status, 200);
    let again;
    for (let i = 0; i < 50 && again?.status !== 200; i++) {
      again = await handshake(node);
      if (again.status !== 200) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(again.status, 200, "a closed session gives its place back");
  });

  test("handshakes per minute per address: the sixth is 429", async () => {
    const node = await startProductNode({ name: "addr-rate", nodeId: "addr-rate", flags: ["--handshakes-per-ip-per-min", "5"] });
    nodes.push(node);
    for (let i = 0; i < 5; i++) assert.equal((await handshake(node)).status, 200, `handshake ${i}`);
    const refused = await handshake(node);
    assert.equal(refused.status, 429);
    assert.equal(JSON.parse(refused.body).message, "Too many handshakes from this address");
  });

  test("behind a trusted proxy each client named in X-Forwarded-For has its own count", async () => {
    const node = await startProductNode({
      name: "addr-proxy",
      nodeId: "addr-proxy",
      flags: ["--max-sessions-per-ip", "1", "--trusted-proxies", "127.0.0.0/8"],
    });
    nodes.push(node);
    // What the client wrote (first) is not believed; the proxy's own entry (last) is.
    const as = (ip) => ({ "x-forwarded-for": `6.6.6.6, ${ip}` });
    assert.equal((await handshake(node, as("203.0.113.1"))).status, 200);
    assert.equal((await handshake(node, as("203.0.113.1"))).status, 429);
    assert.equal((await handshake(node, as("203.0.113.2"))).status, 200);
  });
});
