// Product mode: the server HTTP API (product-contract.md "Server API").

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll, sessionsBecome, newClient, waitEvent } from "./fixture.js";
import { startProductNode, connectUser, token, ack, api, assertStatus, uid, safeJson, eventually, withoutOffset } from "./product-fixture.js";

const T = { timeout: 30_000 };
const KEY = "product-api-tests-key-0123456789abcdef";
const enc = encodeURIComponent;

/** [method, path, body] for every endpoint of the contract, with valid requests. */
const endpoints = (user = "someone", room = "someroom") => [
  ["POST", "/api/v1/emit", { to: { user }, event: "promo", data: { x: 1 } }],
  ["POST", "/api/v1/emit", { to: { all: true }, event: "promo", data: { x: 1 } }],
  ["GET", `/api/v1/presence?userIds=${enc(user)},other`, undefined],
  ["GET", "/api/v1/online?limit=10", undefined],
  ["POST", `/api/v1/users/${enc(user)}/disconnect`, undefined],
  ["POST", `/api/v1/rooms/${enc(room)}/members`, { userId: user }],
  ["DELETE", `/api/v1/rooms/${enc(room)}/members/${enc(user)}`, undefined],
  ["GET", `/api/v1/rooms/${enc(room)}/members`, undefined],
];

function assertBadRequest(res, what) {
  assertStatus(res, 400, what);
  assert.equal(res.json?.error?.code, "bad_request", `${what}: body ${res.text}`);
  assert.equal(typeof res.json.error.message, "string", `${what}: body ${res.text}`);
}

