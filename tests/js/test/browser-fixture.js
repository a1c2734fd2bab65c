// Headless Chromium (Debian's `chromium`, driven by puppeteer-core) running the stock
// socket.io-client browser bundle, for tests that need a real browser's transports: its own
// WebSocket and XHR polling, cross-origin (the page is served by a loopback http server of the
// test's, so every request to a node or HAProxy is a CORS request), and no Buffer anywhere.
//
//   const b = await startBrowser();          // fails (never skips) when Chromium cannot start
//   const p = await b.page("alice");         // a fresh page with the bundle and the harness below
//   await p.connect({ url, token, transports: ["polling"] })   // → the `authenticated` payload
//   await p.run((sb, arg) => sb.socket.emitWithAck(...), arg)  // anything in the page
//   await p.next("signal")                   // the next unconsumed event's args, binary as {$bin}
//   p.errors()                               // connect_error / disconnect / page errors so far
//   await b.stop()
//
// Binary crossing from the page to Node is encoded as {$bin: "<base64>", type} (type: the
// constructor name the page saw), so the Node side compares exact bytes and checks that the
// browser got an ArrayBuffer. Environment: CHROMIUM (default /usr/bin/chromium).

import http from "node:http";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const BUNDLE = path.join(here, "..", "node_modules", "socket.io-client", "dist", "socket.io.min.js");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

// Runs in the page: one socket per page, an event log with waiters, binary made JSON-safe.
const HARNESS = `
window.sb = (() => {
  const log = [];
  const waiters = new Set();
  const push = (event, args) => {
    log.push({ event, args, consumed: false });
    for (const w of [...waiters]) w();
  };
  // Same formula as the Node tests' bytes(): (i * 31 + seed) % 256.
  const bytes = (n, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256);
  const b64 = (u8) => {
    let s = "";
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const plain = (v) => {
    if (v instanceof ArrayBuffer) return { $bin: b64(new Uint8Array(v)), type: "ArrayBuffer" };
    if (ArrayBuffer.isView(v)) return { $bin: b64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)), type: v.constructor.name };
    if (typeof Blob !== "undefined" && v instanceof Blob) return { $blob: v.size };
    if (Array.isArray(v)) return v.map(plain);
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
    return v;
  };
  const sb = {
    socket: null,
    bytes,
    plain,
    log,
    connect({ url, token, transports, timeout = 10000 }) {
      const s = io(url, { transports, auth: { token }, reconnection: false, forceNew: true });
      sb.socket = s;
      s.onAny((event, ...args) => push(event, args));
      s.on("connect", () => push("connect", [s.id]));
      s.on("connect_error", (e) => push("connect_error", [e.message, e.data]));
      s.on("disconnect", (reason, d) => push("disconnect", [reason, d && (d.message || d.description)]));
      s.io.on("open", () => s.io.engine.on("upgrade", (t) => push("upgrade", [t.name])));
      return sb.next("authenticated", { timeout });
    },
    next(event, { timeout = 5000, pred = () => true } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const e = log.find((x) => !x.consumed && x.event === event && pred(...x.args));
          if (e) {
            e.consumed = true;
            done();
            resolve(plain(e.args));
            return;
          }
          const bad = log.find((x) => x.event === "connect_error" || x.event === "disconnect");
          if (bad) {
            done();
            reject(new Error(bad.event + " " + JSON.stringify(bad.args) + " while waiting for " + event));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error("timed out after " + timeout + " ms waiting for " + event));
        }, timeout);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    errors: () => log.filter((x) => x.event === "connect_error" || x.event === "disconnect").map((x) => [x.event, x.args]),
    transport: () => sb.socket && sb.socket.io.engine && sb.socket.io.engine.transport.name,
  };
  return sb;
})();
`;

const PAGE = `<!doctype html><meta charset="utf-8"><title>switchboard browser test</title><link rel="icon" href="data:,">
<script src="/socket.io.min.js"></script><script src="/harness.js"></script>`;

/** The loopback http server the pages come from (another origin than any node). */
function startPageServer() {
  const bundle = readFileSync(BUNDLE);
  const srv = http.createServer((req, res) => {
    const [type, body] =
      req.url === "/socket.io.min.js"
        ? ["text/javascript", bundle]
        : req.url === "/harness.js"
          ? ["text/javascript", HARNESS]
          : req.url === "/"
            ? ["text/html", PAGE]
            : [null, null];
    if (!type) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body);
  });
  return new Promise((resolve, reject) => {
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${srv.address().port}/`, close: () => srv.close() }));
  });
}

/** Decode {$bin} (recursively) into Buffers; keep the page-side type for assertions. */
export function fromPage(v) {
  if (Array.isArray(v)) return v.map(fromPage);
  if (v && typeof v === "object") {
    if (typeof v.$bin === "string") {
      const b = Buffer.from(v.$bin, "base64");
      b.pageType = v.type;
      return b;
    }
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fromPage(x)]));
  }
  return v;
}

/** Launch headless Chromium. Throws (the test fails, never skips) when it cannot start. */
export async function launchChromium() {
  try {
    return await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Root in a container: no user namespaces for the sandbox; /dev/shm may be small.
      args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"],
      timeout: 30_000,
      protocolTimeout: 120_000,
    });
  } catch (e) {
    throw new Error(`headless Chromium (${CHROMIUM}) could not start: ${e.message} (install the Debian package chromium, or set CHROMIUM)`);
  }
}

/** Launch Chromium and the page server. Throws (the test fails) when Chromium cannot start. */
export async function startBrowser() {
  const server = await startPageServer();
  let browser;
  try {
    browser = await launchChromium();
  } catch (e) {
    server.close();
    throw e;
  }
  return {
    browser,
    async page(label) {
      const page = await browser.newPage();
      const pageErrors = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));
      page.on("console", (m) => {
        if (m.type() === "error") pageErrors.push(`console: ${m.text()}`);
      });
      await page.goto(server.url, { waitUntil: "load" });
      const ok = await page.evaluate(() => typeof io === "function" && typeof sb === "object" && typeof Buffer === "undefined");
      if (!ok) throw new Error(`${label}: the page has no io()/sb, or has a Buffer`);
      const p = {
        label,
        page,
        /** Connect the page's socket; resolves with the `authenticated` payload. */
        connect: (opts) => page.evaluate((o) => sb.connect(o).then(([a]) => a), opts),
        /** Evaluate fn(sb, arg) in the page; binary in the result comes back as Buffers. */
        run: async (fn, arg) => fromPage(await page.evaluate(`(${fn.toString()})(sb, ${JSON.stringify(arg ?? null)})`)),
        /** The next unconsumed `event`'s args (binary as Buffers). */
        next: async (event, { timeout = 5_000 } = {}) =>
          fromPage(await page.evaluate((e, t) => sb.next(e, { timeout: t }), event, timeout)),
        /** connect_error / disconnect entries, then page errors. */
        errors: async () => [...(await page.evaluate(() => sb.errors())), ...pageErrors.map((e) => ["pageerror", e])],
        transport: () => page.evaluate(() => sb.transport()),
        // Binary shown by its length only, so a failure message stays readable.
        trace: () =>
          page.evaluate(() =>
            JSON.stringify(sb.log.map((e) => [e.event, sb.plain(e.args)]), (k, v) => (k === "$bin" ? `${atob(v).length} bytes` : v)).slice(0, 4000),
          ),
        close: () => page.close(),
      };
      return p;
    },
    async stop() {
      await browser.close().catch(() => {});
      server.close();
    },
  };
}
