// Lifecycle webhooks, black-box (DESIGN.md "The application's own rules: backend hooks and
// webhooks"): a product node started with `--webhook-url` pointing at the test backend
// (./hook-backend.js, a real receiver process whose webhook mode can be switched to `down`), and
// its own SQLite database in a scratch directory. Each test starts its own node and backend.
//
//   - every event type reaches the receiver with the documented fields: socket.connected,
//     socket.disconnected (with its reason), user.online, user.offline, message.stored,
//     room.joined / room.left from a client (`room:join` / `room:leave`, source `client`) and
//     from the server API (source `api`); each event id once;
//   - the receiver down for 10 s: nothing is lost, every event is acknowledged exactly once and
//     in order once it is back (per socket connected before disconnected, message ids
//     increasing, every retried batch a prefix of what was finally received);
//     webhook_deliveries_total{outcome="failed"} rose meanwhile, webhook_outbox_depth was above
//     0 and goes back to 0;
//   - the node SIGKILLed while its events are undelivered, restarted with the same --node-id on
//     the same database: the events are delivered after the restart (plus socket.disconnected
//     `node_lost` for the sockets the crash left open);
//   - signatures: every attempt the receiver recorded verifies, the test re-verifies one from
//     the recorded headers and body, and a receiver with another secret refuses every delivery
//     (counted as signature failures) while the events stay pending.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { closeAll } from "./fixture.js";
import { startProductNode, connectUser, token, ack, api, assertStatus, uid, safeJson, eventually, sleep } from "./product-fixture.js";
import { startBackend, TEST_BACKEND, HOOK_SECRET, verifySignature } from "./backend-fixture.js";

const T = { timeout: 120_000 };
const KEY = "webhooks-api-key-0123456789abcdef-wh";
const DOWN_MS = 10_000;
/** Receiving everything after the receiver is back: the backoff doubles up to 60 s, so after a
 * 10 s outage the next attempt comes at most ~16 s later. Generous. */
const DELIVERY_TIMEOUT_MS = 60_000;
/** webhook_outbox_depth is refreshed every 5 s. */
const DEPTH_TIMEOUT_MS = 20_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The documented fields of each event type (besides id, type, at). */
const FIELDS = {
  "socket.connected": ["socketId", "userId", "deviceId", "nodeId", "ip"],
  "socket.disconnected": ["socketId", "userId", "nodeId", "reason"],
  "user.online": ["userId", "deviceId"],
  "user.offline": ["userId", "deviceId"],
  "message.stored": ["messageId", "from", "to", "text", "createdAt"],
  "room.joined": ["room", "userId", "source"],
  "room.left": ["room", "userId", "source"],
};

// ---------------------------------------------------------------------------------------------
// Helpers

/**
 * Run `fn` after the test, before everything registered earlier (nodes stop before their
 * receiver and before their database goes). Every cleanup runs; the first error is thrown.
 */
function onCleanup(t, fn) {
  if (!t.cleanups) {
    const cleanups = (t.cleanups = []);
    t.after(async () => {
      let first = null;
      for (const f of cleanups.reverse()) {
        try {
          await f();
        } catch (e) {
          first ??= e;
        }
      }
      if (first) throw first;
    });
  }
  t.cleanups.push(fn);
}

/** A scratch directory holding a SQLite database (removed after the test). */
function scratchDb(t) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-webhooks-"));
  onCleanup(t, () => rmSync(dir, { recursive: true, force: true }));
  return `sqlite://${path.join(dir, "webhooks.db")}?mode=rwc`;
}

/** The test backend (webhook receiver), stopped after the test. */
async function receiver(t, opts = {}) {
  const b = await startBackend({ script: TEST_BACKEND, name: "webhook-receiver", ...opts });
  onCleanup(t, () => b.stop());
  return b;
}

/** A node delivering webhooks to `b`, signing with `secret`, on `db`. Stopped after the test. */
async function webhookNode(t, b, db, { nodeId = "webhooks-node", secret = HOOK_SECRET } = {}) {
  const node = await startProductNode({
    name: "webhooks",
    nodeId,
    flags: ["--api-key", KEY, "--hook-secret", secret, "--webhook-url", `${b.url}/webhook`, "--database-url", db],
  });
  onCleanup(t, async () => {
    closeAll();
    await node.stop();
  });
  return node;
}