describe("API on a node with --api-key", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "api", nodeId: "api-node", flags: ["--api-key", KEY] });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("401 {error:{code:unauthorized}} on every endpoint without a key, with a wrong key, with the key but no Bearer scheme; and nothing happens", async () => {
    const victim = uid("victim");
    const v = await connectUser(node, victim);
    for (const [method, p, body] of endpoints(victim)) {
      for (const [label, opt] of [
        ["no Authorization", { key: null }],
        ["wrong key", { key: "wrong" }],
        ["key with a suffix", { key: `${KEY}x` }],
        ["key without Bearer", { auth: KEY }],
        ["Basic scheme", { auth: `Basic ${Buffer.from(`x:${KEY}`).toString("base64")}` }],
      ]) {
        let res = await api(node, method, p, { ...opt, body });
        // Wrong keys are limited per address (10 a second, then 429): wait it out, ask again.
        while (res.status === 429) {
          await new Promise((r) => setTimeout(r, 1100));
          res = await api(node, method, p, { ...opt, body });
        }
        const what = `${method} ${p} (${label})`;
        assertStatus(res, 401, what);
        assert.equal(res.json?.error?.code, "unauthorized", `${what}: ${res.text}`);
        assert.equal(typeof res.json.error.message, "string", `${what}: ${res.text}`);
      }
    }
    // Let the wrong-key limit's second pass, or the right key below would get 429 too.
    await new Promise((r) => setTimeout(r, 1100));
    await v.log.none("promo", 300, { why: "unauthorized emits must not be delivered" });
    assert.equal(v.connected, true, "an unauthorized disconnect must not disconnect");
    const members = await api(node, "GET", `/api/v1/rooms/someroom/members`, { key: KEY });
    assert.deepEqual(members.json?.users, [], `unauthorized add must not add: ${members.text}`);
  });

  test("POST /api/v1/emit to a user → 202 {ok:true}; every socket of the user gets the event with data as its single argument", async () => {
    const x = uid("x");
    const y = uid("y");
    const x1 = await connectUser(node, x, { device: "1" });
    const x2 = await connectUser(node, x, { device: "2", transports: ["polling"] });
    const y1 = await connectUser(node, y);
    const args = [];
    x1.on("promo", (...a) => args.push(a));
    const data = { title: "sale", items: [1, 2], nested: { ok: true } };
    const res = await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { user: x }, event: "promo", data } });
    assertStatus(res, 202, "emit to user");
    assert.deepEqual(res.json, { ok: true });
    const [[d1], [d2]] = await Promise.all([x1.log.next("promo"), x2.log.next("promo")]);
    assert.deepEqual(d1, data);
    assert.deepEqual(d2, data);
    assert.deepEqual(args.map(withoutOffset), [[data]], "exactly one argument, then the offset");
    await y1.log.none("promo", 300);
  });

  test("emit data of every JSON kind arrives as ONE argument (an array is not spread)", async () => {
    const x = uid("x");
    const s = await connectUser(node, x);
    const seen = [];
    s.on("kind", (...a) => seen.push(a));
    const values = [[1, "two", { three: 3 }], "text", 42, true, null, { a: [] }];
    for (const data of values) {
      const res = await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { user: x }, event: "kind", data } });
      assertStatus(res, 202, `emit ${safeJson(data)}`);
    }
    await eventually(() => seen.length === values.length, { timeout: 3_000, what: `${values.length} "kind" events` });
    assert.deepEqual(seen.map(withoutOffset), values.map((v) => [v]));
  });

  test("emit to a room reaches the members' sockets only", async () => {
    const room = uid("news");
    const m = uid("m");
    const n = uid("n");
    const o = uid("o");
    const sm = await connectUser(node, m, { token: token(m, { rooms: [room] }) });
    const sn = await connectUser(node, n, { token: token(n, { rooms: [room, "x"] }) });
    const so = await connectUser(node, o, { token: token(o, { rooms: ["x"] }) });
    const res = await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { room }, event: "headline", data: "hi room" } });
    assertStatus(res, 202, "emit to room");
    assert.deepEqual(res.json, { ok: true });
    assert.deepEqual((await sm.log.next("headline"))[0], "hi room");
    assert.deepEqual((await sn.log.next("headline"))[0], "hi room");
    await so.log.none("headline", 300);
  });

  test("emit to all reaches every socket", async () => {
    const socks = [];
    for (let i = 0; i < 3; i++) socks.push(await connectUser(node, uid("all"), { transports: [i % 2 ? "polling" : "websocket"] }));
    const res = await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { all: true }, event: "broadcast", data: { v: 7 } } });
    assertStatus(res, 202, "emit to all");
    const got = await Promise.all(socks.map((s) => s.log.next("broadcast")));
    for (const [d] of got) assert.deepEqual(d, { v: 7 });
  });

  test("emit to an offline user → 202 {ok:true}", async () => {
    const res = await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { user: uid("nobody") }, event: "e", data: 1 } });
    assertStatus(res, 202);
    assert.deepEqual(res.json, { ok: true });
  });

  test("emit: bad bodies → 400 {error:{code:bad_request}}, and nothing is delivered", async () => {
    const x = uid("x");
    const s = await connectUser(node, x);
    const bad = [
      ["not JSON", { raw: "{not json" }],
      ["empty body", { raw: "" }],
      ["JSON array", { body: [1, 2] }],
      ["empty object", { body: {} }],
      ["missing to", { body: { event: "e", data: 1 } }],
      ["to is a string", { body: { to: x, event: "e", data: 1 } }],
      ["to is {}", { body: { to: {}, event: "e", data: 1 } }],
      ["to.user is a number", { body: { to: { user: 5 }, event: "e", data: 1 } }],
      ["to.room is not a string", { body: { to: { room: ["r"] }, event: "e", data: 1 } }],
      ["missing event", { body: { to: { user: x }, data: 1 } }],
      ["event is a number", { body: { to: { user: x }, event: 5, data: 1 } }],
      ["reserved event connect", { body: { to: { user: x }, event: "connect", data: 1 } }],
      ["reserved event disconnect", { body: { to: { user: x }, event: "disconnect", data: 1 } }],
      ["reserved event error", { body: { to: { user: x }, event: "error", data: 1 } }],
    ];
    for (const [what, opt] of bad) {
      const res = await api(node, "POST", "/api/v1/emit", { key: KEY, ...opt });
      assertBadRequest(res, `emit with ${what}`);
    }
    await s.log.none("e", 300);
    await s.log.none("error", 0);
    assert.equal(s.connected, true);
  });

  test("GET /api/v1/presence?userIds=a,b → {statuses}; away is reported; missing userIds → 400", async () => {
    const a = uid("a");
    const b = uid("b");
    const c = uid("c");
    await connectUser(node, a);
    const sc = await connectUser(node, c);
    await ack(sc, "status:set", { status: "away" });
    const res = await api(node, "GET", `/api/v1/presence?userIds=${enc(a)},${enc(b)},${enc(c)}`, { key: KEY });
    assertStatus(res, 200, "presence");
    assert.deepEqual(res.json, { statuses: { [a]: "online", [b]: "offline", [c]: "away" } });
    const missing = await api(node, "GET", "/api/v1/presence", { key: KEY });
    assertStatus(missing, 400, "presence without userIds");
  });

  test("POST /api/v1/users/{id}/disconnect → 200 {ok:true, disconnected:2}; each socket gets disconnect \"io server disconnect\"; the user is offline", async () => {
    const z = uid("z");
    const other = uid("other");
    const z1 = await connectUser(node, z, { device: "1" });
    const z2 = await connectUser(node, z, { device: "2", transports: ["polling"] });
    const o = await connectUser(node, other);
    const res = await api(node, "POST", `/api/v1/users/${enc(z)}/disconnect`, { key: KEY });
    assertStatus(res, 200, "disconnect user");
    assert.deepEqual(res.json, { ok: true, disconnected: 2 });
    const [[r1], [r2]] = await Promise.all([z1.log.next("disconnect"), z2.log.next("disconnect")]);
    assert.equal(r1, "io server disconnect", z1.log.trace());
    assert.equal(r2, "io server disconnect", z2.log.trace());
    assert.equal(o.connected, true, "other users stay connected");
    await eventually(
      async () => (await api(node, "GET", `/api/v1/presence?userIds=${enc(z)}`, { key: KEY })).json?.statuses?.[z] === "offline",
      { timeout: 3_000, what: `${z} offline after the API disconnect` },
    );
    o.disconnect();
    await sessionsBecome(node.url, 0);
    const none = await api(node, "POST", `/api/v1/users/${enc(uid("ghost"))}/disconnect`, { key: KEY });
    assertStatus(none, 200);
    assert.deepEqual(none.json, { ok: true, disconnected: 0 });
  });

  test("room members: add (current sockets join) / list / remove; add for an offline user → sockets 0; unknown room lists empty", async () => {
    const room = uid("team");
    const p = uid("p");
    const q = uid("q");
    const offline = uid("off");
    const p1 = await connectUser(node, p, { device: "1" });
    await connectUser(node, p, { device: "2" });
    await connectUser(node, q);

    const empty = await api(node, "GET", `/api/v1/rooms/${enc(room)}/members`, { key: KEY });
    assertStatus(empty, 200);
    assert.deepEqual(empty.json, { room, users: [], sockets: 0, members: [] });

    const addP = await api(node, "POST", `/api/v1/rooms/${enc(room)}/members`, { key: KEY, body: { userId: p } });
    assertStatus(addP, 200, "add p");
    assert.deepEqual(addP.json, { ok: true, sockets: 2 });
    const addQ = await api(node, "POST", `/api/v1/rooms/${enc(room)}/members`, { key: KEY, body: { userId: q } });
    assert.deepEqual(addQ.json, { ok: true, sockets: 1 });
    const addOff = await api(node, "POST", `/api/v1/rooms/${enc(room)}/members`, { key: KEY, body: { userId: offline } });
    assertStatus(addOff, 200, "add offline");
    assert.deepEqual(addOff.json, { ok: true, sockets: 0 });

    const list = await api(node, "GET", `/api/v1/rooms/${enc(room)}/members`, { key: KEY });
    assertStatus(list, 200);
    assert.equal(list.json.room, room);
    assert.deepEqual([...list.json.users].sort(), [p, q].sort(), list.text);
    assert.equal(list.json.sockets, 3, list.text);
    // Durable memberships, the offline user's included.
    assert.deepEqual(list.json.members, [p, q, offline].sort(), list.text);

    // membership is real: an API emit to the room reaches p's sockets
    await api(node, "POST", "/api/v1/emit", { key: KEY, body: { to: { room }, event: "team", data: 1 } });
    await p1.log.next("team");

    const delP = await api(node, "DELETE", `/api/v1/rooms/${enc(room)}/members/${enc(p)}`, { key: KEY });
    assertStatus(delP, 200, "remove p");
    assert.deepEqual(delP.json, { ok: true, sockets: 2 });
    const list2 = await api(node, "GET", `/api/v1/rooms/${enc(room)}/members`, { key: KEY });
    assert.deepEqual(list2.json, { room, users: [q], sockets: 1, members: [q, offline].sort() });
    const delAgain = await api(node, "DELETE", `/api/v1/rooms/${enc(room)}/members/${enc(p)}`, { key: KEY });
    assertStatus(delAgain, 200, "remove p again");
    assert.deepEqual(delAgain.json, { ok: true, sockets: 0 });
  });

  test("a user whose CONNECT failed is in no index: not online, not disconnectable, not reachable", async () => {
    const ghost = uid("ghost");
    const s = newClient(node.url, "/", { transports: ["websocket"], auth: { token: token(ghost, { exp: Math.floor(Date.now() / 1000) - 600 }) } });
    const err = waitEvent(s, "connect_error", { timeout: 5_000, failOn: ["connect"] });
    s.connect();
    const [e] = await err;
    assert.equal(e.message, "auth_failed");
    const pres = await api(node, "GET", `/api/v1/presence?userIds=${enc(ghost)}`, { key: KEY });
    assert.deepEqual(pres.json, { statuses: { [ghost]: "offline" } });
    const online = await api(node, "GET", "/api/v1/online?limit=1000", { key: KEY });
    assert.ok(!online.json.users.includes(ghost), online.text);
    const dis = await api(node, "POST", `/api/v1/users/${enc(ghost)}/disconnect`, { key: KEY });
    assert.deepEqual(dis.json, { ok: true, disconnected: 0 });
    const add = await api(node, "POST", `/api/v1/rooms/${enc(uid("r"))}/members`, { key: KEY, body: { userId: ghost } });
    assert.deepEqual(add.json, { ok: true, sockets: 0 });
  });

  test("room members: bad bodies → 400", async () => {
    const room = uid("r");
    for (const [what, opt] of [
      ["not JSON", { raw: "nope" }],
      ["{}", { body: {} }],
      ["userId a number", { body: { userId: 1 } }],
    ]) {
      const res = await api(node, "POST", `/api/v1/rooms/${enc(room)}/members`, { key: KEY, ...opt });
      assertBadRequest(res, `add member with ${what}`);
    }
  });
});

