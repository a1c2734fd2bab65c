// Socket.IO v2 clients (Engine.IO v3, `EIO=3`) with the real socket.io-client@2.5.0 (installed
// as the npm alias `sio2`), against a node started with --allow-eio3: polling, websocket and
// the upgrade; the implicit connection to `/` authenticated by `?token=` or the Authorization
// header, and refused the v2 way (an `error` event, then a server disconnect); events, acks,
// binary both ways with a v4 client, messages and presence; the v3 heartbeat (the client pings);
// raw wire checks of the v3 framings; a conformance node's namespaces; and the 400 a node
// without --allow-eio3 answers.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import sio2 from "sio2";
import { startNode, RawWs, closeAll, sleep } from "./fixture.js";
import { startProductNode, connectUser, ack, uid, token, safeJson } from "./product-fixture.js";

const require = createRequire(import.meta.url);
// engine.io-parser 2, as the v2 client uses it: to read raw bodies exactly as the client would.
const parserV2 = require("sio2/node_modules/engine.io-parser");

const T = { timeout: 60_000 };
// Fast heartbeats: the v2 client pings every 300 ms; the server closes after 500 ms of silence.
const HEARTBEAT = ["--ping-interval-ms", "300", "--ping-timeout-ms", "200"];

// ---------------------------------------------------------------------------------------------
// v2 clients

const v2Clients = new Set();

/**
 * A not-yet-connected socket.io-client@2 socket (no reconnection unless asked), recording the
 * events named in `events` (plus connect, error, disconnect…) in `socket.log`.
 */
function v2Socket(url, { tok, nsp = "/", events = [], reconnection = false, ...opts } = {}) {
  const query = tok === undefined || tok === null ? {} : { token: tok };
  const socket = sio2(url + (nsp === "/" ? "" : nsp), {
    forceNew: true,
    reconnection,
    autoConnect: false,
    timeout: 5_000,
    query,
    ...opts,
  });
  v2Clients.add(socket);
  socket.log = new V2Log(socket, [
    "connect",
    "connect_error",
    "error",
    "disconnect",
    "reconnect_attempt",
    "authenticated",
    ...events,
  ]);
  return socket;
}

function closeV2() {
  for (const s of v2Clients) {
    try {
      s.close();
    } catch {
      /* ignore */
    }
  }
  v2Clients.clear();
}

/** What a v2 socket received (v2 has no onAny: the events are named up front). */
class V2Log {
  constructor(socket, events) {
    this.entries = [];
    this.waiters = new Set();
    this.t0 = Date.now();
    for (const event of events) {
      socket.on(event, (...args) => {
        this.entries.push({ event, args, at: Date.now() - this.t0, consumed: false });
        for (const w of [...this.waiters]) w();
      });
    }
  }

  trace() {
    return this.entries.map((e) => `  @${e.at}ms ${e.event} ${safeJson(e.args)}`).join("\n");
  }

  count(event) {
    return this.entries.filter((e) => e.event === event).length;
  }

  /** The args of the next unconsumed `event` matching `pred`; fails on `failOn` meanwhile. */
  next(event, { pred = () => true, timeout = 5_000, failOn = ["disconnect", "error", "connect_error"] } = {}) {
    return new Promise((resolve, reject) => {
      const from = this.entries.length;
      const check = () => {
        const e = this.entries.find((x) => !x.consumed && x.event === event && pred(...x.args));
        if (e) {
          e.consumed = true;
          finish();
          return resolve(e.args);
        }
        const bad = this.entries.slice(from).find((x) => failOn.includes(x.event) && x.event !== event);
        if (bad) {
          finish();
          reject(new Error(`got "${bad.event}" ${safeJson(bad.args)} waiting for "${event}"\n${this.trace()}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeout} ms waiting for "${event}"\n${this.trace()}`));
      }, timeout);
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }
}

/** Connect a v2 socket and wait for `connect` and `authenticated`; resolves with the latter. */
async function connectV2(socket) {
  const authed = socket.log.next("authenticated");
  const connected = socket.log.next("connect");
  socket.open();
  const [[hello]] = await Promise.all([authed, connected]);
  return hello;
}

/** A connected, authenticated v2 socket for `user`. */
async function v2User(url, user, opts = {}) {
  const socket = v2Socket(url, { tok: token(user), ...opts });
  socket.authInfo = await connectV2(socket);
  return socket;
}

/** Emit with an ack from a v2 socket (v2 has no emitWithAck), within `timeout` ms. */
function ackV2(socket, event, payload, { timeout = 5_000 } = {}) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`no ack for "${event}" within ${timeout} ms\n${socket.log.trace()}`)),
      timeout,
    );
    socket.emit(event, payload, (answer) => {
      clearTimeout(t);
      resolve(answer);
    });
  });
}

