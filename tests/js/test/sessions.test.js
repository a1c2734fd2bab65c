// 6: /health, and that sessions are not left behind: many connect/disconnect cycles and
// abandoned connections all end with `sessions: 0`.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  startNode,
  newClient,
  closeAll,
  connectWithAuth,
  echo,
  health,
  sessionsBecome,
  RawWs,
  pollRequest,
  waitEvent,
} from "./fixture.js";

let node;
const raws = [];
before(async () => {
  node = await startNode(["--conformance"], { name: "sessions" });
});
after(async () => {
  closeAll();
  for (const r of raws) r.close();
  await node?.stop();
});
afterEach(() => {
  closeAll();
  for (const r of raws.splice(0)) r.close();
});

test("GET /health, /health/live and /health/ready", { timeout: 10_000 }, async () => {
  const h = await health(node.url);
  assert.equal(h.status, "ok");
  assert.equal(typeof h.node, "string");
  assert.equal(h.sessions, 0);
  assert.equal(h.draining, false);
  for (const p of ["/health/live", "/health/ready"]) {
    const res = await fetch(node.url + p, { signal: AbortSignal.timeout(5_000) });
    assert.equal(res.status, 200, `${p} -> ${res.status}`);
  }
});

test("/health counts live sessions", { timeout: 15_000 }, async () => {
  await sessionsBecome(node.url, 0);
  const conns = [];
  for (let i = 0; i < 20; i++) {
    const r = new RawWs(node.url);
    raws.push(r);
    r.autoPong = true;
    conns.push(r);
  }
  await Promise.all(conns.map((r) => r.open()));
  for (const r of conns) r.send("40");
  await Promise.all(conns.map((r) => r.nextText((t) => t.startsWith("40"))));
  const s = await socketIoClients(5);
  assert.equal((await health(node.url)).sessions, 25);
  for (const c of s) c.disconnect();
  await sessionsBecome(node.url, 20);
  for (const r of conns) r.ws.close(1000);
  await sessionsBecome(node.url, 0);
});

async function socketIoClients(n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const c = newClient(node.url, "/", { transports: [i % 2 ? "polling" : "websocket"] });
    await connectWithAuth(c);
    out.push(c);
  }
  return out;
}

test("200 sequential connect/disconnect cycles (websocket, polling, upgrade) leave no session", { timeout: 120_000 }, async () => {
  await sessionsBecome(node.url, 0);
  const kinds = [["websocket"], ["polling"], ["polling", "websocket"]];
  for (let i = 0; i < 200; i++) {
    const transports = kinds[i % 3];
    const socket = newClient(node.url, i % 2 ? "/" : "/custom", { transports, auth: { i } });
    try {
      const auth = await connectWithAuth(socket);
      assert.deepEqual(auth, { i }, `cycle ${i}`);
      if (i % 5 === 0) assert.deepEqual(await echo(socket, [i]), [i], `cycle ${i} echo`);
      if (i === 3) {
        // a connected client is counted
        assert.ok((await health(node.url)).sessions >= 1, "sessions >= 1 while connected");
      }
    } catch (e) {
      throw new Error(`cycle ${i} (${transports.join("+")}): ${e.message}`);
    } finally {
      socket.disconnect();
    }
  }
  await sessionsBecome(node.url, 0, { timeout: 5_000 });
});

test("abandoned connections are reaped: dropped websockets, silent websockets, unused polling handshakes", { timeout: 30_000 }, async () => {
  await sessionsBecome(node.url, 0);
  const dropped = [];
  const silent = [];
  for (let i = 0; i < 10; i++) {
    const d = new RawWs(node.url);
    const s = new RawWs(node.url);
    raws.push(d, s);
    dropped.push(d);
    silent.push(s);
  }
  await Promise.all([...dropped, ...silent].map((r) => r.open()));
  for (const r of [...dropped, ...silent]) r.send("40");
  const handshakes = await Promise.all([...Array(10)].map(() => pollRequest(node.url)));
  for (const h of handshakes) assert.equal(h.status, 200, h.body);
  // the real client vanishing mid-session, too
  const sioClient = newClient(node.url, "/", { transports: ["websocket"] });
  await connectWithAuth(sioClient);
  const closed = waitEvent(sioClient, "disconnect", { timeout: 5_000 });
  sioClient.io.engine.transport.ws.terminate();
  await closed;

  for (const d of dropped) d.terminate(); // TCP reset, no close frame
  // `silent` ones stay open at the TCP level and never pong; the unused polling sessions never poll.
  await sessionsBecome(node.url, 0, { timeout: 5_000 });
  for (const s of silent) {
    assert.ok(s.closed || (await s.waitClosed(1_000)), `silent websocket not closed by the server\n${s.traceText()}`);
  }
});
