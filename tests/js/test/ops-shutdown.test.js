// Operations, black-box: SIGTERM drains a node (DESIGN.md "Shutdown").
//
// Two cluster nodes (cluster-fixture: one redis-server, one database) started with
// `--drain-secs 5`. On node A: a socket.io-client over websocket, a socket.io-client over polling
// and a raw Engine.IO websocket (socket.io-client hides close codes). On node B: an observer.
// SIGTERM to node A, then:
//   - every client of A gets `server:maintenance` then `server:shutdown {reconnect:true}`, then is
//     disconnected; the websocket close code is 1001;
//   - during the drain A's /health/ready answers 503, new handshakes are refused with 503 and
//     node_draining is 1;
//   - A exits with code 0 within the budget (5 s + slack);
//   - the websocket client, reconnecting with the same token as a load balancer would send it to
//     a surviving node, authenticates on B;
//   - A removed its sockets from Redis (presence says offline for the users that did not come
//     back, online for the one that reconnected on B);
//   - the socket_connections rows of A's sockets are closed with disconnect_reason
//     `server_shutdown` (read with psql from a throwaway PostgreSQL database
//     `switchboard_ops_<random>` on SWITCHBOARD_TEST_POSTGRES_URL, default
//     postgres://postgres@127.0.0.1:5432/postgres, dropped afterwards). Without a `psql` binary
//     the cluster runs on SQLite and only that check is skipped.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { RawWs, eventually, sleep } from "./fixture.js";
import { userSocket, connectUser, connectAuthed, token, ack, uid, safeJson, traces } from "./product-fixture.js";
import { startCluster } from "./cluster-fixture.js";

const execFileP = promisify(execFile);

const DRAIN_SECS = 5;
/** Slack on top of the drain budget for the process to exit (scheduler, actix worker stop). */
const EXIT_SLACK_MS = 2_000;
const T = { timeout: 90_000 };

const PG_SERVER = process.env.SWITCHBOARD_TEST_POSTGRES_URL || "postgres://postgres@127.0.0.1:5432/postgres";

/** `url` with its database name replaced by `name` (query kept). */
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Run one SQL statement with psql against `url`; resolves with the unaligned, tuples-only output. */
async function psql(url, sql) {
  const { stdout } = await execFileP("psql", [url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-tA", "-F", "\t", "-c", sql], {
    timeout: 15_000,
  });
  return stdout.replace(/\n$/, "");
}

