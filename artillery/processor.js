'use strict';
// Switchboard processor for Artillery 2's built-in Socket.IO engine (`engine: socketio`, which
// bundles socket.io-client 4.x and so speaks Socket.IO v5 / Engine.IO v4).
//
// Why there is also a plugin (plugin/index.js re-exports this file as artillery-plugin-switchboard):
// the socketio engine opens the VU's socket *before* the first flow step and does not run
// `beforeScenario` hooks, so no processor function can set a per-VU token in time. What it does is
// pass `config.socketio` (templated with the VU's vars) to `io(target, options)`. The plugin,
// constructed inside each Artillery worker, sets `config.socketio.auth` to a function; socket.io-client
// calls it (with `this` = the socket) when it sends its CONNECT, and it mints a fresh HS256 JWT
// (node:crypto, secret from $JWT_SECRET) for a fresh user id. The flow's first step, `identify`,
// copies that user id into the VU's vars and waits for the server's `authenticated` event
// (failing the VU when it does not come).
//
// Custom metrics (all in ms unless a counter):
//   sb.connect_ms          CONNECT sent -> `authenticated` received
//   sb.authenticated / sb.authenticated_missing   counters
//   sb.ack_ms              ack round trip of every acked emit made by these functions
//   sb.ack_failed          counter: acks that timed out or came back without ok:true
//   flood.ack_ms / flood.delivery_ms / flood.sent / flood.acked / flood.delivered / flood.lost
//   slow.normal_ack_ms     ack round trip measured by the "normal" VUs of slow-clients.yml
//   slow.stalled / slow.stalled_dropped (counters)

const crypto = require('node:crypto');
const { io } = require('socket.io-client');

const WORKER_TAG = crypto.randomBytes(3).toString('hex');
let seq = 0;
let warnedSecret = false;

function env(name, fallback) {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : v;
}

function num(v, fallback) {
  const n = Number(v);
  return Number.isFinite(n) ? n : fallback;
}

