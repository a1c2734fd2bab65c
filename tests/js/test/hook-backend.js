// Test backend for Switchboard's hooks and webhooks, run as its own process
// (`node tests/js/test/hook-backend.js`, usually through backend-fixture.js's startBackend).
// It checks signatures like the example backend (401 on a bad signature or a timestamp more
// than 5 minutes off) and prints the same startup line, {"listening":"http://127.0.0.1:PORT"};
// what it answers is switched at runtime, so tests can make a hook fail in every way.
//
// Hooks: POST /connect, /authorize, /rpc; webhooks: POST /webhook.
// Control (unsigned, for tests only):
//   POST /_mode {connect|authorize|rpc|webhook: MODE, slowMs?, forMs?, forCalls?}
//        MODE: "ok" the answer (below) · "down" 503 · "slow" the answer after slowMs (default 3000)
//        · "garbage" 200 with a body that is not JSON · "huge" 200 with the answer padded to 5 MB
//        · "deep" 200 with JSON nested 10,000 levels · "wrongshape" 200 with valid JSON of the
//        wrong shape. forMs / forCalls: the modes named in this request go back to "ok" after
//        that many ms / after that many calls of their hook. Answers {modes, slowMs}.
//   GET  /_mode                      {modes, slowMs}
//   POST /_answers {hook: ANSWER|null, ...}   the answer in "ok"/"slow"/"huge" mode (null: default)
//        ANSWER is sent as given, except: {"$by": FIELD, VALUE: ANSWER, "*": ANSWER} picks by a
//        field of the request (e.g. "userId", "action", "event"); for authorize, "allowed": "*"
//        means the request's targets and "allowed": {"except": [..]} the targets minus those.
//        Defaults: connect {allow:true}; authorize {allowed: targets}; rpc {result:{event, data}};
//        webhook {ok:true}. Answers the answers now set.
//   POST /_reset                     modes, answers and stats back to the start
//   GET  /stats  {calls, requests, attempts, signatureFailures, webhook, modes, slowMs}
//        calls: correctly signed requests per hook; requests: their bodies (last 200 per hook);
//        attempts: every request to a hook path, signed or not (last 1000 per hook):
//        {at, mode, signatureValid, why, status, accepted, headers, body}; webhook: the events of
//        accepted deliveries (answered 2xx), first delivery of each id only, in order, with
//        {duplicates: {id: n}, duplicateTotal}.

import { createServer } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { verifySignature } from "./backend-fixture.js";

const HOOKS = ["connect", "authorize", "rpc", "webhook"];
const MODES = ["ok", "down", "slow", "garbage", "huge", "deep", "wrongshape"];
const MAX_AGE_MS = 5 * 60 * 1000;
const MAX_BODY = 8 * 1024 * 1024;
const KEEP = 200;
const KEEP_ATTEMPTS = 1000;
const HUGE_BYTES = 5 * 1024 * 1024;
const DEEP_LEVELS = 10_000;

/** Valid JSON that no hook answer may look like: the wrong types for the fields Switchboard reads. */
const WRONG_SHAPE = {
  connect: { allow: "yes", rooms: "lobby", data: 7 },
  authorize: { allowed: "everyone", cacheSecs: -1 },
  rpc: { error: "boom" },
  webhook: ["not", "an", "ack"],
};

const targetsOf = (body) => (Array.isArray(body?.targets) ? body.targets : []);

function defaultAnswer(hook, body) {
  if (hook === "connect") return { allow: true };
  if (hook === "authorize") return { allowed: targetsOf(body) };
  if (hook === "rpc") return { result: { event: body?.event, data: body?.data ?? null } };
  return { ok: true };
}

/** The configured answer for this request (with `$by` switches resolved), else the default. */
function answerFor(hook, spec, body) {
  while (spec && typeof spec === "object" && typeof spec.$by === "string") {
    const key = String(body?.[spec.$by]);
    spec = Object.hasOwn(spec, key) ? spec[key] : spec["*"];
  }
  if (spec === undefined || spec === null) return defaultAnswer(hook, body);
  if (hook === "authorize" && typeof spec === "object") {
    const targets = targetsOf(body);
    if (spec.allowed === "*") return { ...spec, allowed: targets };
    const except = spec.allowed?.except;
    if (Array.isArray(except)) return { ...spec, allowed: targets.filter((t) => !except.includes(t)) };
  }
  return spec;
}

