// Product mode: presence subscriptions, queries and status (product-contract.md "Events").

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll } from "./fixture.js";
import { startProductNode, connectUser, ack, uid, safeJson, traces, eventually } from "./product-fixture.js";

const T = { timeout: 30_000 };
let node;
before(async () => {
  node = await startProductNode({ name: "presence", nodeId: "presence-node" });
});
after(async () => {
  closeAll();
  await node?.stop();
});
afterEach(() => closeAll());

async function query(socket, userIds) {
  const r = await ack(socket, "presence:query", { userIds });
  assert.equal(r?.ok, true, `presence:query ${safeJson(r)}`);
  return r.statuses;
}

describe("presence", T, () => {
  test("friend:online on the FIRST socket only, friend:offline on the LAST socket only", async () => {
    const carol = uid("carol");
    const dave = uid("dave");
    const c = await connectUser(node, carol);
    const sub = await ack(c, "presence:subscribe", { userIds: [dave] });
    assert.deepEqual(sub, { ok: true, statuses: { [dave]: "offline" } });

    const d1 = await connectUser(node, dave, { device: "1" });
    const [on] = await c.log.next("friend:online");
    assert.deepEqual(on, { userId: dave });

    const d2 = await connectUser(node, dave, { device: "2", transports: ["polling"] });
    await c.log.none("friend:online", 500, { why: "dave's second device is not a new online transition" });

    d1.disconnect();
    await c.log.none("friend:offline", 500, { why: "dave still has device 2" });
    assert.deepEqual(await query(c, [dave]), { [dave]: "online" });

    d2.disconnect();
    const [off] = await c.log.next("friend:offline", { timeout: 3_000 });
    assert.deepEqual(off, { userId: dave });
    assert.deepEqual(await query(c, [dave]), { [dave]: "offline" });
    assert.equal(c.log.count("friend:online"), 1, c.log.trace());
    assert.equal(c.log.count("friend:offline"), 1, c.log.trace());
  });

  test("an abruptly closed transport (no Socket.IO disconnect packet) also ends presence", async () => {
    const carol = uid("carol");
    const dave = uid("dave");
    const c = await connectUser(node, carol);
    await ack(c, "presence:subscribe", { userIds: [dave] });
    const d = await connectUser(node, dave);
    await c.log.next("friend:online");
    d.io.engine.close(); // closes the transport without sending 41
    const [off] = await c.log.next("friend:offline", { timeout: 3_000 });
    assert.deepEqual(off, { userId: dave });
  });

  test("subscribe to a user who is already online → statuses online; mixed ids", async () => {
    const eve = uid("eve");
    const nobody = uid("nobody");
    await connectUser(node, eve);
    const c = await connectUser(node, uid("carol"));
    const sub = await ack(c, "presence:subscribe", { userIds: [eve, nobody] });
    assert.deepEqual(sub, { ok: true, statuses: { [eve]: "online", [nobody]: "offline" } });
  });

  test("presence:query reports online/offline without subscribing", async () => {
    const dave = uid("dave");
    const nobody = uid("nobody");
    const q = await connectUser(node, uid("asker"));
    assert.deepEqual(await query(q, [dave, nobody]), { [dave]: "offline", [nobody]: "offline" });
    const d = await connectUser(node, dave);
    assert.deepEqual(await query(q, [dave, nobody]), { [dave]: "online", [nobody]: "offline" });
    d.disconnect();
    await eventually(async () => (await query(q, [dave]))[dave] === "offline", { timeout: 3_000, what: `${dave} offline` });
    await q.log.none("friend:online", 0, { why: "query is not a subscription" });
    await q.log.none("friend:offline", 0, { why: "query is not a subscription" });
  });

  test('status:set {status:"away"} → ack ok, query shows away, subscribers get friend:status; back to online', async () => {
    const carol = uid("carol");
    const dave = uid("dave");
    const c = await connectUser(node, carol);
    const d = await connectUser(node, dave, { device: "1" });
    const d2 = await connectUser(node, dave, { device: "2" });
    await ack(c, "presence:subscribe", { userIds: [dave] });

    const r = await ack(d, "status:set", { status: "away" });
    assert.deepEqual(r, { ok: true });
    const [st] = await c.log.next("friend:status");
    assert.deepEqual(st, { userId: dave, status: "away" });
    assert.deepEqual(await query(c, [dave]), { [dave]: "away" });

    // the status is the user's, not the socket's: a new subscriber sees away
    const late = await connectUser(node, uid("late"));
    const sub = await ack(late, "presence:subscribe", { userIds: [dave] });
    assert.deepEqual(sub, { ok: true, statuses: { [dave]: "away" } });

    const r2 = await ack(d2, "status:set", { status: "online" });
    assert.deepEqual(r2, { ok: true });
    const [st2] = await c.log.next("friend:status");
    assert.deepEqual(st2, { userId: dave, status: "online" });
    const [st3] = await late.log.next("friend:status");
    assert.deepEqual(st3, { userId: dave, status: "online" });
    assert.deepEqual(await query(c, [dave]), { [dave]: "online" });
  });

  test("presence:unsubscribe → ack {ok:true}; no more friend:online / friend:offline / friend:status", async () => {
    const carol = uid("carol");
    const dave = uid("dave");
    const erin = uid("erin");
    const c = await connectUser(node, carol);
    await ack(c, "presence:subscribe", { userIds: [dave, erin] });
    const d = await connectUser(node, dave);
    await c.log.next("friend:online", { pred: (p) => p?.userId === dave });

    const un = await ack(c, "presence:unsubscribe", { userIds: [dave] });
    assert.deepEqual(un, { ok: true });
    await ack(d, "status:set", { status: "away" });
    d.disconnect();
    await connectUser(node, dave, { device: "again" });
    // erin is still watched: her online notification proves the pipeline is alive
    await connectUser(node, erin);
    const [on] = await c.log.next("friend:online", { pred: (p) => p?.userId === erin });
    assert.deepEqual(on, { userId: erin });
    await c.log.none("friend:online", 300, { pred: (p) => p?.userId === dave });
    await c.log.none("friend:offline", 0, { pred: (p) => p?.userId === dave });
    await c.log.none("friend:status", 0, { pred: (p) => p?.userId === dave });
  });

  test("several subscribers all get the notifications", async () => {
    const dave = uid("dave");
    const watchers = [];
    for (let i = 0; i < 3; i++) {
      const w = await connectUser(node, uid(`w${i}`));
      await ack(w, "presence:subscribe", { userIds: [dave] });
      watchers.push(w);
    }
    const d = await connectUser(node, dave);
    await Promise.all(watchers.map((w) => w.log.next("friend:online")));
    d.disconnect();
    const offs = await Promise.all(watchers.map((w) => w.log.next("friend:offline")));
    for (const [o] of offs) assert.deepEqual(o, { userId: dave });
  });

  test("subscribing twice does not double the notifications", async () => {
    const dave = uid("dave");
    const c = await connectUser(node, uid("carol"));
    await ack(c, "presence:subscribe", { userIds: [dave] });
    await ack(c, "presence:subscribe", { userIds: [dave] });
    await connectUser(node, dave);
    await c.log.next("friend:online");
    await c.log.none("friend:online", 400, { why: "one subscription, one notification" });
  });

  test("presence:subscribe with 1000 ids is accepted; 1001 ids → invalid_payload", async () => {
    const c = await connectUser(node, uid("many"));
    const ids = Array.from({ length: 1001 }, (_, i) => `pz-${i}`);
    const ok = await ack(c, "presence:subscribe", { userIds: ids.slice(0, 1000) });
    assert.equal(ok?.ok, true, safeJson(ok).slice(0, 200));
    assert.equal(Object.keys(ok.statuses).length, 1000);
    const bad = await ack(c, "presence:subscribe", { userIds: ids });
    assert.equal(bad?.ok, false, safeJson(bad).slice(0, 200));
    assert.equal(bad.error?.code, "invalid_payload");
  });

  test("one socket watches at most 1000 users in total across subscribes; unsubscribing frees room", async () => {
    const c = await connectUser(node, uid("watcher"));
    const first = Array.from({ length: 600 }, (_, i) => `wa-${i}`);
    const second = Array.from({ length: 400 }, (_, i) => `wb-${i}`);
    assert.equal((await ack(c, "presence:subscribe", { userIds: first }))?.ok, true);
    // Re-subscribing to users already watched costs nothing.
    assert.equal((await ack(c, "presence:subscribe", { userIds: first.slice(0, 10) }))?.ok, true);
    assert.equal((await ack(c, "presence:subscribe", { userIds: second }))?.ok, true);
    const over = await ack(c, "presence:subscribe", { userIds: ["one-too-many"] });
    assert.equal(over?.ok, false, safeJson(over));
    assert.equal(over.error?.code, "invalid_payload");
    assert.match(over.error?.message ?? "", /at most 1000/);
    assert.equal((await ack(c, "presence:unsubscribe", { userIds: ["wa-0"] }))?.ok, true);
    assert.equal((await ack(c, "presence:subscribe", { userIds: ["one-too-many"] }))?.ok, true);
  });

  test("a subscriber that disconnects stops being notified and nothing breaks for the others", async () => {
    const dave = uid("dave");
    const gone = await connectUser(node, uid("gone"));
    const stay = await connectUser(node, uid("stay"));
    await ack(gone, "presence:subscribe", { userIds: [dave] });
    await ack(stay, "presence:subscribe", { userIds: [dave] });
    gone.disconnect();
    await connectUser(node, dave);
    const [on] = await stay.log.next("friend:online");
    assert.deepEqual(on, { userId: dave }, traces(stay.log));
  });
});
