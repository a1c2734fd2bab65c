//! The Presence actor: who is online on which sockets and devices, and each user's status.
//!
//! Single-node mode keeps the table in memory ([`table::PresenceTable`]); cluster mode keeps it in Redis
//! ([`redis_store::RedisPresenceStore`]), refreshes this node's liveness key, sweeps the sockets of dead
//! nodes and re-asserts this node's sockets after Redis loses its data. Transitions (first socket
//! of a user → online, last socket gone → offline, status changes) go to the registry, which
//! notifies local watchers and, in cluster mode, the watchers on other nodes.

//!
//! # Layout
//! - this file: the actor shell (transitions, liveness ticks, sweeps, reconciles).
//! - [`table`]: the pure core, the single-node presence table.
//! - [`store`]: the [`PresenceStore`] trait and the in-memory store; [`redis_store`] and its
//!   Lua scripts (`connect.lua`, `disconnect.lua`, `status.lua`) for cluster mode.
//! - [`crate::ports::presence`]: the messages it accepts.

pub mod redis_store;
pub mod store;
pub mod table;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use tracing::{debug, info, warn};

use crate::ids::UserId;
use crate::metrics::MeteredActor;
use crate::ports::Port;
use crate::ports::journal::{CloseStaleConnections, NODE_LOST, PresenceLogged};
use crate::ports::presence::{Admit, RoomOnline, RoomsChanged};
use crate::ports::presence::{
    Leave, OnlinePage, OnlineUsers, PresenceConnect, PresenceDisconnect, QueryStatuses, SetStatus,
    Status,
};
use crate::ports::registry::{LiveSockets, PresenceChange, PresenceChanged};
use crate::store::StoreError;
pub use store::{MemoryPresenceStore, PresenceStore};

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
    ports: PresencePorts,
    cluster: bool,
    /// A liveness tick is in flight.
    ticking: bool,
    /// Whether this node's liveness key has been written once (a missing key after that
    /// means Redis lost its data).
    beaten: bool,
}

/// Where Presence sends what it learns.
#[derive(Clone)]
pub struct PresencePorts {
    /// Registry: transitions, for the watchers.
    pub changed: Port<PresenceChanged>,
    /// Registry: this node's live sockets, to re-assert.
    pub live: Port<LiveSockets>,
    /// Journal: `presence_logs` rows.
    pub logged: Port<PresenceLogged>,
    /// Journal: close the connection rows of dead nodes.
    pub close_stale: Port<CloseStaleConnections>,
}

impl Presence {
    /// A presence actor over `store`; `cluster` turns on liveness, sweeps and reconciles.
    pub fn new(store: Arc<dyn PresenceStore>, ports: PresencePorts, cluster: bool) -> Self {
        Presence {
            store,
            ports,
            cluster,
            ticking: false,
            beaten: false,
        }
    }

    /// The single-node presence actor (in-memory store).
    pub fn in_memory(ports: PresencePorts) -> Self {
        Presence::new(Arc::new(MemoryPresenceStore::default()), ports, false)
    }

    fn changed(&self, user: UserId, change: PresenceChange) {
        self.changed_on(user, change, None);
    }

    /// Tell the registry (watchers) and log the transition.
    fn changed_on(&self, user: UserId, change: PresenceChange, device: Option<String>) {
        let status = match change {
            PresenceChange::Online => Status::Online,
            PresenceChange::Offline => Status::Offline,
            PresenceChange::Status(s) => s,
        };
        self.ports.logged.do_send(PresenceLogged {
            user_id: user.clone(),
            status: status.as_str().to_string(),
            device_id: device,
            at: SystemTime::now(),
        });
        self.ports.changed.do_send(PresenceChanged { user, change });
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
                        for node in &result.nodes {
                            act.ports.close_stale.do_send(CloseStaleConnections {
                                server_instance: node.clone(),
                                reason: NODE_LOST.to_string(),
                            });
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
        let live = self.ports.live.send(LiveSockets);
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
    type Result = AtomicResponse<Self, Result<Admit, StoreError>>;

    fn handle(&mut self, msg: PresenceConnect, _ctx: &mut Context<Self>) -> Self::Result {
        let user = msg.socket.user.clone();
        let device = msg.socket.device.clone();
        let fut = self.store.connect(msg.socket, msg.max_sockets);
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |result, act, _ctx| match result? {
                None => Ok(Admit::TooManySockets),
                Some(first) => {
                    if first {
                        act.changed_on(user, PresenceChange::Online, Some(device));
                    }
                    Ok(Admit::Yes)
                }
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

impl Handler<RoomsChanged> for Presence {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: RoomsChanged, _ctx: &mut Context<Self>) -> Self::Result {
        let fut = self.store.rooms(msg.user, msg.socket, msg.rooms, msg.join);
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|result, _act, _ctx| {
            if let Err(err) = result {
                // The reconcile re-asserts the rooms of live sockets once the store is back.
                debug!(%err, "room membership not recorded");
            }
        })))
    }
}

impl Handler<RoomOnline> for Presence {
    type Result = ResponseFuture<Result<(Vec<UserId>, usize), StoreError>>;

    fn handle(&mut self, msg: RoomOnline, _ctx: &mut Context<Self>) -> Self::Result {
        self.store.room_online(msg.room)
    }
}

impl Handler<QueryStatuses> for Presence {
    type Result = ResponseFuture<Result<Vec<(UserId, Status)>, StoreError>>;

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

impl MeteredActor for Presence {
    const NAME: &'static str = "presence";
}

crate::metered!(Presence: PresenceConnect, PresenceDisconnect, SetStatus, QueryStatuses, OnlineUsers,
    Leave, RoomsChanged, RoomOnline);