const bytes = (n, seed = 1) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256));

function asBuffer(v) {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new Error(`not binary: ${safeJson(v)}`);
}

/** A raw polling request with EIO=3; resolves with {status, type, text, bytes}. */
async function poll3(url, query, { method = "GET", body, contentType } = {}) {
  const res = await fetch(`${url}/socket.io/?EIO=3&transport=polling&${query}`, {
    method,
    body,
    headers: contentType ? { "content-type": contentType } : {},
    signal: AbortSignal.timeout(10_000),
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  return { status: res.status, type: res.headers.get("content-type"), text: bytes.toString("utf8"), bytes };
}

/** Decode a v3 polling body with engine.io-parser 2, as the v2 client does. */
function decodeV3(body) {
  const packets = [];
  parserV2.decodePayload(body, (packet) => {
    packets.push(packet);
  });
  return packets;
}

// ---------------------------------------------------------------------------------------------

describe("Socket.IO v2 clients in product mode (--allow-eio3)", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "eio3", flags: ["--allow-eio3", ...HEARTBEAT] });
  });
  after(async () => {
    closeV2();
    closeAll();
    await node?.stop();
  });
  afterEach(() => {
    closeV2();
    closeAll();
  });

  for (const transports of [["polling"], ["websocket"], ["polling", "websocket"]]) {
    test(`connects with EIO=3 over ${transports.join("→")} and authenticates with ?token=`, async () => {
      const user = uid("v2");
      const socket = v2Socket(node.url, { tok: token(user), transports });
      const upgraded = transports.length === 2 ? new Promise((r) => socket.io.once("open", () => socket.io.engine.once("upgrade", r))) : null;
      const hello = await connectV2(socket);
      assert.equal(hello.userId, user);
      assert.equal(hello.serverInstance, node.nodeId);
      assert.equal(socket.io.engine.transport.query.EIO, 3, "the v2 client speaks Engine.IO v3");
      if (upgraded) await upgraded;
      assert.equal(socket.io.engine.transport.name, transports.at(-1));
      const statuses = await ackV2(socket, "presence:query", { userIds: [user] });
      assert.deepEqual(statuses, { ok: true, statuses: { [user]: "online" } });
    });
  }

  test("the Authorization header authenticates too (polling and websocket)", async () => {
    for (const transports of [["polling"], ["websocket"]]) {
      const user = uid("hdr");
      const socket = v2Socket(node.url, {
        tok: null,
        transports,
        extraHeaders: { Authorization: `Bearer ${token(user)}` },
      });
      const hello = await connectV2(socket);
      assert.equal(hello.userId, user, transports[0]);
      socket.close();
    }
  });

  test("a refused token is an `error` event, then a server disconnect, and no reconnection", async () => {
    for (const [tok, reason] of [
      [token("mallory", {}, "another-secret-another-secret-0123"), "invalid_signature"],
      [null, "missing_token"],
    ]) {
      const socket = v2Socket(node.url, { tok, reconnection: true, reconnectionDelay: 100 });
      const error = socket.log.next("error", { failOn: ["connect"] });
      const gone = socket.log.next("disconnect", { failOn: ["connect"] });
      socket.open();
      const [err] = await error;
      assert.deepEqual(err, { message: "auth_failed", data: { reason } });
      const [why] = await gone;
      assert.equal(why, "io server disconnect");
      await sleep(700);
      assert.equal(socket.log.count("reconnect_attempt"), 0, socket.log.trace());
      assert.equal(socket.log.count("connect"), 0, socket.log.trace());
    }
  });

  test("message:send / message:received with acks between a v2 and a v4 client", async () => {
    const [alice, bob] = [uid("alice"), uid("bob")];
    const a = await v2User(node.url, alice, { events: ["message:received", "message:sent"] });
    const b = await connectUser(node, bob);
    const sent = await ackV2(a, "message:send", { to: bob, text: "hello from v2 é😀" });
    assert.equal(sent.ok, true, safeJson(sent));
    const [got] = await b.log.next("message:received");
    assert.equal(got.from, alice);
    assert.equal(got.text, "hello from v2 é😀");
    assert.equal(got.messageId, sent.messageId);
    const back = await ack(b, "message:send", { to: alice, text: "and back" });
    assert.equal(back.ok, true);
    const [reply] = await a.log.next("message:received");
    assert.deepEqual([reply.from, reply.text, reply.messageId], [bob, "and back", back.messageId]);
    // A bad payload answers the ack with an error, and the v2 socket stays connected.
    const bad = await ackV2(a, "message:send", { to: bob });
    assert.equal(bad.ok, false);
    assert.equal(bad.error.code, "invalid_payload");
    assert.equal(a.connected, true);
  });

  for (const [name, opts] of [
    ["polling (base64)", { transports: ["polling"] }],
    ["websocket (binary frames)", { transports: ["websocket"] }],
    ["websocket (forceBase64)", { transports: ["websocket"], forceBase64: true }],
  ]) {
    test(`signal carries Buffers both ways between v2 over ${name} and v4`, async () => {
      const [u2, u4] = [uid("bin2"), uid("bin4")];
      const a = await v2User(node.url, u2, { events: ["signal"], ...opts });
      const b = await connectUser(node, u4);
      const one = bytes(3000, 7);
      assert.deepEqual(await ackV2(a, "signal", { to: u4, data: { chunk: one, n: 1 } }), { ok: true });
      const [got] = await b.log.next("signal");
      assert.equal(got.from, u2);
      assert.ok(asBuffer(got.data.chunk).equals(one), "the v2 Buffer arrives intact at the v4 client");
      const two = [bytes(100, 3), "text", bytes(10, 9)];
      assert.deepEqual(await ack(b, "signal", { to: u2, data: two }), { ok: true });
      const [back] = await a.log.next("signal");
      assert.equal(back.from, u4);
      assert.ok(asBuffer(back.data[0]).equals(two[0]));
      assert.equal(back.data[1], "text");
      assert.ok(asBuffer(back.data[2]).equals(two[2]));
    });
  }

  test("presence between v2 and v4 users", async () => {
    const [u2, u4] = [uid("p2"), uid("p4")];
    const watcher = await connectUser(node, uid("watch"));
    assert.deepEqual(await ack(watcher, "presence:subscribe", { userIds: [u2] }), {
      ok: true,
      statuses: { [u2]: "offline" },
    });
    const a = await v2User(node.url, u2, { events: ["friend:online", "friend:offline"] });
    const [on] = await watcher.log.next("friend:online");
    assert.deepEqual(on, { userId: u2 });
    // The v2 user watches a v4 user come and go.
    assert.deepEqual(await ackV2(a, "presence:subscribe", { userIds: [u4] }), {
      ok: true,
      statuses: { [u4]: "offline" },
    });
    const b = await connectUser(node, u4);
    assert.deepEqual(await a.log.next("friend:online"), [{ userId: u4 }]);
    b.disconnect();
    assert.deepEqual(await a.log.next("friend:offline"), [{ userId: u4 }]);
    a.close();
    const [off] = await watcher.log.next("friend:offline");
    assert.deepEqual(off, { userId: u2 });
  });

  test("the v3 heartbeat keeps a connection alive past several ping intervals", async () => {
    for (const transports of [["polling"], ["websocket"]]) {
      const socket = await v2User(node.url, uid("hb"), { transports });
      const engineId = socket.io.engine.id;
      let pongs = 0;
      socket.io.engine.on("pong", () => pongs++);
      await sleep(2_000);
      assert.equal(socket.connected, true, socket.log.trace());
      assert.equal(socket.io.engine.id, engineId, "the same Engine.IO session throughout");
      assert.equal(socket.log.count("disconnect"), 0, socket.log.trace());
      assert.ok(pongs >= 4, `the server answered the client's pings (${pongs} pongs)`);
      const r = await ackV2(socket, "presence:query", { userIds: ["nobody"] });
      assert.equal(r.ok, true);
      socket.close();
    }
  });

  test("a client that stops pinging is closed after pingInterval + pingTimeout", async () => {
    const user = uid("silent");
    const raw = new RawWs(node.url, { query: `EIO=3&transport=websocket&token=${token(user)}` });
    try {
      const open = await raw.open();
      assert.deepEqual(Object.keys(open).sort(), ["pingInterval", "pingTimeout", "sid", "upgrades"]);
      assert.deepEqual([open.pingInterval, open.pingTimeout, open.upgrades], [300, 200, []]);
      // The implicit connection to `/`: a bare `40`, then the announcement.
      assert.equal(await raw.nextText(), "40");
      const hello = JSON.parse((await raw.nextText((t) => t.startsWith('42["authenticated"'))).slice(2));
      assert.equal(hello[1].userId, user);
      const t = Date.now();
      const closed = await raw.waitClosed(3_000);
      assert.ok(closed, `still open 3 s later\n${raw.traceText()}`);
      const after = Date.now() - t;
      assert.ok(after < 1_500, `closed ${after} ms after the handshake (window 500 ms)\n${raw.traceText()}`);
      assert.equal(closed.reason, "timeout");
      assert.equal(raw.frames.filter((f) => f.text === "2").length, 0, "the server never pings a v3 client");
    } finally {
      raw.close();
    }
    // The same client pinging every interval stays.
    const pinging = new RawWs(node.url, { query: `EIO=3&transport=websocket&token=${token(uid("pinger"))}` });
    try {
      await pinging.open();
      for (let i = 0; i < 6; i++) {
        pinging.send("2");
        assert.equal(await pinging.nextText((t) => t === "3"), "3");
        await sleep(250);
      }
      assert.equal(pinging.closed, null, pinging.traceText());
    } finally {
      pinging.close();
    }
  });
});

