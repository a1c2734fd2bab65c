// Sticky sessions are optional: three nodes behind a real HAProxy with `balance roundrobin` and
// no cookie, so consecutive requests of one session land on different nodes and the nodes
// forward each one to the session's owner (server/src/transport/forward/).
//
// 1. Stock socket.io-client 4.8, polling only, and polling → websocket upgrades, exchange acked
//    `signal`s and `message:send`s between users through HAProxy for LB_TEST_SECS (30) seconds
//    without one session error (connect_error, disconnect); the nodes' metrics show that polling
//    requests and upgrades were really forwarded; no node logged a sid.
// 2. Bounds, against the nodes directly: an oversized POST for another node's session is
//    refused (413) before anything is forwarded; a request already marked as forwarded is never
//    forwarded again (400); a sid naming an unknown node gets 400; an owner that hangs (SIGSTOP)
//    gets the request a 400 once the forward timeout is over; the owner killed in the
//    middle of a forwarded long-poll gets that poll a 400 `Session ID unknown` at once (no hang
//    beyond the forward timeout), and a stock client with reconnection on, behind HAProxy,
//    reconnects cleanly to a live node.
//
// Headless-browser clients: lb-fixture.js (startLbCluster) is the hook; see its header.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { ack, connectUser, uid, userSocket, connectAuthed, safeJson } from "./product-fixture.js";
import { startLbCluster, forwardCounts, FORWARD_MARKER } from "./lb-fixture.js";
import { eventually, sleep } from "./cluster-fixture.js";

const SECS = Number(process.env.LB_TEST_SECS || 30);
const T = { timeout: (SECS + 90) * 1_000 };
const PING_MS = 2_000;
const FORWARD_TIMEOUT_MS = 3_000;
const MAX_PAYLOAD = 200_000;

const FLAGS = [
  "--user-message-limit", "1000000",
  "--socket-event-limit", "1000000",
  // Short heartbeats: pings and pongs cross the forwarding many times in 30 s.
  "--ping-interval-ms", String(PING_MS),
  "--ping-timeout-ms", String(PING_MS),
  "--forward-timeout-ms", String(FORWARD_TIMEOUT_MS),
  "--max-payload", String(MAX_PAYLOAD),
];

/** A raw Engine.IO polling request to `base` (a node or the LB), with extra headers. */
async function poll(base, { sid, method = "GET", body, headers = {}, timeout = 15_000 } = {}) {
  const q = `EIO=4&transport=polling${sid ? `&sid=${encodeURIComponent(sid)}` : ""}&t=${Date.now().toString(36)}`;
  const started = Date.now();
  const res = await fetch(`${base}/socket.io/?${q}`, {
    method,
    body,
    headers: { ...(body !== undefined ? { "content-type": "text/plain;charset=UTF-8" } : {}), ...headers },
    signal: AbortSignal.timeout(timeout),
  });
  return { status: res.status, body: await res.text(), ms: Date.now() - started };
}

/** Open an Engine.IO polling session on `node` directly; resolves with its sid. */
async function openSession(node) {
  const res = await poll(node.url);
  assert.equal(res.status, 200, res.body);
  return JSON.parse(res.body.slice(1)).sid;
}

/**
 * The access-log lines of every node (those with `http.*` fields: the request spans and the
 * websocket upgrade events, forwarded or not) hold no sid and no query string.
 */
function assertNoSidsLogged(nodes, sids) {
  for (const node of nodes) {
    const access = node
      .output()
      .split("\n")
      .filter((line) => line.includes('"http.'));
    assert.ok(access.length > 0, `${node.nodeId} has access-log lines`);
    for (const line of access) {
      for (const sid of sids) assert.ok(!line.includes(sid), `${node.nodeId} logged the sid ${sid}: ${line}`);
      assert.ok(!/[?&](sid|token)=/.test(line), `${node.nodeId} logged a query string: ${line}`);
    }
  }
}

/**
 * Pairs of users exchanging acked `signal`s and `message:send`s for `secs` seconds. Every send
 * must be acked ok and arrive; any connect_error or disconnect fails.
 */