function jwtSecret() {
  const s = env('JWT_SECRET', env('SWITCHBOARD_JWT_SECRET', ''));
  if (!s && !warnedSecret) {
    warnedSecret = true;
    console.error('switchboard processor: JWT_SECRET is not set; every connect will fail with auth_failed');
  }
  return s;
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

// mintToken(sub, extraClaims): HS256 JWT with sub, iat, exp (now + $JWT_TTL_SECS, default 3600).
function mintToken(sub, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url({ alg: 'HS256', typ: 'JWT' });
  const payload = b64url({ sub, iat: now, exp: now + num(env('JWT_TTL_SECS'), 3600), ...extra });
  const sig = crypto.createHmac('sha256', jwtSecret()).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

function newUserId(prefix) {
  seq += 1;
  return `${prefix}-${WORKER_TAG}-${seq}`;
}

// Socket.IO options every socket opened here uses (the engine's own socket gets its options from
// config.socketio in the YAML).
function socketOptions(auth) {
  return { transports: ['websocket'], reconnection: false, forceNew: true, timeout: 20000, auth };
}

// Hook `authenticated` on a socket before it connects; records sb.connect_ms through `events`
// once a processor step has handed them over (the auth callback has no access to them).
function watchAuthenticated(socket) {
  socket.sbConnectStart = Date.now();
  socket.once('authenticated', (payload) => {
    socket.sbAuthenticated = payload;
    socket.sbAuthMs = Date.now() - socket.sbConnectStart;
  });
}

function waitFor(pred, timeoutMs) {
  return new Promise((resolve) => {
    if (pred()) return resolve(true);
    const started = Date.now();
    const t = setInterval(() => {
      if (pred()) {
        clearInterval(t);
        resolve(true);
      } else if (Date.now() - started >= timeoutMs) {
        clearInterval(t);
        resolve(false);
      }
    }, 10);
  });
}

// --------------------------------------------------------------------------------------------
// Plugin (config.plugins.switchboard: {userPrefix, rooms}); acts only inside Artillery workers.
class Plugin {
  constructor(script) {
    if (process.env.LOCAL_WORKER_ID === undefined) return; // main thread: nothing to do
    const cfg = (script.config.plugins && script.config.plugins.switchboard) || {};
    const prefix = cfg.userPrefix || 'lt';
    const rooms = Array.isArray(cfg.rooms) ? cfg.rooms : undefined;
    script.config.socketio = Object.assign({}, script.config.socketio);
    script.config.socketio.auth = function auth(cb) {
      // `this` is the socket.io-client Socket; one call per CONNECT (reconnection is off).
      const userId = newUserId(prefix);
      this.sbUserId = userId;
      watchAuthenticated(this);
      cb({ token: mintToken(userId, rooms ? { rooms } : {}) });
    };
  }
}

// --------------------------------------------------------------------------------------------
// Flow steps

function engineSocket(context) {
  return context.sockets && context.sockets[''];
}

// identify: vars.userId = this VU's user id; waits (≤ $AUTH_WAIT_MS, default 5000) for
// `authenticated`, else the VU fails with error `authenticated_missing`.
function identify(context, events, done) {
  const socket = engineSocket(context);
  if (!socket || !socket.sbUserId) {
    events.emit('error', 'switchboard_plugin_missing');
    return done(new Error('the switchboard plugin did not set the socket auth (config.plugins.switchboard)'));
  }
  context.vars.userId = socket.sbUserId;
  events.emit('counter', 'sb.authenticated_missing', 0);
  waitFor(() => socket.sbAuthenticated, num(env('AUTH_WAIT_MS'), 5000)).then((ok) => {
    if (!ok) {
      events.emit('counter', 'sb.authenticated_missing', 1);
      events.emit('error', 'authenticated_missing');
      return done(new Error('no authenticated event'));
    }
    events.emit('counter', 'sb.authenticated', 1);
    events.emit('histogram', 'sb.connect_ms', socket.sbAuthMs);
    if (socket.sbAuthenticated.userId !== socket.sbUserId) {
      events.emit('error', 'authenticated_wrong_user');
      return done(new Error('authenticated for another user'));
    }
    return done();
  });
}

// emitAck(socket, events, event, payload, metric): emit with an ack (timeout $ACK_TIMEOUT_MS,
// default 10000); records `metric` and sb.ack_ms; resolves to the ack or null on failure.
async function emitAck(socket, events, event, payload, metric) {
  const started = process.hrtime.bigint();
  events.emit('counter', 'sb.ack_failed', 0);
  try {
    const ack = await socket.timeout(num(env('ACK_TIMEOUT_MS'), 10000)).emitWithAck(event, payload);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (!ack || ack.ok !== true) {
      events.emit('counter', 'sb.ack_failed', 1);
      events.emit('error', `ack_not_ok_${event}${ack && ack.error ? `_${ack.error}` : ''}`);
      return null;
    }
    events.emit('histogram', 'sb.ack_ms', ms);
    if (metric) events.emit('histogram', metric, ms);
    return ack;
  } catch (_err) {
    events.emit('counter', 'sb.ack_failed', 1);
    events.emit('error', `ack_timeout_${event}`);
    return null;
  }
}

// presencePing: presence:query for the VU's own id, acked (a cheap "ping" through the server).
function presencePing(context, events, done) {
  const socket = engineSocket(context);
  emitAck(socket, events, 'presence:query', { userIds: [context.vars.userId] }, context.vars.ackMetric).then(() =>
    done()
  );
}

// normalPing: presencePing whose latency goes to slow.normal_ack_ms (the "normal" VUs of
// slow-clients.yml).
function normalPing(context, events, done) {
  const socket = engineSocket(context);
  emitAck(socket, events, 'presence:query', { userIds: [context.vars.userId] }, 'slow.normal_ack_ms').then(() =>
    done()
  );
}

// signalSelf: `signal` to the VU's own user id; waits for it to come back (relay round trip).
function signalSelf(context, events, done) {
  const socket = engineSocket(context);
  const token = crypto.randomBytes(6).toString('hex');
  const started = process.hrtime.bigint();
  events.emit('counter', 'sb.signal_lost', 0);
  let finished = false;
  const onSignal = (msg) => {
    if (!msg || !msg.data || msg.data.t !== token || finished) return;
    finished = true;
    socket.off('signal', onSignal);
    events.emit('histogram', 'sb.signal_rtt_ms', Number(process.hrtime.bigint() - started) / 1e6);
    done();
  };
  socket.on('signal', onSignal);
  socket.emit('signal', { to: context.vars.userId, data: { t: token } });
  setTimeout(() => {
    if (finished) return;
    finished = true;
    socket.off('signal', onSignal);
    events.emit('counter', 'sb.signal_lost', 1);
    events.emit('error', 'signal_lost');
    done();
  }, num(env('ACK_TIMEOUT_MS'), 10000));
}

// receiverTarget(senderTarget): with $SB_TARGETS (comma-separated node URLs of one cluster) the
// receiving socket goes to another node than the sender's, so deliveries cross the cluster bus.
let rxTurn = 0;
function receiverTarget(senderTarget) {
  const targets = env('SB_TARGETS', '')
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  const others = targets.filter((t) => t.replace(/\/+$/, '') !== String(senderTarget).replace(/\/+$/, ''));
  if (others.length === 0) return senderTarget;
  rxTurn += 1;
  return others[rxTurn % others.length];
}

// floodPair: this VU opens a second, receiving socket as user `<userId>-rx` and sends
// vars.messagesPerVu `message:send` to it (at most vars.inFlight unacked at once), then waits
// (≤ 10 s) until every acked message has arrived as `message:received`.
async function floodPairAsync(context, events) {
  const sender = engineSocket(context);
  const count = num(context.vars.messagesPerVu, 100);
  const window = Math.max(1, num(context.vars.inFlight, 10));
  const rxUser = `${context.vars.userId}-rx`;
  for (const c of ['flood.sent', 'flood.acked', 'flood.ack_failed', 'flood.delivered', 'flood.lost']) {
    events.emit('counter', c, 0);
  }

  const rx = io(receiverTarget(context.vars.target), socketOptions({ token: mintToken(rxUser) }));
  watchAuthenticated(rx);
  const received = new Map(); // seq -> delivery ms
  const sentAt = new Map();
  rx.on('message:received', (m) => {
    if (!m || typeof m.text !== 'string') return;
    const s = Number(m.text.split(':')[0]);
    if (!sentAt.has(s) || received.has(s)) return;
    const ms = Number(process.hrtime.bigint() - sentAt.get(s)) / 1e6;
    received.set(s, ms);
    events.emit('histogram', 'flood.delivery_ms', ms);
  });
  const rxReady = await waitFor(() => rx.sbAuthenticated, num(env('AUTH_WAIT_MS'), 5000));
  if (!rxReady) {
    rx.close();
    events.emit('error', 'flood_receiver_not_authenticated');
    throw new Error('receiver did not authenticate');
  }

  const acked = new Set();
  let next = 0;
  const text = 'x'.repeat(Math.max(0, num(context.vars.textBytes, 64) - 16));
  async function worker() {
    while (next < count) {
      const s = next++;
      sentAt.set(s, process.hrtime.bigint());
      events.emit('counter', 'flood.sent', 1);
      const ack = await emitAck(sender, events, 'message:send', { to: rxUser, text: `${s}:${text}` }, 'flood.ack_ms');
      if (ack) {
        acked.add(s);
        events.emit('counter', 'flood.acked', 1);
      } else {
        events.emit('counter', 'flood.ack_failed', 1);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(window, count) }, worker));
  await waitFor(() => [...acked].every((s) => received.has(s)), num(env('DELIVERY_WAIT_MS'), 10000));
  let delivered = 0;
  for (const s of acked) if (received.has(s)) delivered += 1;
  events.emit('counter', 'flood.delivered', delivered);
  events.emit('counter', 'flood.lost', acked.size - delivered);
  if (acked.size - delivered > 0) events.emit('error', 'flood_message_lost');
  rx.close();
}

function floodPair(context, events, done) {
  floodPairAsync(context, events).then(
    () => done(),
    (err) => done(err)
  );
}

// slowStall: stop reading from the TCP socket for vars.stallSecs (default 20) while the room keeps
// sending, then resume. The server may drop the socket as `slow_client` (--max-buffered-frames):
// counted as slow.stalled_dropped, which is expected behaviour, not an error.
function slowStall(context, events, done) {
  const socket = engineSocket(context);
  const ws = socket && socket.io && socket.io.engine && socket.io.engine.transport && socket.io.engine.transport.ws;
  const raw = ws && ws._socket;
  events.emit('counter', 'slow.stalled', 1);
  events.emit('counter', 'slow.stalled_dropped', 0);
  let dropped = false;
  socket.once('disconnect', () => {
    dropped = true;
  });
  if (raw && typeof raw.pause === 'function') raw.pause();
  setTimeout(() => {
    if (raw && typeof raw.resume === 'function' && !raw.destroyed) raw.resume();
    setTimeout(() => {
      if (dropped || socket.disconnected) events.emit('counter', 'slow.stalled_dropped', 1);
      done();
    }, 1000);
  }, num(context.vars.stallSecs, 20) * 1000);
}

// roomChatter: vars.roomMessages `room:emit` to vars.room, one every vars.roomIntervalMs
// (room:emit has no ack; the room's other members, stalled readers included, get room:msg).
function roomChatter(context, events, done) {
  const socket = engineSocket(context);
  const n = num(context.vars.roomMessages, 10);
  const every = num(context.vars.roomIntervalMs, 500);
  let i = 0;
  const payload = { room: context.vars.room, data: { from: context.vars.userId, pad: 'y'.repeat(num(context.vars.roomPadBytes, 1024)) } };
  const t = setInterval(() => {
    if (socket.disconnected || i >= n) {
      clearInterval(t);
      return done();
    }
    i += 1;
    socket.emit('room:emit', payload);
    events.emit('counter', 'slow.room_emits', 1);
  }, every);
}

module.exports = {
  Plugin,
  mintToken,
  identify,
  presencePing,
  normalPing,
  signalSelf,
  floodPair,
  slowStall,
  roomChatter
};
