//! The Presence actor: who is online on which sockets and devices, and each user's status.
//!
//! Single-node mode keeps the table in memory ([`PresenceTable`]); cluster mode keeps it in Redis
//! ([`redis_store::RedisPresenceStore`]), refreshes this node's liveness key, sweeps the sockets of dead
//! nodes and re-asserts this node's sockets after Redis loses its data. Transitions (first socket
//! of a user → online, last socket gone → offline, status changes) go to the registry, which
//! notifies local watchers and, in cluster mode, the watchers on other nodes.

pub mod redis_store;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::journal::{CloseStaleConnections, Journal, NODE_LOST, PresenceLogged};
use crate::metrics::MeteredAddr;
use crate::registry::{LiveSockets, PresenceChange, PresenceChanged, SessionRegistry};
pub use store::{MemoryPresenceStore, PresenceStore, SocketPresence, StoreError};

/// A user id (the JWT subject), shared cheaply between indexes.
pub type UserId = Arc<str>;

/// A user's presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// At least one socket connected, active.
    Online,
    /// At least one socket connected, user set away.
    Away,
    /// No socket connected.
    Offline,
}

impl Status {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }

    /// Parse a status a client may set (`online` or `away`).
    pub fn settable(s: &str) -> Option<Status> {
        match s {
            "online" => Some(Status::Online),
            "away" => Some(Status::Away),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct UserPresence {
    /// socket id → device id.
    sockets: HashMap<String, String>,
    status: Status,
}

/// The presence table: pure state, unit-tested without actors.
#[derive(Debug, Default)]
pub struct PresenceTable {
    users: BTreeMap<UserId, UserPresence>,
}

/// One page of online users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlinePage {
    /// How many users are online in all.
    pub count: usize,
    /// This page, ascending by id.
    pub users: Vec<String>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl PresenceTable {
    /// Add a socket; true when it is the user's first (the user comes online).
    pub fn connect(&mut self, user: &UserId, socket: &str, device: &str) -> bool {
        let entry = self
            .users
            .entry(user.clone())
            .or_insert_with(|| UserPresence {
                sockets: HashMap::new(),
                status: Status::Online,
            });
        let first = entry.sockets.is_empty();
        entry.sockets.insert(socket.to_string(), device.to_string());
        first
    }

    /// Remove a socket; true when it was the user's last (the user goes offline).
    pub fn disconnect(&mut self, user: &UserId, socket: &str) -> bool {
        let Some(entry) = self.users.get_mut(user) else {
            return false;
        };
        if entry.sockets.remove(socket).is_none() {
            return false;
        }
        if entry.sockets.is_empty() {
            self.users.remove(user);
            return true;
        }
        false
    }

    /// Set an online user's status; true when it changed.
    pub fn set_status(&mut self, user: &UserId, status: Status) -> bool {
        match self.users.get_mut(user) {
            Some(entry) if entry.status != status => {
                entry.status = status;
                true
            }
            _ => false,
        }
    }

    /// A user's status.
    pub fn status(&self, user: &str) -> Status {
        self.users.get(user).map_or(Status::Offline, |u| u.status)
    }

    /// The distinct devices a user is connected from.
    pub fn devices(&self, user: &str) -> Vec<String> {
        let mut devices: Vec<String> = self
            .users
            .get(user)
            .map(|u| u.sockets.values().cloned().collect())
            .unwrap_or_default();
        devices.sort();
        devices.dedup();
        devices
    }

    /// Online users after `cursor`, at most `limit`.
    pub fn online(&self, limit: usize, cursor: Option<&str>) -> OnlinePage {
        use std::ops::Bound;
        let start = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let mut users: Vec<String> = self
            .users
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit + 1)
            .map(|(id, _)| id.to_string())
            .collect();
        let next_cursor = if users.len() > limit {
            users.truncate(limit);
            users.last().cloned()
        } else {
            None
        };
        OnlinePage {
            count: self.users.len(),
            users,
            next_cursor,
        }
    }
}

/// A socket of `user` connected; answers once presence has it (or why it could not).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct PresenceConnect {
    /// The user.
    pub user: UserId,
    /// The public socket id.
    pub socket: String,
    /// The device id.
    pub device: String,
}

/// A socket of `user` is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceDisconnect {
    /// The user.
    pub user: UserId,
    /// The public socket id.
    pub socket: String,
}

/// A user sets their status.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct SetStatus {
    /// The user.
    pub user: UserId,
    /// The new status.
    pub status: Status,
}

/// Statuses of several users.
#[derive(Message)]
#[rtype(result = "Result<Vec<(String, Status)>, StoreError>")]
pub struct QueryStatuses {
    /// Who to look up.
    pub users: Vec<String>,
}

/// A page of online users.
#[derive(Message)]
#[rtype(result = "Result<OnlinePage, StoreError>")]
pub struct OnlineUsers {
    /// Page size.
    pub limit: usize,
    /// Start after this id.
    pub cursor: Option<String>,
}

