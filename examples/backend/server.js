// An example backend for Switchboard: the application's own rules behind the three hooks
// (`/connect`, `/authorize`, `/rpc`) and a receiver for the lifecycle webhooks (`/webhook`).
// Node.js >= 20, no dependencies: copy it and replace the rules with your application's.
//
//   SWITCHBOARD_HOOK_SECRET=change-me node server.js
//
// Environment: SWITCHBOARD_HOOK_SECRET (required, the same value as the node's), PORT (4000;
// 0 picks a free port), HOST (127.0.0.1), DATA_FILE (./data.json next to this file),
// CACHE_SECS (30: how long Switchboard may reuse an authorize answer).
// On start it prints one JSON line, {"listening":"http://127.0.0.1:4000"}, then one JSON line
// per request it answers.
//
// `GET /stats` is a debugging aid (the tests read it): calls per hook, the last request bodies,
// signature failures and the webhook events received. It is unsigned and shows user data:
// keep the service on a private address, or remove the route, in production.

import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

// ---------------------------------------------------------------------------------------------
// Verifying that a request comes from Switchboard

const MAX_AGE_MS = 5 * 60 * 1000;

/**
 * Checks `x-switchboard-signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`
 * and `x-switchboard-timestamp: <unix ms>`. `rawBody` is the body's bytes as received (a Buffer),
 * never re-serialised JSON. Returns null for a genuine request, else the reason to refuse it.
 */
export function verifySignature(secret, headers, rawBody, now = Date.now()) {
  const timestamp = headers["x-switchboard-timestamp"] ?? "";
  const signature = headers["x-switchboard-signature"] ?? "";
  if (!/^\d{1,15}$/.test(timestamp)) return "bad_timestamp";
  // A captured request must not be replayable later (nor one dated far in the future).
  if (Math.abs(now - Number(timestamp)) > MAX_AGE_MS) return "stale_timestamp";
  const hmac = createHmac("sha256", secret).update(`${timestamp}.`).update(rawBody);
  const expected = Buffer.from(`sha256=${hmac.digest("hex")}`);
  const given = Buffer.from(signature);
  // timingSafeEqual throws on different lengths; the length of a signature is no secret.
  return given.length === expected.length && timingSafeEqual(given, expected) ? null : "bad_signature";
}

// ---------------------------------------------------------------------------------------------
// The example application's rules, over a data file:
//   users   {id: {plan, banned?, private?}}   (an id not listed: plan "free", public)
//   friends [[a, b], ...]                      (both ways)
//   blocks  {blocker: [blocked, ...]}          (blocks both directions of contact)
//   teams   {name: [member, ...]}              (room `team:<name>` is for its members)
//   orders  {orderId: {userId, status}}

/** `obj[key]` when it is the object's own property: ids come from clients, and "__proto__" is an id too. */
const own = (obj, key) => (obj && typeof obj === "object" && Object.hasOwn(obj, key) ? obj[key] : undefined);

/** The three hooks as pure functions of the request body. */
export function rules(db, { cacheSecs = 30 } = {}) {
  const user = (id) => own(db.users, id) ?? {};
  const blocked = (a, b) => own(db.blocks, a)?.includes(b) || own(db.blocks, b)?.includes(a);
  const friends = (a, b) => (db.friends ?? []).some(([x, y]) => (x === a && y === b) || (x === b && y === a));
  const inTeam = (room, userId) => room.startsWith("team:") && !!own(db.teams, room.slice(5))?.includes(userId);

  // Per action: may user `u` act on target `t`, and the reason given when not.
  const contact = [(u, t) => !blocked(u, t), "blocked"];
  const presence = [(u, t) => u === t || !user(t).private || friends(u, t), "private"];
  const checks = {
    "message:send": contact,
    typing: contact,
    signal: contact,
    "presence:subscribe": presence,
    "presence:query": presence,
    "room:join": [(u, room) => inTeam(room, u), "not_in_team"],
    // Switchboard already lets only members emit; a team room stays its team's even so.
    "room:emit": [(u, room) => !room.startsWith("team:") || inTeam(room, u), "not_in_team"],
  };

  return {
    connect({ userId }) {
      const u = user(userId);
      if (u.banned) return { allow: false, reason: "banned" };
      return { allow: true, rooms: ["lobby"], data: { plan: u.plan ?? "free" } };
    },

    authorize({ action, userId, targets }) {
      // An action this backend does not know is refused: fail closed.
      const [may, reason] = own(checks, action) ?? [() => false, "unknown_action"];
      const allowed = targets.filter((t) => may(userId, t));
      return allowed.length === targets.length ? { allowed, cacheSecs } : { allowed, reason, cacheSecs };
    },

    rpc({ event, data, userId }) {
      if (event !== "order:track") return { error: { code: "unknown_event", message: `no handler for "${event}"` } };
      const orderId = own(data, "orderId");
      if (typeof orderId !== "string") return { error: { code: "invalid_payload", message: "orderId (a string) is required" } };
      const order = own(db.orders, orderId);
      // Someone else's order is "not found" as well, so ids cannot be probed.
      if (order?.userId !== userId) return { error: { code: "not_found", message: `no order ${orderId}` } };
      return { result: { orderId, status: order.status } };
    },
  };
}

/** The request body each hook needs (a hook called with anything else answers 400). */
const isStr = (v) => typeof v === "string";
const valid = {
  connect: (b) => isStr(b.userId),
  authorize: (b) => isStr(b.userId) && isStr(b.action) && Array.isArray(b.targets) && b.targets.every(isStr),
  rpc: (b) => isStr(b.userId) && isStr(b.event),
  webhook: (b) => Array.isArray(b.events) && b.events.every((e) => (isStr(e?.id) || Number.isInteger(e?.id)) && isStr(e?.type)),
};

