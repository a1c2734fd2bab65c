// Cluster-mode helpers on top of ./fixture.js and ./product-fixture.js (both owned elsewhere and
// not edited here): a dedicated redis-server per test on a free port (SIGKILL-able and restartable
// on the same port, nothing persisted), N switchboard nodes sharing it through `--redis-url` (and
// one database, `--database-url`: a scratch SQLite file unless a URL is given), and
// small Redis inspection helpers (keys, TTLs, types, set members) through `redis-cli`.
//
//   const c = await startCluster({ nodes: 3, prefix: "" });
//   t.after(() => c.stop());            // always: kills the nodes and Redis, closes the clients
//   c.nodes[0] ... c.nodes[2]           // product nodes (url, nodeId, pid, alive(), stop())
//   await c.killNode(1)                 // SIGKILL node 2
//   await c.redis.restart()             // SIGKILL redis-server, start it again on the same port
//   await c.redis.keys()                // every key (SCAN), sorted
//   await c.redis.ttl(key), .type(key), .smembers(key), .cmd("HGETALL", key)
//   c.key("user:bob:sockets")           // the name with the cluster's --redis-prefix
//
// Environment: SWITCHBOARD_BIN (see fixture.js), REDIS_SERVER / REDIS_CLI (default: on PATH),
// SWITCHBOARD_TEST_LOGS (node logs, see fixture.js; redis-server's output is written there too).

