//! The cluster presence store: the reference design's keys in Redis, each transition one Lua
//! script so that "first socket → online" and "last socket → offline" are exact across nodes.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::join_all;
use redis::Script;

use super::store::{PresenceStore, SweepResult, Transitions};
use crate::ids::{NodeId, Room, SocketId, UserId};
use crate::keys::Keys;
use crate::metrics::redis_command;
use crate::ports::presence::{OnlinePage, SocketPresence, Status};
use crate::store::{RedisPool, RedisSettings, StoreError, StoreFuture, cmd, now_ms};

/// `socket:{id}:user` lives this long unless refreshed (the reconcile refreshes it).
pub const SOCKET_TTL_SECS: u64 = 3600;
/// `user:{id}:status` lives this long unless refreshed.
pub const STATUS_TTL_SECS: u64 = 300;
/// `node:{id}:alive` (and `node:{id}:addr`) live this long; a node that stops refreshing it is
/// swept.
pub const NODE_ALIVE_TTL_SECS: u64 = 10;

struct Scripts {
    connect: Script,
    disconnect: Script,
    status: Script,
}

/// Presence in Redis (see the module docs).
#[derive(Clone)]
pub struct RedisPresenceStore {
    pool: RedisPool,
    keys: Keys,
    node_id: NodeId,
    /// This node's internal base URL, published in `node:{id}:addr` (None: not published).
    advertise: Option<Arc<str>>,
    scripts: Arc<Scripts>,
}

impl RedisPresenceStore {
    /// A store for `node_id` on `pool`.
    pub fn new(pool: RedisPool, settings: &RedisSettings, node_id: NodeId) -> Self {
        RedisPresenceStore {
            pool,
            keys: settings.keys.clone(),
            node_id,
            advertise: None,
            scripts: Arc::new(Scripts {
                connect: Script::new(include_str!("connect.lua")),
                disconnect: Script::new(include_str!("disconnect.lua")),
                status: Script::new(include_str!("status.lua")),
            }),
        }
    }

    /// Publish `url` as this node's address (`node:{id}:addr`, refreshed with the liveness key),
    /// so other nodes can forward requests for its sessions to it.
    pub fn advertising(mut self, url: Option<String>) -> Self {
        self.advertise = url.map(Arc::from);
        self
    }

    /// Add a socket (refused, `None`, when its user already has `max_sockets`; 0: no limit);
    /// `Some(true)` when it is the user's first.
    async fn run_connect(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        s: &SocketPresence,
        max_sockets: usize,
    ) -> Result<Option<bool>, StoreError> {
        let keys = self.keys.transition(&s.user, &s.socket, &self.node_id);
        redis_command("EVALSHA");
        let first: i64 = self
            .scripts
            .connect
            .key(&keys[..])
            .arg(s.user.as_str())
            .arg(s.socket.as_str())
            .arg(&s.device)
            .arg(self.node_id.as_str())
            .arg(now_ms())
            .arg(SOCKET_TTL_SECS)
            .arg(STATUS_TTL_SECS)
            .arg(max_sockets)
            .invoke_async(conn)
            .await?;
        if first < 0 {
            return Ok(None);
        }
        self.join_rooms(conn, &s.user, &s.socket, &s.rooms).await?;
        Ok(Some(first == 1))
    }