// ---------------------------------------------------------------------------------------------
// State

const okMode = () => ({ mode: "ok", until: null, callsLeft: null });

function freshState() {
  const perHook = (f) => Object.fromEntries(HOOKS.map((h) => [h, f()]));
  return {
    modes: perHook(okMode),
    slowMs: 3000,
    answers: {},
    calls: perHook(() => 0),
    requests: perHook(() => []),
    attempts: perHook(() => []),
    signatureFailures: 0,
    events: [],
    seen: new Map(), // webhook event id -> deliveries after the first
    duplicateTotal: 0,
  };
}
let state = freshState();

const keep = (list, item, n) => list.push(item) > n && list.shift();

/** The mode for this call of `hook`, after expiring a timed or counted one. */
function takeMode(hook) {
  const m = state.modes[hook];
  if ((m.until !== null && Date.now() >= m.until) || m.callsLeft === 0) Object.assign(m, okMode());
  if (m.callsLeft !== null) m.callsLeft -= 1;
  return m.mode;
}

const modesView = () => ({
  modes: Object.fromEntries(HOOKS.map((h) => [h, { ...state.modes[h] }])),
  slowMs: state.slowMs,
});

/** Records the events of an acknowledged webhook batch, skipping ids already received. */
function accept(batch) {
  for (const event of batch.events) {
    const id = event?.id;
    if (state.seen.has(id)) {
      state.seen.set(id, state.seen.get(id) + 1);
      state.duplicateTotal += 1;
    } else {
      state.seen.set(id, 0);
      state.events.push(event);
    }
  }
}

function stats() {
  const duplicates = Object.fromEntries([...state.seen].filter(([, n]) => n > 0));
  return {
    calls: state.calls,
    requests: state.requests,
    attempts: state.attempts,
    signatureFailures: state.signatureFailures,
    webhook: { events: state.events, duplicates, duplicateTotal: state.duplicateTotal },
    ...modesView(),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

/** The body's bytes, or null when it is over MAX_BODY (read to the end so the 413 arrives). */
function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.on("end", () => resolve(size <= MAX_BODY ? Buffer.concat(chunks) : null));
    req.on("error", reject);
  });
}

function reply(res, status, text) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(text);
}

const json = (res, status, value) => reply(res, status, JSON.stringify(value));

function parse(raw) {
  try {
    return { ok: true, value: JSON.parse(raw.toString("utf8")) };
  } catch {
    return { ok: false };
  }
}

async function hookCall(hook, req, res, raw) {
  const h = req.headers;
  const timestamp = h["x-switchboard-timestamp"];
  let why = null;
  if (!/^\d{1,15}$/.test(timestamp ?? "")) why = "bad_timestamp";
  else if (Math.abs(Date.now() - Number(timestamp)) > MAX_AGE_MS) why = "stale_timestamp";
  else if (!verifySignature(process.env.SWITCHBOARD_HOOK_SECRET, timestamp, raw, h["x-switchboard-signature"])) why = "bad_signature";
  const parsed = parse(raw);
  const body = parsed.ok ? parsed.value : raw.toString("utf8").slice(0, 10_000);
  const attempt = {
    at: Date.now(),
    mode: null,
    signatureValid: why === null,
    why,
    status: null,
    accepted: false,
    headers: {
      contentType: h["content-type"] ?? null,
      timestamp: timestamp ?? null,
      signature: h["x-switchboard-signature"] ?? null,
      traceparent: h.traceparent ?? null,
    },
    body,
  };
  keep(state.attempts[hook], attempt, KEEP_ATTEMPTS);
  const answer = (status, text) => {
    attempt.status = status;
    reply(res, status, text);
  };
  if (why) {
    state.signatureFailures += 1;
    return answer(401, JSON.stringify({ error: why }));
  }
  state.calls[hook] += 1;
  keep(state.requests[hook], body, KEEP);

  const mode = (attempt.mode = takeMode(hook));
  if (mode === "down") return answer(503, JSON.stringify({ error: "down" }));
  if (mode === "garbage") return answer(200, "<html>this is not JSON {");
  if (mode === "deep") return answer(200, "[".repeat(DEEP_LEVELS) + "]".repeat(DEEP_LEVELS));
  if (mode === "wrongshape") return answer(200, JSON.stringify(WRONG_SHAPE[hook]));
  if (!parsed.ok || !body || typeof body !== "object") return answer(400, JSON.stringify({ error: "invalid_json" }));
  if (hook === "webhook" && !Array.isArray(body.events)) return answer(400, JSON.stringify({ error: "invalid_request" }));
  if (mode === "slow") {
    await sleep(state.slowMs);
    // A client that gave up (its timeout) saw no answer: the delivery was not acknowledged.
    if (res.destroyed || req.socket.destroyed) return;
  }
  let value = answerFor(hook, state.answers[hook], body);
  if (mode === "huge") {
    const padding = "x".repeat(HUGE_BYTES);
    value = value && typeof value === "object" && !Array.isArray(value) ? { ...value, padding } : { answer: value, padding };
  }
  if (hook === "webhook") {
    attempt.accepted = true;
    accept(body);
  }
  return answer(200, JSON.stringify(value));
}

