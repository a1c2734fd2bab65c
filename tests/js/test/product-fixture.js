// Product-mode helpers on top of ./fixture.js (which is owned elsewhere and not edited here):
// nodes started with a known --jwt-secret and --node-id, authenticated clients, a per-socket
// event log (for "got X" / "got no X within N ms" assertions with readable traces), acks with
// bounded timeouts, and the server API over fetch.

import assert from "node:assert/strict";
import { startNode, newClient, eventually, sleep } from "./fixture.js";
import { hs256, claims } from "./jwt.js";

export const SECRET = "switchboard-product-tests-secret-0123456789";

let uniq = 0;
/** A fresh name so that tests sharing a node never share users/rooms (and their rate limits). */
export function uid(prefix = "u") {
  uniq += 1;
  return `${prefix}-${process.pid}-${uniq}`;
}

/**
 * Start a product-mode node. Passes `--jwt-secret SECRET` (unless `secret: null`) and `--node-id`.
 * @returns node from fixture.startNode plus {nodeId}
 */
export async function startProductNode({ name = "product", nodeId, secret = SECRET, flags = [] } = {}) {
  const id = nodeId ?? `${name}-node`;
  const all = [...(secret ? ["--jwt-secret", secret] : []), "--node-id", id, ...flags];
  const node = await startNode(all, { name });
  node.nodeId = id;
  return node;
}

/** HS256 token for `sub` with the shared test secret (extra claims merged; undefined drops one). */
export function token(sub, extra = {}, secret = SECRET) {
  return hs256(claims({ sub, ...extra }), secret);
}

/** Every JSON log line the node printed to stdout so far (kept lines only). */
export function logLines(node) {
  const text = node.output();
  const start = text.indexOf("--- stdout");
  const end = text.indexOf("--- stderr");
  const out = [];
  for (const line of text.slice(start, end).split("\n")) {
    try {
      const rec = JSON.parse(line);
      if (rec && typeof rec === "object") out.push(rec);
    } catch {
      /* not JSON */
    }
  }
  return out;
}

/** Wait for the `{"message":"demo token",...}` line a node without --jwt-secret logs. */
export async function demoTokenLine(node, { timeout = 3_000 } = {}) {
  return eventually(() => logLines(node).find((r) => r.message === "demo token"), {
    timeout,
    what: 'a JSON stdout line with message == "demo token"',
  });
}

// ---------------------------------------------------------------------------------------------
// Event log

const t0 = Date.now();

/**
 * Records every event a socket receives (onAny) plus connect / connect_error / disconnect,
 * with timestamps. `next()` consumes matching entries so repeated waits see distinct events.
 */