import { spawn, execFile } from "node:child_process";
import { createServer } from "node:net";
import { createWriteStream, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { closeAll, eventually, sleep } from "./fixture.js";
import { startProductNode, SECRET } from "./product-fixture.js";

export { SECRET };
export const API_KEY = "switchboard-cluster-tests-api-key";

const REDIS_SERVER = process.env.REDIS_SERVER || "redis-server";
const REDIS_CLI = process.env.REDIS_CLI || "redis-cli";
const REDIS_START_TIMEOUT_MS = 10_000;
const execFileP = promisify(execFile);

const liveRedis = new Set();
process.on("exit", () => {
  for (const child of liveRedis) {
    try {
      child.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
});

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Run redis-cli against `port`; resolves with trimmed stdout (throws on a non-zero exit). */
export async function redisCli(port, args, { timeout = 5_000 } = {}) {
  const { stdout } = await execFileP(REDIS_CLI, ["-h", "127.0.0.1", "-p", String(port), ...args], {
    timeout,
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout.replace(/\n$/, "");
}

/**
 * Start a dedicated redis-server (no RDB, no AOF) on a free port, as a child of this process.
 * @returns {Promise<{port, url, pid, alive(), kill(), start(), restart(), stop(), output(),
 *   cmd(...args), keys(pattern?), ttl(key), pttl(key), type(key), exists(key), smembers(key),
 *   zcard(key), ping()}>}
 */
export async function startRedis({ port, name = "redis" } = {}) {
  const p = port ?? (await freePort());
  const lines = [];
  let child = null;
  let exited = null;
  let logFile = null;
  if (process.env.SWITCHBOARD_TEST_LOGS) {
    mkdirSync(process.env.SWITCHBOARD_TEST_LOGS, { recursive: true });
    logFile = createWriteStream(path.join(process.env.SWITCHBOARD_TEST_LOGS, `${name}-${p}.log`), { flags: "a" });
  }

  const r = {
    port: p,
    url: `redis://127.0.0.1:${p}`,
    get pid() {
      return child?.pid;
    },
    alive: () => child !== null && child.exitCode === null && child.signalCode === null,
    output: () => lines.join("\n"),

    /** Spawn redis-server on the same port and wait until it answers PING. */
    async start() {
      if (r.alive()) throw new Error(`redis on ${p} is already running`);
      const args = ["--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"];
      const c = spawn(REDIS_SERVER, args, { stdio: ["ignore", "pipe", "pipe"] });
      child = c;
      liveRedis.add(c);
      exited = new Promise((resolve) => {
        c.on("exit", (code, signal) => {
          liveRedis.delete(c);
          resolve({ code, signal });
        });
      });
      let spawnError = null;
      c.on("error", (e) => {
        spawnError = e;
      });
      const keep = (prefix) => (buf) => {
        for (const line of buf.toString().split("\n")) {
          if (!line) continue;
          lines.push(`${prefix}${line}`);
          if (lines.length > 200) lines.shift();
          logFile?.write(`${prefix}${line}\n`);
        }
      };
      c.stdout.on("data", keep(""));
      c.stderr.on("data", keep("[stderr] "));
      const deadline = Date.now() + REDIS_START_TIMEOUT_MS;
      for (;;) {
        if (spawnError) throw new Error(`could not spawn ${REDIS_SERVER}: ${spawnError.message}`);
        if (!r.alive()) {
          await sleep(20);
          throw new Error(`redis-server on port ${p} exited at start\n${r.output()}`);
        }
        try {
          if ((await redisCli(p, ["ping"], { timeout: 1_000 })) === "PONG") return;
        } catch {
          /* not up yet */
        }
        if (Date.now() > deadline) {
          await r.kill();
          throw new Error(`redis-server on port ${p} did not answer PING within ${REDIS_START_TIMEOUT_MS} ms\n${r.output()}`);
        }
        await sleep(50);
      }
    },

    /** SIGKILL redis-server (all data is lost: nothing is persisted). */
    async kill() {
      if (!child) return;
      if (r.alive()) child.kill("SIGKILL");
      await exited;
    },

    /** kill -9, then start again on the same port (empty). */
    async restart() {
      await r.kill();
      await r.start();
    },

    async stop() {
      await r.kill();
      logFile?.end();
      logFile = null;
    },

    cmd: (...args) => redisCli(p, args),
    ping: () => redisCli(p, ["ping"], { timeout: 1_000 }),
    /** Every key (SCAN, so never blocking), sorted. */
    async keys(pattern) {
      const out = await redisCli(p, ["--scan", ...(pattern ? ["--pattern", pattern] : [])]);
      return [...new Set(out.split("\n").filter(Boolean))].sort();
    },
    ttl: async (key) => Number(await redisCli(p, ["ttl", key])),
    pttl: async (key) => Number(await redisCli(p, ["pttl", key])),
    type: (key) => redisCli(p, ["type", key]),
    exists: async (key) => Number(await redisCli(p, ["exists", key])) === 1,
    async smembers(key) {
      const out = await redisCli(p, ["smembers", key]);
      return out.split("\n").filter(Boolean).sort();
    },
    zcard: async (key) => Number(await redisCli(p, ["zcard", key])),
    async hgetall(key) {
      const out = (await redisCli(p, ["hgetall", key])).split("\n");
      const o = {};
      for (let i = 0; i + 1 < out.length; i += 2) o[out[i]] = out[i + 1];
      return o;
    },
    /** Number of subscribers of each channel (PUBSUB NUMSUB). */
    async numsub(...channels) {
      const out = (await redisCli(p, ["pubsub", "numsub", ...channels])).split("\n");
      const o = {};
      for (let i = 0; i + 1 < out.length; i += 2) o[out[i]] = Number(out[i + 1]);
      return o;
    },
  };
  await r.start();
  return r;
}

/**
 * Start Redis and `nodes` switchboard nodes (ids node-1..node-N) sharing it, with the product
 * test secret, API key `API_KEY` and, when given, `--redis-prefix prefix`. Resolves once every
 * node has registered in the `nodes` set and subscribed to the broadcast channel.
 */
export async function startCluster({ nodes = 3, prefix = "", name = "cluster", flags = [], databaseUrl } = {}) {
  // One database for the whole cluster (message ids and message:sync are cluster-wide): a SQLite
  // file in a scratch directory unless `databaseUrl` (e.g. a PostgreSQL URL) is given.
  const redis = await startRedis({ name: `${name}-redis` });
  const scratch = mkdtempSync(path.join(os.tmpdir(), `switchboard-${name}-`));
  const dbUrl = databaseUrl ?? `sqlite://${path.join(scratch, "cluster.db")}?mode=rwc`;
  const key = (k) => `${prefix}${k}`;
  let stopped = false;
  const cluster = {
    redis,
    prefix,
    key,
    nodes: [],
    apiKey: API_KEY,
    /** Node ids of the cluster, in order. */
    get ids() {
      return cluster.nodes.map((n) => n.nodeId);
    },
    /** SIGKILL node i (0-based); resolves once the process is gone. */
    async killNode(i) {
      const node = cluster.nodes[i];
      node.killed = true;
      process.kill(node.pid, "SIGKILL");
      await eventually(() => !node.alive(), { timeout: 5_000, interval: 20, what: `node ${node.nodeId} exited after SIGKILL` });
    },
    /** Close every client, stop every node (a node that died unexpectedly fails), kill Redis. */
    async stop() {
      if (stopped) return;
      stopped = true;
      closeAll();
      const errors = [];
      await Promise.all(
        cluster.nodes.map(async (n) => {
          try {
            await n.stop();
          } catch (e) {
            if (!n.killed) errors.push(e);
          }
        }),
      );
      await redis.stop();
      rmSync(scratch, { recursive: true, force: true });
      if (errors.length) throw errors[0];
    },
  };
  try {
    const common = [
      "--redis-url",
      redis.url,
      "--api-key",
      API_KEY,
      "--database-url",
      dbUrl,
      // One shared SQLite file on one host: the case the refusal of SQLite clusters allows.
      ...(dbUrl.startsWith("sqlite:") ? ["--allow-sqlite-cluster"] : []),
      ...(prefix ? ["--redis-prefix", prefix] : []),
      ...flags,
    ];
    // One at a time: a node logs "listening" before it has migrated the shared database, and
    // registers in Redis only after that; the next node starts once the previous one registered.
    for (let i = 1; i <= nodes; i += 1) {
      cluster.nodes.push(await startProductNode({ name: `${name}-node-${i}`, nodeId: `node-${i}`, flags: common }));
      await waitClusterReady(cluster);
    }
  } catch (e) {
    await cluster.stop().catch(() => {});
    throw e;
  }
  return cluster;
}

/** Every live node has beaten (in `nodes`) and its subscriber is up (subscribed to sb:broadcast). */
export async function waitClusterReady(cluster, { timeout = 10_000 } = {}) {
  const live = cluster.nodes.filter((n) => !n.killed);
  const broadcast = cluster.key("sb:broadcast");
  const deadline = Date.now() + timeout;
  let state = "";
  for (;;) {
    const dead = live.find((n) => !n.alive());
    if (dead) throw new Error(`node ${dead.nodeId} exited while the cluster was starting\n${dead.output()}`);
    try {
      const members = await cluster.redis.smembers(cluster.key("nodes"));
      const subs = (await cluster.redis.numsub(broadcast))[broadcast];
      if (live.every((n) => members.includes(n.nodeId)) && subs === live.length) return;
      state = `nodes set ${JSON.stringify(members)}, ${subs} subscriber(s) of ${broadcast}`;
    } catch (e) {
      state = `redis-cli: ${e.message}`;
    }
    if (Date.now() > deadline) {
      throw new Error(`not all of ${live.map((n) => n.nodeId).join(", ")} registered in Redis and subscribed to ${broadcast} within ${timeout} ms: ${state}`);
    }
    await sleep(50);
  }
}

/** Combined event traces of several sockets made by product-fixture's connectUser/userSocket. */
export function traceOf(...sockets) {
  return sockets.map((s) => s.log.trace()).join("\n");
}

/** The `message:received` (etc.) entries of a log whose text is `text`. */
export const withText = (text) => (m) => m?.text === text;

export { sleep, eventually };
