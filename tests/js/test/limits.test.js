// Per-user limits (issue #17, finding 2): sockets per user across the cluster
// (SWITCHBOARD_MAX_SOCKETS_PER_USER: more are refused with connect_refused / too_many_sockets)
// and users watched together by one user's sockets on a node
// (SWITCHBOARD_MAX_WATCHES_PER_USER: a presence:subscribe over it gets invalid_payload and
// changes nothing). Other users are never affected.

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll } from "./fixture.js";
import { startProductNode, connectUser, userSocket, connectAuthed, expectConnectError, ack, uid, safeJson } from "./product-fixture.js";
import { startCluster } from "./cluster-fixture.js";

const T = { timeout: 60_000 };

/** The connect_error of one socket too many. */
async function expectTooMany(socket) {
  const err = await expectConnectError(socket);
  assert.deepEqual(err, { message: "connect_refused", data: { reason: "too_many_sockets" } }, safeJson(err));
}

const ids = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

describe("per-user limits, one node", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({
      name: "limits",
      nodeId: "limits-node",
      flags: ["--max-sockets-per-user", "3", "--max-watches-per-user", "1500"],
    });
  });
  after(async () => {
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("the fourth socket of a user is refused (too_many_sockets); one closes, one more fits; other users are unaffected", async () => {
    const u = uid("many");
    const sockets = [];
    for (let i = 0; i < 3; i++) sockets.push(await connectUser(node, u, { device: `d${i}` }));
    await expectTooMany(userSocket(node, u, { device: "d3" }));
    await expectTooMany(userSocket(node, u, { device: "d4", transports: ["polling"] }));
    const other = await connectUser(node, uid("other"));
    assert.equal(other.connected, true);
    for (const s of sockets) assert.equal(s.connected, true, "the first three stay connected");

    sockets[0].disconnect();
    let again;
    for (let i = 0; i < 50 && !again; i++) {
      const s = userSocket(node, u, { device: "d5" });
      try {
        await connectAuthed(s, { timeout: 2_000 });
        again = s;
      } catch {
        s.close();
        await new Promise((r) => setTimeout(r, 50)); // the disconnect reaches presence shortly
      }
    }
    assert.ok(again, "a socket fits again once one closed");
  });

  test("watches: a user's sockets watch at most 1500 users together; over it invalid_payload and nothing changes", async () => {
    const u = uid("watcher");
    const a = await connectUser(node, u, { device: "a" });
    const b = await connectUser(node, u, { device: "b" });
    const first = await ack(a, "presence:subscribe", { userIds: ids(uid("f"), 1000) });
    assert.equal(first?.ok, true, safeJson(first).slice(0, 200));
    const over = await ack(b, "presence:subscribe", { userIds: ids(uid("g"), 600) });
    assert.equal(over?.ok, false, safeJson(over));
    assert.equal(over.error.code, "invalid_payload", safeJson(over));
    const fits = await ack(b, "presence:subscribe", { userIds: ids(uid("h"), 500) });
    assert.equal(fits?.ok, true, "500 more fit exactly");

    // The refused subscribe took no budget: exactly one more user is still over it.
    const refusedUser = uid("g-late");
    const late = await ack(b, "presence:subscribe", { userIds: [refusedUser] });
    assert.equal(late?.error?.code, "invalid_payload", "the budget is spent");

    // Another user is not affected by u's budget.
    const v = await connectUser(node, uid("free"));
    const ok = await ack(v, "presence:subscribe", { userIds: ids(uid("k"), 1000) });
    assert.equal(ok?.ok, true);

    // Unwatching gives budget back.
    assert.deepEqual(await ack(a, "presence:unsubscribe", { userIds: first ? Object.keys(first.statuses) : [] }), { ok: true });
    const after = await ack(a, "presence:subscribe", { userIds: ids(uid("m"), 900) });
    assert.equal(after?.ok, true, `budget freed by the unsubscribe: ${safeJson(after).slice(0, 300)}`);
  });
});

describe("per-user socket limit across a cluster", T, () => {
  let c;
  before(async () => {
    c = await startCluster({ nodes: 3, name: "limits", flags: ["--max-sockets-per-user", "2"] });
  });
  after(async () => {
    await c?.stop();
  });
  afterEach(() => closeAll());

  test("two sockets on two nodes use the whole allowance: a third, on the third node, is refused", async () => {
    const [n1, n2, n3] = c.nodes;
    const u = uid("roamer");
    await connectUser(n1, u, { device: "phone" });
    await connectUser(n2, u, { device: "laptop" });
    await expectTooMany(userSocket(n3, u, { device: "tablet" }));
    const other = await connectUser(n3, uid("other"));
    assert.equal(other.connected, true);
  });
});
