// Product mode: JWT authentication at CONNECT (product-contract.md "Auth at CONNECT").

import { describe, test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll, newClient, sessionsBecome } from "./fixture.js";
import { hs256, rs256, es256, unsignedNone, signWith, claims, nowSecs, rsaKeyPair, ecKeyPair, verifyHs256 } from "./jwt.js";
import {
  SECRET,
  startProductNode,
  token,
  userSocket,
  connectAuthed,
  connectUser,
  expectConnectError,
  ack,
  demoTokenLine,
  uid,
  EventLog,
  safeJson,
} from "./product-fixture.js";

const T = { timeout: 20_000 };

/** Expect `auth_failed` with `reason`, and that nothing is left of the attempt. */
async function expectAuthFailed(socket, reason) {
  const err = await expectConnectError(socket);
  assert.equal(err.message, "auth_failed", `connect_error message: ${safeJson(err)}\n${socket.log.trace()}`);
  assert.deepEqual(err.data, { reason }, `connect_error data: ${safeJson(err)}`);
  assert.equal(socket.connected, false);
  return err;
}

function assertAuthenticated(socket, info, { userId, deviceId, nodeId }) {
  assert.equal(typeof socket.id, "string");
  assert.deepEqual(
    info,
    { socketId: socket.id, userId, deviceId: deviceId ?? socket.id, serverInstance: nodeId },
    `authenticated payload\n${socket.log.trace()}`,
  );
}

test("self-test: HS256 tokens minted here verify with the same secret only", () => {
  const t = token("x");
  assert.equal(verifyHs256(t, SECRET), true);
  assert.equal(verifyHs256(t, SECRET + "!"), false);
  assert.equal(t.split(".").length, 3);
});

