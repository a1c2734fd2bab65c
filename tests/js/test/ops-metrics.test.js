// Operations, black-box: what GET /metrics exports under real traffic, and whether the Grafana
// dashboard, the alert rules and the HPA in k8s/ use only metrics a real node exports.
//
// 1. One product-mode node; several users over websocket and polling send messages, typing,
//    presence subscriptions, invalid payloads, a rate-limit burst and one failed auth. The scrape
//    must hold every metric of the metrics contract (histograms as _bucket/_sum/_count, counters
//    with _total), every sample labelled server_instance="<node id>", counters that moved with the
//    traffic, and no per-socket/per-user label values. After every client leaves, the gauges
//    (socket_connections_active, engineio_sessions_active, actor_mailbox_depth) return to 0.
// 2. Every metric name in the `expr`s of k8s/base/dashboards/switchboard.json and
//    k8s/base/prometheusrule.yaml (and the HPA's custom metric) appears in a real scrape: of a
//    single node with traffic, and of a cluster node (Redis metrics) with cross-node traffic.
//
// The metrics contract (notes/metrics-contract.md) is written out below as CONTRACT; k8s/metrics.txt
// is the repository's copy of the same list and is checked against it.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT, closeAll, eventually, sessionsBecome } from "./fixture.js";
import {
  startProductNode,
  connectUser,
  userSocket,
  expectConnectError,
  ack,
  uid,
  safeJson,
} from "./product-fixture.js";
import { startCluster } from "./cluster-fixture.js";

const T = { timeout: 90_000 };

// ---------------------------------------------------------------------------------------------
// The metrics contract: name (as registered), type, labels besides server_instance.

const CONTRACT = [
  ["socket_connections", "counter", ["status"]],
  ["socket_connections_active", "gauge", []],
  ["engineio_sessions_active", "gauge", ["transport"]],
  ["socket_connection_duration_seconds", "histogram", []],
  ["socket_disconnects", "counter", ["reason"]],
  ["socket_messages_sent", "counter", ["event_type"]],
  ["socket_messages_received", "counter", ["event_type"]],
  ["socket_errors", "counter", ["error_type"]],
  ["socket_reconnections", "counter", []],
  ["socket_volatile_dropped", "counter", []],
  ["redis_connected", "gauge", []],
  ["redis_pub_sub_latency_seconds", "histogram", []],
  ["redis_commands", "counter", ["command"]],
  ["redis_connection_pool_active", "gauge", []],
  ["redis_pubsub_gaps", "counter", []],
  ["journal_queue_depth", "gauge", []],
  ["journal_dropped", "counter", []],
  ["journal_flush_seconds", "histogram", []],
  ["database_up", "gauge", []],
  ["database_checks", "counter", []],
  ["actor_mailbox_depth", "gauge", ["actor"]],
  ["actor_instances", "gauge", ["actor"]],
  ["actor_messages", "counter", ["actor", "message"]],
  ["actor_message_wait_seconds", "histogram", ["actor"]],
  ["actor_message_handle_seconds", "histogram", ["actor"]],
  ["actor_restarts", "counter", ["actor"]],
  ["process_resident_memory_bytes", "gauge", []],
  ["process_cpu_seconds", "counter", []],
  ["process_open_fds", "gauge", []],
  ["process_max_fds", "gauge", []],
  ["process_start_time_seconds", "gauge", []],
  ["node_draining", "gauge", []],
  ["hook_requests", "counter", ["hook", "outcome"]],
  ["hook_duration_seconds", "histogram", ["hook"]],
  ["hook_circuit_open", "gauge", ["hook"]],
  ["hook_cache_hits", "counter", []],
  ["webhook_outbox_depth", "gauge", []],
  ["webhook_deliveries", "counter", ["outcome"]],
  ["forward_requests", "counter", ["kind", "outcome"]],
  ["forward_tunnels_active", "gauge", []],
];

/** Metrics that only have series in cluster mode (labelled families with no child until used). */
const CLUSTER_ONLY = new Set(["redis_commands_total"]);

