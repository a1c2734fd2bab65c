// Test fixture: start switchboard nodes, connect clients, small async helpers.
//
// Environment:
//   SWITCHBOARD_BIN        path of the binary (default: <repo>/target/debug/switchboard)
//   SWITCHBOARD_TEST_LOGS  directory; when set, every node's stdout+stderr is also written there
//
// Every SWITCHBOARD_* variable of the test process is removed from the child's environment,
// so a stray SWITCHBOARD_CONFORMANCE (say) cannot change what a test runs against.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { io, Manager } from "socket.io-client";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
// tests/js/test/ -> repo root is three levels up.
export const REPO_ROOT = path.resolve(here, "..", "..", "..");
export const BIN = path.resolve(
  process.env.SWITCHBOARD_BIN || path.join(REPO_ROOT, "target", "debug", "switchboard"),
);

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

function childEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("SWITCHBOARD_")) env[k] = v;
  }
  return env;
}

/**
 * Start one switchboard node on 127.0.0.1:<ephemeral> with extra flags.
 * Resolves once the node logged its JSON `listening` line.
 * @returns {Promise<{url: string, addr: string, pid: number, stop: () => Promise<void>, output: () => string}>}
 */
export async function startNode(flags = [], { name = "node" } = {}) {
  if (!existsSync(BIN)) {
    throw new Error(
      `switchboard binary not found at ${BIN} (build it with \`cargo build -p switchboard\` or set SWITCHBOARD_BIN)`,
    );
  }
  const args = ["--listen", "127.0.0.1:0", ...flags];
  // Each node runs in its own scratch directory, so its default SQLite file is its own.
  const cwd = mkdtempSync(path.join(os.tmpdir(), `switchboard-${name}-`));
  const child = spawn(BIN, args, { env: childEnv(), cwd, stdio: ["ignore", "pipe", "pipe"] });
  child.once("exit", () => rmSync(cwd, { recursive: true, force: true }));
  liveChildren.add(child);

  const stdoutLines = [];
  const stderrLines = [];
  const keep = (buf, line) => {
    buf.push(line);
    if (buf.length > KEEP_LINES) buf.shift();
  };
  let logFile = null;
  if (process.env.SWITCHBOARD_TEST_LOGS) {
    mkdirSync(process.env.SWITCHBOARD_TEST_LOGS, { recursive: true });
    logFile = createWriteStream(
      path.join(process.env.SWITCHBOARD_TEST_LOGS, `${name}-${child.pid}.log`),
    );
    logFile.write(`# ${BIN} ${args.join(" ")}\n`);
  }

  let exitInfo = null; // {code, signal} once exited
  let stopping = false;
  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      exitInfo = { code, signal };
      liveChildren.delete(child);
      resolve(exitInfo);
    });
  });
  let spawnError = null;
  child.on("error", (err) => {
    spawnError = err;
  });

  const output = () =>
    `--- stdout (last ${stdoutLines.length} lines) ---\n${stdoutLines.join("\n")}\n` +
    `--- stderr (last ${stderrLines.length} lines) ---\n${stderrLines.join("\n")}`;

  let onListening;
  const listening = new Promise((resolve) => {
    onListening = resolve;
  });

  // Drain both pipes for the whole life of the child so it never blocks on a full pipe.
  const out = createInterface({ input: child.stdout, crlfDelay: Infinity });
  out.on("line", (line) => {
    keep(stdoutLines, line);
    logFile?.write(`${line}\n`);
    let rec;
    try {
      rec = JSON.parse(line);
    } catch {
      return;
    }
    if (rec && typeof rec === "object" && rec.message === "listening") onListening(rec);
  });
  const err = createInterface({ input: child.stderr, crlfDelay: Infinity });
  err.on("line", (line) => {
    keep(stderrLines, line);
    logFile?.write(`[stderr] ${line}\n`);
  });

  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve("timeout"), STARTUP_TIMEOUT_MS);
  });
  const first = await Promise.race([
    listening.then((rec) => ({ rec })),
    exited.then(() => "exited"),
    timeout,
  ]);
  clearTimeout(timer);

  const fail = async (why) => {
    if (!exitInfo) {
      child.kill("SIGKILL");
      await exited;
    }
    // give readline a tick to deliver the last lines, then let go of the pipes
    await sleep(50);
    child.stdout.destroy();
    child.stderr.destroy();
    logFile?.end();
    throw new Error(`switchboard ${args.join(" ")}: ${why}\n${output()}`);
  };

  if (first === "timeout") {
    await fail(`no JSON stdout line with message == "listening" within ${STARTUP_TIMEOUT_MS} ms`);
  }
  if (first === "exited") {
    await fail(
      spawnError
        ? `failed to spawn: ${spawnError.message}`
        : `exited before listening (code ${exitInfo.code}, signal ${exitInfo.signal})`,
    );
  }
  const addr = first.rec.addr;
  if (typeof addr !== "string" || !/^127\.0\.0\.1:\d+$/.test(addr)) {
    await fail(`"listening" line has no usable addr field: ${JSON.stringify(first.rec)}`);
  }

  return {
    addr,
    url: `http://${addr}`,
    pid: child.pid,
    output,
    /** True while the process runs. */
    alive: () => exitInfo === null,
    /**
     * SIGTERM, then SIGKILL after a short grace. Throws if the node had already died on its own
     * (crash/panic) before stop() was called, so a crashing server fails the test.
     */
    async stop() {
      if (stopping) return;
      stopping = true;
      const diedEarly = exitInfo;
      if (!exitInfo) {
        child.kill("SIGTERM");
        const t = setTimeout(() => {
          if (!exitInfo) child.kill("SIGKILL");
        }, STOP_GRACE_MS);
        await exited;
        clearTimeout(t);
      }
      await sleep(20);
      child.stdout.destroy();
      child.stderr.destroy();
      logFile?.end();
      if (diedEarly) {
        throw new Error(
          `switchboard node ${addr} died during the test (code ${diedEarly.code}, signal ${diedEarly.signal})\n${output()}`,
        );
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Socket.IO clients

/** Every client made by newClient/newManager, so `closeAll()` can clean up after a test. */
const openClients = new Set();

/**
 * A socket.io-client socket that is not connected yet (autoConnect false, no reconnection,
 * its own Manager). Register listeners, then call socket.connect().
 */
export function newClient(url, nsp = "/", opts = {}) {
  const socket = io(url + (nsp === "/" ? "" : nsp), {
    forceNew: true,
    reconnection: false,
    autoConnect: false,
    timeout: 5_000,
    ...opts,
  });
  openClients.add(socket);
  return socket;
}

/** A Manager for multiplexing several namespaces over one Engine.IO connection. */
export function newManager(url, opts = {}) {
  const manager = new Manager(url, {
    reconnection: false,
    autoConnect: false,
    timeout: 5_000,
    ...opts,
  });
  openClients.add(manager);
  return manager;
}

/** Close every client made through this module. */
export function closeAll() {
  for (const c of openClients) {
    try {
      if (c instanceof Manager) {
        c.engine?.close();
      } else {
        c.disconnect();
      }
    } catch {
      /* ignore */
    }
  }
  openClients.clear();
}

/**
 * Wait for `event` on an emitter; resolves with the listener's arguments (an array).
 * Rejects after `timeout` ms, or when one of `failOn` fires first (with that event's argument
 * in the message), e.g. a socket's connect_error or disconnect.
 */
export function waitEvent(emitter, event, { timeout = 5_000, failOn = [] } = {}) {
  return new Promise((resolve, reject) => {
    const cleanups = [];
    const done = (fn, v) => {
      for (const c of cleanups) c();
      fn(v);
    };
    const onEvent = (...args) => done(resolve, args);
    emitter.on(event, onEvent);
    cleanups.push(() => emitter.off(event, onEvent));
    for (const bad of failOn) {
      if (bad === event) continue;
      const onBad = (arg) =>
        done(
          reject,
          new Error(`got "${bad}" (${describe(arg)}) while waiting for "${event}"`),
        );
      emitter.on(bad, onBad);
      cleanups.push(() => emitter.off(bad, onBad));
    }
    const t = setTimeout(
      () => done(reject, new Error(`timed out after ${timeout} ms waiting for "${event}"`)),
      timeout,
    );
    cleanups.push(() => clearTimeout(t));
  });
}

function describe(arg) {
  if (arg instanceof Error) return `${arg.message}${arg.data ? ` data=${JSON.stringify(arg.data)}` : ""}`;
  try {
    return JSON.stringify(arg);
  } catch {
    return String(arg);
  }
}

const SOCKET_FAILURES = ["connect_error", "disconnect"];

/**
 * Connect `socket` (made with newClient) and wait for both `connect` and the conformance
 * server's `auth` event. Resolves with the auth payload.
 */
export async function connectWithAuth(socket, { timeout = 5_000 } = {}) {
  const auth = waitEvent(socket, "auth", { timeout, failOn: SOCKET_FAILURES });
  const connected = waitEvent(socket, "connect", { timeout, failOn: SOCKET_FAILURES });
  socket.connect();
  const [[payload]] = await Promise.all([auth, connected]);
  return payload;
}

/** Connect and wait for `connect` only. */
export async function connect(socket, { timeout = 5_000 } = {}) {
  const connected = waitEvent(socket, "connect", { timeout, failOn: SOCKET_FAILURES });
  socket.connect();
  await connected;
}

/** Emit `message` with args and resolve with the args of the next `message-back`. */
export async function echo(socket, args, { timeout = 5_000 } = {}) {
  const back = waitEvent(socket, "message-back", { timeout, failOn: ["disconnect"] });
  socket.emit("message", ...args);
  return back;
}

/** Turn Buffers / ArrayBuffers / typed arrays into Buffers, recursively, for deep comparison. */
export function normalizeBinary(v) {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof ArrayBuffer) return Buffer.from(v);
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(normalizeBinary);
  if (v && typeof v === "object") {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = normalizeBinary(x);
    return o;
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// HTTP

/** GET /health and return the parsed JSON (asserting a 200). */
export async function health(url) {
  const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5_000) });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`GET /health -> ${res.status}: ${body}`);
  try {
    return JSON.parse(body);
  } catch {
    throw new Error(`GET /health returned non-JSON: ${body}`);
  }
}

