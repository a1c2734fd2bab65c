// 2: acknowledgements against a --conformance node (message-with-ack is answered by calling
// the client's ack with the same args).

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startNode, newClient, closeAll, connectWithAuth, normalizeBinary } from "./fixture.js";

let node;
before(async () => {
  node = await startNode(["--conformance"], { name: "acks" });
});
after(async () => {
  closeAll();
  await node?.stop();
});
afterEach(() => closeAll());

async function connectOver(transport) {
  const socket = newClient(node.url, "/", { transports: [transport], auth: { token: "abc" } });
  await connectWithAuth(socket);
  return socket;
}

/** emit with an ack callback; resolves with every ack argument. */
function emitForAllAckArgs(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5_000).emit(event, ...args, (err, ...ackArgs) => {
      if (err) reject(new Error(`no ack for "${event}" within 5 s (${err.message})`));
      else resolve(ackArgs);
    });
  });
}

for (const transport of ["websocket", "polling"]) {
  describe(`client -> server ack over ${transport}`, { timeout: 30_000 }, () => {
    test('emitWithAck("message-with-ack", 1, "two", {three: 3}) resolves with 1', async () => {
      const socket = await connectOver(transport);
      const first = await socket.timeout(5_000).emitWithAck("message-with-ack", 1, "two", { three: 3 });
      assert.equal(first, 1);
    });

    test("the ack carries every argument back", async () => {
      const socket = await connectOver(transport);
      const ackArgs = await emitForAllAckArgs(socket, "message-with-ack", 1, "two", { three: 3 });
      assert.deepEqual(ackArgs, [1, "two", { three: 3 }]);
    });

    test("binary ack: Buffers in the args come back in the ack", async () => {
      const socket = await connectOver(transport);
      const args = [Buffer.from([1, 2, 3]), { nested: Buffer.from([4, 5]) }, "text"];
      const ackArgs = await emitForAllAckArgs(socket, "message-with-ack", ...args);
      assert.deepEqual(normalizeBinary(ackArgs), args);
    });

    test("50 concurrent acks are matched to their own ids", async () => {
      const socket = await connectOver(transport);
      const results = await Promise.all(
        [...Array(50).keys()].map((i) => socket.timeout(5_000).emitWithAck("message-with-ack", i, `v${i}`)),
      );
      assert.deepEqual(results, [...Array(50).keys()]);
    });
  });
}

// Server -> client: `server-ack-request` makes the conformance server emit `ack-request` with
// the same args and an ack id; the client's ack comes back to it, and it reports the ack's
// args in `ack-response`.
for (const transport of ["websocket", "polling"]) {
  describe(`server -> client ack over ${transport}`, { timeout: 30_000 }, () => {
    test("the client's ack reaches the server with its arguments (binary included)", async () => {
      const socket = await connectOver(transport);
      const requested = new Promise((resolve) =>
        socket.once("ack-request", (...args) => {
          const ack = args.pop();
          assert.equal(typeof ack, "function", "the server's emit carries an ack id");
          ack("answer", { n: args[0] }, Buffer.from([9, 8]));
          resolve(args);
        }),
      );
      const response = new Promise((resolve) => socket.once("ack-response", (...args) => resolve(args)));
      socket.emit("server-ack-request", 7, "x");
      assert.deepEqual(await requested, [7, "x"]);
      assert.deepEqual(normalizeBinary(await response), ["answer", { n: 7 }, Buffer.from([9, 8])]);
    });

    test("each of 20 server emits is acked under its own id", async () => {
      const socket = await connectOver(transport);
      socket.on("ack-request", (i, ack) => ack(i * 10));
      const seen = [];
      const all = new Promise((resolve) =>
        socket.on("ack-response", (v) => {
          seen.push(v);
          if (seen.length === 20) resolve();
        }),
      );
      for (let i = 0; i < 20; i++) socket.emit("server-ack-request", i);
      await all;
      assert.deepEqual(seen.sort((a, b) => a - b), [...Array(20).keys()].map((i) => i * 10));
    });
  });
}
