//! The composition root: starts a node's actors and wires their ports together. The only
//! module that names every actor.
//!
//! A conformance node ([`Node::conformance`]) has a registry and nothing else. A product node
//! ([`Node::start`]) opens and migrates the database, then starts the Journal, Presence and the
//! RateLimiter (in memory, or on Redis with the RedisBridge in cluster mode), each under an
//! `actix::Supervisor`, and the [`App`] its sessions share.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use crate::app::{App, AppLimits, AppPorts, HookClient, RecoveryClient};
use crate::auth::Authenticator;
use crate::bridge::Recording;
use crate::bridge::RedisBridge;
use crate::connector::Connector;
use crate::hooks::{DecisionCache, Hooks, HooksConfig};
use crate::ids::NodeId;
use crate::journal::{Journal, JournalConfig};
use crate::logins::{LogSampler, LoginGuard};
use crate::metrics::MeteredAddr;
use crate::ports::Port;
use crate::ports::journal::{CloseStaleConnections, JournalError, NODE_LOST};
use crate::ports::registry::{AttachCluster, AttachPresence, AttachRecovery};
use crate::presence::redis_store::RedisPresenceStore;
use crate::presence::{Presence, PresencePorts};
use crate::ratelimiter::{MemoryRateStore, RateLimiter, RedisRateStore};
use crate::recovery::Recovery;
use crate::recovery::redis_store::RedisRecoveryStore;
use crate::recovery::store::{MemoryRecoveryStore, SharedRecoveryStore};
use crate::registry::{DeferredRegistry, SessionRegistry};
use crate::store::{RedisPool, RedisSettings, pool_on};
use crate::webhooks::{WebhookPorts, Webhooks, WebhooksConfig};