async function exchange(pairs, secs) {
  const deadline = Date.now() + secs * 1_000;
  let sent = 0;
  const loops = pairs.flatMap(([a, b]) =>
    [
      [a, b],
      [b, a],
    ].map(async ([from, to]) => {
      let n = 0;
      while (Date.now() < deadline) {
        n += 1;
        const signal = ack(from, "signal", { to: to.user, data: { n } });
        const got = to.log.next("signal", { pred: (m) => m?.from === from.user && m?.data?.n === n, timeout: 10_000 });
        assert.deepEqual(await signal, { ok: true }, `signal ${n} from ${from.user}`);
        await got;
        const text = `${from.user}-${n}`;
        const res = await ack(from, "message:send", { to: to.user, text }, { timeout: 10_000 });
        assert.equal(res?.ok, true, `message:send ${text}: ${safeJson(res)}`);
        await to.log.next("message:received", { pred: (m) => m?.text === text, timeout: 10_000 });
        sent += 2;
        await sleep(150);
      }
    }),
  );
  await Promise.all(loops);
  return sent;
}

function assertNoSessionErrors(sockets) {
  for (const s of sockets) {
    const bad = s.log.entries.filter((e) => e.event === "connect_error" || e.event === "disconnect");
    assert.equal(bad.length, 0, `${s.log.label}: session errors ${safeJson(bad)}\n${s.log.trace()}`);
    assert.equal(s.connected, true, `${s.log.label} still connected`);
  }
}