describe("HS256 node", T, () => {
  let node;
  before(async () => {
    // Dozens of refused tokens from 127.0.0.1 in a minute are this block's point; the
    // per-address login budget has its own tests (limits.test.js).
    node = await startProductNode({ name: "auth-hs", nodeId: "auth-node-1", flags: ["--login-failures-per-ip", "0"] });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
    test(`auth.token over ${transports.join("+")} → authenticated {socketId, userId, deviceId, serverInstance}`, async () => {
      const user = uid("alice");
      const s = userSocket(node, user, { device: "d1", transports });
      const info = await connectAuthed(s);
      assertAuthenticated(s, info, { userId: user, deviceId: "d1", nodeId: "auth-node-1" });
    });
  }

  test("Authorization: Bearer header on the polling handshake → authenticated", async () => {
    const user = uid("hdr");
    const s = userSocket(node, user, {
      token: null,
      device: "hd",
      transports: ["polling"],
      extraHeaders: { Authorization: `Bearer ${token(user)}` },
    });
    const info = await connectAuthed(s);
    assertAuthenticated(s, info, { userId: user, deviceId: "hd", nodeId: "auth-node-1" });
  });

  test("Authorization: Bearer header on the websocket upgrade request (websocket only) → authenticated", async () => {
    const user = uid("hdrws");
    const s = userSocket(node, user, {
      token: null,
      transports: ["websocket"],
      extraHeaders: { Authorization: `Bearer ${token(user)}` },
    });
    const info = await connectAuthed(s);
    // no auth.deviceId and no X-Device-Id: the device id is the socket id
    assertAuthenticated(s, info, { userId: user, deviceId: undefined, nodeId: "auth-node-1" });
  });

  for (const transports of [["polling"], ["websocket"]]) {
    test(`?token= query on the handshake (${transports[0]}) → authenticated`, async () => {
      const user = uid("query");
      const s = userSocket(node, user, { token: null, transports, query: { token: token(user) } });
      const info = await connectAuthed(s);
      assertAuthenticated(s, info, { userId: user, deviceId: undefined, nodeId: "auth-node-1" });
    });
  }

  test("auth.token wins over ?token= and the Authorization header", async () => {
    const a = uid("first");
    const b = uid("second");
    const c = uid("third");
    const s = userSocket(node, a, {
      transports: ["polling"],
      query: { token: token(b) },
      extraHeaders: { Authorization: `Bearer ${token(c)}` },
    });
    const info = await connectAuthed(s);
    assert.equal(info.userId, a);
  });

  test("the Authorization header wins over ?token=", async () => {
    const b = uid("hdrwins");
    const c = uid("querylos");
    const s = userSocket(node, b, {
      token: null,
      transports: ["polling"],
      query: { token: token(c) },
      extraHeaders: { Authorization: `Bearer ${token(b)}` },
    });
    const info = await connectAuthed(s);
    assert.equal(info.userId, b);
  });

  test("device id: X-Device-Id header when auth.deviceId is absent; auth.deviceId wins over it", async () => {
    const user = uid("dev");
    const s1 = userSocket(node, user, { transports: ["polling"], extraHeaders: { "X-Device-Id": "hdr-device", "X-Platform": "ios" } });
    const i1 = await connectAuthed(s1);
    assertAuthenticated(s1, i1, { userId: user, deviceId: "hdr-device", nodeId: "auth-node-1" });
    const s2 = userSocket(node, user, { device: "auth-device", transports: ["polling"], extraHeaders: { "X-Device-Id": "hdr-device" } });
    const i2 = await connectAuthed(s2);
    assertAuthenticated(s2, i2, { userId: user, deviceId: "auth-device", nodeId: "auth-node-1" });
  });

  test("each socket of a user gets its own socketId in authenticated", async () => {
    const user = uid("multi");
    const a = await connectUser(node, user, { device: "a" });
    const b = await connectUser(node, user, { device: "b", transports: ["polling"] });
    assert.notEqual(a.authInfo.socketId, b.authInfo.socketId);
    assert.equal(a.authInfo.socketId, a.id);
    assert.equal(b.authInfo.socketId, b.id);
  });

  test("missing token → auth_failed missing_token (websocket, polling)", async () => {
    for (const transports of [["websocket"], ["polling"]]) {
      await expectAuthFailed(userSocket(node, "nobody", { token: null, transports }), "missing_token");
    }
  });

  test("auth payload without token (only deviceId) → missing_token", async () => {
    await expectAuthFailed(userSocket(node, "nobody", { token: null, device: "d" }), "missing_token");
  });

  test("expired token (exp 120 s ago, leeway 30 s) → expired", async () => {
    const t = hs256(claims({ sub: uid("old"), exp: nowSecs() - 120, iat: nowSecs() - 3600 }), SECRET);
    await expectAuthFailed(userSocket(node, "old", { token: t }), "expired");
  });

  test("exp 10 s ago is still inside the default 30 s leeway → authenticated", async () => {
    const user = uid("leeway");
    const t = hs256(claims({ sub: user, exp: nowSecs() - 10 }), SECRET);
    const s = userSocket(node, user, { token: t });
    const info = await connectAuthed(s);
    assert.equal(info.userId, user);
  });

  test("nbf 120 s in the future → not_yet_valid", async () => {
    const t = hs256(claims({ sub: uid("early"), nbf: nowSecs() + 120 }), SECRET);
    await expectAuthFailed(userSocket(node, "early", { token: t }), "not_yet_valid");
  });

  test("nbf 10 s in the future is inside the leeway → authenticated; nbf in the past → authenticated", async () => {
    for (const nbf of [nowSecs() + 10, nowSecs() - 100]) {
      const user = uid("nbf");
      const s = userSocket(node, user, { token: hs256(claims({ sub: user, nbf }), SECRET) });
      const info = await connectAuthed(s);
      assert.equal(info.userId, user);
    }
  });

  test("signed with another secret → invalid_signature", async () => {
    const t = hs256(claims({ sub: uid("forged") }), SECRET + "-wrong");
    await expectAuthFailed(userSocket(node, "forged", { token: t }), "invalid_signature");
  });

  test("payload changed after signing (sub swapped) → invalid_signature", async () => {
    const good = token(uid("victim"));
    const [h, , sig] = good.split(".");
    const forgedPayload = Buffer.from(JSON.stringify(claims({ sub: "admin" }))).toString("base64url");
    await expectAuthFailed(userSocket(node, "x", { token: `${h}.${forgedPayload}.${sig}` }), "invalid_signature");
  });

  test("invalid signature via the Authorization header and via ?token= is still a CONNECT error (auth_failed)", async () => {
    const bad = hs256(claims({ sub: "x" }), "nope");
    await expectAuthFailed(
      userSocket(node, "x", { token: null, transports: ["polling"], extraHeaders: { Authorization: `Bearer ${bad}` } }),
      "invalid_signature",
    );
    await expectAuthFailed(userSocket(node, "x", { token: null, transports: ["polling"], query: { token: bad } }), "invalid_signature");
    await expectAuthFailed(userSocket(node, "x", { token: null, transports: ["websocket"], query: { token: bad } }), "invalid_signature");
  });

  test('alg "none" (hand-crafted, empty signature) → invalid_algorithm', async () => {
    const t = unsignedNone(claims({ sub: "root" }));
    await expectAuthFailed(userSocket(node, "root", { token: t }), "invalid_algorithm");
  });

  test('alg "none" with a valid HS256 signature appended → invalid_algorithm', async () => {
    // header says none, signature is a real HMAC over header.payload: still not the configured alg
    const t = hs256(claims({ sub: "root" }), SECRET, { alg: "none" });
    await expectAuthFailed(userSocket(node, "root", { token: t }), "invalid_algorithm");
  });

  test("HS512 signed with the right secret → invalid_algorithm (only HS256 is configured)", async () => {
    const t = signWith("HS512", claims({ sub: uid("hs512") }), SECRET);
    await expectAuthFailed(userSocket(node, "x", { token: t }), "invalid_algorithm");
  });

  test("malformed tokens → malformed", async () => {
    const validHeader = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url");
    for (const t of ["abc", "not.a.jwt", "a.b", `${validHeader}.!!!.xyz`]) {
      await expectAuthFailed(userSocket(node, "x", { token: t }), "malformed");
    }
  });

  test("exp missing → missing_claim; sub missing → missing_claim", async () => {
    await expectAuthFailed(userSocket(node, "x", { token: hs256(claims({ sub: "noexp", exp: undefined }), SECRET) }), "missing_claim");
    await expectAuthFailed(userSocket(node, "x", { token: hs256(claims({ sub: undefined }), SECRET) }), "missing_claim");
  });

  test("a subject that is not a valid user id → invalid_subject: checked, never cleaned (bob\\u0007 is not bob)", async () => {
    const bob = uid("bob");
    const b = await connectUser(node, bob, { label: "bob" });
    for (const sub of [`${bob}\u0007`, `${bob}\u0000`, `\u001b[31m${bob}`, "x".repeat(256)]) {
      await expectAuthFailed(userSocket(node, "x", { token: token(sub) }), "invalid_subject");
    }
    // Nothing of bob's reached an impostor, and bob is still himself.
    await b.log.none("message:received", 200);
    const alice = await connectUser(node, uid("alice"));
    for (const to of [`${bob}\u0007`, "", "x".repeat(256)]) {
      const res = await ack(alice, "message:send", { to, text: "hi" });
      assert.equal(res?.error?.code, "invalid_payload", `message:send to ${safeJson(to)}: ${safeJson(res)}`);
    }
    await b.log.none("message:received", 200, { why: "a control character does not make another user bob" });
    assert.equal(alice.connected, true);
  });

  test("rooms claim with a control character → malformed", async () => {
    await expectAuthFailed(userSocket(node, "x", { token: token(uid("r"), { rooms: ["ok", "bad\u0007"] }) }), "malformed");
  });

  test("a deviceId with control characters, over 255 bytes or not a string → invalid_device_id; an empty one stands for none", async () => {
    for (const deviceId of ["ph\u0000one", "x".repeat(256), 42]) {
      const s = userSocket(node, uid("d"), { auth: { deviceId } });
      await expectAuthFailed(s, "invalid_device_id");
    }
    const u = uid("d");
    const s = userSocket(node, u, { auth: { deviceId: "" } });
    const info = await connectAuthed(s);
    assert.equal(info.deviceId, s.id, "the socket id stands in for an empty device id");
  });

  test("device binding: a token with `did` connects only as that device (device_mismatch otherwise); tokens without it as any", async () => {
    const u = uid("bound");
    const bound = token(u, { did: "phone-1" });
    const ok = userSocket(node, u, { token: bound, device: "phone-1" });
    assert.equal((await connectAuthed(ok)).deviceId, "phone-1");
    await expectAuthFailed(userSocket(node, u, { token: bound, device: "laptop" }), "device_mismatch");
    await expectAuthFailed(userSocket(node, u, { token: bound }), "device_mismatch");
    await expectAuthFailed(userSocket(node, u, { token: token(u, { did: 7 }), device: "7" }), "malformed");
    const free = userSocket(node, u, { device: "laptop" });
    assert.equal((await connectAuthed(free)).deviceId, "laptop");
  });

  test("a 300 KB token → token_too_large (contract names the reason but not the limit)", async () => {
    const t = hs256(claims({ sub: uid("big"), pad: "x".repeat(300_000) }), SECRET);
    await expectAuthFailed(userSocket(node, "x", { token: t }), "token_too_large");
  });

  test("a failed CONNECT leaves no presence (the user stays offline) and no session behind", async () => {
    const ghost = uid("ghost");
    const watcher = await connectUser(node, uid("watcher"));
    const sub = await ack(watcher, "presence:subscribe", { userIds: [ghost] });
    assert.deepEqual(sub, { ok: true, statuses: { [ghost]: "offline" } });
    const expired = hs256(claims({ sub: ghost, exp: nowSecs() - 600 }), SECRET);
    await expectAuthFailed(userSocket(node, ghost, { token: expired }), "expired");
    const forged = hs256(claims({ sub: ghost }), "wrong");
    await expectAuthFailed(userSocket(node, ghost, { token: forged, transports: ["polling"] }), "invalid_signature");
    await watcher.log.none("friend:online", 500);
    const q = await ack(watcher, "presence:query", { userIds: [ghost] });
    assert.deepEqual(q, { ok: true, statuses: { [ghost]: "offline" } });
    watcher.disconnect();
    await sessionsBecome(node.url, 0);
  });

  test('namespace other than "/" → Invalid namespace even with a valid token', async () => {
    const s = newClient(node.url, "/custom", { transports: ["websocket"], auth: { token: token("x") } });
    s.log = new EventLog(s, "custom");
    const err = await expectConnectError(s);
    assert.equal(err.message, "Invalid namespace");
  });
});

describe("issuer / audience node", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({
      name: "auth-iss",
      nodeId: "auth-node-iss",
      flags: ["--jwt-issuer", "https://issuer.example", "--jwt-audience", "switchboard-app"],
    });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  const mk = (extra) => hs256(claims({ sub: uid("ia"), iss: "https://issuer.example", aud: "switchboard-app", ...extra }), SECRET);

  test("right iss and aud → authenticated", async () => {
    const t = hs256(claims({ sub: "iss-ok", iss: "https://issuer.example", aud: "switchboard-app" }), SECRET);
    const s = userSocket(node, "iss-ok", { token: t });
    const info = await connectAuthed(s);
    assert.equal(info.userId, "iss-ok");
    assert.equal(info.serverInstance, "auth-node-iss");
  });

  test("aud as an array containing the audience → authenticated (RFC 7519 4.1.3)", async () => {
    const s = userSocket(node, "x", { token: mk({ aud: ["other", "switchboard-app"] }) });
    await connectAuthed(s);
  });

  test("wrong issuer → invalid_issuer", async () => {
    await expectAuthFailed(userSocket(node, "x", { token: mk({ iss: "https://evil.example" }) }), "invalid_issuer");
  });

  test("wrong audience → invalid_audience", async () => {
    await expectAuthFailed(userSocket(node, "x", { token: mk({ aud: "someone-else" }) }), "invalid_audience");
  });
});

