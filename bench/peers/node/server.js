// The Node.js peer: socket.io@4 implementing the events the benchmarks drive, with the same
// semantics as Switchboard: HS256 JWT at CONNECT (`sub` = user, `rooms` claim), `signal` relayed
// to every socket of the recipient, `room:emit` fanned out to a room, `message:send` acked with an
// increasing id (in memory: the peer has no database). Cluster mode with @socket.io/redis-adapter
// when REDIS_URL is set. Usage: [PORT=3000] JWT_SECRET=s [REDIS_URL=redis://…] node server.js
// PORT defaults to 0 (an ephemeral port); once listening it prints one JSON line
// {"message":"listening","addr":"127.0.0.1:<actual port>"}, which bench/lib.sh polls for.
import { createServer } from "node:http";
import { createHmac, timingSafeEqual } from "node:crypto";
import { Server } from "socket.io";

const port = Number(process.env.PORT || 0);
/** The port actually bound (differs from `port` when that is 0). */
let boundPort = port;
const secret = process.env.JWT_SECRET || "bench-secret";

/** Verify an HS256 JWT; returns its claims or null. */
function verify(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
    claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  } catch {
    return null;
  }
  if (header.alg !== "HS256") return null;
  const expected = createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  if (typeof claims.exp !== "number" || claims.exp < Date.now() / 1000 - 30) return null;
  if (typeof claims.sub !== "string" || !claims.sub) return null;
  return claims;
}

const http = createServer();
const io = new Server(http, { cors: { origin: "*" }, maxHttpBufferSize: 1e6 });

if (process.env.REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

io.use((socket, next) => {
  const claims = verify(socket.handshake.auth?.token ?? socket.handshake.query?.token);
  if (!claims) {
    const err = new Error("auth_failed");
    err.data = { reason: "invalid_token" };
    return next(err);
  }
  socket.data.user = claims.sub;
  socket.data.rooms = Array.isArray(claims.rooms) ? claims.rooms.filter((r) => typeof r === "string") : [];
  next();
});

// socket.io's volatile emits drop a packet whenever the transport is busy writing, which is the
// peer's honest behaviour in benchmarks; PEER_VOLATILE=0 (bench/peers/smoke) makes its loss-free
// runs deterministic.
const volatile = process.env.PEER_VOLATILE !== "0";
/** The broadcast operator for `room`, volatile unless PEER_VOLATILE=0. */
const to = (room) => (volatile ? io.to(room).volatile : io.to(room));

let nextId = 0;
io.on("connection", (socket) => {
  const user = socket.data.user;
  socket.join(`user:${user}`);
  for (const room of socket.data.rooms) socket.join(`room:${room}`);
  socket.emit("authenticated", { socketId: socket.id, userId: user, deviceId: socket.id, serverInstance: `node-${boundPort}` });

  socket.on("signal", (payload, ack) => {
    if (!payload || typeof payload.to !== "string") return;
    to(`user:${payload.to}`).emit("signal", { from: user, data: payload.data });
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("room:emit", (payload, ack) => {
    if (!payload || typeof payload.room !== "string" || !socket.rooms.has(`room:${payload.room}`)) return;
    to(`room:${payload.room}`).emit("room:msg", { room: payload.room, from: user, data: payload.data });
    if (typeof ack === "function") ack({ ok: true });
  });
  socket.on("message:send", (payload, ack) => {
    if (!payload || typeof payload.to !== "string" || typeof payload.text !== "string") return;
    const message = { messageId: ++nextId, from: user, to: payload.to, text: payload.text, createdAt: Date.now() };
    if (typeof ack === "function") ack({ ok: true, messageId: message.messageId, createdAt: message.createdAt });
    io.to(`user:${payload.to}`).emit("message:received", message);
  });
});

http.listen(port, "127.0.0.1", () => {
  boundPort = http.address().port;
  console.log(JSON.stringify({ message: "listening", addr: `127.0.0.1:${boundPort}` }));
});
