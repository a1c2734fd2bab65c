// Binary from a real browser (headless Chromium, the socket.io-client browser bundle, no Buffer):
// an ArrayBuffer, a Uint8Array view with a non-zero offset, an ArrayBuffer read from a Blob
// (`await blob.arrayBuffer()`), a Blob itself and an empty ArrayBuffer, carried in `signal`
// (both ways) and `room:emit` (every member, the sender included), over websocket and over
// polling only (whose large answers come gzip, decoded by the browser), on one node and across
// two cluster nodes. The receiving page hands the bytes
// back as base64; they are compared here, byte for byte, against bytes made independently in Node.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startProductNode, uid, token } from "./product-fixture.js";
import { startCluster } from "./cluster-fixture.js";
import { startBrowser } from "./browser-fixture.js";

const T = { timeout: 120_000 };

const bytes = (n, seed = 1) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256));

// What each payload holds, as Node builds it (the page builds the same with its own code).
const EXPECTED = {
  ab: bytes(3000, 7),
  view: bytes(300, 11).subarray(17, 217),
  fromBlob: bytes(1000, 5),
  blob: bytes(64, 9),
  empty: Buffer.alloc(0),
  deep: bytes(1, 200),
};

/** In the page: emit `event` with every kind of browser binary; resolves with the ack. */
function emitBinary(sb, { event, target, n }) {
  return (async () => {
    const whole = sb.bytes(300, 11);
    const data = {
      n,
      ab: sb.bytes(3000, 7).buffer,
      view: whole.subarray(17, 217),
      fromBlob: await new Blob([sb.bytes(1000, 5)]).arrayBuffer(),
      blob: new Blob([sb.bytes(64, 9)]),
      empty: new ArrayBuffer(0),
      nested: ["text", { deep: sb.bytes(1, 200) }],
    };
    return sb.socket.timeout(5000).emitWithAck(event, { ...target, data });
  })();
}

function assertBinary(data, n, who) {
  assert.equal(data.n, n, who);
  const got = { ab: data.ab, view: data.view, fromBlob: data.fromBlob, blob: data.blob, empty: data.empty, deep: data.nested?.[1]?.deep };
  assert.equal(data.nested?.[0], "text", `${who}: the string beside the binary`);
  for (const [k, want] of Object.entries(EXPECTED)) {
    assert.ok(Buffer.isBuffer(got[k]), `${who}: ${k} arrived as binary, got ${JSON.stringify(got[k])?.slice(0, 200)}`);
    assert.equal(got[k].pageType, "ArrayBuffer", `${who}: ${k} is an ArrayBuffer in the browser`);
    assert.equal(got[k].length, want.length, `${who}: ${k} length`);
    assert.ok(got[k].equals(want), `${who}: ${k} bytes differ`);
  }
}

/** a ↔ b by `signal`, then `room:emit` from a to a room of a, b and c. */
async function exchange(browser, [na, nb, nc], transports) {
  const room = uid("broom");
  const users = [uid("ba"), uid("bb"), uid("bc")];
  const pages = [];
  // Polling answers the browser received, by Content-Encoding: the large ones come gzip
  // (Chromium asks for it) and the stock client reads them (issue #16, compression).
  const encodings = [];
  for (const [i, node] of [na, nb, nc].entries()) {
    const p = await browser.page(users[i]);
    p.page.on("response", (res) => {
      const url = res.url();
      if (url.includes("/socket.io/") && url.includes("transport=polling") && res.request().method() === "GET") {
        encodings.push(res.headers()["content-encoding"] ?? "identity");
      }
    });
    const info = await p.connect({ url: node.url, token: token(users[i], { rooms: [room] }), transports: [transports] });
    assert.equal(info.userId, users[i]);
    assert.equal(await p.transport(), transports);
    pages.push(p);
  }
  const [a, b, c] = pages;
  try {
    assert.deepEqual(await a.run(emitBinary, { event: "signal", target: { to: users[1] }, n: 1 }), { ok: true });
    const [s1] = await b.next("signal");
    assert.equal(s1.from, users[0]);
    assertBinary(s1.data, 1, "a → b signal");

    assert.deepEqual(await b.run(emitBinary, { event: "signal", target: { to: users[0] }, n: 2 }), { ok: true });
    const [s2] = await a.next("signal");
    assert.equal(s2.from, users[1]);
    assertBinary(s2.data, 2, "b → a signal");

    assert.deepEqual(await a.run(emitBinary, { event: "room:emit", target: { room }, n: 3 }), { ok: true });
    for (const [i, p] of pages.entries()) {
      const [m] = await p.next("room:msg");
      assert.equal(m.room, room);
      assert.equal(m.from, users[0]);
      assertBinary(m.data, 3, `room:msg at ${users[i]}`);
    }
    for (const p of pages) assert.deepEqual(await p.errors(), [], `${p.label}: no session or page errors\n${await p.trace()}`);
    if (transports === "polling") {
      assert.ok(encodings.includes("gzip"), `the binary answers (over 1 KiB) came gzip: ${JSON.stringify(encodings)}`);
    }
  } finally {
    for (const p of pages) await p.close();
  }
}

describe("browser binary on one node", T, () => {
  let node;
  let browser;
  before(async () => {
    browser = await startBrowser();
    node = await startProductNode({ name: "browser-binary" });
  });
  after(async () => {
    await browser?.stop();
    await node?.stop();
  });

  for (const t of ["websocket", "polling"]) {
    test(`signal and room:emit carry browser binary exactly (${t})`, T, async () => {
      await exchange(browser, [node, node, node], t);
    });
  }
});

describe("browser binary across two cluster nodes", T, () => {
  let c;
  let browser;
  before(async () => {
    browser = await startBrowser();
    c = await startCluster({ nodes: 2, name: "browser-binary" });
  });
  after(async () => {
    await browser?.stop();
    await c?.stop();
  });

  for (const t of ["websocket", "polling"]) {
    test(`signal and room:emit carry browser binary exactly between nodes (${t})`, T, async () => {
      const [n1, n2] = c.nodes;
      await exchange(browser, [n1, n2, n2], t);
    });
  }
});
