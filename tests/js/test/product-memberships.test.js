// Durable room memberships through the server API (DESIGN.md "Rooms": stored in the database,
// applied to every current socket of the user and to every socket the user opens later, until
// removed), black-box, on SQLite and on PostgreSQL:
//
//   - a membership added while the user is offline applies when the user connects later: a room
//     emit reaches every socket of the user, `room:presence` lists the user, the user may emit;
//   - it survives the user's reconnect and a restart of the node on the same database;
//   - removed, it is gone at once for the current sockets and on the next connect;
//   - `GET /api/v1/rooms/{room}/members` answers `members` (durable, online or not), `users` and
//     `sockets` (online members, whatever made them members).
//
// PostgreSQL: a throwaway database `switchboard_memberships_<random>` on
// SWITCHBOARD_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres), made and
// dropped with psql. Without a `psql` binary the PostgreSQL tests are skipped (and say so).

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { closeAll } from "./fixture.js";
import { startProductNode, connectUser, token, ack, api, assertStatus, uid, safeJson, traces, eventually } from "./product-fixture.js";

const execFileP = promisify(execFile);
const T = { timeout: 60_000 };
const KEY = "memberships-api-key-0123456789abcdef";
const PG_SERVER = process.env.SWITCHBOARD_TEST_POSTGRES_URL || "postgres://postgres@127.0.0.1:5432/postgres";
/** How long to listen for a room:msg that must not come. */
const QUIET_MS = 500;

/** `url` with its database name replaced by `name` (query kept). */
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

