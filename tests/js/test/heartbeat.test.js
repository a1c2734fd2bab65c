// 5: heartbeat. In conformance mode the server pings every 300 ms and waits 200 ms for the
// pong, so a client that never answers is dropped ~500 ms after the handshake, and one that
// answers stays.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  startNode,
  newClient,
  closeAll,
  connectWithAuth,
  echo,
  RawWs,
  pollRequest,
  splitPayload,
  sleep,
} from "./fixture.js";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const EARLIEST = 400; // must not be closed before this (ms after the open packet)
const LATEST = PING_INTERVAL + PING_TIMEOUT + 1_000; // generous slack for a loaded machine

let node;
const raws = [];
before(async () => {
  node = await startNode(["--conformance"], { name: "heartbeat" });
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

function rawWs() {
  const r = new RawWs(node.url);
  raws.push(r);
  return r;
}

test("websocket open packet carries the conformance heartbeat settings", { timeout: 10_000 }, async () => {
  const r = rawWs();
  const open = await r.open();
  assert.equal(typeof open.sid, "string");
  assert.ok(open.sid.length > 0);
  assert.deepEqual(open.upgrades, [], "a websocket handshake offers no upgrades");
  assert.equal(open.pingInterval, PING_INTERVAL);
  assert.equal(open.pingTimeout, PING_TIMEOUT);
  assert.equal(open.maxPayload, 1_000_000);
});

test("websocket client that never answers pings is closed after pingInterval+pingTimeout", { timeout: 10_000 }, async () => {
  const r = rawWs();
  await r.open();
  const openAt = r.elapsed();
  // Join "/" so that the connect timeout (1 s) is not what closes us.
  r.send("40");
  const reply = await r.nextText((t) => t.startsWith("40"), 2_000);
  assert.match(reply, /^40\{"sid":"[^"]+"\}$/, "CONNECT reply");

  const closed = await r.waitClosed(LATEST + 1_000);
  assert.ok(closed, `server did not close a silent client within ${LATEST + 1_000} ms\n${r.traceText()}`);
  const after = closed.at - openAt;
  const pings = r.trace.filter((l) => l.endsWith("< 2")).length;
  assert.ok(pings >= 1, `expected at least one ping before the close\n${r.traceText()}`);
  assert.ok(after >= EARLIEST, `closed too early: ${after} ms after open (expected >= ${EARLIEST})\n${r.traceText()}`);
  assert.ok(after <= LATEST, `closed too late: ${after} ms after open (expected <= ${LATEST})\n${r.traceText()}`);
});

test("polling client that never answers pings is closed after pingInterval+pingTimeout", { timeout: 15_000 }, async () => {
  const t0 = Date.now();
  const hs = await pollRequest(node.url);
  assert.equal(hs.status, 200, `handshake: ${hs.body}`);
  const [openPkt] = splitPayload(hs.body);
  assert.ok(openPkt.startsWith("0"), `handshake body: ${hs.body}`);
  const open = JSON.parse(openPkt.slice(1));
  assert.deepEqual(open.upgrades, ["websocket"]);
  assert.equal(open.pingInterval, PING_INTERVAL);
  assert.equal(open.pingTimeout, PING_TIMEOUT);
  const sid = open.sid;

  const trace = [`0ms < ${hs.body}`];
  const post = await pollRequest(node.url, { sid, method: "POST", body: "40" });
  trace.push(`${Date.now() - t0}ms > 40 : ${post.status} ${post.body}`);
  assert.equal(post.status, 200, `POST 40: ${post.body}`);

  // Keep polling, never POST a pong, until the session is gone.
  let closedAt = null;
  let sawPing = false;
  while (Date.now() - t0 < LATEST + 2_000) {
    const res = await pollRequest(node.url, { sid, timeout: 5_000 });
    const at = Date.now() - t0;
    trace.push(`${at}ms < ${res.status} ${JSON.stringify(res.body)}`);
    if (res.status === 400) {
      assert.match(res.body, /"code":1/, `400 must be "Session ID unknown"\n${trace.join("\n")}`);
      closedAt = at;
      break;
    }
    assert.equal(res.status, 200, trace.join("\n"));
    const pkts = splitPayload(res.body);
    if (pkts.includes("2")) sawPing = true;
    if (pkts.includes("1")) {
      closedAt = at;
      break;
    }
  }
  assert.ok(closedAt !== null, `session not closed within ${LATEST + 2_000} ms\n${trace.join("\n")}`);
  assert.ok(sawPing, `expected a ping before the close\n${trace.join("\n")}`);
  assert.ok(closedAt >= EARLIEST, `closed too early (${closedAt} ms)\n${trace.join("\n")}`);
  assert.ok(closedAt <= LATEST, `closed too late (${closedAt} ms)\n${trace.join("\n")}`);

  // And the sid is dead now.
  const late = await pollRequest(node.url, { sid });
  assert.equal(late.status, 400, `GET after close: ${late.status} ${late.body}`);
  assert.equal(JSON.parse(late.body).code, 1);
});

test("clients that answer pings stay connected for 2 s (raw websocket, socket.io websocket, socket.io polling)", { timeout: 15_000 }, async () => {
  const r = rawWs();
  r.autoPong = true;
  await r.open();
  r.send("40");
  await r.nextText((t) => t.startsWith("40"), 2_000);

  const ws = newClient(node.url, "/", { transports: ["websocket"], auth: { token: "abc" } });
  const poll = newClient(node.url, "/", { transports: ["polling"], auth: { token: "abc" } });
  await Promise.all([connectWithAuth(ws), connectWithAuth(poll)]);
  const disconnects = [];
  ws.on("disconnect", (reason) => disconnects.push(`websocket: ${reason}`));
  poll.on("disconnect", (reason) => disconnects.push(`polling: ${reason}`));

  await sleep(2_000);

  assert.equal(r.closed, null, `raw websocket was closed\n${r.traceText()}`);
  const pings = r.trace.filter((l) => l.endsWith("< 2")).length;
  assert.ok(pings >= 4, `expected >= 4 pings in 2 s at a 300 ms interval, got ${pings}\n${r.traceText()}`);
  assert.deepEqual(disconnects, []);
  assert.equal(ws.connected, true);
  assert.equal(poll.connected, true);
  // still usable
  assert.deepEqual(await echo(ws, ["alive"]), ["alive"]);
  assert.deepEqual(await echo(poll, ["alive"]), ["alive"]);
});