/// What a product node is started with.
pub struct NodeConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Verifies client tokens.
    pub auth: Authenticator,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Journal tuning.
    pub journal: JournalConfig,
    /// Cluster mode: Redis; `None` for a single node.
    pub redis: Option<RedisSettings>,
    /// How Redis is reached (mode, TLS); `None`: the one plain server at `redis.url`.
    pub redis_connector: Option<Connector>,
    /// This node's internal base URL, published in Redis (`node:{id}:addr`) in cluster mode so
    /// that other nodes can forward requests for its sessions; `None` publishes nothing.
    pub advertise_url: Option<String>,
    /// `message:send` per user per window, cluster-wide.
    pub user_message_limit: u32,
    /// The per-user window.
    pub user_message_window: Duration,
    /// Bytes of message text one user may store per UTC day (0: no quota).
    pub user_daily_bytes: u64,
    /// Per-socket and per-event limits.
    pub limits: AppLimits,
    /// The application's backend hooks, when a hook URL is configured.
    pub hooks: Option<HooksConfig>,
    /// Lifecycle webhooks, when a webhook URL is configured (the Journal must have
    /// `webhooks` on to write the outbox).
    pub webhooks: Option<WebhooksConfig>,
    /// Connection state recovery window; `None` turns recovery off.
    pub recovery: Option<Duration>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Redis URL is unusable.
    #[error("invalid Redis settings: {0}")]
    Redis(#[from] redis::RedisError),
    /// The database cannot be reached or migrated.
    #[error("database: {0}")]
    Database(#[from] JournalError),
}

/// A running node's actors.
pub struct Node {
    /// This node's id.
    pub node_id: NodeId,
    /// The session registry (started by [`Node::registry_start`]).
    pub registry: MeteredAddr<SessionRegistry>,
    /// Starts the registry on the arbiter that calls it first (the first HTTP worker's).
    pub registry_start: Arc<DeferredRegistry>,
    /// The application's actors; `None` on a conformance node.
    pub product: Option<Product>,
}

/// The actors of a product node.
pub struct Product {
    /// What sessions share.
    pub app: Arc<App>,
    /// Presence.
    pub presence: MeteredAddr<Presence>,
    /// The database writer.
    pub journal: MeteredAddr<Journal>,
    /// The RedisBridge, in cluster mode.
    pub bridge: Option<MeteredAddr<RedisBridge>>,
    /// The Redis pool, in cluster mode (for its gauge).
    pub redis_pool: Option<RedisPool>,
    /// How Redis is reached, in cluster mode (its mode and current master for `/health`).
    pub redis_connector: Option<Connector>,
    /// The webhook deliverer, when webhooks are on.
    pub webhooks: Option<Addr<Webhooks>>,
}

impl Node {
    /// A node that serves the protocol test suites: a registry, no application.
    pub fn conformance(node_id: NodeId) -> Node {
        let (registry, registry_start) = SessionRegistry::deferred();
        Node {
            node_id,
            registry: MeteredAddr::new(registry),
            registry_start,
            product: None,
        }
    }

    /// Start a product node's actors. Must run inside an actix `System`.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let mut node = Node::conformance(config.node_id.clone());
        let registry = node.registry.addr().clone();
        let journal = Journal::connect_retrying(&config.database_url, config.journal).await?;
        let journal = MeteredAddr::new(supervise(journal));
        close_stale_rows(&journal, &config.node_id).await;
        let presence_ports = PresencePorts {
            changed: Port::new(&registry),
            live: Port::new(&registry),
            logged: Port::new(journal.addr()),
            close_stale: Port::new(journal.addr()),
        };
        let (limit, window) = (
            config.user_message_limit.max(1),
            config.user_message_window.max(Duration::from_millis(1)),
        );
        let connector = match (&config.redis_connector, &config.redis) {
            (Some(connector), _) => Some(connector.clone()),
            (None, Some(settings)) => Some(Connector::single(&settings.url, None)?),
            (None, None) => None,
        };
        let (presence, rate_limiter, bridge, redis_pool) = match (&config.redis, &connector) {
            (Some(settings), Some(connector)) => {
                let pool = pool_on(connector.clone());
                let bridge = RedisBridge::new(
                    settings,
                    connector.clone(),
                    config.node_id.clone(),
                    Port::new(&registry),
                )
                .with_recording(Recording {
                    max_len: RECOVERY_STREAM_LEN,
                    window: config.recovery.unwrap_or(Duration::from_secs(1)),
                });
                let bridge = supervise(bridge);
                node.registry.do_send(AttachCluster {
                    node_id: config.node_id.clone(),
                    keys: settings.keys.clone(),
                    publish: Port::new(&bridge),
                    publish_recorded: Port::new(&bridge),
                    subscribe: Port::new(&bridge),
                    ready: Port::new(&bridge),
                    release: Port::new(&bridge),
                    cluster_keys: settings.cluster_keys.clone(),
                });
                info!(prefix = %settings.keys.prefix(), redis_mode = connector.mode().label(), "cluster mode: presence, limits and routing on Redis");
                let store = RedisPresenceStore::new(pool.clone(), settings, config.node_id.clone())
                    .advertising(config.advertise_url.clone());
                let presence = Presence::new(Arc::new(store), presence_ports, true);
                let rates = RedisRateStore::new(pool.clone(), settings, limit, window)
                    .with_daily_bytes(config.user_daily_bytes);
                (
                    supervise(presence),
                    supervise(RateLimiter::new(Arc::new(rates))),
                    Some(MeteredAddr::new(bridge)),
                    Some(pool),
                )
            }
            _ => (
                supervise(Presence::in_memory(presence_ports)),
                supervise(RateLimiter::new(Arc::new(
                    MemoryRateStore::new(limit, window).with_daily_bytes(config.user_daily_bytes),
                ))),
                None,
                None,
            ),
        };
        let recovery = config.recovery.map(|window| {
            let cluster = match (&config.redis, &redis_pool) {
                (Some(settings), Some(pool)) => {
                    Some(RedisRecoveryStore::new(pool.clone(), settings, window))
                }
                _ => None,
            };
            let single = cluster.is_none();
            let store: SharedRecoveryStore = match cluster {
                Some(store) => Arc::new(store),
                None => Arc::new(MemoryRecoveryStore::new(window, RECOVERY_STREAM_LEN)),
            };
            let actor = supervise(Recovery::new(store));
            node.registry.do_send(AttachRecovery {
                record: single.then(|| Port::new(&actor)),
                replay: Port::new(&actor),
                window,
            });
            info!(
                window_secs = window.as_secs(),
                "connection state recovery on"
            );
            actor
        });
        node.registry.do_send(AttachPresence {
            rooms: Port::new(&presence),
        });
        let hooks = config.hooks.map(|hooks| {
            let actions = hooks.authorize.clone();
            let failure = hooks.failure;
            let cache = Arc::new(DecisionCache::new(DECISION_CACHE_SIZE));
            let actor = supervise(Hooks::new(hooks, cache.clone()));
            info!(actions = actions.len(), "backend hooks on");
            HookClient {
                actions,
                failure,
                cache,
                connect: Port::new(&actor),
                authorize: Port::new(&actor),
                rpc: Port::new(&actor),
            }
        });
        let webhooks = config.webhooks.map(|webhooks| {
            info!("lifecycle webhooks on");
            let j = journal.addr();
            let ports = WebhookPorts {
                lease: Port::new(j),
                take: Port::new(j),
                ack: Port::new(j),
                fail: Port::new(j),
                dead: Port::new(j),
                depth: Port::new(j),
            };
            supervise(Webhooks::new(webhooks, config.node_id.clone(), ports))
        });
        let ports = AppPorts {
            authenticated: Port::new(&registry),
            watch: Port::new(&registry),
            deliver: Port::new(&registry),
            presence_connect: Port::new(&presence),
            presence_disconnect: Port::new(&presence),
            query_statuses: Port::new(&presence),
            set_status: Port::new(&presence),
            check_message: Port::new(&rate_limiter),
            store_message: Port::new(journal.addr()),
            sync_messages: Port::new(journal.addr()),
            connection_opened: Port::new(journal.addr()),
            connection_closed: Port::new(journal.addr()),
            memberships_of: Port::new(journal.addr()),
            webhook_event: Port::new(journal.addr()),
            join_room: Port::new(&registry),
            room_online: Port::new(&presence),
            hold: bridge.as_ref().map(|b| Port::new(b.addr())),
            release: bridge.as_ref().map(|b| Port::new(b.addr())),
        };
        let app = Arc::new(App {
            node_id: config.node_id,
            auth: Arc::new(config.auth),
            ports,
            logins: LoginGuard::new(config.limits.login_failures_per_ip, Duration::from_secs(60)),
            auth_log: LogSampler::new(AUTH_LOG_LINES_PER_SEC),
            limits: config.limits,
            hooks,
            webhooks: webhooks.is_some(),
            recovery: recovery.map(|actor| RecoveryClient {
                window: config.recovery.unwrap_or_default(),
                save: Port::new(&actor),
                take: Port::new(&actor),
                recover: Port::new(&registry),
            }),
        });
        node.product = Some(Product {
            app,
            presence: MeteredAddr::new(presence),
            journal,
            bridge,
            redis_pool,
            redis_connector: connector,
            webhooks,
        });
        Ok(node)
    }
}

/// Recoverable events kept per channel at most.
const RECOVERY_STREAM_LEN: usize = 1000;

/// `auth_failed` lines logged per second at most; the rest are counted in the next one.
const AUTH_LOG_LINES_PER_SEC: u32 = 10;

/// Decisions the node's `authorize` cache holds at most.
const DECISION_CACHE_SIZE: usize = 200_000;

/// Rows the previous run of this node left open (crash, kill -9).
async fn close_stale_rows(journal: &MeteredAddr<Journal>, node_id: &NodeId) {
    let closed = journal
        .send(CloseStaleConnections {
            server_instance: node_id.clone(),
            reason: NODE_LOST.into(),
        })
        .await;
    match closed {
        Ok(Ok(closed)) => info!(closed, "closed this node's stale connection rows"),
        Ok(Err(err)) => warn!(%err, "could not close stale connection rows"),
        Err(err) => warn!(%err, "journal mailbox"),
    }
}

/// Start an infrastructure actor under a Supervisor, which restarts it if it stops.
fn supervise<A>(actor: A) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    Supervisor::start(move |_| actor)
}
