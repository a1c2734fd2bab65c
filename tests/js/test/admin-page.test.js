// The operator's admin page (/admin), driven in headless Chromium: log in with the API key,
// the live overview against each node's own /metrics, a user with sockets on two nodes of a
// real Redis cluster, the disconnect button against real socket.io-client sockets, and room
// lookup. Also: a wrong key is refused (page, login call and live feed, all counting towards
// the API's per-address 429 rule), and the page is only where /api/v1 is (404 on the public
// listener when an admin listener is set; on the public one when none is, and only with a key).
//
// A PNG of each view is written to tests/js/output/admin-page/ (git-ignored; the path is
// printed), or to $SWITCHBOARD_TEST_OUTPUT/admin-page/.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { startCluster } from "./cluster-fixture.js";
import { startBrowser } from "./browser-fixture.js";
import { startProductNode, connectUser, token, uid, logLines, eventually, api } from "./product-fixture.js";

const T = { timeout: 120_000 };
const here = path.dirname(fileURLToPath(import.meta.url));
const OUTPUT = path.join(process.env.SWITCHBOARD_TEST_OUTPUT || path.join(here, "..", "output"), "admin-page");
const SINGLE_KEY = "switchboard-admin-page-single-node-key-0123456789";

/** The admin listener's base URL, from the node's `admin listening` log line. */
async function adminUrl(node) {
  const line = await eventually(() => logLines(node).find((r) => r.message === "admin listening"), {
    timeout: 5_000,
    what: "an `admin listening` log line",
  });
  return `http://${line.addr}`;
}

/** `socket_connections_active` as the node's /metrics reports it. */
async function metricConnections(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = text.match(/^socket_connections_active\{[^}]*\} (\d+)$/m);
  assert.ok(m, `no socket_connections_active in /metrics:\n${text.slice(0, 500)}`);
  return Number(m[1]);
}

/** Open a live feed socket and send `key` first; resolves with the messages and the close. */
function liveFeed(base, key, { messages = 1, timeout = 5_000 } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace("http", "ws")}/admin/live`);
    const got = [];
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`live feed: ${got.length} message(s) within ${timeout} ms: ${JSON.stringify(got).slice(0, 500)}`));
    }, timeout);
    ws.on("open", () => ws.send(JSON.stringify({ key })));
    ws.on("message", (m) => {
      got.push(JSON.parse(String(m)));
      if (got.length >= messages) {
        clearTimeout(timer);
        ws.close();
        resolve({ messages: got, code: null });
      }
    });
    ws.on("close", (code, reason) => {
      clearTimeout(timer);
      resolve({ messages: got, code, reason: String(reason) });
    });
    ws.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** What an upgrade to /admin/live gets: the HTTP status when it is refused. */
function liveUpgradeStatus(base) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace("http", "ws")}/admin/live`);
    ws.on("unexpected-response", (_req, res) => {
      resolve(res.statusCode);
      ws.terminate();
    });
    ws.on("open", () => {
      ws.terminate();
      resolve(101);
    });
    ws.on("error", (e) => reject(e));
  });
}