/// The node is leaving the cluster: remove what it registered (after its sockets closed).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Leave;

/// How often a cluster node refreshes its liveness key and sweeps dead nodes.
pub const NODE_TICK: Duration = Duration::from_secs(2);
/// How often a cluster node re-asserts its live sockets and refreshes their TTLs.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// The Presence actor (see the module docs).
///
/// Store operations run one at a time ([`AtomicResponse`]): a disconnect can never overtake the
/// connect of the same socket on another pooled Redis connection.
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    registry: MeteredAddr<SessionRegistry>,
    cluster: bool,
    /// Where transitions are logged (presence_logs) and dead nodes' rows closed.
    journal: Option<MeteredAddr<Journal>>,
    /// A liveness tick is in flight.
    ticking: bool,
    /// Whether this node's liveness key has been written once (a missing key after that
    /// means Redis lost its data).
    beaten: bool,
}

impl Presence {
    /// A presence actor over `store`; `cluster` turns on liveness, sweeps and reconciles.
    pub fn new(
        store: Arc<dyn PresenceStore>,
        registry: MeteredAddr<SessionRegistry>,
        cluster: bool,
    ) -> Self {
        Presence {
            store,
            registry,
            cluster,
            journal: None,
            ticking: false,
            beaten: false,
        }
    }

    /// Log transitions to `journal` and close dead nodes' connection rows there.
    pub fn with_journal(mut self, journal: MeteredAddr<Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// The single-node presence actor (in-memory store).
    pub fn in_memory(registry: MeteredAddr<SessionRegistry>) -> Self {
        Presence::new(Arc::new(MemoryPresenceStore::default()), registry, false)
    }

    fn changed(&self, user: UserId, change: PresenceChange) {
        self.changed_on(user, change, None);
    }

    /// Tell the registry (watchers) and log the transition.
    fn changed_on(&self, user: UserId, change: PresenceChange, device: Option<String>) {
        if let Some(journal) = &self.journal {
            let status = match change {
                PresenceChange::Online => Status::Online,
                PresenceChange::Offline => Status::Offline,
                PresenceChange::Status(s) => s,
            };
            journal.do_send(PresenceLogged {
                user_id: user.clone(),
                status: status.as_str().to_string(),
                device_id: device,
                at: std::time::SystemTime::now(),
            });
        }
        self.registry.do_send(PresenceChanged { user, change });
    }

    fn offline_all(&self, users: Vec<UserId>) {
        for user in users {
            self.changed(user, PresenceChange::Offline);
        }
    }

    /// Liveness, then a sweep of dead nodes, one after the other.
    ///
    /// Spawned, not awaited in place: while Redis is down these calls wait for their timeouts,
    /// and connects must not queue behind them.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking {
            return;
        }
        self.ticking = true;
        let beat = self.store.heartbeat_node();
        let sweep = self.store.sweep_dead_nodes(false);
        ctx.spawn(async move { (beat.await, sweep.await) }.into_actor(self).map(
            |(beat, sweep), act, ctx| {
                act.ticking = false;
                match beat {
                    Ok(existed) => {
                        if act.beaten && !existed {
                            warn!("this node's liveness key vanished: Redis lost data; re-asserting sockets");
                            act.reconcile(ctx);
                        }
                        act.beaten = true;
                    }
                    Err(err) => debug!(%err, "liveness refresh failed"),
                }
                match sweep {
                    Ok(result) if !result.nodes.is_empty() => {
                        info!(nodes = ?result.nodes, offline = result.offline.len(), "swept dead nodes");
                        if let Some(journal) = &act.journal {
                            for node in &result.nodes {
                                journal.do_send(CloseStaleConnections {
                                    server_instance: node.clone(),
                                    reason: NODE_LOST.to_string(),
                                });
                            }
                        }
                        act.offline_all(result.offline);
                    }
                    Ok(_) => {}
                    Err(err) => debug!(%err, "dead-node sweep failed"),
                }
            },
        ));
    }

    /// Re-assert every live socket of this node and drop its stale entries.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let live = self.registry.send(LiveSockets);
        let store = self.store.clone();
        let fut = async move {
            let live = live.await.map_err(|e| StoreError(e.to_string()))?;
            store.reconcile(live).await
        };
        ctx.wait(fut.into_actor(self).map(|result, act, _ctx| match result {
            Ok(t) => {
                for user in t.online {
                    act.changed(user, PresenceChange::Online);
                }
                act.offline_all(t.offline);
            }
            Err(err) => debug!(%err, "presence reconcile failed"),
        }));
    }
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        if !self.cluster {
            return;
        }
        // A restarted node (same id) first clears what its previous run left behind.
        let sweep = self.store.sweep_dead_nodes(true);
        ctx.wait(
            sweep
                .into_actor(self)
                .map(|result, act, _ctx| match result {
                    Ok(result) => act.offline_all(result.offline),
                    Err(err) => warn!(%err, "could not clear this node's stale presence"),
                }),
        );
        self.tick(ctx);
        ctx.run_interval(NODE_TICK, |act, ctx| act.tick(ctx));
        ctx.run_interval(RECONCILE_EVERY, |act, ctx| act.reconcile(ctx));
    }
}