export class EventLog {
  constructor(socket, label) {
    this.socket = socket;
    this.label = label;
    this.entries = []; // {at, event, args, consumed}
    this.waiters = new Set();
    socket.onAny((event, ...args) => this.#push(event, args));
    socket.on("connect", () => this.#push("connect", [socket.id]));
    socket.on("connect_error", (err) => this.#push("connect_error", [{ message: err.message, data: err.data }]));
    socket.on("disconnect", (reason, desc) => this.#push("disconnect", [reason, desc?.message ?? desc?.description]));
  }

  #push(event, args) {
    this.entries.push({ at: Date.now() - t0, event, args, consumed: false });
    for (const w of [...this.waiters]) w();
  }

  /** Entries for `event` (args arrays), consumed or not. */
  all(event) {
    return this.entries.filter((e) => e.event === event).map((e) => e.args);
  }

  count(event, pred = () => true) {
    return this.entries.filter((e) => e.event === event && pred(...e.args)).length;
  }

  trace() {
    return this.entries
      .map((e) => `  ${this.label} @${e.at}ms ${e.event} ${safeJson(e.args)}`)
      .join("\n");
  }

  /**
   * Resolve with the args of the first not-yet-consumed `event` matching `pred` (already
   * received or still to come); reject after `timeout` ms, or at once when one of `failOn`
   * (default: disconnect) arrives while waiting.
   */
  next(event, { pred = () => true, timeout = 5_000, failOn = ["disconnect", "connect_error"] } = {}) {
    return new Promise((resolve, reject) => {
      const startLen = this.entries.length;
      let timer;
      const check = () => {
        const e = this.entries.find((x) => !x.consumed && x.event === event && pred(...x.args));
        if (e) {
          e.consumed = true;
          finish();
          resolve(e.args);
          return;
        }
        const bad = this.entries.slice(startLen).find((x) => failOn.includes(x.event) && x.event !== event);
        if (bad) {
          finish();
          reject(new Error(`${this.label}: got "${bad.event}" ${safeJson(bad.args)} while waiting for "${event}"\n${this.trace()}`));
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      timer = setTimeout(() => {
        finish();
        reject(new Error(`${this.label}: timed out after ${timeout} ms waiting for "${event}"\n${this.trace()}`));
      }, timeout);
      this.waiters.add(check);
      check();
    });
  }

  /** Assert that no unconsumed `event` (matching pred) arrives within `ms` ms (or has arrived). */
  async none(event, ms = 500, { pred = () => true, why = "" } = {}) {
    await sleep(ms);
    const got = this.entries.filter((x) => !x.consumed && x.event === event && pred(...x.args));
    assert.equal(
      got.length,
      0,
      `${this.label}: expected no "${event}"${why ? ` (${why})` : ""} but got ${safeJson(got.map((g) => g.args))}\n${this.trace()}`,
    );
  }

  /** Mark every entry so far as consumed. */
  drain() {
    for (const e of this.entries) e.consumed = true;
  }
}

/** A recovery offset (`<ms>-<seq>`), which the server appends to every recoverable event. */
export const OFFSET = /^\d+-\d+$/;

/** An event's arguments without the recovery offset, which must be there, last. */
export function withoutOffset(args) {
  assert.match(String(args.at(-1)), OFFSET, `recovery offset as the last argument of ${safeJson(args)}`);
  return args.slice(0, -1);
}

export function safeJson(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** Combined traces of several EventLogs, for failure messages. */
export function traces(...logs) {
  return logs.map((l) => l.trace()).join("\n");
}

// ---------------------------------------------------------------------------------------------
// Clients

/**
 * A not-yet-connected client for `user` (auth.token = HS256 token for user unless `token` given,
 * `null` for none), with an EventLog at `socket.log`.
 */
export function userSocket(node, user, { device, token: tok, transports = ["websocket"], auth, label, ...opts } = {}) {
  const a = { ...(auth ?? {}) };
  const t = tok === undefined ? token(user) : tok;
  if (t !== null && a.token === undefined) a.token = t;
  if (device !== undefined) a.deviceId = device;
  const socket = newClient(node.url, "/", { transports, auth: a, ...opts });
  socket.log = new EventLog(socket, label ?? `${user}${device ? `/${device}` : ""}`);
  return socket;
}

/** Connect and wait for both `connect` and `authenticated`; resolves with the authenticated payload. */
export async function connectAuthed(socket, { timeout = 5_000 } = {}) {
  const authed = socket.log.next("authenticated", { timeout });
  const connected = socket.log.next("connect", { timeout });
  socket.connect();
  const [[payload]] = await Promise.all([authed, connected]);
  return payload;
}

/** userSocket + connectAuthed. Resolves with the socket (authenticated payload at socket.authInfo). */
export async function connectUser(node, user, opts = {}) {
  const socket = userSocket(node, user, opts);
  socket.authInfo = await connectAuthed(socket, { timeout: opts.timeout ?? 5_000 });
  return socket;
}

/** Connect and expect a connect_error; resolves with {message, data}. Fails on `connect`. */
export async function expectConnectError(socket, { timeout = 5_000 } = {}) {
  const p = socket.log.next("connect_error", { timeout, failOn: ["connect", "authenticated"] });
  socket.connect();
  const [err] = await p;
  return err;
}

/** Emit with an ack and a bounded timeout; resolves with the first ack argument. */
export async function ack(socket, event, payload, { timeout = 5_000 } = {}) {
  try {
    return payload === undefined
      ? await socket.timeout(timeout).emitWithAck(event)
      : await socket.timeout(timeout).emitWithAck(event, payload);
  } catch (e) {
    throw new Error(`no ack for "${event}" ${safeJson(payload)} within ${timeout} ms (${e.message})\n${socket.log?.trace() ?? ""}`);
  }
}

/** Send a DM with an ack and expect it to succeed and reach `to` (a socket of the recipient). */
export async function assertDmWorks(from, fromUser, toSocket, toUser, text = `ping-${Date.now()}`) {
  const res = await ack(from, "message:send", { to: toUser, text });
  assert.equal(res?.ok, true, `message:send ack after the error should be ok: ${safeJson(res)}\n${from.log.trace()}`);
  const [msg] = await toSocket.log.next("message:received", { pred: (m) => m?.text === text });
  assert.equal(msg.from, fromUser);
  assert.equal(msg.messageId, res.messageId);
  assert.equal(from.connected, true, "the sender must still be connected");
}

// ---------------------------------------------------------------------------------------------
// Server API

/**
 * Call the server API. `key`: the API key (sent as `Authorization: Bearer key`), `null` for no
 * header; `auth` overrides the whole header value. `body`: JSON-encoded unless `raw` is given.
 * Resolves with {status, text, json (or undefined)}.
 */
export async function api(node, method, p, { key, auth, body, raw, timeout = 5_000 } = {}) {
  const headers = {};
  if (auth !== undefined) headers.authorization = auth;
  else if (key !== null && key !== undefined) headers.authorization = `Bearer ${key}`;
  let payload;
  if (raw !== undefined) {
    payload = raw;
    headers["content-type"] = "application/json";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["content-type"] = "application/json";
  }
  const res = await fetch(node.url + p, { method, headers, body: payload, signal: AbortSignal.timeout(timeout) });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json, headers: res.headers };
}

/** Assert an API response's status (with the body in the failure message). */
export function assertStatus(res, status, what = "") {
  assert.equal(res.status, status, `${what} -> HTTP ${res.status} (expected ${status}); body: ${res.text}`);
}

export { sleep, eventually };