/** A fresh page on /admin that records page errors and console errors (CSP refusals). */
async function adminPage(browser, base) {
  const page = await browser.browser.newPage();
  await page.setViewport({ width: 1400, height: 800 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  const res = await page.goto(`${base}/admin`, { waitUntil: "load" });
  assert.equal(res.status(), 200);
  const csp = res.headers()["content-security-policy"] ?? "";
  assert.match(csp, /default-src 'none'/, "the page allows no external assets");
  page.errors = errors;
  return page;
}

async function login(page, key) {
  await page.click("#api-key", { clickCount: 3 });
  await page.type("#api-key", key);
  await page.click("#login-form button[type=submit]");
}

async function shot(page, name, t) {
  mkdirSync(OUTPUT, { recursive: true });
  const file = path.join(OUTPUT, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  t.diagnostic(`screenshot: ${file}`);
}

const cellText = (page, node, field) =>
  page.$eval(`tr[data-node="${node}"] td[data-field="${field}"]`, (e) => e.textContent).catch(() => null);

describe("admin page on a 2-node Redis cluster with admin listeners", () => {
  let cluster;
  let browser;
  let admin; // node id -> admin base URL

  before(async () => {
    cluster = await startCluster({ nodes: 2, name: "admin", flags: ["--admin-listen", "127.0.0.1:0"] });
    admin = {};
    for (const node of cluster.nodes) admin[node.nodeId] = await adminUrl(node);
    browser = await startBrowser();
  }, T);

  after(async () => {
    await browser?.stop();
    await cluster?.stop();
  });

  test("the public listener has no /admin when an admin listener is set", T, async () => {
    for (const node of cluster.nodes) {
      for (const p of ["/admin", "/admin/", "/admin/app.js", "/admin/api/overview"]) {
        const res = await fetch(node.url + p, { headers: { authorization: `Bearer ${cluster.apiKey}` } });
        assert.equal(res.status, 404, `${node.nodeId} public ${p}`);
      }
      const login = await fetch(`${node.url}/admin/login`, { method: "POST", headers: { authorization: `Bearer ${cluster.apiKey}` } });
      assert.equal(login.status, 404, "public /admin/login");
      assert.equal(await liveUpgradeStatus(node.url), 404, "public /admin/live");
      const page = await fetch(`${admin[node.nodeId]}/admin`);
      assert.equal(page.status, 200, "the admin listener serves it");
      assert.match(await page.text(), /<script src="\/admin\/app.js"/);
    }
  });

  test("a wrong key is refused by the page, the login call and the live feed", T, async (t) => {
    const base = admin["node-1"];
    const page = await adminPage(browser, base);
    try {
      await login(page, "not-the-key");
      await page.waitForFunction(() => document.querySelector("#login-error").textContent.length > 0, { timeout: 5_000 });
      assert.match(await page.$eval("#login-error", (e) => e.textContent), /Wrong API key/);
      assert.equal(await page.$eval("#overview-view", (e) => e.hidden), true, "the overview stays hidden");
      await shot(page, "login-refused", t);
      assert.deepEqual(page.errors.filter((e) => !e.includes("401")), []);
    } finally {
      await page.close();
    }
    const res = await api({ url: base }, "POST", "/admin/login", { key: "wrong" });
    assert.equal(res.status, 401);
    const feed = await liveFeed(base, "wrong", { messages: 99 });
    assert.deepEqual(
      feed.messages.map((m) => [m.type, m.code]),
      [["error", "unauthorized"]],
      "one refusal and no overview",
    );
    assert.equal(feed.code, 1008, "the feed closes with policy violation");
    const users = await api({ url: base }, "GET", "/admin/api/users/x", { key: "wrong" });
    assert.equal(users.status, 401);
  });

  test("overview, user on two nodes, disconnect and room lookup", T, async (t) => {
    const room = uid("adroom");
    const alice = uid("alice");
    const bob = uid("bob");
    const a1 = await connectUser(cluster.nodes[0], alice, { device: "laptop", token: token(alice, { rooms: [room] }) });
    const a2 = await connectUser(cluster.nodes[1], alice, { device: "phone", token: token(alice, { rooms: [room] }) });
    const b1 = await connectUser(cluster.nodes[0], bob, { token: token(bob, { rooms: [room] }) });

    const page = await adminPage(browser, admin["node-1"]);
    try {
      await shot(page, "login", t);
      await login(page, cluster.apiKey);
      await page.waitForFunction(() => document.body.dataset.live === "live", { timeout: 10_000 });

      // Overview: every node's connections as its own /metrics reports them.
      const want = {
        "node-1": await metricConnections(admin["node-1"]),
        "node-2": await metricConnections(admin["node-2"]),
      };
      assert.deepEqual(want, { "node-1": 2, "node-2": 1 }, "the clients are where they were connected");
      for (const [node, n] of Object.entries(want)) {
        await eventually(async () => (await cellText(page, node, "connections")) === String(n), {
          timeout: 10_000,
          what: `${node}'s connections on the page to be ${n} (/metrics); page says ${await cellText(page, node, "connections")}`,
        });
        assert.equal(await cellText(page, node, "alive"), "yes");
        assert.equal(await cellText(page, node, "redis"), "up");
        assert.equal(await cellText(page, node, "status"), "ok");
        assert.match(await cellText(page, node, "hooks"), /connect: off/);
      }
      assert.match(await page.$eval("#overview-summary", (e) => e.textContent), /cluster \(Redis\)/);
      // Live: a new connection on node-2 shows without reloading.
      const b2 = await connectUser(cluster.nodes[1], bob);
      assert.equal(await metricConnections(admin["node-2"]), 2);
      await eventually(async () => (await cellText(page, "node-2", "connections")) === "2", {
        timeout: 10_000,
        what: "node-2's connections to follow live",
      });
      b2.close();
      await shot(page, "overview", t);

      // User lookup: both of alice's sockets, by their public socket ids, on both nodes.
      await page.click('#tabs button[data-view="users"]');
      await page.type("#user-id", alice);
      await page.click("#user-form button[type=submit]");
      await page.waitForSelector("#user-sockets", { timeout: 5_000 });
      const rows = await page.$$eval("#user-sockets tbody tr", (trs) =>
        trs.map((tr) => ({ id: tr.dataset.socket, node: tr.querySelector('[data-field="node"]').textContent })),
      );
      assert.deepEqual(
        rows.sort((x, y) => x.node.localeCompare(y.node)),
        [
          { id: a1.id, node: "node-1" },
          { id: a2.id, node: "node-2" },
        ],
      );
      assert.equal(await page.$eval('#user-result [data-field="nodes"]', (e) => e.textContent), "node-1, node-2");
      assert.equal(await page.$eval('#user-result [data-field="status"]', (e) => e.textContent), "online");
      assert.match(await page.$eval("#user-sockets", (e) => e.textContent), new RegExp(room));
      await shot(page, "user", t);

      // Room lookup (the room members API): alice and bob online.
      await page.click('#tabs button[data-view="rooms"]');
      await page.type("#room-id", room);
      await page.click("#room-form button[type=submit]");
      await page.waitForSelector("#room-online", { timeout: 5_000 });
      const online = await page.$$eval("#room-online li", (lis) => lis.map((li) => li.textContent));
      assert.deepEqual(online, [alice, bob].sort());
      assert.equal(await page.$eval('#room-result [data-field="sockets"]', (e) => e.textContent), "3");
      await shot(page, "room", t);

      // Disconnect: every socket of alice's goes, on both nodes; bob stays.
      await page.click('#tabs button[data-view="users"]');
      const gone = [a1.log.next("disconnect", { timeout: 10_000 }), a2.log.next("disconnect", { timeout: 10_000 })];
      await page.click("#disconnect");
      await Promise.all(gone);
      assert.equal(a1.connected, false);
      assert.equal(a2.connected, false);
      assert.equal(b1.connected, true, "bob is not affected");
      await page.waitForFunction(() => document.querySelectorAll("#user-sockets tbody tr").length === 0, { timeout: 10_000 });
      assert.match(await page.$eval("#disconnect-result", (e) => e.textContent), /disconnected/);
      await shot(page, "user-disconnected", t);
      assert.deepEqual(page.errors, [], "no page errors (and no CSP refusals)");
    } finally {
      await page.close();
    }
  });
});

describe("admin page on a single node without an admin listener", () => {
  let node;
  let bare;

  before(async () => {
    node = await startProductNode({ name: "admin-single", nodeId: "solo", flags: ["--api-key", SINGLE_KEY] });
    bare = await startProductNode({ name: "admin-nokey", nodeId: "nokey" });
  }, T);

  after(async () => {
    await node?.stop();
    await bare?.stop();
  });

  test("it is on the public listener, like /api/v1, and only with an API key", T, async () => {
    assert.equal((await fetch(`${node.url}/admin`)).status, 200);
    assert.equal((await fetch(`${bare.url}/admin`)).status, 404, "no API key: no page");
    assert.equal((await fetch(`${bare.url}/api/v1/online`)).status, 404, "(the API's rule)");
    assert.equal(await liveUpgradeStatus(bare.url), 404, "no API key: no live feed");
    // Socket.IO still works beside the page's websocket on the same listener.
    const s = await connectUser(node, uid("solo"));
    const want = await metricConnections(node.url);
    assert.equal(want, 1);
    // The overview is rebuilt every second: the third one was built after the connection.
    const feed = await liveFeed(node.url, SINGLE_KEY, { messages: 4, timeout: 8_000 });
    assert.equal(feed.messages[0].type, "ready");
    const overview = feed.messages.at(-1);
    assert.equal(overview.type, "overview");
    assert.equal(overview.mode, "single");
    assert.deepEqual(
      overview.nodes.map((n) => [n.id, n.this, n.stats.connections, n.stats.redis]),
      [["solo", true, want, "none"]],
      "just this node",
    );
    s.close();
  });

  test("wrong keys on the live feed count towards the API's per-address limit", T, async () => {
    // Eleven wrong keys at once (the limit is ten a second), then the right key is refused too.
    const feeds = await Promise.all(Array.from({ length: 11 }, () => liveFeed(node.url, "wrong-key", { messages: 99 })));
    const codes = feeds.map((f) => f.messages[0]?.code);
    assert.ok(codes.includes("rate_limited"), `some feeds were rate limited: ${codes}`);
    const res = await api(node, "POST", "/admin/login", { key: SINGLE_KEY });
    assert.equal(res.status, 429, `the right key within the same second: ${res.text}`);
    await eventually(async () => (await api(node, "POST", "/admin/login", { key: SINGLE_KEY })).status === 200, {
      timeout: 3_000,
      what: "the key to work again after the second",
    });
  });
});