describe("raw Engine.IO v3 polling (default heartbeat, so raw sessions need not ping)", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "eio3-raw", flags: ["--allow-eio3"] });
  });
  after(async () => {
    await node?.stop();
  });

  test("raw polling: length-prefixed text records for b64, the binary framing otherwise", async () => {
    const user = uid("raw");
    // A Node-like client (b64=1): text framing with UTF-16 lengths; binary as `b4<base64>`.
    const hs = await poll3(node.url, `b64=1&token=${token(user)}`);
    assert.equal(hs.status, 200);
    assert.equal(hs.type, "text/plain; charset=UTF-8");
    const [open, ...rest] = decodeV3(hs.text);
    assert.equal(open.type, "open", hs.text);
    const { sid, upgrades, pingInterval, pingTimeout, maxPayload } = JSON.parse(open.data);
    assert.deepEqual([upgrades, pingInterval, pingTimeout, maxPayload], [["websocket"], 25_000, 20_000, undefined]);
    const packets = [...rest];
    while (!packets.some((p) => p.type === "message" && p.data.startsWith('2["authenticated"'))) {
      packets.push(...decodeV3((await poll3(node.url, `sid=${sid}`)).text));
    }
    assert.deepEqual(packets[0], { type: "message", data: "0" }, "the implicit CONNECT answer");

    // An XHR2-like client (no b64) POSTs binary bodies and gets binary GETs.
    const peer = uid("raw-peer");
    const xhr = await poll3(node.url, `token=${token(peer)}`);
    const [xopen, ...got] = decodeV3(xhr.text);
    const xsid = JSON.parse(xopen.data).sid;
    // The handshake's answer may already hold `authenticated`: a GET after it would wait for
    // the next ping.
    while (!got.some((p) => p.type === "message" && p.data.startsWith('2["authenticated"'))) {
      got.push(...decodeV3((await poll3(node.url, `sid=${xsid}`)).text));
    }
    // A binary `signal` to the b64 client, in engine.io-parser 2's binary framing, with a ping.
    const signal = `51-["signal",{"to":"${user}","data":{"_placeholder":true,"num":0}}]`;
    const body = await new Promise((resolve) =>
      parserV2.encodePayload(
        [
          { type: "ping" },
          { type: "message", data: signal },
          { type: "message", data: Buffer.from([1, 2, 3, 250]) },
        ],
        true,
        resolve,
      ),
    );
    assert.ok(Buffer.isBuffer(body));
    const posted = await poll3(node.url, `sid=${xsid}`, { method: "POST", body, contentType: "application/octet-stream" });
    assert.equal(posted.status, 200, posted.text);
    // The pong comes back as text (no binary in it).
    const pong = await poll3(node.url, `sid=${xsid}`);
    assert.equal(pong.type, "text/plain; charset=UTF-8");
    assert.deepEqual(decodeV3(pong.text), [{ type: "pong" }]);
    // The b64 client gets the attachment as a base64 record.
    const delivered = await poll3(node.url, `sid=${sid}`);
    assert.equal(delivered.type, "text/plain; charset=UTF-8");
    assert.match(delivered.text, /^\d+:451-\["signal",.*\]10:b4AQID\+g==$/);
    const [, attachment] = decodeV3(delivered.text);
    assert.deepEqual([...attachment.data], [1, 2, 3, 250]);

    // And the other way: binary to the XHR2-like client is an octet-stream body.
    const back = `51-["signal",{"to":"${peer}","data":[{"_placeholder":true,"num":0}]}]`;
    const record = `4${back}`;
    const sent = await poll3(node.url, `sid=${sid}`, {
      method: "POST",
      body: `${record.length}:${record}6:b4CQgH`,
      contentType: "text/plain;charset=UTF-8",
    });
    assert.equal(sent.status, 200, sent.text);
    const binary = await poll3(node.url, `sid=${xsid}`);
    assert.equal(binary.type, "application/octet-stream");
    const decoded = [];
    parserV2.decodePayloadAsBinary(binary.bytes, (p) => decoded.push(p));
    assert.equal(decoded[0].type, "message");
    assert.match(decoded[0].data, /^51-\["signal",/);
    assert.deepEqual([...decoded[1].data], [9, 8, 7]);
  });
});

