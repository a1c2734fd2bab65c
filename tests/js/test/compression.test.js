// Compression: gzip/deflate polling answers (raw HTTP, also forwarded through another node of a
// cluster) and websocket permessage-deflate (the stock socket.io-client, the `ws` package, and a
// raw frame client that checks RSV1 and sends a deflate bomb), against --conformance nodes.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import zlib from "node:zlib";
import WebSocket from "ws";
import { startNode, newClient, closeAll, connect, echo } from "./fixture.js";
import { startCluster } from "./cluster-fixture.js";
import { token } from "./product-fixture.js";

// Slow heartbeats: the raw clients below answer pings, but need no race with a 300 ms ping.
const CALM = ["--conformance", "--ping-interval-ms", "5000", "--ping-timeout-ms", "5000"];
const RS = "\x1e";
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** One raw HTTP request; resolves with {status, headers, raw} (raw: the body bytes as sent). */
function rawRequest(base, path, { method = "GET", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, headers, timeout: 10_000 }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, raw: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** The body of a polling answer, decoded as its Content-Encoding says. */
function decodeBody(res) {
  switch (res.headers["content-encoding"]) {
    case undefined:
      return res.raw.toString("utf8");
    case "gzip":
      return zlib.gunzipSync(res.raw).toString("utf8");
    case "deflate":
      return zlib.inflateSync(res.raw).toString("utf8");
    default:
      throw new Error(`unexpected content-encoding ${res.headers["content-encoding"]}`);
  }
}

/** A raw Engine.IO v4 polling session on `base`. */
class Poller {
  constructor(base) {
    this.base = base;
  }

  q() {
    return `/socket.io/?EIO=4&transport=polling${this.sid ? `&sid=${this.sid}` : ""}&t=${randomBytes(4).toString("hex")}`;
  }

  async handshake(headers = {}) {
    const res = await rawRequest(this.base, this.q(), { headers });
    assert.equal(res.status, 200, decodeBody(res));
    const open = JSON.parse(decodeBody(res).slice(1));
    this.sid = open.sid;
    return res;
  }

  async post(body, base = this.base) {
    const res = await rawRequest(base, this.q(), {
      method: "POST",
      headers: { "content-type": "text/plain;charset=UTF-8" },
      body,
    });
    assert.equal(res.status, 200, res.raw.toString());
  }

  async get(headers = {}, base = this.base) {
    const res = await rawRequest(base, this.q(), { headers });
    assert.equal(res.status, 200, res.raw.toString());
    return res;
  }

  /** GET (answering pings) until a packet matches; resolves with {res, packets}. */
  async getUntil(pred, headers = {}, base = this.base) {
    for (let i = 0; i < 10; i += 1) {
      const res = await this.get(headers, base);
      const packets = decodeBody(res).split(RS);
      if (packets.some(pred)) return { res, packets };
      if (packets.includes("2")) await this.post("3", base);
    }
    throw new Error("packet never arrived");
  }
}

describe("polling compression", () => {
  let node;
  let off;
  before(async () => {
    node = await startNode(CALM, { name: "compress-poll" });
    off = await startNode([...CALM, "--http-compression=false"], { name: "compress-poll-off" });
  });
  after(async () => {
    await node?.stop();
    await off?.stop();
  });

  test("a large answer is gzip with Accept-Encoding gzip and plain without it", async () => {
    const p = new Poller(node.url);
    const hs = await p.handshake({ "accept-encoding": "gzip" });
    assert.equal(hs.headers["content-encoding"], undefined, "the open packet is under the 1024-byte threshold");
    assert.match(hs.headers.vary ?? "", /accept-encoding/i);
    await p.post("40");
    await p.getUntil((x) => x.startsWith("40{"));

    const big = "compressible ".repeat(200);
    await p.post(`42${JSON.stringify(["message", big])}`);
    const gz = await p.getUntil((x) => x.startsWith('42["message-back"'), { "accept-encoding": "gzip, deflate" });
    assert.equal(gz.res.headers["content-encoding"], "gzip");
    assert.match(gz.res.headers.vary ?? "", /accept-encoding/i);
    assert.deepEqual(JSON.parse(gz.packets.find((x) => x.startsWith('42["message-back"')).slice(2)), ["message-back", big]);
    assert.ok(gz.res.raw.length < big.length / 4, `gzip body of ${gz.res.raw.length} bytes`);
    assert.equal(Number(gz.res.headers["content-length"]), gz.res.raw.length);

    await p.post(`42${JSON.stringify(["message", big])}`);
    const plain = await p.getUntil((x) => x.startsWith('42["message-back"'));
    assert.equal(plain.res.headers["content-encoding"], undefined);
    assert.ok(plain.res.raw.length > big.length);
    assert.deepEqual(JSON.parse(plain.res.raw.toString().split(RS).find((x) => x.startsWith('42["message-back"')).slice(2)), [
      "message-back",
      big,
    ]);
  });

  test("deflate when gzip has q=0; nothing when both are refused", async () => {
    const p = new Poller(node.url);
    await p.handshake();
    await p.post("40");
    await p.getUntil((x) => x.startsWith("40{"));
    const big = "z".repeat(3000);
    await p.post(`42${JSON.stringify(["message", big])}`);
    const d = await p.getUntil((x) => x.startsWith('42["message-back"'), { "accept-encoding": "gzip;q=0, deflate" });
    assert.equal(d.res.headers["content-encoding"], "deflate");
    assert.deepEqual(JSON.parse(d.packets.find((x) => x.startsWith('42["message-back"')).slice(2)), ["message-back", big]);

    await p.post(`42${JSON.stringify(["message", big])}`);
    const none = await p.getUntil((x) => x.startsWith('42["message-back"'), { "accept-encoding": "gzip;q=0, deflate;q=0, br" });
    assert.equal(none.res.headers["content-encoding"], undefined);
  });

  test("--http-compression=false sends plain bodies", async () => {
    const p = new Poller(off.url);
    await p.handshake();
    await p.post("40");
    await p.getUntil((x) => x.startsWith("40{"));
    await p.post(`42${JSON.stringify(["message", "y".repeat(4000)])}`);
    const r = await p.getUntil((x) => x.startsWith('42["message-back"'), { "accept-encoding": "gzip" });
    assert.equal(r.res.headers["content-encoding"], undefined);
    assert.equal(r.res.headers.vary, undefined);
  });
});

describe("forwarded polling compression", () => {
  test("the owner compresses and the forwarding node relays the gzip body", async (t) => {
    const c = await startCluster({
      nodes: 2,
      name: "compress-fwd",
      flags: ["--http-compression-threshold", "1", "--ping-interval-ms", "1000", "--ping-timeout-ms", "5000"],
    });
    t.after(() => c.stop());
    const [a, b] = c.nodes;
    const p = new Poller(a.url);
    const hs = await p.handshake({ "accept-encoding": "gzip" });
    assert.equal(hs.headers["content-encoding"], "gzip", "threshold 1: the open packet is compressed");
    // Everything after the handshake goes through node-2, which forwards it to node-1.
    await p.post(`40${JSON.stringify({ token: token("fwd-user") })}`, b.url);
    const gz = await p.getUntil((x) => x.startsWith("40{"), { "accept-encoding": "gzip" }, b.url);
    assert.equal(gz.res.headers["content-encoding"], "gzip");
    assert.equal(Number(gz.res.headers["content-length"]), gz.res.raw.length);
    assert.ok(JSON.parse(gz.packets.find((x) => x.startsWith("40{")).slice(2)).sid);
    // The next answer (a ping at the latest) without Accept-Encoding: plain through node-2 too.
    const plain = await p.get({}, b.url);
    assert.equal(plain.headers["content-encoding"], undefined);
    assert.ok(plain.raw.toString().length > 0);
    assert.doesNotThrow(() => plain.raw.toString("utf8"));
  });
});

/** A websocket client on a bare TCP socket: sees RSV1 and can send any frame. */
class RawFrameClient {
  static async open(base, extensions) {
    const { hostname, port } = new URL(base);
    const c = new RawFrameClient();
    c.sock = net.connect(Number(port), hostname);
    await once(c.sock, "connect");
    const key = randomBytes(16).toString("base64");
    c.sock.write(
      `GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: ${hostname}:${port}\r\n` +
        `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        (extensions ? `Sec-WebSocket-Extensions: ${extensions}\r\n` : "") +
        "\r\n",
    );
    c.buf = Buffer.alloc(0);
    c.head = null;
    c.frames = [];
    c.ended = false;
    c.waiters = [];
    c.sock.on("data", (d) => {
      c.buf = Buffer.concat([c.buf, d]);
      c.parse();
    });
    c.sock.on("close", () => {
      c.ended = true;
      c.wake();
    });
    c.sock.on("error", () => {});
    await c.until(() => c.head !== null);
    return c;
  }

  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  parse() {
    if (this.head === null) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      this.head = this.buf.subarray(0, end).toString();
      this.buf = this.buf.subarray(end + 4);
    }
    for (;;) {
      if (this.buf.length < 2) break;
      const b0 = this.buf[0];
      let len = this.buf[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (this.buf.length < 4) break;
        len = this.buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) break;
        len = Number(this.buf.readBigUInt64BE(2));
        at = 10;
      }
      if (this.buf.length < at + len) break;
      const payload = this.buf.subarray(at, at + len);
      this.buf = this.buf.subarray(at + len);
      const frame = { opcode: b0 & 0x0f, rsv1: (b0 & 0x40) !== 0, payload };
      // A sync-flushed message has no final block: inflate it with a sync flush too.
      frame.data = frame.rsv1
        ? zlib.inflateRawSync(Buffer.concat([payload, TAIL]), { finishFlush: zlib.constants.Z_SYNC_FLUSH })
        : payload;
      if (frame.opcode === 1 && frame.data.toString() === "2") this.send("3");
      this.frames.push(frame);
    }
    this.wake();
  }

  header(name) {
    const line = this.head.split("\r\n").find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
    return line?.slice(line.indexOf(":") + 1).trim();
  }

  async until(cond, timeout = 5_000) {
    const deadline = Date.now() + timeout;
    while (!cond()) {
      if (this.ended && !cond()) throw new Error("connection ended");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out");
      await new Promise((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** The next frame (taken off the list) that matches. */
  async next(pred, timeout = 5_000) {
    let i = -1;
    await this.until(() => (i = this.frames.findIndex(pred)) >= 0, timeout);
    return this.frames.splice(i, 1)[0];
  }

  send(text, { rsv1 = false, opcode = 1 } = {}) {
    const payload = Buffer.isBuffer(text) ? text : Buffer.from(text);
    const len = payload.length;
    const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    head[0] = 0x80 | (rsv1 ? 0x40 : 0) | opcode;
    if (len < 126) head[1] = 0x80 | len;
    else if (len < 65536) {
      head[1] = 0x80 | 126;
      head.writeUInt16BE(len, 2);
    } else {
      head[1] = 0x80 | 127;
      head.writeBigUInt64BE(BigInt(len), 2);
    }
    const mask = randomBytes(4);
    const masked = Buffer.from(payload);
    for (let i = 0; i < masked.length; i += 1) masked[i] ^= mask[i % 4];
    this.sock.write(Buffer.concat([head, mask, masked]));
  }

  /** A message compressed the permessage-deflate way (sync flush, tail stripped), RSV1 set. */
  sendDeflated(text) {
    const packed = zlib.deflateRawSync(Buffer.from(text), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    assert.ok(packed.subarray(-4).equals(TAIL));
    this.send(packed.subarray(0, -4), { rsv1: true });
    return packed.length - 4;
  }

  destroy() {
    this.sock.destroy();
  }
}

const textOf = (f) => (f.opcode === 1 ? f.data.toString() : "");

describe("websocket permessage-deflate", () => {
  let node;
  let off;
  before(async () => {
    node = await startNode([...CALM, "--ws-deflate"], { name: "compress-ws" });
    off = await startNode(CALM, { name: "compress-ws-off" });
  });
  after(async () => {
    closeAll();
    await node?.stop();
    await off?.stop();
  });
  afterEach(() => closeAll());

  test("the stock socket.io-client negotiates it and exchanges large and small events", async () => {
    const socket = newClient(node.url, "/", { transports: ["websocket"] });
    await connect(socket);
    const ws = socket.io.engine.transport.ws;
    assert.match(ws.extensions, /permessage-deflate/, "engine.io-client's ws negotiated deflate");
    const big = { text: "hello compression ".repeat(300), list: Array.from({ length: 50 }, (_, i) => i) };
    assert.deepEqual(await echo(socket, [big]), [big]);
    assert.deepEqual(await echo(socket, ["small"]), ["small"]);
    const binary = Buffer.alloc(5000, 7);
    const [back] = await echo(socket, [binary]);
    assert.ok(Buffer.from(back).equals(binary));
  });

  test("the ws package sees the extension in the answer only when it is on", async () => {
    for (const [target, expected] of [
      [node, true],
      [off, false],
    ]) {
      const ws = new WebSocket(`${target.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
      const [[res]] = await Promise.all([once(ws, "upgrade"), once(ws, "open")]);
      const header = res.headers["sec-websocket-extensions"];
      if (expected) {
        assert.match(header ?? "", /^permessage-deflate/);
        assert.match(ws.extensions, /permessage-deflate/);
      } else {
        assert.equal(header, undefined);
        assert.equal(ws.extensions, "");
      }
      ws.terminate();
    }
  });

  test("an offer the node cannot honour (server_max_window_bits=10) is declined", async () => {
    const ws = new WebSocket(`${node.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`, {
      perMessageDeflate: { serverMaxWindowBits: 10 },
    });
    const [[res]] = await Promise.all([once(ws, "upgrade"), once(ws, "open")]);
    assert.equal(res.headers["sec-websocket-extensions"], undefined);
    ws.terminate();
  });

  test("large frames go out with RSV1, small ones plain; compressed input is inflated", async () => {
    const c = await RawFrameClient.open(node.url, "permessage-deflate; client_max_window_bits");
    try {
      assert.match(c.head, /^HTTP\/1.1 101/);
      assert.equal(
        c.header("sec-websocket-extensions"),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
      );
      const open = await c.next((f) => textOf(f).startsWith("0"));
      assert.equal(open.rsv1, false);
      c.send("40");
      await c.next((f) => textOf(f).startsWith("40"));

      const big = "x".repeat(2000);
      c.sendDeflated(`42${JSON.stringify(["message", big])}`);
      const bigBack = await c.next((f) => textOf(f).startsWith('42["message-back"'));
      assert.equal(bigBack.rsv1, true, "a 2 KB message is sent compressed");
      assert.ok(bigBack.payload.length < 200, `compressed to ${bigBack.payload.length} bytes`);
      assert.deepEqual(JSON.parse(textOf(bigBack).slice(2)), ["message-back", big]);

      c.send(`42${JSON.stringify(["message", "tiny"])}`);
      const small = await c.next((f) => textOf(f).startsWith('42["message-back"'));
      assert.equal(small.rsv1, false, "a small message is sent plain");
      assert.deepEqual(JSON.parse(textOf(small).slice(2)), ["message-back", "tiny"]);
    } finally {
      c.destroy();
    }
  });

  test("RSV1 without the extension is a protocol error", async () => {
    const c = await RawFrameClient.open(off.url, "permessage-deflate");
    try {
      assert.equal(c.header("sec-websocket-extensions"), undefined);
      await c.next((f) => textOf(f).startsWith("0"));
      c.sendDeflated("40");
      const close = await c.next((f) => f.opcode === 8);
      assert.equal(close.payload.readUInt16BE(0), 1002);
    } finally {
      c.destroy();
    }
  });

  test("a deflate bomb closes only its own socket (1009)", async () => {
    const bystander = newClient(node.url, "/", { transports: ["websocket"] });
    await connect(bystander);
    const c = await RawFrameClient.open(node.url, "permessage-deflate");
    try {
      await c.next((f) => textOf(f).startsWith("0"));
      c.send("40");
      await c.next((f) => textOf(f).startsWith("40"));
      // 16 MB of one letter: about 16 KB on the wire, far past the 64 KiB inflate cap.
      const sent = c.sendDeflated(`42["message","${"a".repeat(16 * 1024 * 1024)}"]`);
      assert.ok(sent < 64 * 1024, `bomb of ${sent} bytes`);
      const close = await c.next((f) => f.opcode === 8, 10_000);
      assert.equal(close.payload.readUInt16BE(0), 1009);
      assert.equal(close.payload.subarray(2).toString(), "message too big once inflated");
      await c.until(() => c.ended);
    } finally {
      c.destroy();
    }
    // The node and the other socket are unaffected.
    assert.deepEqual(await echo(bystander, ["still here", "z".repeat(3000)]), ["still here", "z".repeat(3000)]);
    assert.ok(bystander.connected);
  });
});
