// 7: a node started without --conformance: "/" accepts connections, other namespaces are
// refused, and the Engine.IO defaults apply.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startNode, newClient, closeAll, connect, waitEvent, RawWs } from "./fixture.js";

let node;
const raws = [];
before(async () => {
  node = await startNode([], { name: "default" });
});
after(async () => {
  closeAll();
  for (const r of raws) r.close();
  await node?.stop();
});
afterEach(() => closeAll());

for (const transport of ["websocket", "polling"]) {
  describe(`over ${transport}`, { timeout: 20_000 }, () => {
    test('"/" connects: socket.connected and socket.id set', async () => {
      const socket = newClient(node.url, "/", { transports: [transport] });
      await connect(socket);
      assert.equal(socket.connected, true);
      assert.equal(typeof socket.id, "string");
      assert.ok(socket.id.length > 0, "socket.id set");
      assert.notEqual(socket.id, socket.io.engine.id, "the Socket.IO id must not be the Engine.IO sid");
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