    /// Put a socket in rooms: `room:{r}:sockets` maps it to its user, `socket:{s}:rooms`
    /// remembers the rooms (and expires with the socket's hash unless refreshed).
    async fn join_rooms(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        user: &UserId,
        socket: &SocketId,
        rooms: &[Room],
    ) -> Result<(), StoreError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mine = self.keys.socket_rooms(socket);
        for room in rooms {
            redis_command("HSET");
            pipe.cmd("HSET")
                .arg(self.keys.room_sockets(room))
                .arg(socket.as_str())
                .arg(user.as_str())
                .ignore();
            redis_command("SADD");
            pipe.cmd("SADD").arg(&mine).arg(room.as_str()).ignore();
        }
        redis_command("EXPIRE");
        pipe.cmd("EXPIRE").arg(&mine).arg(SOCKET_TTL_SECS).ignore();
        pipe.query_async::<()>(conn).await?;
        Ok(())
    }

    /// Take a socket out of `rooms` (all of its rooms when `None`).
    async fn leave_rooms(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        socket: &SocketId,
        rooms: Option<&[Room]>,
    ) -> Result<(), StoreError> {
        let mine = self.keys.socket_rooms(socket);
        let all: Vec<String>;
        let rooms: Vec<&str> = match rooms {
            Some(rooms) => rooms.iter().map(|r| r.as_str()).collect(),
            None => {
                all = cmd("SMEMBERS").arg(&mine).query_async(conn).await?;
                all.iter().map(String::as_str).collect()
            }
        };
        if rooms.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for room in &rooms {
            redis_command("HDEL");
            pipe.cmd("HDEL")
                .arg(self.keys.room_sockets(room))
                .arg(socket.as_str())
                .ignore();
            redis_command("SREM");
            pipe.cmd("SREM").arg(&mine).arg(*room).ignore();
        }
        pipe.query_async::<()>(conn).await?;
        Ok(())
    }

    async fn run_disconnect(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        user: &UserId,
        socket: &SocketId,
        node: &NodeId,
    ) -> Result<bool, StoreError> {
        let keys = self.keys.transition(user, socket, node);
        redis_command("EVALSHA");
        let last: i64 = self
            .scripts
            .disconnect
            .key(&keys[..])
            .arg(user.as_str())
            .arg(socket.as_str())
            .arg(node.as_str())
            .invoke_async(conn)
            .await?;
        if last < 0 {
            return Ok(false);
        }
        self.leave_rooms(conn, socket, None).await?;
        Ok(last == 1)
    }

    /// Remove every socket a node registered; answers who went offline.
    async fn sweep_node(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        node: &NodeId,
    ) -> Result<Vec<UserId>, StoreError> {
        let node_sockets = self.keys.node_sockets(node);
        let sockets: Vec<String> = cmd("SMEMBERS").arg(&node_sockets).query_async(conn).await?;
        let mut offline = Vec::new();
        for socket in sockets {
            let user: Option<String> = cmd("HGET")
                .arg(self.keys.socket_user(&socket))
                .arg("userId")
                .query_async(conn)
                .await?;
            match user {
                Some(user) => {
                    let user = UserId::from(user);
                    if self
                        .run_disconnect(conn, &user, &SocketId::from(socket), node)
                        .await?
                    {
                        offline.push(user);
                    }
                }
                None => {
                    let _: i64 = cmd("SREM")
                        .arg(&node_sockets)
                        .arg(&socket)
                        .query_async(conn)
                        .await?;
                }
            }
        }
        let _: i64 = cmd("DEL").arg(&node_sockets).query_async(conn).await?;
        Ok(offline)
    }
}

