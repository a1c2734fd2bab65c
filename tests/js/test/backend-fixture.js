// Backends for the hook and webhook tests: start the example backend (examples/backend/server.js)
// or the test backend (./hook-backend.js) as a real process, drive the test backend's control
// endpoints, and sign or check requests the way Switchboard does. Node built-ins only (no
// socket.io-client), so these tests run without the switchboard binary or npm packages.
//
//   const b = await startBackend({ script: TEST_BACKEND });   // or EXAMPLE_BACKEND (default)
//   await b.mode({ authorize: "down" }); await b.answers({ rpc: { result: 42 } });
//   const { calls, requests, attempts, webhook } = await b.stats();
//   await b.stop();

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(here, "..", "..", "..");
export const EXAMPLE_BACKEND = path.join(REPO_ROOT, "examples", "backend", "server.js");
export const TEST_BACKEND = path.join(here, "hook-backend.js");
/** The hook secret a backend gets unless startBackend is told otherwise. */
export const HOOK_SECRET = "switchboard-hook-tests-secret";

const STARTUP_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 2_000;
const KEEP_LINES = 300;

const liveChildren = new Set();
process.on("exit", () => {
  for (const child of liveChildren) {
    try {
      child.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Signatures

/** `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; body is a string or a Buffer. */
export function sign(secret, timestamp, body) {
  return `sha256=${crypto.createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex")}`;
}

/**
 * True when `header` (an `x-switchboard-signature` value) signs `timestamp` and the raw `body`
 * with `secret`. Checks the signature only; how old the timestamp may be is the caller's rule.
 */
export function verifySignature(secret, timestamp, body, header) {
  if (typeof header !== "string" || timestamp === undefined || timestamp === null) return false;
  const given = Buffer.from(header);
  const expected = Buffer.from(sign(secret, String(timestamp), body));
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

/**
 * POST `body` to `url` signed like Switchboard does. `raw` (string/Buffer) is sent as is instead
 * of JSON.stringify(body); `timestamp` (default now), `signature` (default: the right one) and
 * `headers` let a test send a bad request on purpose; `secret: null` sends no signature headers.
 * Resolves with {status, text, json (undefined unless JSON), headers, ms}.
 */
export async function signedPost(url, body, { secret = HOOK_SECRET, timestamp, signature, raw, headers = {}, timeout = 10_000 } = {}) {
  const payload = raw ?? JSON.stringify(body);
  const ts = String(timestamp ?? Date.now());
  const h = { "content-type": "application/json" };
  if (secret !== null) {
    h["x-switchboard-timestamp"] = ts;
    h["x-switchboard-signature"] = signature ?? sign(secret, ts, payload);
  }
  const t0 = Date.now();
  const res = await fetch(url, { method: "POST", headers: { ...h, ...headers }, body: payload, signal: AbortSignal.timeout(timeout) });
  const text = await res.text();
  return { status: res.status, text, json: parseJson(text), headers: res.headers, ms: Date.now() - t0 };
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Data files

/** Write `data` (the example backend's data-file shape) to a fresh temp file; returns its path. */
export function writeDataFile(data) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-backend-data-"));
  const file = path.join(dir, "data.json");
  writeFileSync(file, JSON.stringify(data));
  return file;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** The child's environment: ours minus anything that configures a backend or a node. */
function childEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("SWITCHBOARD_") && !["PORT", "HOST", "DATA_FILE", "CACHE_SECS"].includes(k)) env[k] = v;
  }
  for (const [k, v] of Object.entries(extra)) if (v !== undefined && v !== null) env[k] = String(v);
  return env;
}

/**
 * Start a backend (`node <script>`) on 127.0.0.1:<free port> and wait for its startup line
 * `{"listening": "http://127.0.0.1:PORT"}`. `secret: null` starts it without
 * SWITCHBOARD_HOOK_SECRET; `env` is added last (it may override PORT, HOST, …).
 * Rejects, with the process's output, if it exits or prints no such line within 10 s.
 * @returns {Promise<{url, pid, secret, output, alive, stop, stats, mode, answers, reset, post}>}
 */
export async function startBackend({ script = EXAMPLE_BACKEND, dataFile, secret = HOOK_SECRET, env = {}, name } = {}) {
  const label = name ?? path.basename(script, ".js");
  const child = spawn(process.execPath, [script], {
    env: childEnv({ PORT: 0, HOST: "127.0.0.1", SWITCHBOARD_HOOK_SECRET: secret, DATA_FILE: dataFile, ...env }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  liveChildren.add(child);

  const lines = [];
  const keep = (line) => lines.push(line) > KEEP_LINES && lines.shift();
  const output = () => `--- ${label} output (last ${lines.length} lines) ---\n${lines.join("\n")}`;
  let exitInfo = null;
  const exited = new Promise((resolve) =>
    child.on("exit", (code, signal) => {
      exitInfo = { code, signal };
      liveChildren.delete(child);
      resolve(exitInfo);
    }),
  );
  child.on("error", (e) => keep(`[spawn error] ${e.message}`));

  let onListening;
  const listening = new Promise((resolve) => (onListening = resolve));
  // Read both pipes for the child's whole life so that it never blocks on a full pipe.
  createInterface({ input: child.stdout, crlfDelay: Infinity }).on("line", (line) => {
    keep(line);
    const rec = parseJson(line);
    if (typeof rec?.listening === "string") onListening(rec.listening);
  });
  createInterface({ input: child.stderr, crlfDelay: Infinity }).on("line", (line) => keep(`[stderr] ${line}`));

  let timer;
  const first = await Promise.race([
    listening,
    exited.then(() => "exited"),
    new Promise((resolve) => (timer = setTimeout(() => resolve("timeout"), STARTUP_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (first === "exited" || first === "timeout") {
    if (!exitInfo) {
      child.kill("SIGKILL");
      await exited;
    }
    await new Promise((r) => setTimeout(r, 50)); // let readline deliver the last lines
    const why = first === "timeout" ? `no {"listening"} line within ${STARTUP_TIMEOUT_MS} ms` : `exited (code ${exitInfo.code}, signal ${exitInfo.signal})`;
    const err = new Error(`${label}: ${why}\n${output()}`);
    err.exit = exitInfo;
    err.output = output();
    throw err;
  }
  const url = first;

  /** GET or POST a control endpoint; throws unless it answers 200 with JSON. */
  const control = async (method, p, body) => {
    const res = await fetch(url + p, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`${method} ${url}${p} -> ${res.status}: ${text}`);
    return JSON.parse(text);
  };

  let stopping = false;
  return {
    url,
    pid: child.pid,
    secret,
    output,
    /** True while the process runs. */
    alive: () => exitInfo === null,
    /** GET /stats (both backends). */
    stats: () => control("GET", "/stats"),
    /** POST /_mode (test backend): e.g. {authorize: "down", forCalls: 3}; resolves with the modes. */
    mode: (obj) => control("POST", "/_mode", obj),
    /** POST /_answers (test backend): e.g. {connect: {allow: false, reason: "x"}}; null resets one. */
    answers: (obj) => control("POST", "/_answers", obj),
    /** POST /_reset (test backend): modes, answers and stats back to the start. */
    reset: () => control("POST", "/_reset", {}),
    /** signedPost to a path of this backend, signed with its secret unless opts say otherwise. */
    post: (p, body, opts = {}) => signedPost(url + p, body, { secret: secret ?? HOOK_SECRET, ...opts }),
    /** SIGTERM (SIGKILL after 2 s). Throws if the process had died on its own before. */
    async stop() {
      if (stopping) return;
      stopping = true;
      const diedEarly = exitInfo;
      if (!exitInfo) {
        child.kill("SIGTERM");
        const t = setTimeout(() => exitInfo || child.kill("SIGKILL"), STOP_GRACE_MS);
        await exited;
        clearTimeout(t);
      }
      child.stdout.destroy();
      child.stderr.destroy();
      if (diedEarly) throw new Error(`${label} ${url} died during the test (code ${diedEarly.code}, signal ${diedEarly.signal})\n${output()}`);
    },
  };
}