describe("Socket.IO v2 clients in conformance mode", T, () => {
  let node;
  before(async () => {
    node = await startNode(["--conformance", "--allow-eio3"], { name: "eio3-conformance" });
  });
  after(async () => {
    closeV2();
    await node?.stop();
  });

  test("`/` is implicit, binary acks both ways, `/custom` takes a CONNECT, unknown namespaces get the v2 error", async () => {
    const root = v2Socket(node.url, { events: ["message-back"] });
    root.open();
    await root.log.next("connect");
    root.emit("message", 1, "two", { three: Buffer.from([3]) });
    const [a, b, c] = await root.log.next("message-back");
    assert.deepEqual([a, b, asBuffer(c.three)], [1, "two", Buffer.from([3])]);
    const acked = await new Promise((resolve) => root.emit("message-with-ack", { x: 1 }, "y", (...args) => resolve(args)));
    assert.deepEqual(acked, [{ x: 1 }, "y"]);
    // Binary acks both ways: the server's (`6…`) to the client's event, the client's to the
    // server's `ack-request` (reported back as `ack-response`).
    const binAck = await new Promise((resolve) => root.emit("message-with-ack", Buffer.from([1, 2]), (...args) => resolve(args)));
    assert.deepEqual(asBuffer(binAck[0]), Buffer.from([1, 2]));
    root.on("ack-request", (...args) => args.at(-1)("got", Buffer.from([7, 7])));
    const response = new Promise((resolve) => root.once("ack-response", (...args) => resolve(args)));
    root.emit("server-ack-request", "q");
    const [word, data] = await response;
    assert.deepEqual([word, asBuffer(data)], ["got", Buffer.from([7, 7])]);

    const custom = root.io.socket("/custom", { query: { q: "1" } });
    custom.log = new V2Log(custom, ["connect", "error", "message-back"]);
    custom.open();
    await custom.log.next("connect");
    custom.emit("message", "on custom");
    assert.deepEqual(await custom.log.next("message-back"), ["on custom"]);

    const nowhere = root.io.socket("/nowhere");
    nowhere.log = new V2Log(nowhere, ["connect", "error"]);
    nowhere.open();
    assert.deepEqual(await nowhere.log.next("error", { failOn: ["connect"] }), ["Invalid namespace"]);
    assert.equal(root.connected, true);
  });
});

describe("without --allow-eio3", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "no-eio3" });
  });
  after(async () => {
    closeV2();
    await node?.stop();
  });

  test("EIO=3 is refused with 400 Unsupported protocol version, on polling and websocket", async () => {
    const res = await poll3(node.url, `b64=1&token=${token("x")}`);
    assert.equal(res.status, 400);
    assert.equal(res.type, "application/json");
    assert.deepEqual(JSON.parse(res.text), { code: 5, message: "Unsupported protocol version" });
    const raw = new RawWs(node.url, { query: "EIO=3&transport=websocket" });
    try {
      const closed = await raw.waitClosed(3_000);
      assert.ok(raw.error || closed, raw.traceText());
      assert.match(String(raw.error?.message), /400/, raw.traceText());
    } finally {
      raw.close();
    }
    // The v2 client itself sees a connect_error and never connects.
    const socket = v2Socket(node.url, { tok: token("x"), transports: ["polling"] });
    socket.open();
    const [err] = await socket.log.next("connect_error", { failOn: ["connect"] });
    assert.match(String(err?.message ?? err), /xhr poll error/);
    assert.equal(socket.connected, false);
  });
});
