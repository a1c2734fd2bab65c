// 7: a node started with no configuration at all: it prints a demo token, "/" accepts
// connections that present it (and refuses those that do not), other namespaces are refused,
// and the Engine.IO defaults apply.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startNode, newClient, closeAll, connect, waitEvent, RawWs } from "./fixture.js";
import { demoTokenLine } from "./product-fixture.js";

let node;
let demo;
const raws = [];
before(async () => {
  node = await startNode([], { name: "default" });
  demo = await demoTokenLine(node);
});
after(async () => {
  closeAll();
  for (const r of raws) r.close();
  await node?.stop();
});
afterEach(() => closeAll());

for (const transport of ["websocket", "polling"]) {
  describe(`over ${transport}`, { timeout: 20_000 }, () => {
    test('"/" connects with the printed demo token: socket.connected and socket.id set', async () => {
      assert.equal(demo.userId, "demo");
      const socket = newClient(node.url, "/", { transports: [transport], auth: { token: demo.token } });
      const hello = waitEvent(socket, "authenticated", { timeout: 5_000 });
      await connect(socket);
      assert.equal((await hello)[0].userId, "demo");
      assert.equal(socket.connected, true);
      assert.equal(typeof socket.id, "string");
      assert.ok(socket.id.length > 0, "socket.id set");
      assert.notEqual(socket.id, socket.io.engine.id, "the Socket.IO id must not be the Engine.IO sid");
    });

    test('"/" without a token is refused with auth_failed / missing_token', async () => {
      const socket = newClient(node.url, "/", { transports: [transport] });
      const err = waitEvent(socket, "connect_error", { timeout: 5_000, failOn: ["connect"] });
      socket.connect();
      const [e] = await err;
      assert.equal(e.message, "auth_failed");
      assert.equal(e.data.reason, "missing_token");
    });

    test('"/custom" is refused with "Invalid namespace" (conformance namespaces are off)', async () => {
      const socket = newClient(node.url, "/custom", { transports: [transport] });
      const err = waitEvent(socket, "connect_error", { timeout: 5_000, failOn: ["connect"] });
      socket.connect();
      assert.equal((await err)[0].message, "Invalid namespace");
    });
  });
}

test("default heartbeat settings in the open packet", { timeout: 10_000 }, async () => {
  const r = new RawWs(node.url);
  raws.push(r);
  const open = await r.open();
  assert.equal(open.pingInterval, 25_000);
  assert.equal(open.pingTimeout, 20_000);
  assert.equal(open.maxPayload, 1_000_000);
  r.close();
});
