//! Where presence lives: behind one trait, in memory (single node) or in Redis (cluster).
//!
//! Both stores pass the same behaviour suite (`actors/tests/stores.rs`).

use std::sync::{Arc, Mutex};

use super::table::PresenceTable;
use crate::ids::{NodeId, Room, SocketId, UserId};
use crate::ports::presence::{OnlinePage, SocketPresence, Status};
use crate::store::StoreFuture;

/// Presence operations; every transition answer is exact even with many nodes.
pub trait PresenceStore: Send + Sync + 'static {
    /// Add a socket; true when it is the user's first.
    /// (`None`: refused, its user already has `max_sockets`, 0 meaning no limit.)
    fn connect(&self, socket: SocketPresence, max_sockets: usize) -> StoreFuture<Option<bool>>;
    /// Remove a socket; true when it was the user's last.
    fn disconnect(&self, user: UserId, socket: SocketId) -> StoreFuture<bool>;
    /// Set an online user's status; true when it changed.
    fn set_status(&self, user: UserId, status: Status) -> StoreFuture<bool>;
    /// A connected socket joins (or leaves) rooms.
    fn rooms(
        &self,
        user: UserId,
        socket: SocketId,
        rooms: Vec<Room>,
        join: bool,
    ) -> StoreFuture<()>;
    /// A room's online members: distinct users (sorted) and socket count.
    fn room_online(&self, room: Room) -> StoreFuture<(Vec<UserId>, usize)>;
    /// Statuses of several users, in the order asked.
    fn statuses(&self, users: Vec<UserId>) -> StoreFuture<Vec<(UserId, Status)>>;
    /// A page of online users, ascending by id.
    fn online(&self, limit: usize, cursor: Option<String>) -> StoreFuture<OnlinePage>;
    /// A user's distinct devices.
    fn devices(&self, user: String) -> StoreFuture<Vec<String>>;
    /// Refresh TTLs and re-assert this node's live sockets (after Redis lost its data);
    /// drop entries of this node that are no longer live. Answers the users that came online
    /// (re-asserted) and those that went offline (dropped).
    fn reconcile(&self, live: Vec<SocketPresence>) -> StoreFuture<Transitions>;
    /// Mark this node alive; answers whether its liveness key was still there.
    fn heartbeat_node(&self) -> StoreFuture<bool>;
    /// Remove the sockets of nodes that stopped refreshing liveness (and, with `include_self`,
    /// this node's own stale entries from a previous run). Answers who went offline.
    fn sweep_dead_nodes(&self, include_self: bool) -> StoreFuture<SweepResult>;
    /// This node leaves: remove its sockets, liveness key and membership of the node set.
    /// Answers who went offline.
    fn leave(&self) -> StoreFuture<Vec<UserId>>;
}

/// Users whose presence changed during a reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transitions {
    /// Users that came online.
    pub online: Vec<UserId>,
    /// Users that went offline.
    pub offline: Vec<UserId>,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepResult {
    /// Dead nodes swept.
    pub nodes: Vec<NodeId>,
    /// Users that went offline.
    pub offline: Vec<UserId>,
}

/// The single-node store: the presence table in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryPresenceStore {
    table: Arc<Mutex<PresenceTable>>,
}

impl MemoryPresenceStore {
    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut PresenceTable) -> T) -> StoreFuture<T> {
        // The actor is the only caller, so the lock is never contended; a poisoned lock (a
        // panic elsewhere) still holds consistent data for this simple table.
        let mut table = match self.table.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let out = f(&mut table);
        Box::pin(async move { Ok(out) })
    }
}

impl PresenceStore for MemoryPresenceStore {
    fn connect(&self, s: SocketPresence, max_sockets: usize) -> StoreFuture<Option<bool>> {
        self.with(move |t| {
            let first = t.connect(&s.user, &s.socket, &s.device, max_sockets)?;
            t.rooms(&s.user, &s.socket, &s.rooms, true);
            Some(first)
        })
    }

    fn rooms(
        &self,
        user: UserId,
        socket: SocketId,
        rooms: Vec<Room>,
        join: bool,
    ) -> StoreFuture<()> {
        self.with(move |t| t.rooms(&user, &socket, &rooms, join))
    }

    fn room_online(&self, room: Room) -> StoreFuture<(Vec<UserId>, usize)> {
        self.with(move |t| t.room_online(&room))
    }

    fn disconnect(&self, user: UserId, socket: SocketId) -> StoreFuture<bool> {
        self.with(move |t| t.disconnect(&user, &socket))
    }

    fn set_status(&self, user: UserId, status: Status) -> StoreFuture<bool> {
        self.with(move |t| t.set_status(&user, status))
    }

    fn statuses(&self, users: Vec<UserId>) -> StoreFuture<Vec<(UserId, Status)>> {
        self.with(move |t| {
            users
                .into_iter()
                .map(|u| {
                    let s = t.status(&u);
                    (u, s)
                })
                .collect()
        })
    }

    fn online(&self, limit: usize, cursor: Option<String>) -> StoreFuture<OnlinePage> {
        self.with(move |t| t.online(limit, cursor.as_deref()))
    }

    fn devices(&self, user: String) -> StoreFuture<Vec<String>> {
        self.with(move |t| t.devices(&user))
    }

    fn reconcile(&self, _live: Vec<SocketPresence>) -> StoreFuture<Transitions> {
        // The in-memory table is the node's own truth: nothing to re-assert.
        Box::pin(async { Ok(Transitions::default()) })
    }

    fn heartbeat_node(&self) -> StoreFuture<bool> {
        Box::pin(async { Ok(true) })
    }

    fn sweep_dead_nodes(&self, _include_self: bool) -> StoreFuture<SweepResult> {
        Box::pin(async { Ok(SweepResult::default()) })
    }

    fn leave(&self) -> StoreFuture<Vec<UserId>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
