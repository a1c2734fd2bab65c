// Polling round-trip latency, for bench/forward/run: CLIENTS raw Engine.IO v4 polling clients
// (Node's fetch, kept-alive connections, no socket.io-client overhead) each park a long-poll GET,
// then POST a `signal` to their own user and time until the GET returns it. Every request goes
// to --target; the session is opened at --open (default: --target). So with --open at node 1 and
// --target at node 2 every request is forwarded, with both at node 1 none is, and through HAProxy
// it depends on its balancing (a cookie is kept when HAProxy sets one).
//
//   node poll-latency.mjs --open URL --target URL --secret S --clients 10 --secs 5 [--label L]
//
// Prints one JSON line: {label, clients, secs, n, p50, p90, p99, max, mean, errors} (ms).

import { createHmac } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const target = args.target;
const open = args.open ?? target;
const clients = Number(args.clients ?? 10);
const secs = Number(args.secs ?? 5);
const secret = args.secret;
const label = args.label ?? "run";
if (!target || !secret) {
  console.error("usage: poll-latency.mjs --target URL [--open URL] --secret S [--clients N] [--secs S]");
  process.exit(2);
}

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
function token(sub) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, iat: now, exp: now + 3600 })}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

class Client {
  constructor(i) {
    this.user = `fwd-${process.pid}-${i}`;
    this.cookie = "";
  }

  async request(base, method = "GET", body) {
    const q = `EIO=4&transport=polling${this.sid ? `&sid=${encodeURIComponent(this.sid)}` : ""}`;
    const headers = body === undefined ? {} : { "content-type": "text/plain;charset=UTF-8" };
    if (this.cookie) headers.cookie = this.cookie;
    const res = await fetch(`${base}/socket.io/?${q}`, { method, body, headers, signal: AbortSignal.timeout(60_000) });
    const cookie = res.headers.get("set-cookie");
    if (cookie) this.cookie = cookie.split(";")[0];
    const text = await res.text();
    if (res.status !== 200) throw new Error(`${method} ${res.status}: ${text}`);
    return text;
  }

  /** Handshake at `open`, CONNECT with a token, wait for `authenticated`. */
  async start() {
    const openPacket = await this.request(open);
    this.sid = JSON.parse(openPacket.slice(1)).sid;
    await this.request(target, "POST", `40${JSON.stringify({ token: token(this.user) })}`);
    for (let i = 0; i < 10; i += 1) {
      if ((await this.get()).some((p) => p.startsWith('42["authenticated"'))) return;
    }
    throw new Error(`${this.user}: no authenticated event`);
  }

  /** One GET; answers its packets, replying to pings. */
  async get() {
    const packets = (await this.request(target)).split("\x1e");
    if (packets.includes("2")) await this.request(target, "POST", "3");
    return packets;
  }

  /** One round trip: park a GET, POST a signal to self, time until the GET carries it. */
  async roundTrip(n) {
    let started = 0;
    let parked = this.get();
    await sleep(15);
    started = performance.now();
    await this.request(target, "POST", `42${JSON.stringify(["signal", { to: this.user, data: { n } }])}`);
    for (;;) {
      const packets = await parked;
      if (packets.some((p) => p.startsWith('42["signal"') && p.includes(`"n":${n}}`))) {
        return performance.now() - started;
      }
      parked = this.get();
    }
  }
}

const all = Array.from({ length: clients }, (_, i) => new Client(i));
await Promise.all(all.map((c) => c.start()));
const samples = [];
let errors = 0;
const deadline = Date.now() + secs * 1000;
await Promise.all(
  all.map(async (c) => {
    for (let n = 1; Date.now() < deadline; n += 1) {
      try {
        samples.push(await c.roundTrip(n));
      } catch (e) {
        errors += 1;
        console.error(`${c.user}: ${e.message}`);
        return;
      }
    }
  }),
);
samples.sort((a, b) => a - b);
const q = (p) => (samples.length ? samples[Math.min(samples.length - 1, Math.floor(p * samples.length))] : null);
const round = (v) => (v === null ? null : Math.round(v * 1000) / 1000);
console.log(
  JSON.stringify({
    label,
    clients,
    secs,
    n: samples.length,
    p50: round(q(0.5)),
    p90: round(q(0.9)),
    p99: round(q(0.99)),
    max: round(samples.at(-1) ?? null),
    mean: round(samples.length ? samples.reduce((a, b) => a + b, 0) / samples.length : null),
    errors,
  }),
);
process.exit(errors ? 1 : 0);