describe("GET /api/v1/online (fresh node)", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "api-online", nodeId: "api-online-node", flags: ["--api-key", KEY] });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("{count, users ascending, nextCursor}; a user with two sockets counts once; paging with limit=2 walks every user once", async () => {
    const empty = await api(node, "GET", "/api/v1/online", { key: KEY });
    assertStatus(empty, 200);
    assert.deepEqual(empty.json, { count: 0, users: [], nextCursor: null });

    const names = ["on-e", "on-b", "on-d", "on-a", "on-c"];
    for (const n of names) await connectUser(node, n);
    await connectUser(node, "on-c", { device: "second" });
    const sorted = [...names].sort();

    const all = await api(node, "GET", "/api/v1/online?limit=100", { key: KEY });
    assertStatus(all, 200);
    assert.deepEqual(all.json, { count: 5, users: sorted, nextCursor: null });

    const pages = [];
    let cursor = null;
    for (let i = 0; i < 10; i++) {
      const q = `/api/v1/online?limit=2${cursor === null ? "" : `&cursor=${enc(cursor)}`}`;
      const res = await api(node, "GET", q, { key: KEY });
      assertStatus(res, 200, q);
      assert.ok(res.json.users.length <= 2, `page over limit: ${res.text}`);
      pages.push(res.json.users);
      assert.ok(res.json.nextCursor === null || typeof res.json.nextCursor === "string", res.text);
      cursor = res.json.nextCursor;
      if (cursor === null) break;
    }
    assert.equal(cursor, null, `paging did not end: ${safeJson(pages)}`);
    assert.deepEqual(pages.flat(), sorted, `pages ${safeJson(pages)}`);
    assert.deepEqual(pages.slice(0, 2).map((p) => p.length), [2, 2], `pages ${safeJson(pages)}`);
  });

  test("a user who leaves is no longer listed", async () => {
    const s = await connectUser(node, "leaver");
    const stay = await connectUser(node, "stayer");
    let res;
    await eventually(
      async () => {
        res = await api(node, "GET", "/api/v1/online", { key: KEY });
        return safeJson(res.json?.users) === safeJson(["leaver", "stayer"]);
      },
      { timeout: 3_000, what: "online == [leaver, stayer]" },
    );
    s.disconnect();
    await eventually(
      async () => {
        res = await api(node, "GET", "/api/v1/online", { key: KEY });
        return safeJson(res.json?.users) === safeJson(["stayer"]);
      },
      { timeout: 3_000, what: "online == [stayer]" },
    );
    assert.equal(res.json.count, 1);
    stay.disconnect();
  });
});

describe("node without --api-key", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "api-off", nodeId: "api-off-node" });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });

  test("POST /api/v1/emit → 404 (with or without an Authorization header)", async () => {
    for (const opt of [{ key: null }, { key: KEY }, { key: "" }]) {
      const res = await api(node, "POST", "/api/v1/emit", { ...opt, body: { to: { all: true }, event: "x", data: 1 } });
      assertStatus(res, 404, `emit ${safeJson(opt)}`);
    }
  });

  test("every other API endpoint → 404", async () => {
    for (const [method, p, body] of endpoints()) {
      const res = await api(node, method, p, { key: KEY, body });
      assertStatus(res, 404, `${method} ${p}`);
    }
  });
});
