// Sends one `signal` with binary (a Buffer, an ArrayBuffer) from Node's socket.io-client to a
// python client, for test_python_client.py. Uses the client installed in tests/js.
// argv: url token to seedA lenA seedB lenB transport
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "js", "package.json"));
const { io } = require("socket.io-client");

const [url, token, to, seedA, lenA, seedB, lenB, transport] = process.argv.slice(2);
const bytes = (n, seed) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256));
const s = io(url, { auth: { token }, transports: [transport], reconnection: false });
const fail = (why) => {
  console.error(why);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 10_000).unref();
s.on("connect_error", (e) => fail(`connect_error ${e.message}`));
s.on("authenticated", async () => {
  const ab = new Uint8Array(bytes(Number(lenB), Number(seedB))).buffer;
  const res = await s.timeout(5_000).emitWithAck("signal", { to, data: { buf: bytes(Number(lenA), Number(seedA)), ab, text: "from node" } });
  console.log(JSON.stringify(res));
  s.disconnect();
  process.exit(0);
});