describe("RS256 node (--jwt-public-key-file, RSA key)", T, () => {
  let node;
  let keys;
  before(async () => {
    keys = rsaKeyPair();
    node = await startProductNode({
      name: "auth-rs",
      nodeId: "auth-node-rs",
      secret: null,
      flags: ["--jwt-public-key-file", keys.publicKeyFile],
    });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("valid RS256 token → authenticated", async () => {
    const user = uid("rsa");
    const s = userSocket(node, user, { token: rs256(claims({ sub: user }), keys.privateKey), device: "r" });
    const info = await connectAuthed(s);
    assertAuthenticated(s, info, { userId: user, deviceId: "r", nodeId: "auth-node-rs" });
  });

  test("HS256 signed with the public key PEM as the HMAC secret → invalid_algorithm (key confusion)", async () => {
    const t = hs256(claims({ sub: "confused" }), keys.publicPem);
    await expectAuthFailed(userSocket(node, "x", { token: t }), "invalid_algorithm");
  });

  test("HS256 signed with the test secret → invalid_algorithm", async () => {
    await expectAuthFailed(userSocket(node, "x", { token: token("x") }), "invalid_algorithm");
  });

  test("RS256 signed by another RSA key → invalid_signature", async () => {
    const other = rsaKeyPair();
    await expectAuthFailed(userSocket(node, "x", { token: rs256(claims({ sub: "x" }), other.privateKey) }), "invalid_signature");
  });

  test("expired RS256 token → expired", async () => {
    const t = rs256(claims({ sub: "x", exp: nowSecs() - 300 }), keys.privateKey);
    await expectAuthFailed(userSocket(node, "x", { token: t }), "expired");
  });
});

describe("ES256 node (--jwt-public-key-file, EC P-256 key)", T, () => {
  let node;
  let keys;
  before(async () => {
    keys = ecKeyPair();
    node = await startProductNode({
      name: "auth-es",
      nodeId: "auth-node-es",
      secret: null,
      flags: ["--jwt-public-key-file", keys.publicKeyFile],
    });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  test("valid ES256 token → authenticated", async () => {
    const user = uid("ec");
    const s = userSocket(node, user, { token: es256(claims({ sub: user }), keys.privateKey), transports: ["polling"] });
    const info = await connectAuthed(s);
    assertAuthenticated(s, info, { userId: user, deviceId: undefined, nodeId: "auth-node-es" });
  });

  test("ES256 signed by another P-256 key → invalid_signature", async () => {
    const other = ecKeyPair();
    await expectAuthFailed(userSocket(node, "x", { token: es256(claims({ sub: "x" }), other.privateKey) }), "invalid_signature");
  });

  test("RS256 token on an ES256 node → invalid_algorithm", async () => {
    const rsa = rsaKeyPair();
    await expectAuthFailed(userSocket(node, "x", { token: rs256(claims({ sub: "x" }), rsa.privateKey) }), "invalid_algorithm");
  });

  test("HS256 signed with the EC public key PEM → invalid_algorithm", async () => {
    await expectAuthFailed(userSocket(node, "x", { token: hs256(claims({ sub: "x" }), keys.publicPem) }), "invalid_algorithm");
  });
});

describe("node without --jwt-secret", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "auth-demo", nodeId: "auth-node-demo", secret: null });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  test('logs {"message":"demo token","userId":"demo","token":…} and that token authenticates as "demo"', async () => {
    const line = await demoTokenLine(node);
    assert.equal(line.userId, "demo");
    assert.equal(typeof line.token, "string");
    const s = userSocket(node, "demo", { token: line.token });
    const info = await connectAuthed(s);
    assertAuthenticated(s, info, { userId: "demo", deviceId: undefined, nodeId: "auth-node-demo" });
  });

  test("the random secret is not our test secret", async () => {
    await expectAuthFailed(userSocket(node, "x", { token: token("x") }), "invalid_signature");
  });
});

describe("token expiry while connected (--jwt-leeway-secs 0)", T, () => {
  let node;
  before(async () => {
    node = await startProductNode({ name: "auth-exp", nodeId: "auth-node-exp", flags: ["--jwt-leeway-secs", "0"] });
  });
  after(async () => {
    closeAll();
    await node?.stop();
  });
  afterEach(() => closeAll());

  for (const transports of [["websocket"], ["polling"]]) {
    test(`exp in 2 s → error {code:"token_expired"} then disconnect "io server disconnect" (${transports[0]})`, async () => {
      const user = uid("short");
      const exp = nowSecs() + 2;
      const s = userSocket(node, user, { token: hs256(claims({ sub: user, exp }), SECRET), transports });
      await connectAuthed(s);
      const [err] = await s.log.next("error", { timeout: 6_000 });
      assert.equal(err?.code, "token_expired", `error payload ${safeJson(err)}`);
      assert.equal(typeof err.message, "string");
      assert.ok(Date.now() >= exp * 1000 - 50, `token_expired came ${exp * 1000 - Date.now()} ms before exp`);
      const [reason] = await s.log.next("disconnect", { timeout: 3_000 });
      assert.equal(reason, "io server disconnect", s.log.trace());
      await sessionsBecome(node.url, 0);
    });
  }

  test("leeway 0: exp 2 s ago is refused with expired", async () => {
    const t = hs256(claims({ sub: "x", exp: nowSecs() - 2 }), SECRET);
    await expectAuthFailed(userSocket(node, "x", { token: t }), "expired");
  });

  test("a token valid for an hour is not disconnected within 3 s", async () => {
    const s = await connectUser(node, uid("long"));
    await s.log.none("error", 3_000);
    await s.log.none("disconnect", 0);
    assert.equal(s.connected, true);
  });
});