// ---------------------------------------------------------------------------------------------
// Webhook receiver and /stats

const KEEP = 200; // request bodies per hook and webhook events kept for /stats
const KEEP_IDS = 10_000; // event ids remembered for deduplication (a real app: a unique index)

function recorder() {
  const hooks = ["connect", "authorize", "rpc", "webhook"];
  const calls = Object.fromEntries(hooks.map((h) => [h, 0]));
  const requests = Object.fromEntries(hooks.map((h) => [h, []]));
  const events = [];
  const seen = new Map(); // event id -> deliveries after the first
  let signatureFailures = 0;
  let duplicateTotal = 0;
  const keep = (list, item) => list.push(item) > KEEP && list.shift();

  return {
    call(hook, body) {
      calls[hook] += 1;
      keep(requests[hook], body);
    },
    badSignature() {
      signatureFailures += 1;
    },
    /** Records a webhook batch; returns the events not seen before, in order. */
    receive(batch) {
      const fresh = [];
      for (const event of batch.events) {
        // Delivery is at least once: the same id may come again, after a retry. Skip it.
        if (seen.has(event.id)) {
          seen.set(event.id, seen.get(event.id) + 1);
          duplicateTotal += 1;
          continue;
        }
        seen.set(event.id, 0);
        if (seen.size > KEEP_IDS) seen.delete(seen.keys().next().value);
        keep(events, event);
        fresh.push(event);
      }
      return fresh;
    },
    stats() {
      const duplicates = Object.fromEntries([...seen].filter(([, n]) => n > 0));
      return { calls, requests, signatureFailures, webhook: { events, duplicates, duplicateTotal } };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

const MAX_BODY = 1024 * 1024;

/**
 * The body's bytes, or null when it is larger than `limit`. The rest of a large body is read
 * and dropped rather than cut off, so the client still gets its 413.
 */
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    req.on("end", () => resolve(size <= limit ? Buffer.concat(chunks) : null));
    req.on("error", reject);
  });
}

function send(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

const log = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

export function createBackend({ secret, db, cacheSecs }) {
  const hooks = rules(db, { cacheSecs });
  const rec = recorder();
  const routes = { "/connect": "connect", "/authorize": "authorize", "/rpc": "rpc", "/webhook": "webhook" };

  return createServer(async (req, res) => {
    try {
      const { pathname } = new URL(req.url, "http://backend");
      if (pathname === "/stats" && req.method === "GET") return send(res, 200, rec.stats());
      const hook = own(routes, pathname);
      if (!hook) return send(res, 404, { error: "not_found" });
      if (req.method !== "POST") return send(res, 405, { error: "method_not_allowed" });

      const raw = await readBody(req, MAX_BODY);
      if (raw === null) return send(res, 413, { error: "too_large" });
      const why = verifySignature(secret, req.headers, raw);
      if (why) {
        rec.badSignature();
        log({ refused: pathname, why });
        return send(res, 401, { error: why });
      }
      let body;
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch {
        return send(res, 400, { error: "invalid_json" });
      }
      rec.call(hook, body);
      if (!body || typeof body !== "object" || !valid[hook](body)) return send(res, 400, { error: "invalid_request" });

      if (hook === "webhook") {
        for (const event of rec.receive(body)) log({ webhook: event.type, event });
        // 2xx acknowledges the whole batch; an error status would make Switchboard send it again.
        return send(res, 200, { ok: true });
      }
      const answer = hooks[hook](body);
      log({ hook, userId: body.userId, ...(body.action && { action: body.action }), ...(body.event && { event: body.event }), answer });
      return send(res, 200, answer);
    } catch (e) {
      log({ error: String(e?.stack ?? e) });
      if (!res.headersSent) send(res, 500, { error: "internal" });
    }
  });
}

function main() {
  const fail = (message) => {
    process.stderr.write(`example backend: ${message}\n`);
    process.exit(1);
  };
  const secret = process.env.SWITCHBOARD_HOOK_SECRET;
  if (!secret) fail("SWITCHBOARD_HOOK_SECRET is required (the same value the Switchboard nodes have)");
  const dataFile = process.env.DATA_FILE || fileURLToPath(new URL("./data.json", import.meta.url));
  let db;
  try {
    db = JSON.parse(readFileSync(dataFile, "utf8"));
  } catch (e) {
    fail(`cannot read DATA_FILE ${dataFile}: ${e.message}`);
  }
  const cacheSecs = Number(process.env.CACHE_SECS ?? 30);
  if (!Number.isInteger(cacheSecs) || cacheSecs < 0 || cacheSecs > 3600) fail("CACHE_SECS must be an integer 0..3600");
  const port = Number(process.env.PORT ?? 4000);
  const host = process.env.HOST || "127.0.0.1";

  const server = createBackend({ secret, db, cacheSecs });
  server.requestTimeout = 30_000; // bounds how long a client may take to send a request
  server.on("error", (e) => fail(e.message));
  server.listen(port, host, () => {
    const { port: bound } = server.address();
    log({ listening: `http://${host.includes(":") ? `[${host}]` : host}:${bound}` });
  });
}

// Run only when started as a program, so tests can import the functions above.
const started = process.argv[1] ? realpathSync(path.resolve(process.argv[1])) : "";
if (started === fileURLToPath(import.meta.url)) main();
