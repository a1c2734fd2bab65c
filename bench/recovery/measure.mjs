// Connection state recovery, for bench/recovery/run (see there). With the stock socket.io-client:
//   replay  (mode "on" only) a room member's transport is killed, MISSED `room:emit`s are sent
//           while it is away, and it reconnects: ms to `connect` with `recovered === true`, and
//           to the last replayed event; next to a fresh connect (no pid). Median of ROUNDS.
//   cost    server CPU (utime+stime of --pid, from /proc) per `room:emit` to a 10-member room,
//           EMITS of them, each delivered to every member.
//
//   node measure.mjs --url URL --pid PID --secret S --mode on|off [--missed 1000] [--rounds 5] [--emits 20000]
//
// Prints one JSON line per measurement.

import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "tests", "js", "package.json"));
const { io } = require("socket.io-client");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const URL = args.url;
const PID = Number(args.pid);
const MODE = args.mode ?? "on";
const MISSED = Number(args.missed ?? 1000);
const ROUNDS = Number(args.rounds ?? 5);
const EMITS = Number(args.emits ?? 20000);
const ROOM = "bench-recovery";

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
function token(sub) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, rooms: [ROOM], iat: now, exp: now + 3600 })}`;
  return `${head}.${createHmac("sha256", args.secret).update(head).digest("base64url")}`;
}

/** utime + stime of the server, in µs. */
function cpuMicros() {
  const fields = readFileSync(`/proc/${PID}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

function client(user, opts = {}) {
  return io(URL, { transports: ["websocket"], auth: { token: token(user) }, reconnection: false, forceNew: true, ...opts });
}

const once = (s, ev) => new Promise((resolve) => s.once(ev, (...a) => resolve(a)));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** `n` room:emits from `sender`, the last one acked (acks come in order). */
async function emitMany(sender, n, tag) {
  for (let i = 1; i < n; i++) sender.emit("room:emit", { room: ROOM, data: { tag, i } });
  await new Promise((resolve) => sender.emit("room:emit", { room: ROOM, data: { tag, i: n } }, resolve));
}

async function replay() {
  const sender = client("sender");
  await once(sender, "authenticated");
  const member = client("member");
  await once(member, "authenticated");
  let received = 0;
  let wanted = null;
  let done = null;
  member.on("room:msg", (m) => {
    if (m.data.tag === wanted && ++received === MISSED) done?.();
  });
  // One recoverable event first: the client sends its offset only after it got one.
  await new Promise((resolve) => {
    member.once("room:msg", resolve);
    sender.emit("room:emit", { room: ROOM, data: { tag: "warm", i: 0 } });
  });
  const recovered = [];
  const replayed = [];
  const fresh = [];
  let notRecovered = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const gone = once(member, "disconnect");
    member.io.engine.close();
    await gone;
    wanted = `round-${r}`;
    received = 0;
    await emitMany(sender, MISSED, wanted);
    const all = new Promise((resolve) => (done = resolve));
    const t0 = performance.now();
    member.connect();
    await once(member, "connect");
    const t1 = performance.now();
    if (!member.recovered) notRecovered++;
    await all;
    const t2 = performance.now();
    recovered.push(t1 - t0);
    replayed.push(t2 - t0);
    // A fresh connect for comparison: a new client, no pid.
    const f0 = performance.now();
    const f = client(`fresh-${r}`);
    await once(f, "authenticated");
    fresh.push(performance.now() - f0);
    f.close();
  }
  sender.close();
  member.close();
  console.log(
    JSON.stringify({
      measurement: "replay",
      missed: MISSED,
      rounds: ROUNDS,
      not_recovered: notRecovered,
      recovered_ms: +median(recovered).toFixed(2),
      replayed_ms: +median(replayed).toFixed(2),
      fresh_connect_ms: +median(fresh).toFixed(2),
    }),
  );
}

async function cost() {
  const members = [];
  for (let i = 0; i < 10; i++) {
    const s = client(`cost-${i}`);
    await once(s, "authenticated");
    members.push(s);
  }
  let got = 0;
  let want = 0;
  let caughtUp = null;
  for (const s of members) s.on("room:msg", () => ++got === want && caughtUp?.());
  const c0 = cpuMicros();
  const t0 = performance.now();
  // In batches that every member receives before the next: unpaced, the members' queues would
  // fill and the node would close them as slow clients.
  const BATCH = 200;
  for (let sent = 0; sent < EMITS; sent += BATCH) {
    const n = Math.min(BATCH, EMITS - sent);
    want += n * members.length;
    const batch = new Promise((resolve) => (caughtUp = resolve));
    await emitMany(members[0], n, "cost");
    if (got < want) await batch;
  }
  const secs = (performance.now() - t0) / 1000;
  const cpu = cpuMicros() - c0;
  for (const s of members) s.close();
  console.log(
    JSON.stringify({
      measurement: "cost",
      recovery: MODE,
      emits: EMITS,
      deliveries: EMITS * members.length,
      cpu_us_per_emit: +(cpu / EMITS).toFixed(2),
      secs: +secs.toFixed(2),
    }),
  );
}

if (MODE === "on") await replay();
await cost();
process.exit(0);
