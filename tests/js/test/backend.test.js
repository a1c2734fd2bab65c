// The backends that the hook and webhook tests talk to, tested on their own (no switchboard
// binary needed): examples/backend/server.js, the example application's rules, and
// hook-backend.js, the test backend whose failures are switched at runtime. Each runs as a real
// process and gets correctly and incorrectly signed requests over HTTP.

import { describe, test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import {
  startBackend,
  EXAMPLE_BACKEND,
  TEST_BACKEND,
  HOOK_SECRET,
  sign,
  signedPost,
  verifySignature,
  writeDataFile,
} from "./backend-fixture.js";

const T = { timeout: 60_000 };
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const HOOKS = ["connect", "authorize", "rpc", "webhook"];
const MIN = 60 * 1000;

/** A well-formed request body for each hook path. */
const sample = {
  connect: { userId: "ann", deviceId: "d1", socketId: "s1", nodeId: "n1", claims: { sub: "ann" }, auth: {}, ip: "127.0.0.1", userAgent: "test", origin: null },
  authorize: { action: "message:send", userId: "ann", socketId: "s1", targets: ["ben"] },
  rpc: { event: "order:track", data: { orderId: "o-1" }, userId: "ann", socketId: "s1" },
  webhook: { events: [{ id: "e-sample", type: "user.online", at: 1, userId: "ann", deviceId: "d1" }] },
};

/**
 * Requests that must be refused with 401: [label, body (undefined: the sample), signedPost options].
 * `raw` bodies differ from the signed one only in whitespace: a backend must sign the bytes.
 */
function badlySigned(hook) {
  const body = JSON.stringify(sample[hook]);
  const now = Date.now();
  return [
    ["no signature headers", { secret: null }],
    ["another secret", { secret: "not-the-secret" }],
    ["signature of another body", { raw: body, signature: sign(HOOK_SECRET, now, `${body} `), timestamp: now }],
    ["signature of the re-serialised JSON, body sent with spaces", { raw: JSON.stringify(sample[hook], null, 1), signature: sign(HOOK_SECRET, now, body), timestamp: now }],
    ["signature of another timestamp", { raw: body, timestamp: now, signature: sign(HOOK_SECRET, now - 1, body) }],
    ["upper-case hex", { raw: body, timestamp: now, signature: sign(HOOK_SECRET, now, body).toUpperCase().replace("SHA256=", "sha256=") }],
    ["no sha256= prefix", { raw: body, timestamp: now, signature: sign(HOOK_SECRET, now, body).slice(7) }],
    ["truncated signature", { raw: body, timestamp: now, signature: sign(HOOK_SECRET, now, body).slice(0, -2) }],
    ["timestamp in seconds, not ms", { timestamp: Math.floor(now / 1000) }],
    ["stale timestamp (6 minutes old)", { timestamp: now - 6 * MIN }],
    ["timestamp 6 minutes in the future", { timestamp: now + 6 * MIN }],
    ["timestamp not a number", { timestamp: "yesterday" }],
    ["empty timestamp", { timestamp: "", signature: sign(HOOK_SECRET, "", body), raw: body }],
  ];
}

const DATA = {
  users: {
    ann: { plan: "pro" },
    ben: { plan: "free", private: true },
    cat: { plan: "team" },
    dan: { plan: "free", private: true },
    eve: { plan: "free", banned: true },
  },
  friends: [["ann", "ben"]],
  blocks: { cat: ["dan"] },
  teams: { red: ["ann", "cat"], blue: ["ben"] },
  orders: { "o-1": { userId: "ann", status: "shipped" }, "o-2": { userId: "ben", status: "processing" } },
};

/** POST a signed hook call and assert a 200; resolves with the JSON answer. */
async function call(backend, hook, body) {
  const res = await backend.post(`/${hook}`, body);
  assert.equal(res.status, 200, `${hook} ${JSON.stringify(body)} -> ${res.status} ${res.text}\n${backend.output()}`);
  assert.notEqual(res.json, undefined, `${hook}: not JSON: ${res.text.slice(0, 200)}`);
  return res.json;
}

const authorize = (b, action, userId, targets) => call(b, "authorize", { action, userId, socketId: `s-${userId}`, targets });

// ---------------------------------------------------------------------------------------------

describe("signature helpers (backend-fixture.js)", () => {
  test("sign() matches a vector computed with OpenSSL; verifySignature() accepts only that exact header", () => {
    // printf '%s' '1700000000000.{"userId":"alice","text":"héllo"}' | openssl dgst -sha256 -hmac top-secret
    const body = '{"userId":"alice","text":"héllo"}';
    const good = "sha256=ca0077349992c13a729115ad8ef7a9e704b508f06ca67b066d1927a82f033061";
    assert.equal(sign("top-secret", 1700000000000, body), good);
    assert.equal(sign("top-secret", "1700000000000", Buffer.from(body)), good, "a Buffer body signs its bytes");
    assert.equal(verifySignature("top-secret", "1700000000000", body, good), true);
    assert.equal(verifySignature("top-secret", 1700000000000, Buffer.from(body), good), true);
    for (const [label, args] of [
      ["other secret", ["top-secret!", "1700000000000", body, good]],
      ["other timestamp", ["top-secret", "1700000000001", body, good]],
      ["other body", ["top-secret", "1700000000000", `${body} `, good]],
      ["upper-case", ["top-secret", "1700000000000", body, `sha256=${good.slice(7).toUpperCase()}`]],
      ["no prefix", ["top-secret", "1700000000000", body, good.slice(7)]],
      ["truncated", ["top-secret", "1700000000000", body, good.slice(0, -1)]],
      ["no header", ["top-secret", "1700000000000", body, undefined]],
      ["no timestamp", ["top-secret", undefined, body, good]],
    ]) {
      assert.equal(verifySignature(...args), false, label);
    }
  });
});

describe("example backend (examples/backend/server.js)", T, () => {
  let b;
  before(async () => {
    b = await startBackend({ script: EXAMPLE_BACKEND, dataFile: writeDataFile(DATA) });
  });
  after(async () => {
    await b?.stop();
  });

  test("refuses to start without SWITCHBOARD_HOOK_SECRET, or with a DATA_FILE it cannot read", async () => {
    await assert.rejects(startBackend({ script: EXAMPLE_BACKEND, secret: null }), (e) => {
      assert.equal(e.exit?.code, 1, e.message);
      assert.match(e.output, /SWITCHBOARD_HOOK_SECRET is required/);
      return true;
    });
    await assert.rejects(startBackend({ script: EXAMPLE_BACKEND, secret: "", dataFile: writeDataFile(DATA) }), (e) => e.exit?.code === 1);
    await assert.rejects(startBackend({ script: EXAMPLE_BACKEND, dataFile: "/nonexistent/data.json" }), (e) => {
      assert.equal(e.exit?.code, 1, e.message);
      assert.match(e.output, /cannot read DATA_FILE \/nonexistent\/data\.json/);
      return true;
    });
  });

  test("every badly signed or stale request to a hook or the webhook → 401, counted, and not processed", async () => {
    const before = await b.stats();
    let refused = 0;
    for (const hook of HOOKS) {
      for (const [label, opts] of badlySigned(hook)) {
        const res = await b.post(`/${hook}`, sample[hook], opts);
        assert.equal(res.status, 401, `${hook}, ${label}: ${res.status} ${res.text}`);
        assert.match(res.json?.error ?? "", /^(bad_signature|bad_timestamp|stale_timestamp)$/, `${hook}, ${label}: ${res.text}`);
        refused += 1;
      }
    }
    const after = await b.stats();
    assert.equal(after.signatureFailures - before.signatureFailures, refused);
    assert.deepEqual(after.calls, before.calls, "a refused request is not a call");
    assert.deepEqual(after.webhook, before.webhook, "a refused webhook delivers nothing");
  });

  test("a correctly signed request is answered: now, 4 minutes old, 4 minutes ahead, and with non-ASCII text (the bytes are signed)", async () => {
    for (const ts of [Date.now(), Date.now() - 4 * MIN, Date.now() + 4 * MIN]) {
      const res = await b.post("/connect", sample.connect, { timestamp: ts });
      assert.equal(res.status, 200, `timestamp ${ts}: ${res.text}`);
    }
    const res = await b.post("/rpc", { ...sample.rpc, data: { orderId: "o-1", note: "héllo ✓ 你好" } });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { result: { orderId: "o-1", status: "shipped" } });
    const stats = await b.stats();
    assert.equal(stats.requests.rpc.at(-1).data.note, "héllo ✓ 你好");
  });

  test("connect: a banned user is refused (reason banned); others join lobby with data {plan}; unknown users are free", async () => {
    assert.deepEqual(await call(b, "connect", { ...sample.connect, userId: "eve" }), { allow: false, reason: "banned" });
    assert.deepEqual(await call(b, "connect", { ...sample.connect, userId: "ann" }), { allow: true, rooms: ["lobby"], data: { plan: "pro" } });
    assert.deepEqual(await call(b, "connect", { ...sample.connect, userId: "ben" }), { allow: true, rooms: ["lobby"], data: { plan: "free" } });
    assert.deepEqual(await call(b, "connect", { ...sample.connect, userId: "stranger" }), { allow: true, rooms: ["lobby"], data: { plan: "free" } });
    for (const id of ["__proto__", "constructor", "toString"]) {
      const a = await call(b, "connect", { ...sample.connect, userId: id });
      assert.deepEqual(a, { allow: true, rooms: ["lobby"], data: { plan: "free" } }, `userId ${id}`);
    }
  });

  test("authorize message:send / typing / signal: a blocked pair is refused in both directions (reason blocked), others allowed; cacheSecs 30", async () => {
    for (const action of ["message:send", "typing", "signal"]) {
      assert.deepEqual(await authorize(b, action, "cat", ["dan"]), { allowed: [], reason: "blocked", cacheSecs: 30 }, `${action} cat→dan`);
      assert.deepEqual(await authorize(b, action, "dan", ["cat"]), { allowed: [], reason: "blocked", cacheSecs: 30 }, `${action} dan→cat`);
      assert.deepEqual(await authorize(b, action, "ann", ["cat"]), { allowed: ["cat"], cacheSecs: 30 }, `${action} ann→cat`);
      assert.deepEqual(await authorize(b, action, "cat", ["ann", "dan", "stranger"]), { allowed: ["ann", "stranger"], reason: "blocked", cacheSecs: 30 }, `${action} mixed`);
      assert.deepEqual(await authorize(b, action, "cat", []), { allowed: [], cacheSecs: 30 }, `${action} no targets`);
    }
  });

  test("authorize presence:subscribe / presence:query: a private user only for friends and themself (reason private); public users for all", async () => {
    for (const action of ["presence:subscribe", "presence:query"]) {
      assert.deepEqual(await authorize(b, action, "ann", ["ben"]), { allowed: ["ben"], cacheSecs: 30 }, `${action}: ann is ben's friend`);
      assert.deepEqual(await authorize(b, action, "ben", ["ann"]), { allowed: ["ann"], cacheSecs: 30 }, `${action}: friendship is mutual`);
      assert.deepEqual(await authorize(b, action, "ben", ["ben"]), { allowed: ["ben"], cacheSecs: 30 }, `${action}: oneself`);
      assert.deepEqual(await authorize(b, action, "cat", ["ben", "ann", "dan", "stranger"]), { allowed: ["ann", "stranger"], reason: "private", cacheSecs: 30 }, `${action}: cat is nobody's friend`);
      // Presence follows the privacy rule only: cat blocks dan, but cat is public.
      assert.deepEqual(await authorize(b, action, "dan", ["cat"]), { allowed: ["cat"], cacheSecs: 30 }, `${action}: cat is public`);
    }
  });

  test("authorize room:join: team:<name> for its members only (reason not_in_team); room:emit: team rooms for members, other rooms allowed", async () => {
    assert.deepEqual(await authorize(b, "room:join", "ann", ["team:red"]), { allowed: ["team:red"], cacheSecs: 30 });
    assert.deepEqual(await authorize(b, "room:join", "ben", ["team:blue"]), { allowed: ["team:blue"], cacheSecs: 30 });
    for (const room of ["team:blue", "team:green", "lobby", "red", "team:", "team:__proto__", "team:constructor", "team:hasOwnProperty"]) {
      assert.deepEqual(await authorize(b, "room:join", "ann", [room]), { allowed: [], reason: "not_in_team", cacheSecs: 30 }, `ann joins ${room}`);
    }
    assert.deepEqual(await authorize(b, "room:emit", "ann", ["team:red"]), { allowed: ["team:red"], cacheSecs: 30 });
    assert.deepEqual(await authorize(b, "room:emit", "ann", ["lobby"]), { allowed: ["lobby"], cacheSecs: 30 });
    assert.deepEqual(await authorize(b, "room:emit", "ben", ["team:red"]), { allowed: [], reason: "not_in_team", cacheSecs: 30 });
  });

  test("authorize with an action the backend does not know: nothing allowed (fail closed)", async () => {
    for (const action of ["message:delete", "__proto__", "constructor", ""]) {
      assert.deepEqual(await authorize(b, action, "ann", ["ben"]), { allowed: [], reason: "unknown_action", cacheSecs: 30 }, `action ${JSON.stringify(action)}`);
    }
  });

  test("rpc order:track: own order → {result:{orderId,status}}; unknown or someone else's → not_found; other events → unknown_event", async () => {
    const rpc = (event, data, userId = "ann") => call(b, "rpc", { event, data, userId, socketId: "s1" });
    assert.deepEqual(await rpc("order:track", { orderId: "o-1" }), { result: { orderId: "o-1", status: "shipped" } });
    assert.deepEqual(await rpc("order:track", { orderId: "o-2" }, "ben"), { result: { orderId: "o-2", status: "processing" } });
    for (const [data, userId] of [[{ orderId: "o-2" }, "ann"], [{ orderId: "o-404" }, "ann"], [{ orderId: "__proto__" }, "ann"], [{ orderId: "o-1" }, "stranger"]]) {
      const a = await rpc("order:track", data, userId);
      assert.equal(a.error?.code, "not_found", `${userId} ${JSON.stringify(data)}: ${JSON.stringify(a)}`);
      assert.equal(typeof a.error.message, "string");
      assert.equal(a.result, undefined);
    }
    for (const data of [null, {}, { orderId: 7 }, ["o-1"]]) {
      const a = await rpc("order:track", data);
      assert.equal(a.error?.code, "invalid_payload", `data ${JSON.stringify(data)}: ${JSON.stringify(a)}`);
    }
    for (const event of ["order:cancel", "__proto__", ""]) {
      const a = await rpc(event, { orderId: "o-1" });
      assert.equal(a.error?.code, "unknown_event", `event ${JSON.stringify(event)}: ${JSON.stringify(a)}`);
      assert.equal(typeof a.error.message, "string");
    }
  });

  test("requests it cannot use: not JSON or the wrong shape → 400; unknown path → 404; GET on a hook → 405; body over 1 MiB → 413", async () => {
    for (const hook of HOOKS) {
      assert.equal((await b.post(`/${hook}`, undefined, { raw: "{not json" })).status, 400, `${hook}: not JSON`);
      for (const body of [[], "x", null, {}, { userId: 7, action: 1, event: 2, targets: "ben", events: {} }]) {
        const res = await b.post(`/${hook}`, body);
        assert.equal(res.status, 400, `${hook} ${JSON.stringify(body)}: ${res.text}`);
      }
    }
    const badTargets = await b.post("/authorize", { ...sample.authorize, targets: ["ben", 7] });
    assert.equal(badTargets.status, 400, badTargets.text);
    assert.equal((await b.post("/hooks/connect", sample.connect)).status, 404);
    assert.equal((await b.post("/", sample.connect)).status, 404);
    assert.equal((await fetch(`${b.url}/connect`)).status, 405);
    const big = await b.post("/rpc", { ...sample.rpc, data: "x".repeat(1024 * 1024) });
    assert.equal(big.status, 413);
    assert.equal(b.alive(), true);
  });

  test("webhook: each event once, in order, however often it is delivered; duplicates counted by id", async () => {
    const ev = (n, type = "user.online") => ({ id: `wh-${n}`, type, at: Date.now(), userId: "ann", deviceId: "d1" });
    const before = await b.stats();
    const batches = [[ev(1), ev(2)], [ev(2), ev(3, "user.offline")], [ev(1), ev(2)], [ev(4, "message.stored")]];
    for (const events of batches) {
      const res = await b.post("/webhook", { events });
      assert.equal(res.status, 200, res.text);
    }
    const { calls, webhook } = await b.stats();
    assert.equal(calls.webhook - before.calls.webhook, batches.length);
    const mine = webhook.events.filter((e) => e.id.startsWith("wh-"));
    assert.deepEqual(mine.map((e) => [e.id, e.type]), [["wh-1", "user.online"], ["wh-2", "user.online"], ["wh-3", "user.offline"], ["wh-4", "message.stored"]]);
    assert.deepEqual(mine[0], batches[0][0], "the event is kept as received");
    assert.equal(webhook.duplicates["wh-1"], 1);
    assert.equal(webhook.duplicates["wh-2"], 2);
    assert.equal(webhook.duplicates["wh-3"], undefined);
    assert.equal(webhook.duplicateTotal - before.webhook.duplicateTotal, 3);
    // An empty batch is acknowledged too (nothing to do).
    assert.equal((await b.post("/webhook", { events: [] })).status, 200);
  });

  test("/stats keeps the bodies of the last 200 calls per hook, oldest first", async () => {
    const before = (await b.stats()).calls.connect;
    for (let i = 0; i < 205; i += 1) await call(b, "connect", { ...sample.connect, socketId: `stats-${i}` });
    const { calls, requests } = await b.stats();
    assert.equal(calls.connect - before, 205);
    assert.equal(requests.connect.length, 200);
    assert.equal(requests.connect[0].socketId, "stats-5");
    assert.equal(requests.connect.at(-1).socketId, "stats-204");
  });

  test("with no DATA_FILE it reads examples/backend/data.json; CACHE_SECS sets cacheSecs", async () => {
    const shipped = JSON.parse(readFileSync(path.join(REPO_ROOT, "examples", "backend", "data.json"), "utf8"));
    const d = await startBackend({ script: EXAMPLE_BACKEND, env: { CACHE_SECS: 0 } });
    try {
      for (const [id, user] of Object.entries(shipped.users)) {
        const a = await call(d, "connect", { ...sample.connect, userId: id });
        assert.deepEqual(a, user.banned ? { allow: false, reason: "banned" } : { allow: true, rooms: ["lobby"], data: { plan: user.plan } }, id);
      }
      assert.equal((await authorize(d, "typing", "x", ["y"])).cacheSecs, 0);
    } finally {
      await d.stop();
    }
    await assert.rejects(startBackend({ script: EXAMPLE_BACKEND, env: { CACHE_SECS: 3601 } }), /CACHE_SECS/);
  });

  test("README.md and the example's README quote server.js's verifySignature verbatim", () => {
    const source = readFileSync(EXAMPLE_BACKEND, "utf8");
    const start = source.indexOf("const MAX_AGE_MS");
    const end = source.indexOf("\n}\n", start) + 3;
    assert.ok(start > 0 && end > start, "server.js has MAX_AGE_MS and verifySignature");
    const quoted = source.slice(start, end);
    assert.match(quoted, /export function verifySignature/);
    for (const doc of ["examples/backend/README.md", "README.md"]) {
      const text = readFileSync(path.join(REPO_ROOT, doc), "utf8");
      assert.ok(text.includes(quoted), `${doc} must quote server.js's verifySignature verbatim:\n${quoted}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe("test backend (tests/js/test/hook-backend.js)", T, () => {
  let tb;
  before(async () => {
    tb = await startBackend({ script: TEST_BACKEND });
  });
  after(async () => {
    await tb?.stop();
  });
  beforeEach(async () => {
    await tb.reset();
  });

  test("refuses to start without SWITCHBOARD_HOOK_SECRET", async () => {
    await assert.rejects(startBackend({ script: TEST_BACKEND, secret: null }), (e) => {
      assert.equal(e.exit?.code, 1, e.message);
      assert.match(e.output, /SWITCHBOARD_HOOK_SECRET is required/);
      return true;
    });
  });

  test("signature checks like the example: bad → 401 and recorded as an attempt with signatureValid false; good → counted as a call", async () => {
    let refused = 0;
    for (const hook of HOOKS) {
      for (const [label, opts] of badlySigned(hook)) {
        const res = await tb.post(`/${hook}`, sample[hook], opts);
        assert.equal(res.status, 401, `${hook}, ${label}: ${res.status} ${res.text}`);
        refused += 1;
      }
      const ok = await tb.post(`/${hook}`, sample[hook], { headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } });
      assert.equal(ok.status, 200, `${hook}: ${ok.text}`);
    }
    const s = await tb.stats();
    assert.equal(s.signatureFailures, refused);
    for (const hook of HOOKS) {
      assert.equal(s.calls[hook], 1, hook);
      assert.deepEqual(s.requests[hook], [sample[hook]], hook);
      const attempts = s.attempts[hook];
      assert.equal(attempts.length, badlySigned(hook).length + 1);
      assert.ok(attempts.slice(0, -1).every((a) => a.signatureValid === false && a.status === 401 && a.why), hook);
      const last = attempts.at(-1);
      assert.equal(last.signatureValid, true);
      assert.equal(last.status, 200);
      assert.equal(last.mode, "ok");
      assert.equal(last.headers.contentType, "application/json");
      assert.equal(last.headers.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
      assert.ok(verifySignature(HOOK_SECRET, last.headers.timestamp, JSON.stringify(sample[hook]), last.headers.signature));
    }
    assert.deepEqual(s.webhook.events, sample.webhook.events, "only the correctly signed delivery counts");
  });

  test("default answers: connect allows, authorize allows every target, rpc echoes, webhook acknowledges", async () => {
    assert.deepEqual(await call(tb, "connect", sample.connect), { allow: true });
    assert.deepEqual(await call(tb, "authorize", { ...sample.authorize, targets: ["a", "b"] }), { allowed: ["a", "b"] });
    assert.deepEqual(await call(tb, "rpc", { ...sample.rpc, event: "x:y", data: [1, 2] }), { result: { event: "x:y", data: [1, 2] } });
    assert.deepEqual(await call(tb, "rpc", { ...sample.rpc, event: "x:y", data: null }), { result: { event: "x:y", data: null } });
    assert.deepEqual(await call(tb, "webhook", sample.webhook), { ok: true });
  });

  test("every failure mode on every hook: down 503, slow, garbage, huge (5 MB), deep (10,000 levels), wrongshape; then ok again", async () => {
    await tb.mode({ slowMs: 300 });
    for (const hook of HOOKS) {
      const body = sample[hook];
      const expectOk = async (what) => {
        const res = await tb.post(`/${hook}`, body);
        assert.equal(res.status, 200, `${hook} ${what}: ${res.text}`);
        assert.ok(res.json && typeof res.json === "object" && !Array.isArray(res.json), `${hook} ${what}: ${res.text}`);
        return res;
      };
      await expectOk("before");

      await tb.mode({ [hook]: "down" });
      assert.equal((await tb.post(`/${hook}`, body)).status, 503, `${hook} down`);

      await tb.mode({ [hook]: "slow" });
      const slow = await expectOk("slow");
      assert.ok(slow.ms >= 290, `${hook} slow answered after ${slow.ms} ms`);

      await tb.mode({ [hook]: "garbage" });
      const garbage = await tb.post(`/${hook}`, body);
      assert.equal(garbage.status, 200);
      assert.equal(garbage.json, undefined, `${hook} garbage must not parse: ${garbage.text}`);

      await tb.mode({ [hook]: "huge" });
      const huge = await tb.post(`/${hook}`, body);
      assert.equal(huge.status, 200);
      assert.ok(huge.text.length >= 5 * 1024 * 1024, `${hook} huge is ${huge.text.length} bytes`);
      assert.equal(typeof huge.json?.padding, "string", `${hook} huge is still JSON`);

      await tb.mode({ [hook]: "deep" });
      const deep = await tb.post(`/${hook}`, body);
      assert.equal(deep.status, 200);
      assert.equal(deep.text.length, 20_000);
      assert.match(deep.text, /^\[{10000}\]{10000}$/);

      await tb.mode({ [hook]: "wrongshape" });
      const wrong = await tb.post(`/${hook}`, body);
      assert.equal(wrong.status, 200);
      const w = wrong.json;
      assert.notEqual(w, undefined, `${hook} wrongshape is valid JSON`);
      if (hook === "connect") assert.notEqual(typeof w.allow, "boolean");
      if (hook === "authorize") assert.equal(Array.isArray(w.allowed), false);
      if (hook === "rpc") assert.ok(!("result" in w) && typeof w.error !== "object", JSON.stringify(w));
      if (hook === "webhook") assert.ok(Array.isArray(w));

      await tb.mode({ [hook]: "ok" });
      await expectOk("after");
    }
    const { attempts, calls } = await tb.stats();
    for (const hook of HOOKS) {
      assert.equal(calls[hook], 8, hook);
      assert.deepEqual(attempts[hook].map((a) => a.mode), ["ok", "down", "slow", "garbage", "huge", "deep", "wrongshape", "ok"], hook);
    }
  });

  test("modes switched per hook: one hook down leaves the others answering", async () => {
    await tb.mode({ authorize: "down" });
    assert.equal((await tb.post("/authorize", sample.authorize)).status, 503);
    assert.equal((await tb.post("/connect", sample.connect)).status, 200);
    assert.equal((await tb.post("/rpc", sample.rpc)).status, 200);
    const { modes } = await tb.mode({ connect: "garbage", rpc: "down" });
    assert.deepEqual(Object.fromEntries(Object.entries(modes).map(([h, m]) => [h, m.mode])), { connect: "garbage", authorize: "down", rpc: "down", webhook: "ok" });
  });

  test("forCalls and forMs: a mode that reverts to ok by itself", async () => {
    await tb.mode({ webhook: "down", forCalls: 2 });
    const statuses = [];
    for (let i = 0; i < 4; i += 1) statuses.push((await tb.post("/webhook", sample.webhook)).status);
    assert.deepEqual(statuses, [503, 503, 200, 200]);

    await tb.mode({ rpc: "down", connect: "down", forMs: 300 });
    assert.equal((await tb.post("/rpc", sample.rpc)).status, 503);
    assert.equal((await tb.post("/connect", sample.connect)).status, 503);
    await sleep(400);
    assert.equal((await tb.post("/rpc", sample.rpc)).status, 200);
    assert.equal((await tb.post("/connect", sample.connect)).status, 200);
  });

  test("control endpoints refuse what they do not understand (400) and change nothing", async () => {
    for (const [p, body] of [
      ["/_mode", { authorize: "sideways" }],
      ["/_mode", { authorise: "down" }],
      ["/_mode", { rpc: "slow", slowMs: -1 }],
      ["/_mode", { rpc: "down", forCalls: 1.5 }],
      ["/_answers", { auth: {} }],
      ["/_mode", [1]],
    ]) {
      const res = await fetch(tb.url + p, { method: "POST", body: JSON.stringify(body) });
      assert.equal(res.status, 400, `${p} ${JSON.stringify(body)}`);
    }
    await assert.rejects(tb.mode({ authorize: "sideways" }), /400/);
    const { modes, slowMs } = await tb.stats();
    assert.ok(Object.values(modes).every((m) => m.mode === "ok"));
    assert.equal(slowMs, 3000);
  });

  test("answers: fixed, switched by a request field ($by, \"*\"), allowed \"*\" / {except}, and null back to the default", async () => {
    await tb.answers({ connect: { allow: false, reason: "nope" } });
    assert.deepEqual(await call(tb, "connect", sample.connect), { allow: false, reason: "nope" });

    await tb.answers({
      connect: { $by: "userId", ann: { allow: true, rooms: ["r"], data: { x: 1 } }, "*": { allow: false, reason: "who" } },
      authorize: {
        $by: "action",
        "message:send": { allowed: { except: ["ben"] }, reason: "blocked", cacheSecs: 5 },
        "room:join": { allowed: [], reason: "no" },
        "*": { allowed: "*", cacheSecs: 0 },
      },
      rpc: { $by: "event", "a:b": { result: 42 }, "*": { error: { code: "unknown_event", message: "no" } } },
    });
    assert.deepEqual(await call(tb, "connect", sample.connect), { allow: true, rooms: ["r"], data: { x: 1 } });
    assert.deepEqual(await call(tb, "connect", { ...sample.connect, userId: "ben" }), { allow: false, reason: "who" });
    assert.deepEqual(await authorize(tb, "message:send", "ann", ["ben", "cat", "dan"]), { allowed: ["cat", "dan"], reason: "blocked", cacheSecs: 5 });
    assert.deepEqual(await authorize(tb, "room:join", "ann", ["team:x"]), { allowed: [], reason: "no" });
    assert.deepEqual(await authorize(tb, "typing", "ann", ["ben", "cat"]), { allowed: ["ben", "cat"], cacheSecs: 0 });
    assert.deepEqual(await call(tb, "rpc", { ...sample.rpc, event: "a:b" }), { result: 42 });
    assert.deepEqual(await call(tb, "rpc", { ...sample.rpc, event: "c:d" }), { error: { code: "unknown_event", message: "no" } });

    // "slow" and "huge" answer the configured answer too.
    await tb.mode({ rpc: "huge" });
    const huge = await tb.post("/rpc", { ...sample.rpc, event: "a:b" });
    assert.equal(huge.json?.result, 42);

    const now = await tb.answers({ connect: null });
    assert.deepEqual(Object.keys(now).sort(), ["authorize", "rpc"]);
    assert.deepEqual(await call(tb, "connect", sample.connect), { allow: true });
  });

  test("webhook: refused deliveries are recorded as attempts but not received; redeliveries deduplicated by id", async () => {
    const ev = (n) => ({ id: `d-${n}`, type: "socket.connected", at: Date.now(), socketId: `s${n}`, userId: "ann", deviceId: "d", nodeId: "n", ip: "127.0.0.1" });
    await tb.mode({ webhook: "down", forCalls: 2 });
    const first = [ev(1), ev(2)];
    const statuses = [];
    for (const events of [first, first, first, [ev(2), ev(3)]]) statuses.push((await tb.post("/webhook", { events })).status);
    assert.deepEqual(statuses, [503, 503, 200, 200]);
    // One more delivery with a bad signature: an attempt, never an event.
    assert.equal((await tb.post("/webhook", { events: [ev(9)] }, { secret: "wrong" })).status, 401);

    const { attempts, webhook, calls } = await tb.stats();
    assert.equal(calls.webhook, 4);
    assert.deepEqual(attempts.webhook.map((a) => [a.status, a.accepted, a.signatureValid]), [
      [503, false, true],
      [503, false, true],
      [200, true, true],
      [200, true, true],
      [401, false, false],
    ]);
    assert.deepEqual(attempts.webhook[0].body, { events: first }, "the batch is recorded as delivered");
    assert.deepEqual(webhook.events.map((e) => e.id), ["d-1", "d-2", "d-3"]);
    assert.deepEqual(webhook.duplicates, { "d-2": 1 });
    assert.equal(webhook.duplicateTotal, 1);
  });

  test("webhook in slow mode: a sender that gives up before the answer has not had its batch acknowledged", async () => {
    await tb.mode({ webhook: "slow", slowMs: 600 });
    await assert.rejects(tb.post("/webhook", { events: [{ id: "slow-1", type: "user.online", at: 1 }] }, { timeout: 150 }));
    await sleep(800);
    const { attempts, webhook } = await tb.stats();
    assert.equal(attempts.webhook.length, 1);
    assert.equal(attempts.webhook[0].accepted, false);
    assert.equal(attempts.webhook[0].status, null, "nothing was answered");
    assert.deepEqual(webhook.events, []);
    // Redelivered and answered in time: received once.
    await tb.mode({ slowMs: 50 });
    assert.equal((await tb.post("/webhook", { events: [{ id: "slow-1", type: "user.online", at: 1 }] })).status, 200);
    assert.deepEqual((await tb.stats()).webhook.events.map((e) => e.id), ["slow-1"]);
  });

  test("/_reset forgets modes, answers and stats", async () => {
    await tb.mode({ rpc: "down" });
    await tb.answers({ connect: { allow: false, reason: "x" } });
    await tb.post("/rpc", sample.rpc);
    await tb.post("/webhook", sample.webhook);
    await tb.reset();
    const s = await tb.stats();
    assert.deepEqual(s.calls, { connect: 0, authorize: 0, rpc: 0, webhook: 0 });
    assert.deepEqual(s.webhook, { events: [], duplicates: {}, duplicateTotal: 0 });
    assert.equal(s.signatureFailures, 0);
    assert.equal(s.modes.rpc.mode, "ok");
    assert.deepEqual(await call(tb, "connect", sample.connect), { allow: true });
  });

  test("signedPost to a backend that is not there rejects (so a test never waits on a dead backend)", async () => {
    const dead = await startBackend({ script: TEST_BACKEND });
    const url = dead.url;
    await dead.stop();
    await assert.rejects(signedPost(`${url}/connect`, sample.connect, { timeout: 2_000 }));
  });
});