function setModes(body) {
  for (const [k, v] of Object.entries(body)) {
    if (HOOKS.includes(k)) {
      if (!MODES.includes(v)) return `${k}: mode must be one of ${MODES.join(", ")}`;
    } else if (["slowMs", "forMs", "forCalls"].includes(k)) {
      if (!Number.isInteger(v) || v < 0) return `${k} must be a non-negative integer`;
    } else return `unknown key ${k}`;
  }
  if (body.slowMs !== undefined) state.slowMs = body.slowMs;
  for (const hook of HOOKS) {
    if (body[hook] === undefined) continue;
    state.modes[hook] = {
      mode: body[hook],
      until: body.forMs !== undefined ? Date.now() + body.forMs : null,
      callsLeft: body.forCalls ?? null,
    };
  }
  return null;
}

function setAnswers(body) {
  for (const k of Object.keys(body)) if (!HOOKS.includes(k)) return `unknown hook ${k}`;
  for (const [hook, answer] of Object.entries(body)) {
    if (answer === null) delete state.answers[hook];
    else state.answers[hook] = answer;
  }
  return null;
}

const server = createServer(async (req, res) => {
  try {
    const { pathname } = new URL(req.url, "http://backend");
    if (req.method === "GET" && pathname === "/stats") return json(res, 200, stats());
    if (req.method === "GET" && pathname === "/_mode") return json(res, 200, modesView());
    if (req.method !== "POST") return json(res, 404, { error: "not_found" });
    const raw = await readBody(req);
    if (raw === null) return json(res, 413, { error: "too_large" });

    const hook = { "/connect": "connect", "/authorize": "authorize", "/rpc": "rpc", "/webhook": "webhook" }[pathname];
    if (hook) return await hookCall(hook, req, res, raw);

    const control = { "/_mode": setModes, "/_answers": setAnswers, "/_reset": () => ((state = freshState()), null) }[pathname];
    if (!control) return json(res, 404, { error: "not_found" });
    const parsed = parse(raw.length ? raw : Buffer.from("{}"));
    if (!parsed.ok || !parsed.value || typeof parsed.value !== "object" || Array.isArray(parsed.value)) {
      return json(res, 400, { error: "a JSON object is expected" });
    }
    const err = control(parsed.value);
    if (err) return json(res, 400, { error: err });
    return json(res, 200, pathname === "/_answers" ? state.answers : modesView());
  } catch (e) {
    process.stderr.write(`hook-backend: ${e?.stack ?? e}\n`);
    if (!res.headersSent) json(res, 500, { error: "internal" });
  }
});

if (!process.env.SWITCHBOARD_HOOK_SECRET) {
  process.stderr.write("hook-backend: SWITCHBOARD_HOOK_SECRET is required\n");
  process.exit(1);
}
const host = process.env.HOST || "127.0.0.1";
server.on("error", (e) => {
  process.stderr.write(`hook-backend: ${e.message}\n`);
  process.exit(1);
});
server.listen(Number(process.env.PORT ?? 0), host, () => {
  process.stdout.write(`${JSON.stringify({ listening: `http://${host}:${server.address().port}` })}\n`);
});
