// A real HAProxy in front of a cluster: `balance roundrobin` with no cookie (every request may
// land on any node, so the nodes forward requests for sessions they do not own), `timeout tunnel`
// for websockets and `option httpchk GET /health/live`, which takes a dead node out.
//
//   const lb = await startLbCluster({ nodes: 3, flags: [...] });
//   t.after(() => lb.stop());          // HAProxy, then the cluster (cluster-fixture.js)
//   lb.url                             // http://127.0.0.1:<port>: give it to any client
//   lb.cluster.nodes[i]                // the nodes behind it (url, nodeId, …)
//   await lb.serverStates()            // {"node-1": "UP", …} from HAProxy's stats page
//
// This is also the hook for browser clients (a headless-Chromium test): start the cluster with
// startLbCluster and point the page at lb.url; nothing here depends on Node's socket.io-client.
//
// Environment: HAPROXY (default: haproxy on PATH; Debian package `haproxy`, which scripts/test
// installs when it is missing).

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startCluster, freePort, eventually, sleep } from "./cluster-fixture.js";

// Debian installs it in /usr/sbin, which is not on every user's PATH.
const HAPROXY = process.env.HAPROXY || (existsSync("/usr/sbin/haproxy") ? "/usr/sbin/haproxy" : "haproxy");

/** The header nodes mark forwarded requests with (server/src/transport/forward/mod.rs). */
export const FORWARD_MARKER = "x-switchboard-forwarded";

/** HAProxy's configuration for `servers` ({name, addr}) on `port`, stats on `statsPort`. */
export function haproxyConfig({ port, statsPort, servers, serverTimeout = "60s" }) {
  return [
    "global",
    // Each connection costs HAProxy two files; this machine allows 20,000 per process.
    "  maxconn 4000",
    "defaults",
    "  mode http",
    "  timeout connect 2s",
    "  timeout client 60s",
    // Above the longest long-poll (the ping interval) plus the nodes' forward timeout.
    `  timeout server ${serverTimeout}`,
    // A websocket, once upgraded, is a tunnel: this is its idle timeout, not timeout server.
    "  timeout tunnel 1h",
    "  timeout http-keep-alive 10s",
    // A node that died since the last health check: retry the connection on another one.
    "  retries 3",
    "  option redispatch 1",
    "frontend switchboard",
    `  bind 127.0.0.1:${port}`,
    // Only nodes may mark a request as forwarded.
    `  http-request del-header ${FORWARD_MARKER}`,
    "  default_backend nodes",
    "backend nodes",
    // No `cookie`, no `stick`: the no-affinity case.
    "  balance roundrobin",
    "  option httpchk GET /health/live",
    "  http-check expect status 200",
    "  default-server check inter 500ms fall 2 rise 1",
    ...servers.map((s) => `  server ${s.name} ${s.addr}`),
    "listen stats",
    `  bind 127.0.0.1:${statsPort}`,
    "  stats enable",
    "  stats uri /stats",
    "",
  ].join("\n");
}

/**
 * Start HAProxy in front of `servers` ({name, addr}); resolves once every server is UP.
 * @returns {Promise<{url, port, pid, serverStates(), output(), stop()}>}
 */
export async function startHaproxy(servers, { serverTimeout } = {}) {
  const port = await freePort();
  const statsPort = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-haproxy-"));
  const cfg = path.join(dir, "haproxy.cfg");
  writeFileSync(cfg, haproxyConfig({ port, statsPort, servers, serverTimeout }));
  const child = spawn(HAPROXY, ["-db", "-f", cfg], { stdio: ["ignore", "pipe", "pipe"] });
  const lines = [];
  const keep = (buf) => {
    for (const line of buf.toString().split("\n")) {
      if (!line) continue;
      lines.push(line);
      if (lines.length > 200) lines.shift();
    }
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exited = null;
  let spawnError = null;
  child.on("error", (e) => {
    spawnError = e;
  });
  const gone = new Promise((resolve) =>
    child.on("exit", (code, signal) => {
      exited = { code, signal };
      resolve();
    }),
  );
  process.on("exit", () => {
    if (!exited) child.kill("SIGKILL");
  });
  const lb = {
    url: `http://127.0.0.1:${port}`,
    port,
    get pid() {
      return child.pid;
    },
    output: () => lines.join("\n"),
    /** Each server's status on HAProxy's stats page ({name: "UP" | "DOWN" | …}). */
    async serverStates() {
      const res = await fetch(`http://127.0.0.1:${statsPort}/stats;csv`, { signal: AbortSignal.timeout(2_000) });
      const states = {};
      for (const row of (await res.text()).split("\n")) {
        const cols = row.split(",");
        if (cols[0] === "nodes" && cols[1] !== "BACKEND") states[cols[1]] = cols[17];
      }
      return states;
    },
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 2_000);
        await gone;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await eventually(
      async () => {
        if (spawnError) throw new Error(`could not start ${HAPROXY}: ${spawnError.message} (install the Debian package haproxy, or set HAPROXY)`);
        if (exited) throw new Error(`haproxy exited (${JSON.stringify(exited)}):\n${lb.output()}`);
        const states = await lb.serverStates().catch(() => ({}));
        return servers.every((s) => states[s.name] === "UP");
      },
      { timeout: 10_000, interval: 100, what: "HAProxy up with every server UP" },
    );
  } catch (e) {
    await lb.stop();
    throw e;
  }
  return lb;
}

/**
 * startCluster (cluster-fixture.js) with HAProxy in front of its nodes.
 * @returns {Promise<{url, haproxy, cluster, serverStates(), stop()}>}
 */
export async function startLbCluster({ nodes = 3, flags = [], name = "lb", serverTimeout } = {}) {
  const cluster = await startCluster({ nodes, flags, name });
  let haproxy;
  try {
    haproxy = await startHaproxy(
      cluster.nodes.map((n) => ({ name: n.nodeId, addr: n.addr })),
      { serverTimeout },
    );
  } catch (e) {
    await cluster.stop().catch(() => {});
    throw e;
  }
  return {
    url: haproxy.url,
    haproxy,
    cluster,
    serverStates: () => haproxy.serverStates(),
    async stop() {
      await haproxy.stop();
      await cluster.stop();
    },
  };
}

/**
 * Sum of `forward_requests_total` samples per `kind/outcome` over `nodes` (GET /metrics of each
 * live node).
 */
export async function forwardCounts(nodes) {
  const counts = {};
  for (const node of nodes) {
    if (!node.alive()) continue;
    const res = await fetch(`${node.url}/metrics`, { signal: AbortSignal.timeout(3_000) });
    for (const line of (await res.text()).split("\n")) {
      const m = line.match(/^forward_requests_total\{(.*)\} (\d+)/);
      if (!m) continue;
      const kind = m[1].match(/kind="([^"]+)"/)?.[1];
      const outcome = m[1].match(/outcome="([^"]+)"/)?.[1];
      const key = `${kind}/${outcome}`;
      counts[key] = (counts[key] ?? 0) + Number(m[2]);
    }
  }
  return counts;
}

export { sleep };
