// A headless-Chromium client behind a real HAProxy (`balance roundrobin`, no cookie) in front of
// three cluster nodes: every polling request of the browser's XHR transport may land on any node,
// which then forwards it to the session's owner; the upgrade's websocket may land anywhere too.
// Once polling-only and once polling → websocket, the page and a Node socket.io-client exchange
// acked `signal`s (with a little binary) and `message:send`s both ways for LB_TEST_SECS (30)
// seconds; not one connect_error, disconnect or page error is allowed, and every message sent
// must have arrived, exactly once. A `message:send` answered `service_unavailable` (the
// documented "retry later": the cluster's shared SQLite file is busy on a loaded machine) is
// retried, and still must arrive once.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { ack, connectUser, uid, token, safeJson } from "./product-fixture.js";
import { startLbCluster, forwardCounts } from "./lb-fixture.js";
import { eventually, sleep } from "./cluster-fixture.js";
import { startBrowser } from "./browser-fixture.js";

const SECS = Number(process.env.LB_TEST_SECS || 30);
const T = { timeout: (SECS + 60) * 1_000 };
const FLAGS = [
  "--user-message-limit", "1000000",
  "--socket-event-limit", "1000000",
  // Short heartbeats, so pings and pongs cross HAProxy and the forwarding many times.
  "--ping-interval-ms", "2000",
  "--ping-timeout-ms", "2000",
];

const bytes = (n, seed) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256));