async function havePsql() {
  try {
    await execFileP("psql", ["--version"], { timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

/** The exit code/signal of a fixture node that has exited (its stop() reports them in the error). */
async function exitStatus(node) {
  try {
    await node.stop();
  } catch (e) {
    const m = /died during the test \(code (\S+), signal (\S+)\)/.exec(e.message);
    if (m) return { code: m[1] === "null" ? null : Number(m[1]), signal: m[2] === "null" ? null : m[2] };
    throw e;
  }
  throw new Error("exitStatus: the node was still running");
}

/** GET with a short timeout: {status} or {error}. */
async function probe(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    const body = await res.text();
    return { status: res.status, body };
  } catch (e) {
    return { error: e.cause?.code ?? e.message };
  }
}

describe("SIGTERM drain (two cluster nodes)", T, () => {
  let cluster;
  let A;
  let B;
  let pg = null; // {name, url} of the throwaway database, when psql is available
  const r = {}; // everything the scenario recorded

  before(async () => {
    if (await havePsql()) {
      const name = `switchboard_ops_${randomBytes(6).toString("hex")}`;
      await psql(PG_SERVER, `CREATE DATABASE ${name}`);
      pg = { name, url: withDatabase(PG_SERVER, name) };
    }
    cluster = await startCluster({
      nodes: 2,
      name: "ops-drain",
      flags: ["--drain-secs", String(DRAIN_SECS)],
      ...(pg ? { databaseUrl: pg.url } : {}),
    });
    [A, B] = cluster.nodes;
    const key = cluster.key;

    const uW = uid("ws");
    const uP = uid("poll");
    const uR = uid("raw");
    const uO = uid("observer");
    r.users = { uW, uP, uR, uO };

    // Observer on B, watching the users of A.
    const obs = await connectUser(B, uO);
    r.obs = obs;

    // socket.io-client over websocket on A; on disconnect it "reconnects through the load
    // balancer": a new client with the same token and device, pointed at B.
    const tokW = token(uW);
    const ws = userSocket(A, uW, { transports: ["websocket"], token: tokW, device: "dev-ws" });
    ws.authInfo = await connectAuthed(ws);
    r.ws = ws;
    r.reconnect = new Promise((resolve) => {
      ws.once("disconnect", () => {
        const again = userSocket(B, uW, { transports: ["websocket"], token: tokW, device: "dev-ws", label: `${uW}@B` });
        connectAuthed(again).then(
          (info) => resolve({ socket: again, info }),
          (err) => resolve({ socket: again, err }),
        );
      });
    });

    // socket.io-client over polling on A.
    const poll = await connectUser(A, uP, { transports: ["polling"], device: "dev-poll" });
    r.poll = poll;

    // A raw Engine.IO websocket on A, to see the close code.
    const raw = new RawWs(A.url);
    await raw.open();
    raw.autoPong = true;
    raw.send(`40${JSON.stringify({ token: token(uR), deviceId: "dev-raw" })}`);
    await raw.nextText((t) => t.startsWith("40"));
    const hello = await raw.nextText((t) => t.startsWith('42["authenticated"'));
    r.raw = raw;
    r.rawInfo = JSON.parse(hello.slice(2))[1];

    r.sids = [ws.authInfo.socketId, poll.authInfo.socketId, r.rawInfo.socketId];
    for (const info of [ws.authInfo, poll.authInfo, r.rawInfo]) {
      assert.equal(info.serverInstance, A.nodeId, safeJson(info));
    }

    // Before: the observer sees them online, and Redis holds A's sockets.
    const sub = await ack(obs, "presence:subscribe", { userIds: [uW, uP, uR] });
    assert.deepEqual(sub?.statuses, { [uW]: "online", [uP]: "online", [uR]: "online" }, safeJson(sub));
    for (const sid of r.sids) {
      assert.equal(await cluster.redis.exists(key(`socket:${sid}:user`)), true, `socket:${sid}:user before the drain`);
    }
    assert.deepEqual(await cluster.redis.smembers(key(`node:${A.nodeId}:sockets`)), [...r.sids].sort(), `node:${A.nodeId}:sockets before the drain`);

    // SIGTERM, then probe A until it is gone: readiness, a new handshake, the metrics.
    r.probes = [];
    const t0 = Date.now();
    process.kill(A.pid, "SIGTERM");
    let draining = true;
    const prober = (async () => {
      while (draining && A.alive() && Date.now() - t0 < (DRAIN_SECS + 5) * 1_000) {
        const ready = await probe(`${A.url}/health/ready`);
        r.probes.push({ at: Date.now() - t0, what: "ready", ...ready });
        const hs = await probe(`${A.url}/socket.io/?EIO=4&transport=polling&t=${Date.now().toString(36)}`);
        r.probes.push({ at: Date.now() - t0, what: "handshake", ...hs });
        if (ready.status === 503 && r.drainingMetric === undefined) {
          const m = await probe(`${A.url}/metrics`);
          const line = m.body?.split("\n").find((l) => l.startsWith("node_draining{"));
          if (line) r.drainingMetric = Number(line.split(/\s+/)[1]);
        }
        await sleep(20);
      }
    })();
    try {
      await eventually(() => !A.alive(), {
        timeout: DRAIN_SECS * 1_000 + EXIT_SLACK_MS + 3_000,
        interval: 20,
        what: `node ${A.nodeId} exited after SIGTERM`,
      });
    } finally {
      r.exitedAfterMs = Date.now() - t0;
      draining = false;
      await prober;
    }
    r.exit = await exitStatus(A);
    A.killed = true; // cluster.stop() must not count A's exit as a crash

    r.rawClosed = await r.raw.waitClosed(2_000);
    r.back = await Promise.race([r.reconnect, sleep(6_000).then(() => ({ err: new Error("no disconnect/reconnect within 6 s") }))]);
    await eventually(() => r.poll.log.count("disconnect") > 0, { timeout: 3_000, what: "polling client disconnected" }).catch(() => {});

    // Rows (read right away: A flushed them before exiting; B never writes A's rows this soon).
    if (pg) {
      r.rows = await psql(
        pg.url,
        `SELECT socket_id, user_id, COALESCE(disconnect_reason, '<null>'), disconnected_at IS NOT NULL, COALESCE(server_instance, '<null>') FROM socket_connections ORDER BY connected_at`,
      );
    }
  });

  after(async () => {
    try {
      await cluster?.stop();
    } finally {
      if (pg) await psql(PG_SERVER, `DROP DATABASE IF EXISTS ${pg.name} WITH (FORCE)`);
    }
  });

  /** Index of the first entry of `event` in a log, or -1. */
  const at = (log, event) => log.entries.findIndex((e) => e.event === event);

  for (const which of ["ws", "poll"]) {
    test(`socket.io-client over ${which === "ws" ? "websocket" : "polling"}: server:maintenance, then server:shutdown {reconnect:true}, then disconnect`, () => {
      const s = r[which];
      const log = s.log;
      const m = at(log, "server:maintenance");
      const sh = at(log, "server:shutdown");
      const d = at(log, "disconnect");
      assert.ok(m >= 0, `no server:maintenance\n${log.trace()}`);
      assert.ok(sh >= 0, `no server:shutdown\n${log.trace()}`);
      assert.ok(d >= 0, `no disconnect\n${log.trace()}`);
      assert.ok(m < sh && sh < d, `order must be maintenance < shutdown < disconnect\n${log.trace()}`);
      assert.deepEqual(log.entries[m].args[0], { reconnect: true }, `server:maintenance payload\n${log.trace()}`);
      assert.deepEqual(log.entries[sh].args[0], { reconnect: true }, `server:shutdown payload\n${log.trace()}`);
      assert.equal(log.count("server:maintenance"), 1, log.trace());
      assert.equal(log.count("server:shutdown"), 1, log.trace());
      // The server closed the transport: not a client-side or ping timeout disconnect.
      assert.equal(log.entries[d].args[0], "transport close", `disconnect reason\n${log.trace()}`);
    });
  }

  test("raw websocket: server:maintenance, server:shutdown {reconnect:true}, then a Close frame with code 1001", () => {
    const raw = r.raw;
    const texts = raw.trace.join("\n");
    assert.ok(r.rawClosed, `the websocket was not closed\n${texts}`);
    assert.equal(r.rawClosed.code, 1001, `close code\n${texts}`);
    const iM = raw.trace.findIndex((l) => l.includes('< 42["server:maintenance"'));
    const iS = raw.trace.findIndex((l) => l.includes('< 42["server:shutdown"'));
    const iC = raw.trace.findIndex((l) => l.includes("closed code="));
    assert.ok(iM >= 0 && iS > iM && iC > iS, `order maintenance < shutdown < close\n${texts}`);
    const frame = (line) => JSON.parse(line.slice(line.indexOf("< ") + 2).slice(2));
    assert.deepEqual(frame(raw.trace[iM]), ["server:maintenance", { reconnect: true }]);
    assert.deepEqual(frame(raw.trace[iS]), ["server:shutdown", { reconnect: true }]);
    assert.equal(raw.error, undefined, `websocket error ${raw.error?.message}\n${texts}`);
  });

  test(`node A exits with code 0 within the drain budget (--drain-secs ${DRAIN_SECS})`, (t) => {
    t.diagnostic(`exit ${safeJson(r.exit)} ${r.exitedAfterMs} ms after SIGTERM`);
    assert.deepEqual(r.exit, { code: 0, signal: null }, `exit status\n${A.output()}`);
    assert.ok(
      r.exitedAfterMs <= DRAIN_SECS * 1_000 + EXIT_SLACK_MS,
      `exited ${r.exitedAfterMs} ms after SIGTERM (budget ${DRAIN_SECS} s + ${EXIT_SLACK_MS} ms slack)`,
    );
  });

  test("during the drain /health/ready answers 503, new handshakes get 503, node_draining is 1", (t) => {
    const shown = r.probes.map((p) => `${p.at}ms ${p.what} ${p.status ?? p.error}`).join("\n");
    t.diagnostic(`${r.probes.length} probes: ${r.probes.map((p) => `${p.at}ms ${p.what} ${p.status ?? p.error}`).join(", ")}`);
    const readies = r.probes.filter((p) => p.what === "ready");
    const first503 = r.probes.findIndex((p) => p.what === "ready" && p.status === 503);
    assert.ok(first503 >= 0, `/health/ready never answered 503 before the node exited\n${shown}`);
    // Once unready, never ready again (anything after is 503 or a refused connection).
    const after503 = r.probes.slice(first503);
    assert.deepEqual(
      after503.filter((p) => p.status !== undefined && p.status !== 503).map((p) => `${p.at}ms ${p.what} ${p.status}`),
      [],
      `after the first 503, every answer is 503\n${shown}`,
    );
    assert.ok(readies.length >= 1);
    const hs503 = after503.filter((p) => p.what === "handshake" && p.status === 503);
    assert.ok(hs503.length >= 1, `no handshake was refused with 503 during the drain\n${shown}`);
    assert.equal(r.drainingMetric, 1, `node_draining during the drain (undefined: no scrape succeeded)\n${shown}`);
  });

  test("the websocket client, reconnecting with the same token, authenticates on node B and works there", async () => {
    const { socket, info, err } = r.back;
    assert.equal(err, undefined, `reconnect to B failed: ${err?.message}\n${socket ? socket.log.trace() : ""}\n${r.ws.log.trace()}`);
    assert.equal(info.userId, r.users.uW, safeJson(info));
    assert.equal(info.serverInstance, B.nodeId, safeJson(info));
    assert.equal(info.deviceId, "dev-ws", safeJson(info));
    // It works on B: a DM to the observer (same node).
    const res = await ack(socket, "message:send", { to: r.users.uO, text: "back on B" });
    assert.equal(res?.ok, true, safeJson(res));
    await r.obs.log.next("message:received", { pred: (m) => m?.text === "back on B" });
    assert.equal(B.alive(), true, "node B keeps running");
    assert.equal(r.obs.connected, true, `the observer on B stays connected\n${r.obs.log.trace()}`);
  });

  test("node A removed its sockets from Redis; presence: offline for users that did not come back, online for the one on B", async () => {
    const key = cluster.key;
    for (const sid of r.sids) {
      assert.equal(await cluster.redis.exists(key(`socket:${sid}:user`)), false, `socket:${sid}:user still in Redis`);
    }
    assert.deepEqual(await cluster.redis.smembers(key(`node:${A.nodeId}:sockets`)), [], `node:${A.nodeId}:sockets`);
    const { uW, uP, uR } = r.users;
    assert.deepEqual(await cluster.redis.smembers(key(`user:${uP}:sockets`)), [], `user:${uP}:sockets`);
    assert.deepEqual(await cluster.redis.smembers(key(`user:${uR}:sockets`)), [], `user:${uR}:sockets`);
    const onB = r.back.info?.socketId;
    assert.deepEqual(await cluster.redis.smembers(key(`user:${uW}:sockets`)), onB ? [onB] : [], `user:${uW}:sockets`);
    const q = await ack(r.obs, "presence:query", { userIds: [uW, uP, uR] });
    assert.deepEqual(q?.statuses, { [uW]: "online", [uP]: "offline", [uR]: "offline" }, `presence after the drain ${safeJson(q)}\n${traces(r.obs.log)}`);
  });

  test("socket_connections rows of node A's sockets are closed with disconnect_reason server_shutdown", (t) => {
    if (!pg) {
      t.skip("no psql binary: the cluster ran on SQLite and its rows are not read from JS");
      return;
    }
    const rows = r.rows
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const [socketId, userId, reason, closed, instance] = l.split("\t");
        return { socketId, userId, reason, closed: closed === "t", instance };
      });
    const table = rows.map((x) => JSON.stringify(x)).join("\n");
    t.diagnostic(`socket_connections: ${rows.map((x) => JSON.stringify(x)).join(" ")}`);
    for (const sid of r.sids) {
      const row = rows.find((x) => x.socketId === sid);
      assert.ok(row, `no socket_connections row for ${sid}\n${table}`);
      assert.equal(row.instance, A.nodeId, `server_instance of ${sid}\n${table}`);
      assert.equal(row.reason, "server_shutdown", `disconnect_reason of ${sid}\n${table}`);
      assert.equal(row.closed, true, `disconnected_at of ${sid}\n${table}`);
    }
    const ofA = rows.filter((x) => x.instance === A.nodeId);
    assert.equal(ofA.length, r.sids.length, `rows of ${A.nodeId}\n${table}`);
  });
});