/** Metrics that only have series once a backend is configured and called. */
const HOOKS_ONLY = new Set([
  "hook_requests_total",
  "hook_duration_seconds_bucket",
  "hook_duration_seconds_sum",
  "hook_duration_seconds_count",
]);

const ACTORS = [
  "session",
  "ws_transport",
  "session_registry",
  "redis_bridge",
  "presence",
  "rate_limiter",
  "journal",
  "hooks",
  "webhooks",
  "recovery",
];

/** The sample names a contract entry appears as on the wire. */
function wireNames([name, type]) {
  if (type === "histogram") return [`${name}_bucket`, `${name}_sum`, `${name}_count`];
  if (type === "counter") return [`${name}_total`];
  return [name];
}

const CONTRACT_WIRE = CONTRACT.flatMap(wireNames);

// ---------------------------------------------------------------------------------------------
// OpenMetrics text parsing

/**
 * Parse an OpenMetrics/Prometheus text exposition.
 * @returns {{samples: {name, labels: Object<string,string>, value: number, line: string}[],
 *   types: Map<string,string>, text: string}}
 */
function parseExposition(text) {
  const samples = [];
  const types = new Map();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const m = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (m) types.set(m[1], m[2]);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/.exec(line);
    if (!m) throw new Error(`unparseable exposition line: ${JSON.stringify(line)}`);
    const labels = {};
    if (m[2] !== undefined && m[2] !== "") {
      const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)/y;
      let pos = 0;
      while (pos < m[2].length) {
        re.lastIndex = pos;
        const l = re.exec(m[2]);
        if (!l) throw new Error(`unparseable labels in exposition line: ${JSON.stringify(line)}`);
        if (Object.hasOwn(labels, l[1])) throw new Error(`duplicate label ${l[1]} in ${JSON.stringify(line)}`);
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
        pos = re.lastIndex;
      }
    }
    const value = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    if (Number.isNaN(value) && m[3] !== "NaN") throw new Error(`bad sample value in ${JSON.stringify(line)}`);
    samples.push({ name: m[1], labels, value, line });
  }
  return { samples, types, text };
}

