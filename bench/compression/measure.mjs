// Compression cost and gain, for bench/compression/run: CLIENTS raw Engine.IO v4 clients echo
// MESSAGES events of about SIZE bytes each through a --conformance node (which answers
// `message` with `message-back`), in four modes:
//   polling        long-polling without Accept-Encoding (plain answers)
//   polling-gzip   long-polling with `Accept-Encoding: gzip, deflate`
//   ws             websocket without the permessage-deflate offer
//   ws-deflate     websocket offering permessage-deflate (the `ws` package's default offer;
//                  the client also compresses what it sends from 1024 bytes, like engine.io-client)
// For each mode: the server's CPU time per message (utime+stime of --pid from /proc, before and
// after), and the bytes read and written by the client sockets per message (TCP payload: HTTP
// heads and websocket frame headers included).
//
//   node measure.mjs --url http://127.0.0.1:PORT --pid PID [--clients 8] [--messages 4000] [--size 2048]
//
// Prints one JSON line per mode: {mode, messages, size (the mean event, as sent), cpu_us_per_msg,
// down_bytes_per_msg, up_bytes_per_msg, secs}.

import http from "node:http";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

// The `ws` package comes from tests/js (npm ci there).
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "tests", "js", "package.json"));
const WebSocket = require("ws");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const url = args.url;
const pid = Number(args.pid);
const clients = Number(args.clients ?? 8);
const messages = Number(args.messages ?? 4000);
const size = Number(args.size ?? 2048);
if (!url || !pid) {
  console.error("usage: measure.mjs --url URL --pid PID [--clients N] [--messages N] [--size BYTES]");
  process.exit(2);
}

/** The server's CPU time so far, in µs (utime + stime of every thread). */
function cpuMicros() {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat(5), counted from the state field (3): indexes 11 and 12.
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
}

// A chat-like payload: a page of messages with ids, users, timestamps and text from a small
// vocabulary (compresses like real JSON events, not like a run of one letter).
const WORDS = "the a to of and meeting today tomorrow please review ship build deploy thanks ok sure when where why how lunch coffee release notes bug fix test green red ready done late soon call me back great idea".split(" ");
let seed = 42;
const rand = (n) => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed % n;
};
function page() {
  const items = [];
  while (JSON.stringify(items).length < size) {
    const words = Array.from({ length: 4 + rand(12) }, () => WORDS[rand(WORDS.length)]);
    items.push({
      id: `m-${100000 + rand(900000)}`,
      from: `user-${rand(500)}`,
      at: 1764700000000 + rand(10000000),
      text: words.join(" "),
    });
  }
  return items;
}
const PAGES = Array.from({ length: 64 }, page);
const eventFor = (i) => `42${JSON.stringify(["message", PAGES[i % PAGES.length]])}`;

const agent = new http.Agent({ keepAlive: true, maxSockets: clients * 2 });
const sockets = new Set();

function request(method, q, { body, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/socket.io/?${q}`, { method, agent, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, raw: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("socket", (s) => sockets.add(s));
    req.on("error", reject);
    if (body !== undefined) {
      req.setHeader("content-type", "text/plain;charset=UTF-8");
      req.write(body);
    }
    req.end();
  });
}

async function pollingClient(count, gzip) {
  const enc = gzip ? { "accept-encoding": "gzip, deflate" } : {};
  const { default: zlib } = await import("node:zlib");
  const text = (res) =>
    res.headers["content-encoding"] === "gzip" ? zlib.gunzipSync(res.raw).toString() : res.raw.toString();
  const open = await request("GET", "EIO=4&transport=polling", { headers: enc });
  const sid = JSON.parse(text(open).slice(1)).sid;
  const q = `EIO=4&transport=polling&sid=${sid}`;
  await request("POST", q, { body: "40" });
  await request("GET", q, { headers: enc });
  for (let i = 0; i < count; i += 1) {
    await request("POST", q, { body: eventFor(i) });
    for (;;) {
      const res = await request("GET", q, { headers: enc });
      if (res.status !== 200) throw new Error(`GET ${res.status}`);
      if (text(res).includes('"message-back"')) break;
    }
  }
  await request("POST", q, { body: "1" });
}

function wsClient(count, deflate) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`, {
      perMessageDeflate: deflate,
    });
    let sent = 0;
    ws.on("open", () => sockets.add(ws._socket));
    ws.on("error", reject);
    ws.on("message", (data) => {
      const msg = data.toString();
      if (msg.startsWith("0")) ws.send("40");
      else if (msg === "2") ws.send("3");
      else if (msg.startsWith("40") || msg.startsWith('42["message-back"')) {
        if (sent === count) {
          ws.close();
          resolve();
          return;
        }
        ws.send(eventFor(sent));
        sent += 1;
      }
    });
  });
}

async function run(mode) {
  const per = Math.ceil(messages / clients);
  sockets.clear();
  const cpu0 = cpuMicros();
  const t0 = process.hrtime.bigint();
  const tasks = Array.from({ length: clients }, () => {
    switch (mode) {
      case "polling":
        return pollingClient(per, false);
      case "polling-gzip":
        return pollingClient(per, true);
      case "ws":
        return wsClient(per, false);
      default:
        return wsClient(per, true);
    }
  });
  await Promise.all(tasks);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  // Let the server finish its side (closing sessions) before reading its CPU.
  await new Promise((r) => setTimeout(r, 300));
  const cpu = cpuMicros() - cpu0;
  let down = 0;
  let up = 0;
  for (const s of sockets) {
    down += s.bytesRead;
    up += s.bytesWritten;
  }
  agent.destroy();
  const n = per * clients;
  return {
    mode,
    messages: n,
    size: Math.round(PAGES.reduce((sum, _, i) => sum + eventFor(i).length, 0) / PAGES.length),
    cpu_us_per_msg: Math.round((cpu / n) * 10) / 10,
    down_bytes_per_msg: Math.round(down / n),
    up_bytes_per_msg: Math.round(up / n),
    secs: Math.round(secs * 100) / 100,
  };
}

for (const mode of (args.modes ?? "polling,polling-gzip,ws,ws-deflate").split(",")) {
  console.log(JSON.stringify(await run(mode)));
}