impl Supervised for Presence {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::restarted("presence");
        // In-flight ticks died with the old context; the store keeps the state.
        self.ticking = false;
    }
}

impl Handler<PresenceConnect> for Presence {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: PresenceConnect, _ctx: &mut Context<Self>) -> Self::Result {
        let user = msg.user.clone();
        let device = msg.device.clone();
        let fut = self.store.connect(SocketPresence {
            user: msg.user,
            socket: msg.socket,
            device: msg.device,
        });
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |result, act, _ctx| {
                if result.clone()? {
                    act.changed_on(user, PresenceChange::Online, Some(device));
                }
                Ok(())
            },
        )))
    }
}

impl Handler<PresenceDisconnect> for Presence {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: PresenceDisconnect, _ctx: &mut Context<Self>) -> Self::Result {
        let user = msg.user.clone();
        let fut = self.store.disconnect(msg.user, msg.socket);
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |result, act, _ctx| {
                match result {
                    Ok(true) => act.changed(user, PresenceChange::Offline),
                    Ok(false) => {}
                    // The reconcile removes it once the store is back.
                    Err(err) => debug!(%err, "presence disconnect failed"),
                }
            },
        )))
    }
}

impl Handler<SetStatus> for Presence {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: SetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let (user, status) = (msg.user.clone(), msg.status);
        let fut = self.store.set_status(msg.user, msg.status);
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |result, act, _ctx| {
                if result? {
                    act.changed(user, PresenceChange::Status(status));
                }
                Ok(())
            },
        )))
    }
}

impl Handler<Leave> for Presence {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    fn handle(&mut self, _msg: Leave, _ctx: &mut Context<Self>) -> Self::Result {
        let fut = self.store.leave();
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|result, act, _ctx| {
            let offline = result?;
            act.offline_all(offline);
            Ok(())
        })))
    }
}

impl Handler<QueryStatuses> for Presence {
    type Result = ResponseFuture<Result<Vec<(String, Status)>, StoreError>>;

    fn handle(&mut self, msg: QueryStatuses, _ctx: &mut Context<Self>) -> Self::Result {
        self.store.statuses(msg.users)
    }
}

impl Handler<OnlineUsers> for Presence {
    type Result = ResponseFuture<Result<OnlinePage, StoreError>>;

    fn handle(&mut self, msg: OnlineUsers, _ctx: &mut Context<Self>) -> Self::Result {
        self.store.online(msg.limit, msg.cursor)
    }
}

impl crate::metrics::MeteredActor for Presence {
    const NAME: &'static str = "presence";
}

crate::metered!(Presence: PresenceConnect, PresenceDisconnect, SetStatus, QueryStatuses, OnlineUsers,
    Leave);

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        Arc::from(s)
    }

    #[test]
    fn first_and_last_socket_are_the_transitions() {
        let mut t = PresenceTable::default();
        let dave = uid("dave");
        assert!(t.connect(&dave, "s1", "phone"));
        assert!(!t.connect(&dave, "s2", "laptop"));
        assert_eq!(t.devices("dave"), vec!["laptop", "phone"]);
        assert!(!t.disconnect(&dave, "s1"));
        assert_eq!(t.status("dave"), Status::Online);
        assert!(t.disconnect(&dave, "s2"));
        assert_eq!(t.status("dave"), Status::Offline);
        assert!(
            !t.disconnect(&dave, "s2"),
            "a second disconnect is not a transition"
        );
    }

    #[test]
    fn status_changes_only_for_online_users() {
        let mut t = PresenceTable::default();
        let a = uid("a");
        assert!(!t.set_status(&a, Status::Away));
        t.connect(&a, "s", "d");
        assert!(t.set_status(&a, Status::Away));
        assert!(!t.set_status(&a, Status::Away));
        assert_eq!(t.status("a"), Status::Away);
    }

    #[test]
    fn online_users_page_in_order() {
        let mut t = PresenceTable::default();
        for u in ["c", "a", "b", "d"] {
            t.connect(&uid(u), "s", "d");
        }
        let p1 = t.online(3, None);
        assert_eq!(p1.count, 4);
        assert_eq!(p1.users, vec!["a", "b", "c"]);
        assert_eq!(p1.next_cursor.as_deref(), Some("c"));
        let p2 = t.online(3, p1.next_cursor.as_deref());
        assert_eq!(p2.users, vec!["d"]);
        assert_eq!(p2.next_cursor, None);
    }
}
