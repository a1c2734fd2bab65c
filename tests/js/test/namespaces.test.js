// 4: namespaces against a --conformance node: /custom exists, anything else is refused with
// "Invalid namespace"; namespaces multiplex over one Engine.IO connection.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  startNode,
  newClient,
  newManager,
  closeAll,
  connectWithAuth,
  echo,
  waitEvent,
} from "./fixture.js";

let node;
before(async () => {
  node = await startNode(["--conformance"], { name: "namespaces" });
});
after(async () => {
  closeAll();
  await node?.stop();
});
afterEach(() => closeAll());

for (const transport of ["websocket", "polling"]) {
  describe(`over ${transport}`, { timeout: 30_000 }, () => {
    test("/custom connects, receives auth and echoes", async () => {
      const socket = newClient(node.url, "/custom", { transports: [transport], auth: { token: "abc" } });
      const auth = await connectWithAuth(socket);
      assert.deepEqual(auth, { token: "abc" });
      assert.equal(socket.connected, true);
      assert.deepEqual(await echo(socket, ["on custom", 2]), ["on custom", 2]);
    });

    test("/custom without auth receives auth {}", async () => {
      const socket = newClient(node.url, "/custom", { transports: [transport] });
      assert.deepEqual(await connectWithAuth(socket), {});
    });

    test('/nope gets connect_error "Invalid namespace"', async () => {
      const socket = newClient(node.url, "/nope", { transports: [transport] });
      const err = waitEvent(socket, "connect_error", { timeout: 5_000, failOn: ["connect"] });
      socket.connect();
      const [e] = await err;
      assert.equal(e.message, "Invalid namespace");
      assert.equal(socket.connected, false);
    });

    test("/ and /custom multiplexed on one connection stay separate; a refused /nope does not hurt them", async () => {
      const manager = newManager(node.url, { transports: [transport] });
      const root = manager.socket("/", { auth: { who: "root" } });
      const custom = manager.socket("/custom", { auth: { who: "custom" } });
      const nope = manager.socket("/nope");
      try {
        const [rootAuth, customAuth] = await Promise.all([connectWithAuth(root), connectWithAuth(custom)]);
        assert.deepEqual(rootAuth, { who: "root" });
        assert.deepEqual(customAuth, { who: "custom" });
        const engineId = manager.engine.id;

        const misrouted = [];
        root.on("message-back", (...a) => a[0] === "to custom" && misrouted.push(["/", a]));
        custom.on("message-back", (...a) => a[0] === "to root" && misrouted.push(["/custom", a]));
        const [r, c] = await Promise.all([echo(root, ["to root"]), echo(custom, ["to custom"])]);
        assert.deepEqual(r, ["to root"]);
        assert.deepEqual(c, ["to custom"]);

        const refused = waitEvent(nope, "connect_error", { timeout: 5_000, failOn: ["connect"] });
        nope.connect();
        assert.equal((await refused)[0].message, "Invalid namespace");

        // the other namespaces on the same Engine.IO session still work
        assert.deepEqual(await echo(root, ["to root"]), ["to root"]);
        assert.deepEqual(await echo(custom, ["to custom"]), ["to custom"]);
        assert.equal(manager.engine.id, engineId, "same Engine.IO session throughout");
        assert.deepEqual(misrouted, []);

        // leaving one namespace keeps the other
        custom.disconnect();
        assert.deepEqual(await echo(root, ["still here"]), ["still here"]);
        assert.equal(root.connected, true);
      } finally {
        root.disconnect();
        custom.disconnect();
        nope.disconnect();
      }
    });
  });
}
