// Binary payloads in product mode, with the stock socket.io-client: `signal` and `room:emit`
// carry Buffers and ArrayBuffers to every recipient over websocket and polling, both ways, on
// one node and across two nodes (cluster frames carry attachments); server-API emits take
// `{"$binary": base64}`; custom events hand binary to the backend's `rpc` as base64 and back;
// `message:send` with binary text is `invalid_payload`. Hostile cases on a raw websocket:
// binary before CONNECT, a binary event over the size cap (refused as its attachments arrive,
// the connection kept), attachments that never arrive (closed after a bounded wait).

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { RawWs, closeAll } from "./fixture.js";
import { startProductNode, connectUser, ack, api, assertStatus, uid, token } from "./product-fixture.js";
import { startCluster } from "./cluster-fixture.js";
import { startBackend, TEST_BACKEND, HOOK_SECRET } from "./backend-fixture.js";

const T = { timeout: 120_000 };
const KEY = "binary-tests-api-key-0123456789-abcdef";

const bytes = (n, seed = 1) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256));

/** Whatever socket.io-client in Node hands over for binary (a Buffer), as a Buffer. */
function asBuffer(v) {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new Error(`not binary: ${JSON.stringify(v)}`);
}

async function exchange(a, aUser, b, bUser) {
  const one = bytes(3000, 7);
  assert.deepEqual(await ack(a, "signal", { to: bUser, data: { chunk: one, n: 1 } }), { ok: true });
  const [got] = await b.log.next("signal");
  assert.equal(got.from, aUser);
  assert.equal(got.data.n, 1);
  assert.ok(asBuffer(got.data.chunk).equals(one), "the Buffer arrives intact");
  // The other way, with an ArrayBuffer and two attachments.
  const ab = new Uint8Array(bytes(100, 3)).buffer;
  const two = bytes(10, 9);
  assert.deepEqual(await ack(b, "signal", { to: aUser, data: [ab, "text", two] }), { ok: true });
  const [back] = await a.log.next("signal");
  assert.ok(asBuffer(back.data[0]).equals(Buffer.from(ab)));
  assert.equal(back.data[1], "text");
  assert.ok(asBuffer(back.data[2]).equals(two));
}

describe("binary on one node", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "binary", flags: ["--api-key", KEY] });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });

  for (const [ta, tb] of [["websocket", "websocket"], ["polling", "polling"], ["polling", "websocket"]]) {
    test(`signal carries Buffers and ArrayBuffers both ways (${ta} ↔ ${tb})`, async () => {
      const [ua, ub] = [uid("a"), uid("b")];
      const a = await connectUser(node, ua, { transports: [ta] });
      const b = await connectUser(node, ub, { transports: [tb] });
      await exchange(a, ua, b, ub);
      a.disconnect();
      b.disconnect();
    });
  }

  test("room:emit carries binary to every member, the sender included", async () => {
    const room = uid("room");
    const users = [uid("m1"), uid("m2"), uid("m3")];
    const sockets = await Promise.all(
      users.map((u, i) => connectUser(node, u, { token: token(u, { rooms: [room] }), transports: [i === 1 ? "polling" : "websocket"] })),
    );
    const blob = bytes(5000, 5);
    assert.deepEqual(await ack(sockets[0], "room:emit", { room, data: { blob } }), { ok: true });
    for (const s of sockets) {
      const [msg] = await s.log.next("room:msg");
      assert.equal(msg.from, users[0]);
      assert.ok(asBuffer(msg.data.blob).equals(blob));
    }
    for (const s of sockets) s.disconnect();
  });

  test("server API emit: {\"$binary\": base64} arrives as binary; bad base64 is a 400", async () => {
    const u = uid("api");
    const s = await connectUser(node, u);
    const raw = bytes(64, 2);
    const res = await api(node, "POST", "/api/v1/emit", {
      key: KEY,
      body: { to: { user: u }, event: "file", data: { name: "x.bin", content: { $binary: raw.toString("base64") } } },
    });
    assertStatus(res, 202);
    const [got] = await s.log.next("file");
    assert.equal(got.name, "x.bin");
    assert.ok(asBuffer(got.content).equals(raw));
    const bad = await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { user: u }, event: "file", data: { $binary: "!!!" } } });
    assertStatus(bad, 400);
    s.disconnect();
  });

  test("message:send with binary text is invalid_payload", async () => {
    const s = await connectUser(node, uid("m"));
    const r = await ack(s, "message:send", { to: uid("x"), text: bytes(10) });
    assert.equal(r.error?.code, "invalid_payload");
    s.disconnect();
  });

  test("a binary event over the size cap is payload_too_large and the connection stays", async () => {
    const [ua, ub] = [uid("big"), uid("peer")];
    const a = await connectUser(node, ua);
    const b = await connectUser(node, ub);
    const r = await ack(a, "signal", { to: ub, data: [bytes(40_000), bytes(40_000)] });
    assert.equal(r.error?.code, "payload_too_large");
    await b.log.none("signal", 300, { why: "the refused event is not delivered" });
    assert.deepEqual(await ack(a, "signal", { to: ub, data: bytes(10) }), { ok: true }, "the connection still works");
    await b.log.next("signal");
    a.disconnect();
    b.disconnect();
  });
});