async function psql(url, sql) {
  const { stdout } = await execFileP("psql", [url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-tA", "-c", sql], { timeout: 15_000 });
  return stdout.replace(/\n$/, "");
}

async function havePsql() {
  try {
    await execFileP("psql", ["--version"], { timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

const enc = encodeURIComponent;
const sorted = (xs) => [...xs].sort();

for (const backend of ["SQLite", "PostgreSQL"]) {
  describe(`durable room memberships (${backend})`, T, () => {
    let db = null; // {url, drop()}
    let node = null;
    let skip = null;
    const nodeId = `memberships-${backend.toLowerCase()}`;
    const start = () => startProductNode({ name: nodeId, nodeId, flags: ["--api-key", KEY, "--database-url", db.url] });

    before(async () => {
      if (backend === "PostgreSQL") {
        if (!(await havePsql())) {
          skip = "no psql binary: durable memberships are not tested on PostgreSQL (SQLite only)";
          return;
        }
        const name = `switchboard_memberships_${randomBytes(6).toString("hex")}`;
        await psql(PG_SERVER, `CREATE DATABASE ${name}`);
        db = { url: withDatabase(PG_SERVER, name), drop: () => psql(PG_SERVER, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
      } else {
        const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-memberships-"));
        db = { url: `sqlite://${path.join(dir, "memberships.db")}?mode=rwc`, drop: async () => rmSync(dir, { recursive: true, force: true }) };
      }
      node = await start();
    });
    after(async () => {
      closeAll();
      try {
        await node?.stop();
      } finally {
        await db?.drop();
      }
    });
    afterEach(() => closeAll());

    /** A test that is skipped, saying why, when its database is not available. */
    const it = (name, fn) =>
      test(name, async (t) => {
        if (skip) {
          t.skip(skip);
          return;
        }
        await fn(t);
      });

    const add = async (room, userId) => {
      const res = await api(node, "POST", `/api/v1/rooms/${enc(room)}/members`, { key: KEY, body: { userId } });
      assertStatus(res, 200, `add ${userId} to ${room}`);
      return res.json;
    };
    const remove = async (room, userId) => {
      const res = await api(node, "DELETE", `/api/v1/rooms/${enc(room)}/members/${enc(userId)}`, { key: KEY });
      assertStatus(res, 200, `remove ${userId} from ${room}`);
      return res.json;
    };
    /** GET members, with the arrays sorted. */
    const members = async (room) => {
      const res = await api(node, "GET", `/api/v1/rooms/${enc(room)}/members`, { key: KEY });
      assertStatus(res, 200, `members of ${room}`);
      const j = res.json;
      return { ...j, members: sorted(j.members ?? []), users: sorted(j.users ?? []) };
    };
    /** A socket of `user` whose token's `rooms` claim names `room` (a member by its token). */
    const speakerIn = (room, label = "speaker") => {
      const user = uid(label);
      return connectUser(node, user, { token: token(user, { rooms: [room] }), label: `${user}(claim)` });
    };
    /** `from` emits to `room`; every socket of `to` gets it, no socket of `notTo` does. */
    const assertEmitReaches = async (from, room, to, notTo = []) => {
      const data = `hello-${uid("m")}`;
      const res = await ack(from, "room:emit", { room, data });
      assert.deepEqual(res, { ok: true }, `room:emit ${safeJson(res)}\n${from.log.trace()}`);
      for (const s of to) {
        const [m] = await s.log.next("room:msg", { pred: (x) => x?.data === data });
        assert.deepEqual(m, { room, from: from.authInfo.userId, data }, s.log.label);
      }
      for (const s of notTo) await s.log.none("room:msg", QUIET_MS, { pred: (x) => x?.data === data, why: "not a member" });
    };

    it("a membership added while the user is offline applies when the user connects: room emits reach every socket, room:presence lists the user, members API shows members/users/sockets", async () => {
      const room = uid("room");
      const carol = uid("carol");
      const speaker = await speakerIn(room);

      assert.deepEqual(await add(room, carol), { ok: true, sockets: 0 }, "added while offline: no socket changed");
      assert.deepEqual(await members(room), { room, members: [carol], users: [speaker.authInfo.userId], sockets: 1 }, "durable member offline");

      const c1 = await connectUser(node, carol, { device: "phone" });
      const c2 = await connectUser(node, carol, { device: "laptop", transports: ["polling"] });
      await assertEmitReaches(speaker, room, [speaker, c1, c2]);

      const p = await ack(c1, "room:presence", { room });
      assert.equal(p?.ok, true, `room:presence ${safeJson(p)}\n${c1.log.trace()}`);
      assert.deepEqual(sorted(p.users), sorted([carol, speaker.authInfo.userId]), safeJson(p));
      assert.equal(p.sockets, 3, safeJson(p));
      assert.equal(p.room, room);

      // A member like any other: carol may emit to the room.
      await assertEmitReaches(c2, room, [speaker, c1, c2]);
      assert.deepEqual(await members(room), { room, members: [carol], users: sorted([carol, speaker.authInfo.userId]), sockets: 3 });
    });

    it("it survives the user's reconnect", async () => {
      const room = uid("room");
      const erin = uid("erin");
      const speaker = await speakerIn(room);
      const bystander = await connectUser(node, uid("bystander"));
      let e = await connectUser(node, erin);
      assert.deepEqual(await add(room, erin), { ok: true, sockets: 1 }, "added while online: the current socket joins");
      await assertEmitReaches(speaker, room, [e], [bystander]);

      for (let round = 1; round <= 2; round += 1) {
        e.disconnect();
        // The disconnect reaches presence asynchronously; the durable membership stays.
        const offline = await eventually(
          async () => {
            const m = await members(room);
            return m.users.includes(erin) ? false : m;
          },
          { timeout: 5_000, what: `round ${round}: ${erin} no longer online in ${room}` },
        );
        assert.deepEqual(offline.members, [erin], `round ${round}: still a durable member while offline`);
        e = await connectUser(node, erin, { label: `${erin}#${round + 1}` });
        await assertEmitReaches(speaker, room, [e], [bystander]);
      }
    });

    it("it survives a restart of the node on the same database", async () => {
      const room = uid("room");
      const frank = uid("frank");
      assert.deepEqual(await add(room, frank), { ok: true, sockets: 0 });
      closeAll();
      await node.stop();
      node = await start();

      assert.deepEqual((await members(room)).members, [frank], "stored across the restart");
      const speaker = await speakerIn(room);
      const f = await connectUser(node, frank);
      await assertEmitReaches(speaker, room, [speaker, f]);
      const p = await ack(f, "room:presence", { room });
      assert.deepEqual(sorted(p?.users ?? []), sorted([frank, speaker.authInfo.userId]), safeJson(p));
    });

    it("removed, it is gone for the current sockets at once and on the next connect", async () => {
      const room = uid("room");
      const gina = uid("gina");
      const speaker = await speakerIn(room);
      assert.deepEqual(await add(room, gina), { ok: true, sockets: 0 });
      let g = await connectUser(node, gina);
      await assertEmitReaches(speaker, room, [g]);

      assert.deepEqual(await remove(room, gina), { ok: true, sockets: 1 }, "the current socket leaves");
      await assertEmitReaches(speaker, room, [speaker], [g]);
      assert.deepEqual(await members(room), { room, members: [], users: [speaker.authInfo.userId], sockets: 1 });

      g.disconnect();
      g = await connectUser(node, gina, { label: `${gina}#2` });
      await assertEmitReaches(speaker, room, [speaker], [g]);
      const p = await ack(g, "room:presence", { room });
      assert.equal(p?.ok, false, safeJson(p));
      assert.equal(p.error?.code, "not_member", `room:presence after the removal ${safeJson(p)}\n${traces(g.log, speaker.log)}`);
      const e = await ack(g, "room:emit", { room, data: "still in?" });
      assert.equal(e?.error?.code, "not_member", safeJson(e));
      assert.deepEqual((await members(room)).members, []);
    });
  });
}