/** In the page: acked signal + message:send to `peer` until `deadline`; returns what was sent and any bad ack. */
function pageSends(sb, { peer, deadline }) {
  return (async () => {
    let n = 0;
    let retries = 0;
    const bad = [];
    while (Date.now() < deadline) {
      n += 1;
      try {
        const a = await sb.socket.timeout(10000).emitWithAck("signal", { to: peer, data: { n, bin: sb.bytes(16, n % 256) } });
        if (!a || a.ok !== true) bad.push(["signal", n, a]);
        let m;
        // service_unavailable is the documented "retry later" (the cluster's one SQLite file can be
        // busy on a loaded machine); a retried send must still arrive exactly once.
        for (let i = 0; i < 20; i += 1) {
          m = await sb.socket.timeout(10000).emitWithAck("message:send", { to: peer, text: `page-${n}` });
          if (!m || !m.error || m.error.code !== "service_unavailable") break;
          retries += 1;
          await new Promise((r) => setTimeout(r, 250));
        }
        if (!m || m.ok !== true) bad.push(["message:send", n, m]);
      } catch (e) {
        bad.push(["timeout", n, String(e)]);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return { sent: n, bad, retries };
  })();
}

/** In the page: what arrived from `peer` (signal numbers, message texts). */
function pageReceived(sb, { peer }) {
  const got = sb.log.filter((e) => e.args[0] && e.args[0].from === peer);
  return {
    signals: got.filter((e) => e.event === "signal").map((e) => e.args[0].data.n),
    texts: got.filter((e) => e.event === "message:received").map((e) => e.args[0].text),
  };
}

let nodeRetries = 0;

/** Node side: acked signal + message:send to `to` until `deadline` (service_unavailable retried, as in the page). */
async function nodeSends(socket, to, deadline) {
  let n = 0;
  while (Date.now() < deadline) {
    n += 1;
    assert.deepEqual(await ack(socket, "signal", { to, data: { n } }, { timeout: 10_000 }), { ok: true }, `node signal ${n}`);
    let m;
    for (let i = 0; i < 20; i += 1) {
      m = await ack(socket, "message:send", { to, text: `node-${n}` }, { timeout: 10_000 });
      if (m?.error?.code !== "service_unavailable") break;
      nodeRetries += 1;
      await sleep(250);
    }
    assert.equal(m?.ok, true, `node message:send ${n}: ${safeJson(m)}`);
    await sleep(100);
  }
  return n;
}

const range = (n) => Array.from({ length: n }, (_, i) => i + 1);

describe("headless Chromium behind round-robin HAProxy (no affinity), three nodes", T, () => {
  let lb;
  let browser;
  before(async () => {
    browser = await startBrowser();
    lb = await startLbCluster({ nodes: 3, flags: FLAGS, name: "browser-lb" });
  });
  after(async () => {
    await browser?.stop();
    await lb?.stop();
  });

  for (const mode of ["polling", "upgrade"]) {
    test(`${mode === "polling" ? "polling only" : "polling → websocket"}: ${SECS} s of messages both ways, no session error, nothing lost`, T, async () => {
      const before = await forwardCounts(lb.cluster.nodes);
      nodeRetries = 0;
      const [pu, nu] = [uid(`page-${mode}`), uid(`peer-${mode}`)];
      const page = await browser.page(pu);
      const transports = mode === "polling" ? ["polling"] : ["polling", "websocket"];
      const info = await page.connect({ url: lb.url, token: token(pu), transports });
      assert.equal(info.userId, pu);
      const peer = await connectUser(lb, nu, { transports });
      if (mode === "upgrade") {
        await eventually(async () => (await page.transport()) === "websocket", { timeout: 10_000, what: `the page upgraded\n${await page.trace()}` });
        await eventually(() => peer.io.engine.transport.name === "websocket", { timeout: 10_000, what: "the peer upgraded" });
      }

      const deadline = Date.now() + SECS * 1_000;
      const [fromPage, fromNode] = await Promise.all([page.run(pageSends, { peer: nu, deadline }), nodeSends(peer, pu, deadline)]);
      assert.deepEqual(fromPage.bad, [], "every page send acked ok");

      // Everything sent has arrived, exactly once, in both directions.
      await eventually(() => peer.log.count("signal") >= fromPage.sent && peer.log.count("message:received") >= fromPage.sent, {
        timeout: 10_000,
        what: `the peer got all ${fromPage.sent} page messages`,
      });
      const sigs = peer.log.all("signal").filter(([m]) => m.from === pu);
      assert.deepEqual(sigs.map(([m]) => m.data.n), range(fromPage.sent), "page → node signals");
      for (const [m] of sigs) assert.ok(Buffer.from(m.data.bin).equals(bytes(16, m.data.n % 256)), `binary of signal ${m.data.n}`);
      assert.deepEqual(
        peer.log.all("message:received").map(([m]) => m.text),
        range(fromPage.sent).map((n) => `page-${n}`),
        "page → node messages",
      );
      const got = await eventually(
        async () => {
          const r = await page.run(pageReceived, { peer: nu });
          return r.signals.length >= fromNode && r.texts.length >= fromNode ? r : null;
        },
        { timeout: 10_000, what: `the page got all ${fromNode} node messages` },
      );
      assert.deepEqual(got.signals, range(fromNode), "node → page signals");
      assert.deepEqual(got.texts, range(fromNode).map((n) => `node-${n}`), "node → page messages");

      // No session error anywhere, and the transport is still the one expected.
      assert.deepEqual(await page.errors(), [], `page: no session or page errors\n${await page.trace()}`);
      const peerBad = peer.log.entries.filter((e) => e.event === "connect_error" || e.event === "disconnect");
      assert.deepEqual(peerBad, [], `peer: no session errors\n${peer.log.trace()}`);
      const want = mode === "polling" ? "polling" : "websocket";
      assert.equal(await page.transport(), want);
      assert.equal(peer.io.engine.transport.name, want);

      const after = await forwardCounts(lb.cluster.nodes);
      const delta = (k) => (after[k] ?? 0) - (before[k] ?? 0);
      if (mode === "polling") assert.ok(delta("poll_get/ok") + delta("poll_post/ok") > 0, `requests were forwarded: ${safeJson(after)}`);
      for (const k of Object.keys(after).filter((k) => !k.endsWith("/ok"))) assert.equal(delta(k), 0, `no forwarding failure ${k}`);
      console.log(
        `# browser ${mode}: page sent ${fromPage.sent}×2, node sent ${fromNode}×2 over ${SECS} s; ` +
          `message:send retried on service_unavailable: page ${fromPage.retries}, node ${nodeRetries}; ` +
          `page on ${info.serverInstance}, peer on ${peer.authInfo.serverInstance}; forwarded GET ${delta("poll_get/ok")} POST ${delta("poll_post/ok")} WS ${delta("websocket/ok")}`,
      );
      peer.disconnect();
      await page.close();
    });
  }
});