describe("binary: hostile clients on a raw websocket", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "binary-raw" });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });

  test("binary before CONNECT is a protocol violation: closed, nothing held", async () => {
    const ws = new RawWs(node.url);
    await ws.open();
    ws.send('451-["signal",{"_placeholder":true,"num":0}]');
    const closed = await ws.waitClosed(5_000);
    assert.ok(closed, `closed\n${ws.traceText()}`);
    assert.equal(closed.code, 1002);
  });

  test("attachments that never arrive: the connection is closed after a bounded wait", async () => {
    const u = uid("lazy");
    const ws = new RawWs(node.url);
    ws.autoPong = true;
    await ws.open();
    ws.send(`40${JSON.stringify({ token: token(u) })}`);
    await ws.nextText((t) => t.startsWith("40"));
    ws.send('452-["signal",{"to":"x","data":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}]');
    ws.ws.send(Buffer.from([1, 2, 3]));
    const closed = await ws.waitClosed(20_000);
    assert.ok(closed, `closed within the bound\n${ws.traceText()}`);
    assert.equal(closed.code, 1002);
  });

  test("10,000 attachments announced, or a placeholder out of range: closed at once", async () => {
    for (const header of [
      '4510000-["signal",{"to":"x","data":{"_placeholder":true,"num":0}}]',
      '451-["signal",{"to":"x","data":{"_placeholder":true,"num":3}}]',
    ]) {
      const ws = new RawWs(node.url);
      await ws.open();
      ws.send(`40${JSON.stringify({ token: token(uid("h")) })}`);
      await ws.nextText((t) => t.startsWith("40"));
      ws.send(header);
      const closed = await ws.waitClosed(5_000);
      assert.ok(closed, `${header}: closed\n${ws.traceText()}`);
    }
  });
});

describe("binary across two nodes", T, () => {
  let c;
  before(async () => {
    c = await startCluster({ nodes: 2, name: "binary" });
  });
  after(async () => {
    await c?.stop();
  });

  test("signal and room:emit carry binary between nodes, websocket and polling", async () => {
    const [n1, n2] = c.nodes;
    const [ua, ub] = [uid("x1"), uid("x2")];
    const room = uid("r");
    const a = await connectUser(n1, ua, { token: token(ua, { rooms: [room] }) });
    const b = await connectUser(n2, ub, { token: token(ub, { rooms: [room] }), transports: ["polling"] });
    await exchange(a, ua, b, ub);
    const blob = bytes(2048, 4);
    assert.deepEqual(await ack(b, "room:emit", { room, data: blob }), { ok: true });
    for (const s of [a, b]) {
      const [m] = await s.log.next("room:msg");
      assert.ok(asBuffer(m.data).equals(blob));
    }
    a.disconnect();
    b.disconnect();
  });
});

describe("binary through the backend's rpc", T, () => {
  test("binary arguments reach rpc as {\"$binary\": base64}; binary in the result comes back as binary", async () => {
    const backend = await startBackend({ script: TEST_BACKEND });
    const node = await startProductNode({ name: "binary-rpc", flags: ["--hook-url", backend.url, "--hook-secret", HOOK_SECRET] });
    try {
      const s = await connectUser(node, uid("r"));
      const raw = bytes(32, 8);
      await backend.answers({ rpc: { result: { echo: { $binary: raw.toString("base64") }, ok: 1 } } });
      const r = await ack(s, "file:put", { name: "a", content: raw });
      assert.equal(r.ok, true);
      assert.equal(r.result.ok, 1);
      assert.ok(asBuffer(r.result.echo).equals(raw));
      const sent = (await backend.stats()).requests.rpc.at(-1);
      assert.deepEqual(sent.data, { name: "a", content: { $binary: raw.toString("base64") } });
      s.disconnect();
    } finally {
      closeAll();
      await node.stop();
      await backend.stop();
    }
  });
});