/** SIGKILL a fixture node; resolves once it is gone (its stop() is then a no-op). */
async function killNode(node) {
  process.kill(node.pid, "SIGKILL");
  await eventually(() => !node.alive(), { timeout: 5_000, interval: 20, what: "node exited after SIGKILL" });
  await node.stop().catch((e) => {
    if (!/died during the test/.test(e.message)) throw e;
  });
}

/** Sum of the samples of `name` whose labels include `labels` (0 when there is none). */
async function metric(node, name, labels = {}) {
  const res = await fetch(`${node.url}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  assert.equal(res.status, 200, `GET /metrics -> ${res.status}`);
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** The receiver's deduplicated events (first delivery of each id, in order of receipt). */
async function received(b) {
  return (await b.stats()).webhook.events;
}

/** Ids of the events in a delivery attempt's body. */
const idsOf = (attempt) => (Array.isArray(attempt.body?.events) ? attempt.body.events.map((e) => e.id) : []);

const show = (events) => events.map((e) => `  ${safeJson(e)}`).join("\n");

/** Wait until the receiver holds an event matching each predicate; resolves with all events. */
async function receivedAll(b, wanted, { timeout = DELIVERY_TIMEOUT_MS } = {}) {
  let last = [];
  try {
    await eventually(
      async () => {
        last = await received(b);
        return wanted.every(([, pred]) => last.some(pred));
      },
      { timeout, interval: 200, what: "every expected webhook event received" },
    );
  } catch (e) {
    const missing = wanted.filter(([, pred]) => !last.some(pred)).map(([what]) => what);
    throw new Error(`${e.message}; missing: ${missing.join(", ")}\nreceived:\n${show(last)}\n${b.output()}`);
  }
  return last;
}

/** The one received event matching `pred` (fails on none or several). */
function one(events, pred, what) {
  const found = events.filter(pred);
  assert.equal(found.length, 1, `exactly one ${what}; got ${found.length}\n${show(events)}`);
  return found[0];
}

/** The event matching `first` was received before the one matching `then`. */
function assertBefore(events, first, then, what) {
  const i = events.indexOf(one(events, first, `${what} (first)`));
  const j = events.indexOf(one(events, then, `${what} (then)`));
  assert.ok(i < j, `in order: ${what}\n${show(events)}`);
}

/** `e` has exactly id, type, at and the documented fields of its type. */
function assertShape(e, t0) {
  assert.deepEqual(Object.keys(e).sort(), ["id", "type", "at", ...FIELDS[e.type]].sort(), `fields of ${safeJson(e)}`);
  assert.match(e.id, UUID, `id of ${safeJson(e)}`);
  assert.equal(typeof e.at, "number", `at of ${safeJson(e)}`);
  // A sanity bound on the timestamp (ms since the epoch, taken during this test), not a timing one.
  assert.ok(e.at >= t0 - 60_000 && e.at <= Date.now() + 60_000, `at of ${safeJson(e)} is not around now (${t0})`);
}

/** Every id once in the receiver's list, no duplicate delivery of an acknowledged event. */
async function assertEachOnce(b) {
  const { webhook, attempts } = await b.stats();
  const ids = webhook.events.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, "every event id once in the receiver's list");
  assert.equal(webhook.duplicateTotal, 0, `redelivered after being acknowledged: ${safeJson(webhook.duplicates)}`);
  const acked = new Map();
  for (const a of attempts.webhook.filter((x) => x.accepted)) for (const id of idsOf(a)) acked.set(id, (acked.get(id) ?? 0) + 1);
  const twice = [...acked].filter(([, n]) => n !== 1);
  assert.deepEqual(twice, [], "each event id in exactly one acknowledged (2xx) delivery");
  assert.deepEqual([...acked.keys()].sort(), [...ids].sort(), "the receiver's list is what was acknowledged");
}

/** Every delivery attempt the receiver saw was correctly signed. */
async function assertAllSigned(b) {
  const { attempts, signatureFailures } = await b.stats();
  assert.ok(attempts.webhook.length > 0, "no webhook attempt recorded");
  const bad = attempts.webhook.filter((a) => !a.signatureValid);
  assert.deepEqual(bad.map((a) => a.why), [], "every attempt has a valid signature");
  assert.equal(signatureFailures, 0);
}

const isType = (type, fields = {}) => (e) => e.type === type && Object.entries(fields).every(([k, v]) => e[k] === v);

// ---------------------------------------------------------------------------------------------

describe("lifecycle webhooks", () => {
  test("every event type reaches the receiver with its documented fields, each id once", T, async (t) => {
    const t0 = Date.now();
    const b = await receiver(t);
    const node = await webhookNode(t, b, scratchDb(t));
    const alice = uid("alice");
    const bob = uid("bob");
    const doc = uid("doc:w");
    const apiRoom = uid("team");

    const a = await connectUser(node, alice, { device: "phone", token: token(alice, { rooms: ["doc:*"] }) });
    const bo = await connectUser(node, bob);
    assert.deepEqual(await ack(a, "room:join", { room: doc }), { ok: true });
    const sent = await ack(a, "message:send", { to: bob, text: "hello webhooks" });
    assert.equal(sent?.ok, true, safeJson(sent));
    assertStatus(await api(node, "POST", `/api/v1/rooms/${encodeURIComponent(apiRoom)}/members`, { key: KEY, body: { userId: bob } }), 200, "add member");
    assertStatus(await api(node, "DELETE", `/api/v1/rooms/${encodeURIComponent(apiRoom)}/members/${bob}`, { key: KEY }), 200, "remove member");
    assert.deepEqual(await ack(a, "room:leave", { room: doc }), { ok: true });
    a.disconnect();
    assertStatus(await api(node, "POST", `/api/v1/users/${bob}/disconnect`, { key: KEY }), 200, "disconnect bob");

    const sidA = a.authInfo.socketId;
    const sidB = bo.authInfo.socketId;
    const events = await receivedAll(b, [
      ["socket.connected alice", isType("socket.connected", { socketId: sidA })],
      ["socket.connected bob", isType("socket.connected", { socketId: sidB })],
      ["user.online alice", isType("user.online", { userId: alice })],
      ["user.online bob", isType("user.online", { userId: bob })],
      ["message.stored", isType("message.stored", { messageId: sent.messageId })],
      ["room.joined client", isType("room.joined", { room: doc })],
      ["room.left client", isType("room.left", { room: doc })],
      ["room.joined api", isType("room.joined", { room: apiRoom })],
      ["room.left api", isType("room.left", { room: apiRoom })],
      ["socket.disconnected alice", isType("socket.disconnected", { socketId: sidA })],
      ["socket.disconnected bob", isType("socket.disconnected", { socketId: sidB })],
      ["user.offline alice", isType("user.offline", { userId: alice })],
      ["user.offline bob", isType("user.offline", { userId: bob })],
    ]);
    t.diagnostic(`received ${events.length} events: ${events.map((e) => e.type).join(", ")}`);
    for (const e of events) assertShape(e, t0);
    assertBefore(events, isType("socket.connected", { socketId: sidA }), isType("socket.connected", { socketId: sidB }), "alice connected before bob");
    assertBefore(events, isType("socket.connected", { socketId: sidA }), isType("socket.disconnected", { socketId: sidA }), "alice connected before disconnected");
    assertBefore(events, isType("room.joined", { room: doc }), isType("room.left", { room: doc }), "room.joined before room.left (client)");
    assertBefore(events, isType("room.joined", { room: apiRoom }), isType("room.left", { room: apiRoom }), "room.joined before room.left (api)");
    assert.deepEqual([...new Set(events.map((e) => e.type))].sort(), Object.keys(FIELDS).sort(), "every type was delivered");

    const connected = one(events, isType("socket.connected", { socketId: sidA }), "socket.connected of alice");
    assert.deepEqual(
      { ...connected, id: undefined, at: undefined },
      { id: undefined, type: "socket.connected", at: undefined, socketId: sidA, userId: alice, deviceId: "phone", nodeId: node.nodeId, ip: "127.0.0.1" },
    );
    const online = one(events, isType("user.online", { userId: alice }), "user.online of alice");
    assert.equal(online.deviceId, "phone", safeJson(online));
    const stored = one(events, isType("message.stored"), "message.stored");
    assert.deepEqual(
      { ...stored, id: undefined, at: undefined },
      { id: undefined, type: "message.stored", at: undefined, messageId: sent.messageId, from: alice, to: bob, text: "hello webhooks", createdAt: sent.createdAt },
    );
    for (const [type, room, user, source] of [
      ["room.joined", doc, alice, "client"],
      ["room.left", doc, alice, "client"],
      ["room.joined", apiRoom, bob, "api"],
      ["room.left", apiRoom, bob, "api"],
    ]) {
      const e = one(events, isType(type, { room }), `${type} ${room}`);
      assert.deepEqual([e.userId, e.source], [user, source], `${type} of ${room}: ${safeJson(e)}`);
    }
    const goneA = one(events, isType("socket.disconnected", { socketId: sidA }), "socket.disconnected of alice");
    assert.deepEqual([goneA.userId, goneA.nodeId, goneA.reason], [alice, node.nodeId, "client_disconnect"], safeJson(goneA));
    const goneB = one(events, isType("socket.disconnected", { socketId: sidB }), "socket.disconnected of bob");
    assert.deepEqual([goneB.userId, goneB.nodeId, goneB.reason], [bob, node.nodeId, "server_disconnect"], safeJson(goneB));
    one(events, isType("user.offline", { userId: alice }), "user.offline of alice");
    one(events, isType("user.offline", { userId: bob }), "user.offline of bob");

    await assertEachOnce(b);
    await assertAllSigned(b);
    await eventually(async () => (await metric(node, "webhook_outbox_depth")) === 0, { timeout: DEPTH_TIMEOUT_MS, what: "webhook_outbox_depth == 0" });
    assert.ok((await metric(node, "webhook_deliveries_total", { outcome: "delivered" })) >= events.length, "delivered count");
    assert.equal(await metric(node, "webhook_deliveries_total", { outcome: "failed" }), 0, "nothing failed");
  });

  test(`the receiver down for ${DOWN_MS / 1000} s: everything generated meanwhile is delivered once it is back, each acknowledged exactly once, in order`, T, async (t) => {
    const b = await receiver(t);
    const node = await webhookNode(t, b, scratchDb(t));
    await b.mode({ webhook: "down" });
    const downAt = Date.now();
    const failedBefore = await metric(node, "webhook_deliveries_total", { outcome: "failed" });

    const u1 = uid("u1");
    const u2 = uid("u2");
    const room = uid("doc:down");
    const s1a = await connectUser(node, u1, { device: "a", token: token(u1, { rooms: ["doc:*"] }) });
    const s1b = await connectUser(node, u1, { device: "b" });
    const s2 = await connectUser(node, u2);
    assert.deepEqual(await ack(s1a, "room:join", { room }), { ok: true });
    const messageIds = [];
    for (const [from, to, text] of [
      [s1a, u2, "one"],
      [s2, u1, "two"],
      [s1b, u2, "three"],
      [s1a, u2, "four"],
    ]) {
      const r = await ack(from, "message:send", { to, text });
      assert.equal(r?.ok, true, safeJson(r));
      messageIds.push(r.messageId);
    }
    s1b.disconnect();
    s2.disconnect();

    // While it is down: deliveries fail and are counted, the outbox fills, nothing is accepted.
    await eventually(async () => (await metric(node, "webhook_deliveries_total", { outcome: "failed" })) > failedBefore, {
      timeout: DOWN_MS,
      what: 'webhook_deliveries_total{outcome="failed"} rose while the receiver is down',
    });
    await eventually(async () => (await metric(node, "webhook_outbox_depth")) > 0, { timeout: DOWN_MS, what: "webhook_outbox_depth > 0 while the receiver is down" });
    await sleep(Math.max(0, DOWN_MS - (Date.now() - downAt)));
    const during = await b.stats();
    assert.deepEqual(during.webhook.events, [], "nothing accepted while down");
    const failedAttempts = during.attempts.webhook.filter((a) => a.status === 503);
    assert.ok(failedAttempts.length >= 1, `refused attempts while down: ${failedAttempts.length}`);
    const failedWhileDown = await metric(node, "webhook_deliveries_total", { outcome: "failed" });
    t.diagnostic(`${failedAttempts.length} refused attempts, webhook_deliveries_total{outcome="failed"} ${failedBefore} -> ${failedWhileDown}`);

    await b.mode({ webhook: "ok" });
    const sids = [s1a, s1b, s2].map((s) => s.authInfo.socketId);
    const events = await receivedAll(b, [
      ...sids.map((sid) => [`socket.connected ${sid}`, isType("socket.connected", { socketId: sid })]),
      ...sids.slice(1).map((sid) => [`socket.disconnected ${sid}`, isType("socket.disconnected", { socketId: sid })]),
      ["user.online u1", isType("user.online", { userId: u1 })],
      ["user.online u2", isType("user.online", { userId: u2 })],
      ["user.offline u2", isType("user.offline", { userId: u2 })],
      ["room.joined", isType("room.joined", { room })],
      ...messageIds.map((id) => [`message.stored ${id}`, isType("message.stored", { messageId: id })]),
    ]);
    const order = events.map((e) => e.id);

    // Everything the node tried to deliver while the receiver was down arrived.
    const tried = new Set(failedAttempts.flatMap(idsOf));
    assert.deepEqual([...tried].filter((id) => !order.includes(id)), [], "every event of a refused attempt was delivered later");
    // Each retry started from the oldest pending event, in the same order: every refused batch
    // is a prefix of what was finally received.
    for (const a of failedAttempts) {
      const ids = idsOf(a);
      assert.deepEqual(order.slice(0, ids.length), ids, `refused batch (${ids.length} events) is a prefix of the received order\n${show(events)}`);
    }
    // In order: sockets connected in the order they connected, per socket connected before
    // disconnected, per user online before offline, message ids increasing.
    assertBefore(events, isType("socket.connected", { socketId: sids[0] }), isType("socket.connected", { socketId: sids[1] }), "first socket connected before the second");
    assertBefore(events, isType("socket.connected", { socketId: sids[1] }), isType("socket.connected", { socketId: sids[2] }), "second socket connected before the third");
    for (const sid of sids.slice(1)) {
      assertBefore(events, isType("socket.connected", { socketId: sid }), isType("socket.disconnected", { socketId: sid }), `socket ${sid}: connected before disconnected`);
    }
    assertBefore(events, isType("user.online", { userId: u1 }), isType("user.online", { userId: u2 }), "u1 online before u2");
    assertBefore(events, isType("user.online", { userId: u2 }), isType("user.offline", { userId: u2 }), "u2 online before offline");
    const storedIds = events.filter(isType("message.stored")).map((e) => e.messageId);
    assert.deepEqual(storedIds, [...messageIds].sort((x, y) => x - y), `message.stored in message id order\n${show(events)}`);
    assert.deepEqual(storedIds, messageIds, "message ids increase in the order the sends were acknowledged");

    await assertEachOnce(b);
    await assertAllSigned(b);
    await eventually(async () => (await metric(node, "webhook_outbox_depth")) === 0, { timeout: DEPTH_TIMEOUT_MS, what: "webhook_outbox_depth back to 0" });
    assert.ok((await metric(node, "webhook_deliveries_total", { outcome: "delivered" })) >= events.length, "delivered count");
    assert.equal(await metric(node, "webhook_deliveries_total", { outcome: "dead" }), 0, "nothing dead-lettered");
  });

  test("the node SIGKILLed with undelivered events, restarted with the same --node-id on the same database: they are delivered", T, async (t) => {
    const b = await receiver(t);
    const db = scratchDb(t);
    const nodeId = "webhooks-crash";
    const first = await webhookNode(t, b, db, { nodeId });
    await b.mode({ webhook: "down" });

    const u1 = uid("u1");
    const u2 = uid("u2");
    const s1 = await connectUser(first, u1, { device: "d1" });
    const s2 = await connectUser(first, u2, { device: "d2" });
    const sent = await ack(s1, "message:send", { to: u2, text: "before the crash" });
    assert.equal(sent?.ok, true, safeJson(sent));
    const sids = [s1.authInfo.socketId, s2.authInfo.socketId];

    // The events are in the outbox once the node has tried (and failed) to deliver them.
    const inOutbox = [
      ...sids.map((sid) => isType("socket.connected", { socketId: sid })),
      isType("user.online", { userId: u1 }),
      isType("user.online", { userId: u2 }),
      isType("message.stored", { messageId: sent.messageId }),
    ];
    let attempted = [];
    await eventually(
      async () => {
        const tries = (await b.stats()).attempts.webhook.filter((a) => a.status === 503);
        attempted = tries.at(-1)?.body?.events ?? [];
        return inOutbox.every((pred) => attempted.some(pred));
      },
      { timeout: 15_000, what: "a refused delivery holding the events of the first run" },
    );
    assert.deepEqual((await b.stats()).webhook.events, [], "nothing accepted before the crash");

    await killNode(first);
    closeAll();
    await b.mode({ webhook: "ok" });
    const second = await webhookNode(t, b, db, { nodeId });

    const events = await receivedAll(b, [
      ...attempted.map((e) => [`${e.type} ${e.id}`, (x) => x.id === e.id]),
      // The restart closes the sockets the crash left open.
      ...sids.map((sid) => [`socket.disconnected ${sid} node_lost`, isType("socket.disconnected", { socketId: sid, reason: "node_lost" })]),
    ]);
    t.diagnostic(`after the restart: ${events.map((e) => `${e.type}${e.reason ? `(${e.reason})` : ""}`).join(", ")}`);
    for (const e of attempted) assert.deepEqual(one(events, (x) => x.id === e.id, `${e.type} ${e.id}`), e, "delivered unchanged (same id, same at)");
    const order = events.map((e) => e.id);
    assert.deepEqual(
      order.filter((id) => attempted.some((e) => e.id === id)),
      attempted.map((e) => e.id),
      "in the order the first run tried them",
    );
    assertBefore(events, isType("socket.connected", { socketId: sids[0] }), isType("socket.connected", { socketId: sids[1] }), "u1's socket connected before u2's");
    assertBefore(events, isType("user.online", { userId: u1 }), isType("user.online", { userId: u2 }), "u1 online before u2");
    for (const sid of sids) {
      assertBefore(events, isType("socket.connected", { socketId: sid }), isType("socket.disconnected", { socketId: sid }), `socket ${sid}: connected before disconnected`);
    }
    await assertEachOnce(b);
    await assertAllSigned(b);
    await eventually(async () => (await metric(second, "webhook_outbox_depth")) === 0, { timeout: DEPTH_TIMEOUT_MS, what: "webhook_outbox_depth == 0 after the restart" });
  });

  test("signatures: every attempt verifies; the test re-verifies one from the recorded headers and body; a receiver with another secret refuses them all", T, async (t) => {
    const b = await receiver(t);
    const node = await webhookNode(t, b, scratchDb(t));
    const u = uid("signed");
    const s = await connectUser(node, u);
    const sent = await ack(s, "message:send", { to: uid("peer"), text: "sign me: héllo ✓" });
    assert.equal(sent?.ok, true, safeJson(sent));
    await receivedAll(b, [["message.stored", isType("message.stored", { messageId: sent.messageId })]]);
    await assertAllSigned(b);
    await assertEachOnce(b);

    const attempt = (await b.stats()).attempts.webhook.find((a) => a.accepted && a.body.events.some(isType("message.stored")));
    const { timestamp, signature, contentType } = attempt.headers;
    assert.equal(contentType, "application/json");
    assert.match(timestamp, /^\d{13}$/, "x-switchboard-timestamp is unix ms");
    assert.match(signature, /^sha256=[0-9a-f]{64}$/, "x-switchboard-signature");
    // The receiver keeps the parsed body; re-serialised it is the signed bytes.
    const body = JSON.stringify(attempt.body);
    assert.equal(verifySignature(HOOK_SECRET, timestamp, body, signature), true, `signature over "${timestamp}.${body}"`);
    assert.equal(verifySignature("another-secret", timestamp, body, signature), false, "another secret does not verify");
    assert.equal(verifySignature(HOOK_SECRET, String(Number(timestamp) + 1), body, signature), false, "another timestamp does not verify");
    assert.equal(verifySignature(HOOK_SECRET, timestamp, body.replace("héllo", "hello"), signature), false, "another body does not verify");

    // A receiver configured with another secret: every delivery is refused as badly signed,
    // nothing is received, and the events stay pending.
    const wrong = await receiver(t, { secret: "not-the-node-secret", name: "wrong-secret-receiver" });
    const node2 = await webhookNode(t, wrong, scratchDb(t), { nodeId: "webhooks-wrong-secret" });
    const s2 = await connectUser(node2, uid("unsigned"));
    await eventually(async () => (await wrong.stats()).signatureFailures >= 2, {
      timeout: 15_000,
      what: "the receiver with another secret counted signature failures",
    });
    const w = await wrong.stats();
    assert.ok(w.attempts.webhook.length >= 2);
    for (const a of w.attempts.webhook) {
      assert.deepEqual([a.signatureValid, a.why, a.status, a.accepted], [false, "bad_signature", 401, false], safeJson(a.headers));
    }
    assert.ok(w.attempts.webhook[0].body.events.some(isType("socket.connected", { socketId: s2.authInfo.socketId })), "the refused batch holds the event");
    assert.equal(w.calls.webhook, 0, "no delivery counted as a call");
    assert.deepEqual(w.webhook.events, [], "nothing received");
    assert.ok((await metric(node2, "webhook_deliveries_total", { outcome: "failed" })) > 0, "the refusals count as failed deliveries");
    await eventually(async () => (await metric(node2, "webhook_outbox_depth")) > 0, { timeout: DEPTH_TIMEOUT_MS, what: "webhook_outbox_depth > 0: the events stay pending" });
  });
});