async function scrape(node) {
  const res = await fetch(`${node.url}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  assert.equal(res.status, 200, `GET /metrics -> ${res.status}: ${text.slice(0, 500)}`);
  return { ...parseExposition(text), contentType: res.headers.get("content-type") ?? "" };
}

/** Samples of `name` whose labels include every pair of `match`. */
function select(expo, name, match = {}) {
  return expo.samples.filter(
    (s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v),
  );
}

/** Sum of the samples of `name` matching `match` (0 when none). */
function total(expo, name, match = {}) {
  return select(expo, name, match).reduce((a, s) => a + s.value, 0);
}

/** Exactly one sample of `name` matching `match`: its value. */
function one(expo, name, match = {}) {
  const got = select(expo, name, match);
  assert.equal(got.length, 1, `expected one ${name}${safeJson(match)} sample, got ${got.length}: ${got.map((s) => s.line).join(" | ")}`);
  return got[0].value;
}

function lines(expo, name) {
  return select(expo, name).map((s) => s.line).join("\n");
}

// ---------------------------------------------------------------------------------------------
// 1. Metrics under real traffic

describe("metrics under real traffic (single node, product mode)", T, () => {
  const nodeId = `ops-metrics-${process.pid}`;
  let node;
  /** Every id a label value must never be. */
  const ids = new Set();
  /** Sockets connected and authenticated, by label. */
  const sockets = [];
  let traffic; // what the clients did / saw
  let busy; // the scrape taken while the clients are connected

  before(async () => {
    node = await startProductNode({ name: "ops-metrics", nodeId });

    const alice = uid("alice");
    const bob = uid("bob");
    const carol = uid("carol");
    const burst = uid("burst");
    const offline = uid("offline");
    for (const u of [alice, bob, carol, burst, offline]) ids.add(u);

    const a = await connectUser(node, alice, { device: `dev-${uid("a")}` });
    const b = await connectUser(node, bob, { transports: ["polling"], device: `dev-${uid("b")}` });
    const c1 = await connectUser(node, carol, { device: `dev-${uid("c1")}` });
    const c2 = await connectUser(node, carol, { transports: ["polling"], device: `dev-${uid("c2")}` });
    const r = await connectUser(node, burst);
    sockets.push(a, b, c1, c2, r);
    for (const s of sockets) {
      ids.add(s.authInfo.socketId);
      ids.add(s.authInfo.deviceId);
      ids.add(s.id);
    }

    // One failed auth (a token signed with another secret).
    const bad = userSocket(node, uid("mallory"), { token: "not.a.jwt" });
    const err = await expectConnectError(bad);
    assert.equal(err.message, "auth_failed", safeJson(err));
    bad.disconnect();

    // Presence subscriptions.
    const sub = await ack(a, "presence:subscribe", { userIds: [bob, carol, offline] });
    assert.equal(sub?.ok, true, safeJson(sub));
    assert.equal(sub.statuses[bob], "online", safeJson(sub));
    assert.equal(sub.statuses[offline], "offline", safeJson(sub));
    const q = await ack(b, "presence:query", { userIds: [alice] });
    assert.equal(q?.ok, true, safeJson(q));

    // Direct messages: alice → bob ×3, bob → carol ×2 (2 sockets each), carol → alice ×2.
    const plan = [
      [a, bob, 3],
      [b, carol, 2],
      [c1, alice, 2],
    ];
    let sent = 0;
    for (const [from, to, n] of plan) {
      for (let i = 0; i < n; i++) {
        const res = await ack(from, "message:send", { to, text: `m-${to}-${i}` });
        assert.equal(res?.ok, true, `message:send ack ${safeJson(res)}\n${from.log.trace()}`);
        sent += 1;
      }
    }
    // Wait for every delivery: bob 3, carol 2 on each of her two sockets, alice 2.
    const expectDeliveries = [
      [b, 3],
      [c1, 2],
      [c2, 2],
      [a, 2],
    ];
    for (const [s, n] of expectDeliveries) {
      await eventually(() => s.log.count("message:received") >= n, {
        timeout: 5_000,
        what: `${s.log.label} got ${n} message:received`,
      });
    }
    // carol's second socket also sees her own sends as message:sent (c1 sent 2).
    await eventually(() => c2.log.count("message:sent") >= 2, { what: "carol's other socket got 2 message:sent" });
    const deliveries = sockets.reduce((n, s) => n + s.log.count("message:received"), 0);

    // Typing (volatile) alice → bob.
    a.emit("typing", { to: bob });
    await b.log.next("typing", { pred: (p) => p?.from === alice });

    // Invalid payloads: one with an ack, one without (error event), one unknown event name.
    const inv = await ack(a, "message:send", { to: 42, text: "" });
    assert.equal(inv?.ok, false, safeJson(inv));
    assert.equal(inv.error?.code, "invalid_payload", safeJson(inv));
    c1.emit("presence:subscribe", { userIds: "not-an-array" });
    const [e1] = await c1.log.next("error");
    assert.equal(e1?.code, "invalid_payload", safeJson(e1));
    const weird = `weird-event-${uid("x")}`;
    ids.add(weird);
    c1.emit(weird, { any: 1 });
    const [e2] = await c1.log.next("error");
    assert.equal(e2?.code, "unknown_event", safeJson(e2));

    // Rate-limit burst: 35 message:send from one user (30 per minute allowed), to an offline user.
    const results = await Promise.all(
      Array.from({ length: 35 }, (_, i) => ack(r, "message:send", { to: offline, text: `burst-${i}` })),
    );
    const limited = results.filter((x) => x?.ok === false && x.error?.code === "rate_limited").length;
    const burstOk = results.filter((x) => x?.ok === true).length;
    assert.ok(limited >= 1, `the burst got no rate_limited ack: ${safeJson(results)}`);
    await r.log.next("rate_limited");

    traffic = { sent: sent + burstOk, deliveries, connects: sockets.length, weird };
    // Every socket is still connected (none of the above is fatal).
    for (const s of sockets) assert.equal(s.connected, true, `${s.log.label} disconnected\n${s.log.trace()}`);

    // Counters updated asynchronously (journal flush) are polled for; then one scrape for the
    // assertions below.
    await eventually(async () => total(await scrape(node), "journal_flush_seconds_count") > 0, {
      timeout: 5_000,
      what: "journal_flush_seconds_count > 0",
    });
    busy = await scrape(node);
  });

  after(async () => {
    closeAll();
    await node?.stop();
  });

  test("content type is OpenMetrics text and the exposition ends with # EOF", () => {
    assert.match(busy.contentType, /^application\/openmetrics-text|^text\/plain/, busy.contentType);
    assert.ok(busy.text.endsWith("# EOF\n") || busy.text.endsWith("# EOF"), `no trailing # EOF: …${busy.text.slice(-200)}`);
  });

  test("every metric of the contract is exported (histograms as _bucket/_sum/_count, counters as _total)", () => {
    const names = new Set(busy.samples.map((s) => s.name));
    const missing = CONTRACT_WIRE.filter((n) => !names.has(n) && !CLUSTER_ONLY.has(n) && !HOOKS_ONLY.has(n));
    assert.deepEqual(missing, [], `missing from /metrics: ${missing.join(", ")}`);
    // Every histogram has a +Inf bucket equal to its _count.
    for (const [name, type, labels] of CONTRACT) {
      if (type !== "histogram") continue;
      const counts = select(busy, `${name}_count`);
      for (const c of counts) {
        const match = Object.fromEntries(labels.map((l) => [l, c.labels[l]]));
        const inf = select(busy, `${name}_bucket`, { ...match, le: "+Inf" });
        assert.equal(inf.length, 1, `${name}${safeJson(match)}: one +Inf bucket\n${lines(busy, `${name}_bucket`)}`);
        assert.equal(inf[0].value, c.value, `${name}${safeJson(match)}: +Inf bucket == _count`);
      }
    }
  });

  test("k8s/metrics.txt lists exactly the contract's metrics", () => {
    const listed = readFileSync(path.join(REPO_ROOT, "k8s", "metrics.txt"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    assert.deepEqual([...listed].sort(), [...CONTRACT_WIRE].sort());
  });

  test("# TYPE of every metric family matches the contract", () => {
    const wrong = [];
    for (const [name, type] of CONTRACT) {
      // A counter family is declared without _total; look the family up by either spelling.
      const declared = busy.types.get(name) ?? busy.types.get(`${name}_total`);
      if (declared === undefined && CLUSTER_ONLY.has(`${name}_total`)) continue;
      if (declared === undefined && wireNames([name, type]).some((n) => HOOKS_ONLY.has(n))) continue;
      if (declared !== type) wrong.push(`${name}: contract ${type}, exported ${declared === undefined ? "no # TYPE" : `# TYPE ${busy.types.has(name) ? name : `${name}_total`} ${declared}`}`);
    }
    assert.deepEqual(wrong, [], wrong.join("\n"));
  });

  test(`every sample carries server_instance="<node id>" and only the contract's labels`, () => {
    const bad = busy.samples.filter((s) => s.labels.server_instance !== nodeId);
    assert.deepEqual(bad.map((s) => s.line), [], `samples without server_instance="${nodeId}"`);
    const allowed = new Map();
    for (const [name, type, labels] of CONTRACT) {
      for (const wire of wireNames([name, type])) {
        allowed.set(wire, new Set(["server_instance", ...labels, ...(wire.endsWith("_bucket") ? ["le"] : [])]));
      }
    }
    const extra = busy.samples.filter((s) => {
      const ok = allowed.get(s.name);
      return ok === undefined || Object.keys(s.labels).some((k) => !ok.has(k));
    });
    assert.deepEqual(extra.map((s) => s.line), [], "samples of metrics not in the contract, or with labels the contract does not list");
  });

  test("counters moved with the traffic", () => {
    const m = busy;
    const failures = [];
    const check = (ok, msg) => {
      if (!ok) failures.push(msg);
    };
    const ge = (name, match, min, why) => {
      const v = total(m, name, match);
      check(v >= min, `${name}${safeJson(match)} = ${v}, expected ≥ ${min} (${why})\n${lines(m, name)}`);
    };
    ge("socket_connections_total", { status: "accepted" }, traffic.connects, "authenticated connects");
    ge("socket_connections_total", { status: "auth_failed" }, 1, "one bad token");
    ge("socket_messages_received_total", { event_type: "message:send" }, traffic.sent, "acked message:send");
    ge("socket_messages_received_total", { event_type: "typing" }, 1, "one typing");
    ge("socket_messages_received_total", { event_type: "presence:subscribe" }, 1, "presence:subscribe");
    ge("socket_messages_sent_total", { event_type: "message:received" }, traffic.deliveries, "message:received seen by clients");
    ge("socket_messages_sent_total", { event_type: "typing" }, 1, "one typing delivered");
    ge("socket_messages_sent_total", { event_type: "authenticated" }, traffic.connects, "every socket got an authenticated event");
    ge("socket_errors_total", { error_type: "invalid_payload" }, 2, "two invalid payloads");
    ge("socket_errors_total", { error_type: "rate_limited" }, 1, "the burst");
    for (const actor of ["session", "session_registry", "journal", "presence"]) {
      ge("actor_messages_total", { actor }, 1, `the ${actor} actor handled messages`);
      ge("actor_message_handle_seconds_count", { actor }, 1, `handle time of ${actor} recorded`);
    }
    ge("journal_flush_seconds_count", {}, 1, "the journal wrote batches");
    const eq = (name, want, why) => {
      const got = select(m, name);
      check(got.length === 1 && got[0].value === want, `${name} expected ${want} (${why})\n${lines(m, name)}`);
    };
    eq("database_up", 1, "SQLite is up");
    eq("node_draining", 0, "not draining");
    eq("redis_connected", 0, "always 0 in single-node mode");
    check(total(m, "process_resident_memory_bytes") > 1024 * 1024, lines(m, "process_resident_memory_bytes"));
    check(total(m, "process_open_fds") > 0, lines(m, "process_open_fds"));
    check(total(m, "process_max_fds") >= total(m, "process_open_fds"), "process_max_fds ≥ process_open_fds");
    check(total(m, "process_cpu_seconds_total") > 0, lines(m, "process_cpu_seconds_total"));
    const start = total(m, "process_start_time_seconds");
    const now = Date.now() / 1000;
    check(start > now - 600 && start <= now + 5, `process_start_time_seconds ${start} vs now ${now}`);
    for (const actor of ACTORS) {
      check(select(m, "actor_mailbox_depth", { actor }).length === 1, `actor_mailbox_depth{actor="${actor}"} missing\n${lines(m, "actor_mailbox_depth")}`);
    }
    assert.deepEqual(failures, [], failures.join("\n\n"));
  });

  test("socket_connections_active and engineio_sessions_active match the connected clients", async () => {
    const ws = sockets.filter((s) => s.io.engine.transport.name === "websocket").length;
    const polling = sockets.filter((s) => s.io.engine.transport.name === "polling").length;
    assert.equal(ws + polling, sockets.length);
    assert.equal(one(busy, "socket_connections_active"), sockets.length, lines(busy, "socket_connections_active"));
    // The failed-auth client's Engine.IO session goes away once it disconnected.
    await sessionsBecome(node.url, sockets.length);
    const m = await scrape(node);
    assert.equal(one(m, "engineio_sessions_active", { transport: "websocket" }), ws, lines(m, "engineio_sessions_active"));
    assert.equal(one(m, "engineio_sessions_active", { transport: "polling" }), polling, lines(m, "engineio_sessions_active"));
  });

  test("no label value is a user id, socket id, device id or client-chosen event name (bounded cardinality)", () => {
    const leaks = busy.samples.filter((s) => Object.values(s.labels).some((v) => ids.has(v)));
    assert.deepEqual(leaks.map((s) => s.line), [], `label values taken from ids: ${[...ids].join(", ")}`);
    // event_type values are a fixed set: the unknown event counted under "other".
    assert.ok(total(busy, "socket_messages_received_total", { event_type: "other" }) >= 1, lines(busy, "socket_messages_received_total"));
    const perLabel = new Map();
    for (const s of busy.samples) {
      for (const [k, v] of Object.entries(s.labels)) {
        if (k === "le" || k === "server_instance") continue;
        const key = `${s.name}/${k}`;
        if (!perLabel.has(key)) perLabel.set(key, new Set());
        perLabel.get(key).add(v);
      }
    }
    for (const [key, values] of perLabel) {
      assert.ok(values.size <= 40, `${key} has ${values.size} distinct values: ${[...values].join(", ")}`);
    }
  });

  test("after every client leaves: socket_connections_active, engineio_sessions_active, actor_instances and every actor_mailbox_depth return to 0", async () => {
    for (const s of sockets) s.disconnect();
    closeAll();
    let last;
    try {
      await eventually(
        async () => {
          last = await scrape(node);
          const depths = select(last, "actor_mailbox_depth");
          const instances = select(last, "actor_instances");
          return (
            instances.length === 2 &&
            instances.every((s) => s.value === 0) &&
            one(last, "socket_connections_active") === 0 &&
            total(last, "engineio_sessions_active") === 0 &&
            depths.length === ACTORS.length &&
            depths.every((s) => s.value === 0)
          );
        },
        { timeout: 10_000, interval: 200, what: "idle gauges back to 0" },
      );
    } catch (e) {
      throw new Error(
        `${e.message}\n${lines(last, "socket_connections_active")}\n${lines(last, "engineio_sessions_active")}\n${lines(last, "actor_mailbox_depth")}\n${lines(last, "actor_instances")}`,
      );
    }
    const m = last;
    // Each authenticated socket's end was counted.
    assert.ok(total(m, "socket_disconnects_total") >= sockets.length, lines(m, "socket_disconnects_total"));
    assert.ok(one(m, "socket_connection_duration_seconds_count") >= sockets.length, lines(m, "socket_connection_duration_seconds_count"));
    // Nothing was dropped or restarted along the way.
    assert.equal(one(m, "journal_dropped_total"), 0, "journal_dropped_total");
    assert.equal(total(m, "actor_restarts_total"), 0, lines(m, "actor_restarts_total"));
    // And the labels still do not leak ids after the disconnects.
    const leaks = m.samples.filter((s) => Object.values(s.labels).some((v) => ids.has(v)));
    assert.deepEqual(leaks.map((s) => s.line), []);
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Dashboard, alerts and HPA use only exported metrics

const PROMQL_WORDS = new Set(
  `rate irate increase sum by without histogram_quantile max min avg count le on ignoring group_left
   group_right and or unless clamp_min clamp_max clamp label_replace label_join time absent absent_over_time
   delta idelta deriv topk bottomk offset vector scalar sort sort_desc round abs ceil floor exp ln log2 log10
   sqrt changes resets avg_over_time max_over_time min_over_time sum_over_time count_over_time
   quantile_over_time stddev_over_time stdvar_over_time last_over_time present_over_time quantile stddev
   stdvar count_values predict_linear bool timestamp day_of_month day_of_week days_in_month hour minute
   month year inf nan`
    .split(/\s+/)
    .filter(Boolean),
);

/** Metric names a PromQL expression reads. */
function promqlMetricNames(expr) {
  let e = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/'(?:[^'\\]|\\.)*'/g, "''")
    .replace(/`[^`]*`/g, "``")
    .replace(/#.*$/gm, "");
  e = e.replace(/\{[^}]*\}/g, " ").replace(/\[[^\]]*\]/g, " ");
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = new Set();
  for (const m of e.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const id = m[0];
    const before = e[m.index - 1];
    if (before !== undefined && /[0-9.$]/.test(before)) continue; // 1e3, 5m, $var
    const after = e.slice(m.index + id.length);
    if (/^\s*\(/.test(after)) continue; // a function call
    if (PROMQL_WORDS.has(id.toLowerCase())) continue;
    names.add(id);
  }
  return names;
}

/** `expr` values of a YAML file (block scalars `|`/`>` or inline), without a YAML library. */
function yamlExprs(text) {
  const out = [];
  const ls = text.split("\n");
  for (let i = 0; i < ls.length; i++) {
    const m = /^(\s*)(?:-\s+)?expr:\s*(.*)$/.exec(ls[i]);
    if (!m) continue;
    const indent = m[1].length;
    const v = m[2].trim();
    if (/^[|>][-+]?\d*$/.test(v)) {
      const block = [];
      for (let j = i + 1; j < ls.length; j++) {
        if (ls[j].trim() === "") {
          block.push("");
          continue;
        }
        if (ls[j].search(/\S/) <= indent) break;
        block.push(ls[j]);
      }
      out.push(block.join("\n").trim());
    } else if (v.startsWith('"') && v.endsWith('"')) {
      out.push(JSON.parse(v));
    } else if (v.startsWith("'") && v.endsWith("'")) {
      out.push(v.slice(1, -1).replace(/''/g, "'"));
    } else {
      out.push(v);
    }
  }
  return out;
}

/** Every `expr` of the dashboard's panel targets, plus the metrics of its templating queries. */
function dashboardExprs(dash) {
  const exprs = [];
  const walk = (o) => {
    if (Array.isArray(o)) o.forEach(walk);
    else if (o && typeof o === "object") {
      for (const [k, v] of Object.entries(o)) {
        if (k === "expr" && typeof v === "string") exprs.push(v);
        else walk(v);
      }
    }
  };
  walk(dash.panels ?? []);
  walk(dash.rows ?? []);
  const templ = [];
  for (const v of dash.templating?.list ?? []) {
    for (const q of [v.definition, typeof v.query === "string" ? v.query : v.query?.query]) {
      if (typeof q !== "string") continue;
      const m = /label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(q);
      if (m && /label_values\(\s*[^,)]*,/.test(q)) templ.push(m[1]);
      else if (/^\s*(query_result|metrics)\(/.test(q)) templ.push(...promqlMetricNames(q.replace(/^\s*\w+\((.*)\)\s*$/s, "$1")));
    }
  }
  return { exprs, templ };
}

function k8sFile(...p) {
  return readFileSync(path.join(REPO_ROOT, "k8s", ...p), "utf8");
}

describe("dashboard, alert and HPA metrics are really exported", T, () => {
  /** name → where it is used. */
  const used = new Map();
  const note = (name, where) => {
    if (!used.has(name)) used.set(name, new Set());
    used.get(name).add(where);
  };
  let single;
  let clusterScrape;
  let cluster;
  let node;

  before(async () => {
    // --- the metric names the artifacts use
    const dash = JSON.parse(k8sFile("base", "dashboards", "switchboard.json"));
    const { exprs, templ } = dashboardExprs(dash);
    assert.ok(exprs.length >= 10, `only ${exprs.length} exprs found in the dashboard`);
    for (const e of exprs) for (const n of promqlMetricNames(e)) note(n, "dashboard");
    for (const n of templ) note(n, "dashboard templating");
    const rules = yamlExprs(k8sFile("base", "prometheusrule.yaml"));
    assert.ok(rules.length >= 5, `only ${rules.length} exprs found in prometheusrule.yaml`);
    for (const e of rules) for (const n of promqlMetricNames(e)) note(n, "prometheusrule");
    for (const f of [["base", "hpa.yaml"], ["overlays", "prod", "hpa.yaml"]]) {
      let text;
      try {
        text = k8sFile(...f);
      } catch {
        continue;
      }
      for (const m of text.matchAll(/^\s*metric:\s*\n\s*name:\s*["']?([a-zA-Z_:][a-zA-Z0-9_:]*)/gm)) note(m[1], f.join("/"));
    }

    // --- a single node with some traffic
    node = await startProductNode({ name: "ops-dash", nodeId: "ops-dash-node" });
    const x = uid("x");
    const y = uid("y");
    const sx = await connectUser(node, x);
    const sy = await connectUser(node, y, { transports: ["polling"] });
    const res = await ack(sx, "message:send", { to: y, text: "hello" });
    assert.equal(res?.ok, true, safeJson(res));
    await sy.log.next("message:received");
    const inv = await ack(sx, "message:send", {});
    assert.equal(inv?.ok, false);
    await eventually(async () => total(await scrape(node), "journal_flush_seconds_count") > 0, { what: "a journal flush" });
    single = await scrape(node);
    closeAll();

    // --- a 2-node cluster with a cross-node message (Redis metrics have series and values)
    cluster = await startCluster({ nodes: 2, name: "ops-dash-cluster" });
    const [n1, n2] = cluster.nodes;
    const p = uid("p");
    const q = uid("q");
    const sp = await connectUser(n1, p);
    const sq = await connectUser(n2, q);
    assert.equal(sq.authInfo.serverInstance, "node-2");
    // Receiving node-2 measures the pub/sub latency of the frame node-1 published.
    const r1 = await ack(sp, "message:send", { to: q, text: "across" });
    assert.equal(r1?.ok, true, safeJson(r1));
    await sq.log.next("message:received", { pred: (m) => m?.text === "across" });
    const r2 = await ack(sq, "message:send", { to: p, text: "back" });
    assert.equal(r2?.ok, true, safeJson(r2));
    await sp.log.next("message:received", { pred: (m) => m?.text === "back" });
    await eventually(async () => total(await scrape(n2), "redis_pub_sub_latency_seconds_count") > 0, {
      what: "node-2 recorded a redis_pub_sub_latency_seconds observation",
    });
    clusterScrape = await scrape(n2);
  });

  after(async () => {
    closeAll();
    await node?.stop();
    await cluster?.stop();
  });

  test("the artifacts use a sane set of names (extraction sanity)", () => {
    const names = [...used.keys()].sort();
    assert.ok(names.length >= 15, `only ${names.length} metric names extracted: ${names.join(", ")}`);
    for (const n of names) assert.match(n, /^[a-z_:][a-z0-9_:]*$/, `extracted ${n}`);
    // The extractor must see through label matchers, by() clauses and functions.
    assert.deepEqual(
      [...promqlMetricNames('histogram_quantile(0.99, sum by (le, server_instance) (rate(a_bucket{x=~"$y"}[5m]))) / on (ns) clamp_min(b_total offset 5m, 1) > 1.5e3 and time() - c')].sort(),
      ["a_bucket", "b_total", "c"],
    );
    // Every name is one of the metrics the server documents.
    const notListed = names.filter((n) => !CONTRACT_WIRE.includes(n));
    assert.deepEqual(notListed, [], `not in the metrics contract: ${notListed.map((n) => `${n} (${[...used.get(n)].join(", ")})`).join("; ")}`);
  });

  test("every metric the dashboard, alerts and HPA use appears in a scrape of a single node with traffic (Redis-only ones excepted)", () => {
    const present = new Set(single.samples.map((s) => s.name));
    const missing = [...used.keys()].filter((n) => !present.has(n) && !CLUSTER_ONLY.has(n));
    assert.deepEqual(
      missing.map((n) => `${n} (${[...used.get(n)].join(", ")})`),
      [],
      "used by k8s artifacts but not exported by a single node",
    );
  });

  test("every metric the dashboard, alerts and HPA use appears in a scrape of a cluster node, with live Redis values", () => {
    const present = new Set(clusterScrape.samples.map((s) => s.name));
    const missing = [...used.keys()].filter((n) => !present.has(n));
    assert.deepEqual(
      missing.map((n) => `${n} (${[...used.get(n)].join(", ")})`),
      [],
      "used by k8s artifacts but not exported by a cluster node",
    );
    const m = clusterScrape;
    assert.equal(one(m, "redis_connected"), 1, lines(m, "redis_connected"));
    assert.ok(total(m, "redis_commands_total") > 0, lines(m, "redis_commands_total"));
    assert.ok(total(m, "redis_pub_sub_latency_seconds_count") > 0, lines(m, "redis_pub_sub_latency_seconds_count"));
    assert.ok(total(m, "redis_pub_sub_latency_seconds_sum") >= 0);
    // The cluster node also labels everything with its id.
    const bad = m.samples.filter((s) => s.labels.server_instance !== "node-2");
    assert.deepEqual(bad.map((s) => s.line), []);
    // The HPA's custom metric has exactly one series per pod.
    assert.equal(select(m, "socket_connections_active").length, 1);
    // Every Redis command label is a command name, not a key.
    for (const s of select(m, "redis_commands_total")) {
      assert.match(s.labels.command, /^[A-Za-z_]+$/, s.line);
    }
  });
});