impl PresenceStore for RedisPresenceStore {
    fn connect(&self, socket: SocketPresence, max_sockets: usize) -> StoreFuture<Option<bool>> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            this.run_connect(&mut conn, &socket, max_sockets).await
        })
    }

    fn disconnect(&self, user: UserId, socket: SocketId) -> StoreFuture<bool> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let node = this.node_id.clone();
            this.run_disconnect(&mut conn, &user, &socket, &node).await
        })
    }

    fn set_status(&self, user: UserId, status: Status) -> StoreFuture<bool> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            redis_command("EVALSHA");
            let changed: i64 = this
                .scripts
                .status
                .key(this.keys.user_sockets(&user))
                .key(this.keys.user_status(&user))
                .arg(status.as_str())
                .arg(STATUS_TTL_SECS)
                .invoke_async(&mut *conn)
                .await?;
            Ok(changed == 1)
        })
    }

    fn rooms(
        &self,
        user: UserId,
        socket: SocketId,
        rooms: Vec<Room>,
        join: bool,
    ) -> StoreFuture<()> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            if join {
                this.join_rooms(&mut conn, &user, &socket, &rooms).await
            } else {
                this.leave_rooms(&mut conn, &socket, Some(&rooms)).await
            }
        })
    }

    fn room_online(&self, room: Room) -> StoreFuture<(Vec<UserId>, usize)> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let users: Vec<String> = cmd("HVALS")
                .arg(this.keys.room_sockets(&room))
                .query_async(&mut *conn)
                .await?;
            let sockets = users.len();
            let mut users: Vec<UserId> = users.into_iter().map(UserId::from).collect();
            users.sort();
            users.dedup();
            Ok((users, sockets))
        })
    }

    fn statuses(&self, users: Vec<UserId>) -> StoreFuture<Vec<(UserId, Status)>> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let mut pipe = redis::pipe();
            for user in &users {
                redis_command("GET");
                redis_command("SCARD");
                pipe.cmd("GET").arg(this.keys.user_status(user));
                pipe.cmd("SCARD").arg(this.keys.user_sockets(user));
            }
            let replies: Vec<redis::Value> = pipe.query_async(&mut *conn).await?;
            // Two replies per user, or the answer is not Redis's to this pipeline.
            if replies.len() != users.len() * 2 {
                return Err(StoreError(format!(
                    "{} replies to {} status queries",
                    replies.len(),
                    users.len() * 2
                )));
            }
            let mut out = Vec::with_capacity(users.len());
            for (user, pair) in users.into_iter().zip(replies.chunks_exact(2)) {
                let [status, sockets] = pair else { continue };
                let status: Option<String> = redis::from_redis_value(status.clone())?;
                let sockets: i64 = redis::from_redis_value(sockets.clone())?;
                let status = match (sockets > 0, status.as_deref()) {
                    (false, _) => Status::Offline,
                    (true, Some("away")) => Status::Away,
                    (true, _) => Status::Online,
                };
                out.push((user, status));
            }
            Ok(out)
        })
    }

    fn online(&self, limit: usize, cursor: Option<String>) -> StoreFuture<OnlinePage> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            // Sorted by id for stable paging; the whole set is read, which is fine for an
            // operator API but not for a hot path.
            let mut users: Vec<String> = cmd("ZRANGE")
                .arg(this.keys.online_users())
                .arg(0)
                .arg(-1)
                .query_async(&mut *conn)
                .await?;
            users.sort();
            let count = users.len();
            let start = match &cursor {
                Some(c) => users.partition_point(|u| u.as_str() <= c.as_str()),
                None => 0,
            };
            let mut page: Vec<String> = users.into_iter().skip(start).take(limit + 1).collect();
            let next_cursor = if page.len() > limit {
                page.truncate(limit);
                page.last().cloned()
            } else {
                None
            };
            Ok(OnlinePage {
                count,
                users: page,
                next_cursor,
            })
        })
    }

    fn devices(&self, user: String) -> StoreFuture<Vec<String>> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let mut devices: Vec<String> = cmd("SMEMBERS")
                .arg(this.keys.user_devices(&user))
                .query_async(&mut *conn)
                .await?;
            devices.sort();
            Ok(devices)
        })
    }

    fn reconcile(&self, live: Vec<SocketPresence>) -> StoreFuture<Transitions> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let registered: Vec<String> = cmd("SMEMBERS")
                .arg(this.keys.node_sockets(&this.node_id))
                .query_async(&mut *conn)
                .await?;
            let live_ids: HashSet<&str> = live.iter().map(|s| s.socket.as_str()).collect();
            let mut transitions = Transitions::default();
            for socket in registered.iter().filter(|s| !live_ids.contains(s.as_str())) {
                let user: Option<String> = cmd("HGET")
                    .arg(this.keys.socket_user(socket))
                    .arg("userId")
                    .query_async(&mut *conn)
                    .await?;
                if let Some(user) = user {
                    let (user, node) = (UserId::from(user), this.node_id.clone());
                    let socket = SocketId::from(socket.as_str());
                    if this
                        .run_disconnect(&mut conn, &user, &socket, &node)
                        .await?
                    {
                        transitions.offline.push(user);
                    }
                }
            }
            // Pipelined on the multiplexed connection: one round trip for all live sockets.
            let conn_ref = &*conn;
            let results = join_all(live.iter().map(|s| {
                let mut c = conn_ref.clone();
                let this = &this;
                async move {
                    this.run_connect(&mut c, s, 0)
                        .await
                        .map(|first| first == Some(true))
                }
            }))
            .await;
            for (socket, first) in live.iter().zip(results) {
                if first? {
                    transitions.online.push(socket.user.clone());
                }
            }
            Ok(transitions)
        })
    }

    fn heartbeat_node(&self) -> StoreFuture<bool> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let previous: Option<String> = cmd("SET")
                .arg(this.keys.node_alive(&this.node_id))
                .arg(now_ms())
                .arg("EX")
                .arg(NODE_ALIVE_TTL_SECS)
                .arg("GET")
                .query_async(&mut *conn)
                .await?;
            if let Some(url) = &this.advertise {
                let _: () = cmd("SET")
                    .arg(this.keys.node_addr(&this.node_id))
                    .arg(&**url)
                    .arg("EX")
                    .arg(NODE_ALIVE_TTL_SECS)
                    .query_async(&mut *conn)
                    .await?;
            }
            let _: i64 = cmd("SADD")
                .arg(this.keys.nodes())
                .arg(this.node_id.as_str())
                .query_async(&mut *conn)
                .await?;
            Ok(previous.is_some())
        })
    }

    fn leave(&self) -> StoreFuture<Vec<UserId>> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let node = this.node_id.clone();
            let offline = this.sweep_node(&mut conn, &node).await?;
            let _: i64 = cmd("SREM")
                .arg(this.keys.nodes())
                .arg(node.as_str())
                .query_async(&mut *conn)
                .await?;
            let _: i64 = cmd("DEL")
                .arg(this.keys.node_alive(&node))
                .arg(this.keys.node_addr(&node))
                .query_async(&mut *conn)
                .await?;
            Ok(offline)
        })
    }

    fn sweep_dead_nodes(&self, include_self: bool) -> StoreFuture<SweepResult> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let nodes: Vec<String> = cmd("SMEMBERS")
                .arg(this.keys.nodes())
                .query_async(&mut *conn)
                .await?;
            let mut result = SweepResult::default();
            for node in nodes {
                let node = NodeId::from(node);
                let own = node == this.node_id;
                if own && !include_self {
                    continue;
                }
                if !own {
                    let alive: i64 = cmd("EXISTS")
                        .arg(this.keys.node_alive(&node))
                        .query_async(&mut *conn)
                        .await?;
                    if alive == 1 {
                        continue;
                    }
                    // One surviving node sweeps a dead one.
                    let lock: Option<String> = cmd("SET")
                        .arg(this.keys.node_sweeping(&node))
                        .arg(this.node_id.as_str())
                        .arg("NX")
                        .arg("EX")
                        .arg(30)
                        .query_async(&mut *conn)
                        .await?;
                    if lock.is_none() {
                        continue;
                    }
                }
                let offline = this.sweep_node(&mut conn, &node).await?;
                result.offline.extend(offline);
                if !own {
                    let _: i64 = cmd("SREM")
                        .arg(this.keys.nodes())
                        .arg(node.as_str())
                        .query_async(&mut *conn)
                        .await?;
                    let _: i64 = cmd("DEL")
                        .arg(this.keys.node_sweeping(&node))
                        .arg(this.keys.node_addr(&node))
                        .query_async(&mut *conn)
                        .await?;
                }
                result.nodes.push(node);
            }
            Ok(result)
        })
    }
}