describe("round-robin HAProxy without affinity: nodes forward to the session's owner", T, () => {
  let lb;
  before(async () => {
    lb = await startLbCluster({ nodes: 3, flags: FLAGS, name: "lb" });
  });
  after(async () => {
    await lb?.stop();
  });

  test(`polling-only clients exchange acked messages for ${SECS} s without a session error`, T, async () => {
    const before = await forwardCounts(lb.cluster.nodes);
    const sockets = [];
    const pairs = [];
    for (let i = 0; i < 3; i += 1) {
      const [ua, ub] = [uid("poll-a"), uid("poll-b")];
      const a = await connectUser(lb, ua, { transports: ["polling"] });
      const b = await connectUser(lb, ub, { transports: ["polling"] });
      a.user = ua;
      b.user = ub;
      sockets.push(a, b);
      pairs.push([a, b]);
    }
    const owners = new Set(sockets.map((s) => s.authInfo.serverInstance));
    const sent = await exchange(pairs, SECS);
    assertNoSessionErrors(sockets);
    for (const s of sockets) assert.equal(s.io.engine.transport.name, "polling");
    const after = await forwardCounts(lb.cluster.nodes);
    const delta = (k) => (after[k] ?? 0) - (before[k] ?? 0);
    assert.ok(delta("poll_get/ok") > 10, `forwarded GETs: ${safeJson(after)}`);
    assert.ok(delta("poll_post/ok") > 10, `forwarded POSTs: ${safeJson(after)}`);
    for (const k of Object.keys(after).filter((k) => !k.endsWith("/ok"))) {
      assert.equal(delta(k), 0, `no forwarding failure ${k}: ${safeJson(after)}`);
    }
    assertNoSidsLogged(lb.cluster.nodes, sockets.map((s) => s.io.engine.id));
    console.log(`# polling: ${sent} acked sends over ${SECS} s, sessions on ${[...owners].join(", ")}; forwarded GET ${delta("poll_get/ok")}, POST ${delta("poll_post/ok")}`);
    for (const s of sockets) s.disconnect();
  });

  test(`polling → websocket upgrades exchange acked messages for ${SECS} s without a session error`, T, async () => {
    const before = await forwardCounts(lb.cluster.nodes);
    const sockets = [];
    const pairs = [];
    for (let i = 0; i < 3; i += 1) {
      const pair = [];
      for (const side of ["a", "b"]) {
        const user = uid(`up-${side}`);
        const s = userSocket(lb, user, { transports: ["polling", "websocket"] });
        s.user = user;
        s.upgraded = new Promise((resolve) => s.io.on("open", () => s.io.engine.once("upgrade", resolve)));
        s.authInfo = await connectAuthed(s);
        pair.push(s);
        sockets.push(s);
      }
      pairs.push(pair);
    }
    await Promise.all(
      sockets.map((s) =>
        Promise.race([
          s.io.engine.transport.name === "websocket" ? Promise.resolve() : s.upgraded,
          sleep(10_000).then(() => assert.fail(`${s.user} did not upgrade\n${s.log.trace()}`)),
        ]),
      ),
    );
    for (const s of sockets) assert.equal(s.io.engine.transport.name, "websocket", s.user);
    const sent = await exchange(pairs, SECS);
    assertNoSessionErrors(sockets);
    const after = await forwardCounts(lb.cluster.nodes);
    const delta = (k) => (after[k] ?? 0) - (before[k] ?? 0);
    assert.ok(delta("websocket/ok") >= 1, `some upgrades were forwarded: ${safeJson(after)}`);
    for (const k of Object.keys(after).filter((k) => !k.endsWith("/ok"))) {
      assert.equal(delta(k), 0, `no forwarding failure ${k}: ${safeJson(after)}`);
    }
    const tunnels = await eventually(async () => {
      let total = 0;
      for (const n of lb.cluster.nodes) {
        const text = await (await fetch(`${n.url}/metrics`)).text();
        total += Number(text.match(/^forward_tunnels_active\{[^}]*\} (\d+)/m)?.[1] ?? 0);
      }
      return total;
    });
    assert.equal(tunnels, delta("websocket/ok"), "each forwarded upgrade is one live tunnel");
    assertNoSidsLogged(lb.cluster.nodes, sockets.map((s) => s.io.engine.id));
    console.log(`# upgrades: ${sent} acked sends over ${SECS} s; ${delta("websocket/ok")} of ${sockets.length} upgrades forwarded`);
    for (const s of sockets) s.disconnect();
    await eventually(async () => {
      let total = 0;
      for (const n of lb.cluster.nodes) {
        const text = await (await fetch(`${n.url}/metrics`)).text();
        total += Number(text.match(/^forward_tunnels_active\{[^}]*\} (\d+)/m)?.[1] ?? 0);
      }
      return total === 0;
    }, { timeout: 10_000, what: "every tunnel closed after the clients left" });
  });

  test("an oversized POST for another node's session gets 413 and is not forwarded", T, async () => {
    const [owner, other] = lb.cluster.nodes;
    const sid = await openSession(owner);
    const before = await forwardCounts([other]);
    const res = await poll(other.url, { sid, method: "POST", body: "4".repeat(MAX_PAYLOAD + 1) });
    assert.equal(res.status, 413, res.body);
    const after = await forwardCounts([other]);
    assert.equal((after["poll_post/too_large"] ?? 0) - (before["poll_post/too_large"] ?? 0), 1);
    assert.equal(after["poll_post/ok"] ?? 0, before["poll_post/ok"] ?? 0, "nothing was forwarded");
    // The owner never saw it: the session is intact, and a normal POST through `other` works.
    const ok = await poll(other.url, { sid, method: "POST", body: '40{"token":"x"}' });
    assert.equal(ok.status, 200, ok.body);
  });

  test("a request already marked as forwarded is never forwarded again", T, async () => {
    const [owner, other] = lb.cluster.nodes;
    const sid = await openSession(owner);
    const before = await forwardCounts([other]);
    const res = await poll(other.url, { sid, headers: { [FORWARD_MARKER]: "node-3" } });
    assert.equal(res.status, 400);
    assert.deepEqual(JSON.parse(res.body), { code: 1, message: "Session ID unknown" });
    const after = await forwardCounts([other]);
    assert.equal((after["poll_get/loop"] ?? 0) - (before["poll_get/loop"] ?? 0), 1);
    assert.equal(after["poll_get/ok"] ?? 0, before["poll_get/ok"] ?? 0, "not forwarded");
    // The marker means nothing more: the owner itself serves a marked request for its session.
    const own = await poll(owner.url, { sid, headers: { [FORWARD_MARKER]: "node-3" } });
    assert.equal(own.status, 200, own.body);
    // Unknown and malformed node tags: 400 at once.
    for (const bad of ["AAAAAAAAAAAAAAAAAAAA.0123456789", "nonsense", "x.ffffffffff", "é"]) {
      const r = await poll(other.url, { sid: bad });
      assert.equal(r.status, 400, `${bad}: ${r.body}`);
      assert.deepEqual(JSON.parse(r.body), { code: 1, message: "Session ID unknown" });
    }
  });

  test("an owner that hangs (SIGSTOP): the forwarded request gets 400 after the forward timeout, not later", T, async () => {
    const [front, owner] = lb.cluster.nodes;
    const sid = await openSession(owner);
    const before = await forwardCounts([front]);
    process.kill(owner.pid, "SIGSTOP");
    let res;
    try {
      res = await poll(front.url, { sid, method: "POST", body: "3", timeout: 20_000 });
    } finally {
      process.kill(owner.pid, "SIGCONT");
    }
    assert.equal(res.status, 400, res.body);
    assert.deepEqual(JSON.parse(res.body), { code: 1, message: "Session ID unknown" });
    assert.ok(res.ms >= FORWARD_TIMEOUT_MS - 200 && res.ms < FORWARD_TIMEOUT_MS + 2_000, `answered in ${res.ms} ms`);
    const after = await forwardCounts([front]);
    assert.equal((after["poll_post/timeout"] ?? 0) - (before["poll_post/timeout"] ?? 0), 1, safeJson(after));
    // The owner is back: HAProxy has it UP again before the next test.
    await eventually(async () => (await lb.serverStates())[owner.nodeId] === "UP", { timeout: 10_000, what: `${owner.nodeId} UP again` });
  });

  test("the owner killed mid-poll: the forwarded poll gets 400 at once, a stock client reconnects", T, async () => {
    const nodes = lb.cluster.nodes;
    // A raw session on node-3, its long-poll forwarded through node-1.
    const victim = nodes[2];
    const sid = await openSession(victim);
    // A stock client behind HAProxy whose session lives on node-3 too (reconnection on).
    let client;
    for (let i = 0; i < 6 && !client; i += 1) {
      const user = uid("survivor");
      const s = userSocket(lb, user, { transports: ["polling"], reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500 });
      s.user = user;
      const info = await connectAuthed(s);
      if (info.serverInstance === victim.nodeId) client = s;
      else s.disconnect();
    }
    assert.ok(client, "a client whose session is on the node to kill");
    const pending = poll(nodes[0].url, { sid, timeout: 20_000 });
    await sleep(300);
    await lb.cluster.killNode(2);
    const res = await pending;
    assert.equal(res.status, 400, res.body);
    assert.deepEqual(JSON.parse(res.body), { code: 1, message: "Session ID unknown" });
    assert.ok(res.ms < FORWARD_TIMEOUT_MS + PING_MS, `answered in ${res.ms} ms`);
    // Later requests for it: 400 quickly (connection refused, then the node's address expires).
    const again = await poll(nodes[1].url, { sid, timeout: 10_000 });
    assert.equal(again.status, 400, again.body);
    assert.ok(again.ms < FORWARD_TIMEOUT_MS, `answered in ${again.ms} ms`);
    // The stock client: its transport fails, it reconnects through HAProxy to a live node.
    await client.log.next("disconnect", { timeout: 15_000, failOn: [] });
    const [[authed]] = await Promise.all([client.log.next("authenticated", { timeout: 20_000, failOn: [] })]);
    assert.notEqual(authed.serverInstance, victim.nodeId, "reconnected to a live node");
    const peerUser = uid("peer");
    const peer = await connectUser(lb, peerUser, { transports: ["polling"] });
    const res2 = await ack(client, "message:send", { to: peerUser, text: "after-kill" }, { timeout: 10_000 });
    assert.equal(res2?.ok, true, safeJson(res2));
    await peer.log.next("message:received", { pred: (m) => m?.text === "after-kill", timeout: 10_000 });
    const reasons = client.log.all("disconnect").map(([reason]) => reason);
    assert.equal(reasons.length, 1, `one disconnect: ${safeJson(reasons)}`);
    assert.ok(["transport error", "transport close", "ping timeout"].includes(reasons[0]), reasons[0]);
  });
});