/**
 * Poll `fn` until it returns a truthy value; resolve with it. On timeout, reject with
 * `what` and the last value seen.
 */
export async function eventually(fn, { timeout = 5_000, interval = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      lastErr = undefined;
      if (last) return last;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `${what} not reached within ${timeout} ms` +
          (lastErr ? ` (last error: ${lastErr.message})` : ` (last value: ${describe(last)})`),
      );
    }
    await sleep(interval);
  }
}

/** Wait until GET /health reports `sessions === n`; resolves with the health JSON. */
export function sessionsBecome(url, n, { timeout = 5_000 } = {}) {
  let lastSeen;
  return eventually(
    async () => {
      const h = await health(url);
      lastSeen = h;
      return h.sessions === n ? h : false;
    },
    { timeout, what: `/health sessions == ${n}` },
  ).catch((e) => {
    throw new Error(`${e.message}; last /health: ${JSON.stringify(lastSeen)}`);
  });
}

// ---------------------------------------------------------------------------------------------
// Raw Engine.IO clients (for heartbeat/session tests that must misbehave on purpose)

/**
 * A raw Engine.IO v4 websocket session on /socket.io/. Records every frame with a timestamp
 * (ms since the socket was created) in `trace`, for failure messages.
 */
export class RawWs {
  constructor(url, { path: p = "/socket.io/", query = "EIO=4&transport=websocket", wsOptions } = {}) {
    this.t0 = Date.now();
    this.trace = [];
    this.frames = [];
    this.waiters = [];
    this.closed = null; // {code, reason, at}
    this.autoPong = false;
    this.ws = new WebSocket(`${url.replace(/^http/, "ws")}${p}?${query}`, wsOptions);
    this.ws.on("message", (data, isBinary) => {
      const text = isBinary ? null : data.toString("utf8");
      const at = this.elapsed();
      this.trace.push(`${at}ms < ${isBinary ? `<binary ${data.length} bytes>` : text}`);
      if (this.autoPong && text === "2") this.send("3");
      const frame = { text, data, isBinary, at };
      this.frames.push(frame);
      this.#notify();
    });
    this.ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString(), at: this.elapsed() };
      this.trace.push(`${this.closed.at}ms closed code=${code} reason=${this.closed.reason}`);
      this.#notify();
    });
    this.ws.on("error", (e) => {
      this.trace.push(`${this.elapsed()}ms error ${e.message}`);
      this.error = e;
      this.#notify();
    });
  }

  elapsed() {
    return Date.now() - this.t0;
  }

  #notify() {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  send(text) {
    this.trace.push(`${this.elapsed()}ms > ${text}`);
    this.ws.send(text);
  }

  traceText() {
    return this.trace.join("\n");
  }

  /** Resolve with the first not-yet-consumed text frame matching `pred`. */
  async nextText(pred = () => true, timeout = 5_000) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const i = this.frames.findIndex((f) => f.text !== null && pred(f.text));
      if (i >= 0) return this.frames.splice(i, 1)[0].text;
      if (this.closed || this.error) {
        throw new Error(`connection ended while waiting for a frame\n${this.traceText()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a frame\n${this.traceText()}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Wait for the open packet; returns its parsed JSON. */
  async open(timeout = 5_000) {
    const text = await this.nextText(() => true, timeout);
    if (!text.startsWith("0")) throw new Error(`first frame is not an open packet: ${text}\n${this.traceText()}`);
    return JSON.parse(text.slice(1));
  }

  /** Wait until the connection is closed (by either side); returns {code, reason, at}. */
  async waitClosed(timeout) {
    const deadline = Date.now() + timeout;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.closed;
  }

  terminate() {
    this.ws.terminate();
  }

  close() {
    try {
      this.ws.terminate();
    } catch {
      /* ignore */
    }
  }
}

/** Raw Engine.IO polling request helper. Returns {status, body, headers}. */
export async function pollRequest(url, { sid, method = "GET", body, timeout = 10_000 } = {}) {
  const q = `EIO=4&transport=polling${sid ? `&sid=${encodeURIComponent(sid)}` : ""}&t=${Date.now().toString(36)}`;
  const res = await fetch(`${url}/socket.io/?${q}`, {
    method,
    body,
    headers: body !== undefined ? { "content-type": "text/plain;charset=UTF-8" } : {},
    signal: AbortSignal.timeout(timeout),
  });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

/** Split a polling payload into its packets. */
export function splitPayload(body) {
  return body.length === 0 ? [] : body.split("\x1e");
}

export { sleep };
