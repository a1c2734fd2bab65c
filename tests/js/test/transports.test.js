// 1 + 3: connect, auth, echo (text and binary) over websocket-only, polling-only and the
// default polling -> websocket upgrade, against a --conformance node.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  startNode,
  newClient,
  closeAll,
  connectWithAuth,
  echo,
  waitEvent,
  normalizeBinary,
} from "./fixture.js";

const MODES = {
  websocket: { transports: ["websocket"], expect: "websocket" },
  polling: { transports: ["polling"], expect: "polling" },
  upgrade: { transports: ["polling", "websocket"], expect: "websocket" },
};

const BINARY_CASES = [
  ["a Buffer", () => [Buffer.from([1, 2, 3])]],
  [
    "a nested object holding Buffers",
    () => [{ a: 1, nested: { buf: Buffer.from([4, 5, 6]), list: [Buffer.from([7]), "x"] } }],
  ],
  [
    "several Buffers mixed with text args",
    () => ["before", Buffer.from([0xff, 0x00, 0x1e, 0x0a]), 42, { deep: [[Buffer.from("héllo")]] }, "after"],
  ],
  ["an empty Buffer", () => [Buffer.alloc(0), "tail"]],
  ["a 200 KiB Buffer", () => [randomBytes(200 * 1024)]],
];

let node;
before(async () => {
  node = await startNode(["--conformance"], { name: "transports" });
});
after(async () => {
  closeAll();
  await node?.stop();
});
afterEach(() => closeAll());

/** Connect in `mode`, check the auth event, and (for upgrade) wait for the websocket upgrade. */
async function connectIn(mode, auth = { token: "abc" }) {
  const { transports, expect } = MODES[mode];
  const socket = newClient(node.url, "/", { transports, auth });
  const authP = connectWithAuth(socket); // calls socket.connect() synchronously
  let upgraded;
  if (mode === "upgrade") {
    upgraded = waitEvent(socket.io.engine, "upgrade", {
      timeout: 5_000,
      failOn: ["upgradeError", "close"],
    });
  }
  const payload = await authP;
  assert.deepEqual(payload, auth, "auth event must carry the CONNECT payload");
  if (upgraded) await upgraded;
  assert.equal(socket.io.engine.transport.name, expect, "transport in use");
  return socket;
}

for (const mode of Object.keys(MODES)) {
  describe(`${mode}`, { timeout: 30_000 }, () => {
    test("connects and receives the auth event with the CONNECT payload", async () => {
      const socket = await connectIn(mode);
      assert.equal(socket.connected, true);
      assert.equal(typeof socket.id, "string");
      assert.ok(socket.id.length > 0, "socket.id set");
    });

    test("message is echoed as message-back with the same args", async () => {
      const socket = await connectIn(mode);
      const args = [1, "two", { three: 3, list: [4, null, true, "é✓"] }, [], ""];
      const back = await echo(socket, args);
      assert.deepEqual(back, args);
      assert.equal(socket.io.engine.transport.name, MODES[mode].expect, "transport after echo");
    });

    test("100 messages in a row come back complete and in order", async () => {
      const socket = await connectIn(mode);
      const got = [];
      const all = new Promise((resolve) => {
        socket.on("message-back", (i) => {
          got.push(i);
          if (got.length === 100) resolve();
        });
      });
      for (let i = 0; i < 100; i++) socket.emit("message", i);
      await Promise.race([
        all,
        new Promise((_, rej) =>
          setTimeout(() => rej(new Error(`only ${got.length}/100 message-back received`)), 10_000),
        ),
      ]);
      assert.deepEqual(got, [...Array(100).keys()]);
    });

    for (const [what, make] of BINARY_CASES) {
      test(`binary: ${what} comes back with equal bytes`, async () => {
        const socket = await connectIn(mode);
        const args = make();
        const back = await echo(socket, args, { timeout: 10_000 });
        assert.deepEqual(normalizeBinary(back), args);
      });
    }
  });
}

describe("upgrade in flight", { timeout: 30_000 }, () => {
  test("messages emitted while the upgrade is in progress are all echoed, in order", async () => {
    const socket = newClient(node.url, "/", { transports: ["polling", "websocket"], auth: { token: "abc" } });
    const got = [];
    const all = new Promise((resolve) => {
      socket.on("message-back", (i, buf) => {
        got.push([i, normalizeBinary(buf)]);
        if (got.length === 30) resolve();
      });
    });
    const upgraded = new Promise((resolve) => {
      socket.io.on("open", () => socket.io.engine.once("upgrade", resolve));
    });
    socket.on("connect", () => {
      // Emitted right after CONNECT, i.e. while the websocket probe is usually still running.
      for (let i = 0; i < 30; i++) socket.emit("message", i, Buffer.from([i]));
    });
    socket.connect();
    await Promise.race([
      all,
      new Promise((_, rej) =>
        setTimeout(() => rej(new Error(`only ${got.length}/30 message-back received: ${JSON.stringify(got.map((g) => g[0]))}`)), 10_000),
      ),
    ]);
    assert.deepEqual(
      got,
      [...Array(30).keys()].map((i) => [i, Buffer.from([i])]),
    );
    await Promise.race([
      upgraded,
      new Promise((_, rej) => setTimeout(() => rej(new Error("no upgrade within 5 s")), 5_000)),
    ]);
    assert.equal(socket.io.engine.transport.name, "websocket");
  });
});
