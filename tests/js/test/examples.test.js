// The client examples in examples/clients, run as a user would run them: the static browser page
// (served by a plain http server of the test's, opened in headless Chromium) and the Node script
// (a child process) talk to each other through a node. The Python example is run by
// tests/python/test_examples.py.

import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { spawn } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { launchChromium } from "./browser-fixture.js";
import { startProductNode, token, uid, eventually } from "./product-fixture.js";

const EXAMPLES = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "examples", "clients");
const BUNDLE = path.join(EXAMPLES, "node_modules", "socket.io-client", "dist", "socket.io.min.js");

/** Serve examples/clients/browser with the client bundle beside the page, as its README says. */
function servePage() {
  const files = {
    "/": ["text/html", readFileSync(path.join(EXAMPLES, "browser", "index.html"))],
    "/socket.io.min.js": ["text/javascript", readFileSync(BUNDLE)],
  };
  const srv = http.createServer((req, res) => {
    const file = files[req.url];
    if (!file) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": file[0] }).end(file[1]);
  });
  return new Promise((resolve) =>
    srv.listen(0, "127.0.0.1", () => resolve({ url: `http://127.0.0.1:${srv.address().port}/`, close: () => srv.close() })),
  );
}

/** Run chat.mjs; its stdout JSON lines, parsed, as they come. */
function runNodeExample(url, user, peer) {
  const child = spawn("node", ["chat.mjs"], {
    cwd: EXAMPLES,
    env: { ...process.env, SWITCHBOARD_URL: url, TOKEN: token(user), PEER: peer },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out = { lines: [], raw: "", child };
  const take = (buf) => {
    out.raw += buf;
    for (const line of buf.toString().split("\n")) {
      try {
        out.lines.push(JSON.parse(line));
      } catch {
        /* not a JSON line */
      }
    }
  };
  child.stdout.on("data", take);
  child.stderr.on("data", (b) => (out.raw += b));
  out.next = (event) =>
    eventually(() => out.lines.find((l) => l.event === event)?.data, { timeout: 10_000, what: `${event} from chat.mjs; output:\n${out.raw}` });
  return out;
}

describe("client examples", { timeout: 60_000 }, () => {
  let node, page, browser;
  const children = [];
  before(async () => {
    assert.ok(existsSync(BUNDLE), "run npm ci in examples/clients");
    node = await startProductNode({ name: "examples" });
    page = await servePage();
    browser = await launchChromium();
  });
  after(async () => {
    for (const c of children) c.kill();
    await browser?.close();
    page?.close();
    await node?.stop();
  });

  test("the browser page and the Node script exchange messages and see each other's presence", async () => {
    const alice = uid("alice");
    const carol = uid("carol");
    const js = runNodeExample(node.url, alice, carol);
    children.push(js.child);
    assert.deepEqual(await js.next("authenticated"), { userId: alice });
    assert.deepEqual(await js.next("presence"), { [carol]: "offline" });
    const sent = await js.next("sent");
    assert.equal(sent.ok, true, JSON.stringify(sent));

    const tab = await browser.newPage();
    const errors = [];
    tab.on("pageerror", (e) => errors.push(String(e)));
    const params = new URLSearchParams({ url: node.url, token: token(carol), peer: alice });
    await tab.goto(`${page.url}#${params}`, { waitUntil: "load" });
    const entries = () => tab.$$eval("#log li", (lis) => lis.map((li) => [li.dataset.event, li.textContent]));
    const entry = (event) =>
      eventually(async () => (await entries()).find(([e]) => e === event)?.[1], { timeout: 10_000, what: `${event} on the page` });
    assert.match(await entry("authenticated"), new RegExp(`"userId":"${carol}"`));
    // alice's hello was stored while carol was away: the page finds it in the history.
    const history = await entry("history");
    assert.ok(history.includes(`"from":"${alice}"`) && history.includes(`hello from node, ${alice}`), history);
    assert.ok(history.includes(`"messageId":${sent.messageId}`), history);
    assert.match(await entry("presence"), new RegExp(`"${alice}":"online"`));
    assert.match(await entry("sent"), /"ok":true/);
    assert.match(await tab.$eval("#status", (el) => el.textContent), new RegExp(`connected as ${carol}`));

    // The Node script sees carol arrive and gets the page's hello live.
    assert.deepEqual(await js.next("friend:online"), { userId: carol });
    const hello = await js.next("message:received");
    assert.deepEqual([hello.from, hello.to, hello.text], [carol, alice, `hello from the browser, ${carol}`]);

    // A message typed into the page's form reaches the Node script.
    await tab.type("#text", "typed in the page");
    await tab.click("#send button");
    await eventually(() => js.lines.some((l) => l.event === "message:received" && l.data.text === "typed in the page"), {
      timeout: 10_000,
      what: `the typed message at chat.mjs; output:\n${js.raw}`,
    });
    assert.deepEqual(errors, []);
  });
});
