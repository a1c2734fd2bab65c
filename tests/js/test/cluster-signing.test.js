// Cluster frames are signed (issue #17, finding 9; DESIGN.md "Cross-node routing"): with
// SWITCHBOARD_CLUSTER_KEY every frame a node publishes carries an HMAC-SHA256, and a frame that
// is unsigned, signed with another key or stale is dropped and counted
// (socket_errors_total{error_type="cluster_frame_*"}), so whoever can PUBLISH to Redis cannot
// inject events. The test builds frames itself (format: protocol/src/cluster.rs) and publishes
// them over a raw RESP connection; a correctly signed one is delivered, which shows the frames
// it builds are well formed and only the signature decides.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { connect as tcpConnect } from "node:net";
import { connectUser, uid, safeJson } from "./product-fixture.js";
import { startCluster, traceOf } from "./cluster-fixture.js";
import { eventually, sleep } from "./fixture.js";

const KEY = "cluster-signing-test-key-0123456789abcdef";
const OTHER_KEY = "another-cluster-key-nobody-configured-0123";
const T = { timeout: 90_000 };

function str(s) {
  const b = Buffer.from(s, "utf8");
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
}

/** A Deliver frame (SB1) carrying one Engine.IO text frame, sent `ageMs` ago. */
function deliverFrame(text, { ageMs = 0, origin = "node-forged" } = {}) {
  const at = Buffer.alloc(8);
  at.writeBigUInt64BE(BigInt(Date.now() - ageMs) * 1000n);
  const body = Buffer.from(text, "utf8");
  const partLen = Buffer.alloc(4);
  partLen.writeUInt32BE(body.length);
  return Buffer.concat([
    Buffer.from("SB1"),
    at,
    str(origin),
    Buffer.from([1, 0]), // kind Deliver, not volatile
    str(""), // except
    Buffer.from([1, 0]), // one part, text
    partLen,
    body,
  ]);
}

/** `frame` signed the way nodes sign: "SG", HMAC-SHA256(key, frame), frame. */
function sealed(frame, key) {
  const tag = createHmac("sha256", key).update(frame).digest();
  return Buffer.concat([Buffer.from("SG"), tag, frame]);
}

/** PUBLISH binary `payload` on `channel` over a raw RESP connection. */
function publishRaw(port, channel, payload) {
  return new Promise((resolve, reject) => {
    const sock = tcpConnect(port, "127.0.0.1", () => {
      const bulk = (b) => Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n")]);
      sock.write(Buffer.concat([Buffer.from("*3\r\n"), bulk(Buffer.from("PUBLISH")), bulk(Buffer.from(channel)), bulk(payload)]));
    });
    let reply = "";
    sock.on("data", (d) => {
      reply += d.toString();
      if (reply.endsWith("\r\n")) {
        sock.end();
        reply.startsWith(":") ? resolve(Number(reply.slice(1))) : reject(new Error(`PUBLISH answered ${reply}`));
      }
    });
    sock.on("error", reject);
  });
}

async function rejectedCount(node, kind) {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("socket_errors_total{") && l.includes(`error_type="cluster_frame_${kind}"`));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("signed cluster frames", T, () => {
  test("nodes with one key relay to each other; forged, wrongly signed and stale frames are dropped and counted", T, async (t) => {
    const c = await startCluster({ nodes: 2, name: "signing", flags: ["--cluster-key", KEY] });
    t.after(() => c.stop());
    const [n1, n2] = c.nodes;
    const alice = uid("alice");
    const bob = uid("bob");
    const a = await connectUser(n1, alice, { label: "alice@n1" });
    const b = await connectUser(n2, bob, { label: "bob@n2" });
    const signals = () => b.log.all("signal").map((args) => args[0]?.data);

    // Real traffic between the nodes is signed and verified.
    a.emit("signal", { to: bob, data: "from-alice" });
    await eventually(() => signals().includes("from-alice"), { what: `alice's signal at bob\n${traceOf(a, b)}` });

    const channel = c.key(`sb:user:${bob}`);
    const packet = (data) => `42${JSON.stringify(["signal", { from: "mallory", data }])}`;
    const port = c.redis.port;

    const before = {
      unsigned: await rejectedCount(n2, "unsigned"),
      bad_signature: await rejectedCount(n2, "bad_signature"),
      stale: await rejectedCount(n2, "stale"),
    };
    assert.ok((await publishRaw(port, channel, deliverFrame(packet("unsigned")))) >= 1, "node 2 listens on bob's channel");
    await publishRaw(port, channel, sealed(deliverFrame(packet("other-key")), OTHER_KEY));
    await publishRaw(port, channel, sealed(deliverFrame(packet("stale"), { ageMs: 5 * 60_000 }), KEY));
    // Last, a frame signed with the cluster's key: once it is in, the others were handled.
    await publishRaw(port, channel, sealed(deliverFrame(packet("signed")), KEY));
    await eventually(() => signals().includes("signed"), { what: `the signed frame at bob\n${traceOf(b)}` });
    await sleep(200);
    assert.deepEqual(signals(), ["from-alice", "signed"], `only signed, fresh frames reach bob: ${safeJson(signals())}`);

    for (const kind of ["unsigned", "bad_signature", "stale"]) {
      assert.equal(await rejectedCount(n2, kind), before[kind] + 1, `cluster_frame_${kind} counted once on node 2`);
    }
  });
});
