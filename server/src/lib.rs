//! The Switchboard node: configuration, HTTP routes and startup wiring.
//!
//! # Layout
//! - [`config`]: the one typed [`Config`], from flags and `SWITCHBOARD_*` variables.
//! - [`transport`]: the Engine.IO endpoint (polling handlers and the websocket transport actor),
//!   and forwarding to the node that owns a session (`transport::forward`).
//! - [`health`]: `/health`, `/health/live`, `/health/ready`.
//! - [`api`]: the server API for application backends (`/api/v1/*`).
//! - [`metrics`]: `/metrics` for Prometheus.
//! - [`admin`]: the operator's admin page, `/admin`, and its live feed.
//!
//! [`run`] serves a node on listeners the caller bound, so tests start nodes the way users do:
//! the public one, and optionally an internal one that alone serves the API, `/metrics` and
//! the admin page.

pub mod admin;
pub mod api;
pub mod config;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod traces;
pub mod transport;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::http::header::X_CONTENT_TYPE_OPTIONS;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpRequest, web};
use switchboard_actors::auth::{self, AuthConfig, Authenticator, KeySource};
use switchboard_actors::connector::is_certificate_error;
use switchboard_actors::directory::Directory;
use switchboard_actors::keys::Keys;
use switchboard_actors::metrics::MeteredAddr;
use switchboard_actors::node::{self, Node, NodeConfig, NodeError};
use switchboard_actors::ports::Port;
use switchboard_actors::ports::registry::Unregister;
use switchboard_actors::store::RedisSettings;
use switchboard_actors::{NodeId, SessionConfig, SessionKind, SessionRegistry, Sid};
use tracing::{info, warn};
use tracing_actix_web::TracingLogger;

pub use config::Config;
use transport::addresses::{AddressLimits, ProbePacer, TrustedProxies};
use transport::compress::HttpCompression;
use transport::deflate::WsDeflateConfig;
use transport::engineio::{self, Cors};
use transport::forward::{self, Forwarder};

/// Shared, read-only state of the HTTP handlers.
pub struct AppState {
    /// This node's id.
    pub node_id: NodeId,
    /// The node's session registry.
    pub registry: MeteredAddr<SessionRegistry>,
    /// Where sessions report that they stopped (the registry; one port shared by all).
    pub unregister: Port<Unregister>,
    /// Settings every session gets.
    pub session: Arc<SessionConfig>,
    /// Browser origin policy.
    pub cors: Cors,
    /// Whether Engine.IO v3 (`EIO=3`) clients are accepted.
    pub allow_eio3: bool,
    /// What `/socket.io/` serves: conformance, or the product.
    pub kind: SessionKind,
    /// The product's actors (absent in conformance mode).
    pub product: Option<node::Product>,
    /// Bearer key of the server API; `None` turns the API off.
    pub api_key: Option<String>,
    /// Failed API-key attempts per client address, to answer floods with 429.
    pub api_failures: switchboard_actors::logins::LoginGuard,
    /// The last database check, shared by `/health*` and `/metrics` (at most one per second).
    pub database_check: health::DatabaseCheck,
    /// Set once SIGTERM arrives: readiness fails and new sessions are refused.
    pub draining: AtomicBool,
    /// Cluster mode with forwarding on: where requests for other nodes' sessions go.
    pub forward: Option<Forwarder>,
    /// How polling answers are compressed.
    pub http_compression: HttpCompression,
    /// Whether websockets may use permessage-deflate, and from what size.
    pub ws_deflate: WsDeflateConfig,
    /// The most a compressed websocket message may inflate to.
    pub max_inflated: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub proxies: TrustedProxies,
    /// Handshakes and open sessions per client address.
    pub addresses: Arc<AddressLimits>,
    /// Probe and scrape requests per client address.
    pub probes: ProbePacer,
    /// Since when the health checks have seen Redis down (readiness has a grace period).
    pub redis_down: health::DownSince,
}

impl AppState {
    /// A fresh sid; in cluster mode with forwarding on, tagged with this node.
    pub fn new_sid(&self) -> Sid {
        match &self.forward {
            Some(forwarder) => Sid::random_on(forwarder.tag()),
            None => Sid::random(),
        }
    }
}

/// A configuration the node cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The JWT key file could not be read.
    #[error("cannot read the JWT public key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The JWT settings are unusable.
    #[error("invalid JWT settings: {0}")]
    Auth(#[from] auth::AuthSetupError),
    /// A setting cannot be used.
    #[error("{0}")]
    Settings(String),
    /// The node's actors could not start (Redis settings, database).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The listener failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Who the demo token is for.
const DEMO_USER: &str = "demo";

/// Build the token verifier; with no key configured, use a random secret and log a demo token.
fn authenticator(config: &Config) -> Result<Authenticator, StartError> {
    let key = match (&config.jwt_public_key_file, &config.jwt_secret) {
        (Some(path), _) => {
            KeySource::PublicKeyPem(std::fs::read(path).map_err(|source| StartError::KeyFile {
                path: path.display().to_string(),
                source,
            })?)
        }
        (None, Some(secret)) => KeySource::Secret(secret.as_bytes().to_vec()),
        (None, None) => {
            let secret = auth::random_secret();
            let token = auth::mint_hs256(&secret, DEMO_USER, 24 * 3600, &["lobby".to_string()]);
            // Printed on purpose: the embedded default must be usable without configuration.
            info!(userId = DEMO_USER, token = %token, "demo token");
            KeySource::Secret(secret)
        }
    };
    Ok(Authenticator::new(AuthConfig {
        key,
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        leeway_secs: config.jwt_leeway_secs,
    })?)
}

/// What a product node starts with, from the configuration.
fn node_config(
    config: &Config,
    node_id: NodeId,
    advertise_url: Option<String>,
) -> Result<NodeConfig, StartError> {
    let auth = authenticator(config)?;
    info!(algorithm = auth.algorithm(), "client tokens verified");
    let cluster_keys = config.cluster_keys().map_err(StartError::Settings)?;
    let redis_connector = config.redis_connector().map_err(StartError::Settings)?;
    if redis_connector.is_some() && cluster_keys.is_none() {
        warn!(
            "cluster mode without SWITCHBOARD_CLUSTER_KEY: cluster frames are not signed, so \
             anyone who can PUBLISH to Redis can inject events or disconnect users"
        );
    }
    Ok(NodeConfig {
        node_id,
        auth,
        database_url: config.database_url.clone(),
        journal: config.journal(),
        redis: redis_connector.as_ref().map(|_| RedisSettings {
            url: config.redis_url().unwrap_or_default().to_owned(),
            keys: Keys::new(config.redis_prefix.clone()),
            cluster_keys: cluster_keys.clone(),
        }),
        redis_connector,
        advertise_url,
        user_message_limit: config.user_message_limit,
        user_message_window: Duration::from_millis(config.user_message_window_ms),
        user_daily_bytes: config.user_daily_message_bytes,
        limits: config.product_limits(),
        hooks: config.hooks().map_err(StartError::Settings)?,
        recovery: (config.recovery_secs > 0).then(|| Duration::from_secs(config.recovery_secs)),
        webhooks: config.webhooks().map_err(StartError::Settings)?,
    })
}

/// Serve a node on `listener` (and the API and `/metrics` on `admin` instead, when given) until
/// `shutdown` resolves (or the process is signalled).
///
/// Must run inside an actix `System` (e.g. under `#[actix_web::main]`).
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<(), StartError> {
    let node_id = NodeId::from(config.node_id());
    switchboard_actors::metrics::init(&node_id)
        .process_start
        .set(unix_now_secs());
    let advertise_url = advertise_url(&config, &listener)?;
    let node = if config.conformance {
        Node::conformance(node_id.clone())
    } else {
        Node::start(node_config(
            &config,
            node_id.clone(),
            advertise_url.clone(),
        )?)
        .await?
    };
    let session = Arc::new(config.session());
    let forward = match (&node.product, &advertise_url) {
        (
            Some(node::Product {
                redis_pool: Some(pool),
                ..
            }),
            Some(url),
        ) => {
            let keys = Keys::new(config.redis_prefix.clone());
            let directory = Directory::new(pool.clone(), keys);
            directory.keep_fresh(forward::DIRECTORY_REFRESH);
            info!(advertise_url = %url, "forwarding requests for other nodes' sessions");
            Some(Forwarder::new(
                node_id.clone(),
                directory,
                Duration::from_millis(config.forward_timeout_ms),
                session.ping_interval,
                session.max_payload,
            ))
        }
        _ => None,
    };
    let kind = match &node.product {
        Some(product) => SessionKind::Product(product.app.clone()),
        None => SessionKind::Conformance,
    };
    let registry_start = node.registry_start.clone();
    let state = web::Data::new(AppState {
        node_id: node_id.clone(),
        unregister: Port::new(node.registry.addr()),
        registry: node.registry,
        session,
        cors: Cors::new(config.allowed_origins()),
        allow_eio3: config.allow_eio3,
        kind,
        product: node.product,
        api_key: config.api_key.clone().filter(|k| !k.is_empty()),
        api_failures: api::failed_keys(),
        database_check: health::DatabaseCheck::default(),
        draining: AtomicBool::new(false),
        forward,
        redis_down: health::DownSince::default(),
        http_compression: config.http_compression(),
        ws_deflate: config.ws_deflate(),
        // An inflated message is held whole: no bigger than an event or a plain message.
        max_inflated: config.max_event_bytes.min(config.max_payload),
        proxies: config.trusted_proxies().map_err(StartError::Settings)?,
        addresses: AddressLimits::new(config.handshakes_per_ip_per_min, config.max_sessions_per_ip),
        probes: ProbePacer::new(config.probes_per_ip_per_sec),
    });
    let admin_page = admin::start(&state, Keys::new(config.redis_prefix.clone()));
    let server = serve(
        listener,
        admin,
        state.clone(),
        admin_page,
        registry_start,
        &config,
    )?
    .run();
    let handle = server.handle();
    let drain_budget = Duration::from_secs(config.drain_secs.max(1));
    actix::spawn(async move {
        shutdown.await;
        let started = std::time::Instant::now();
        drain(&state, drain_budget).await;
        info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drained; stopping"
        );
        handle.stop(true).await;
    });
    info!(
        node = %node_id,
        conformance = config.conformance,
        allow_eio3 = config.allow_eio3,
        "node started"
    );
    Ok(server.await?)
}

/// How long a node id's liveness key is watched for a refresh: two heartbeats and a margin.
const ALIVE_WATCH: Duration =
    Duration::from_millis(2 * switchboard_actors::presence::NODE_TICK.as_millis() as u64 + 1_000);

/// Cluster mode: refuse to start under a node id that another live node holds.
///
/// A duplicate id would mark the other node's users offline and drop its cross-node frames as
/// "own". The liveness key alone cannot tell a live twin from this node's own crashed run (its
/// key outlives it by the TTL), so when the key exists it is watched for [`ALIVE_WATCH`]: only
/// a live node refreshes it. Redis being unreachable is not a refusal (the node retries later).
///
/// A `rediss://` server whose certificate the configured CA does not vouch for is a refusal
/// too: that does not fix itself.
pub async fn check_node_id(config: &Config) -> Result<(), StartError> {
    let Some(connector) = config.redis_connector().map_err(StartError::Settings)? else {
        return Ok(());
    };
    let node_id = config.node_id();
    let key = Keys::new(config.redis_prefix.clone()).node_alive(&node_id);
    let connect = tokio::time::timeout(CHECK_REDIS_TIMEOUT, connector.connection());
    let mut conn = match connect.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) if is_certificate_error(&err) => {
            return Err(StartError::Settings(err.to_string()));
        }
        Ok(Err(err)) => {
            tracing::warn!(%err, "cannot reach Redis to check that the node id is free; starting anyway");
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(
                "Redis did not answer in time to check that the node id is free; starting anyway"
            );
            return Ok(());
        }
    };
    let Some(first) = read_key(&mut conn, &key).await else {
        return Ok(());
    };
    info!(node = %node_id, "this node id's liveness key exists: checking that no other node holds it");
    let until = tokio::time::Instant::now() + ALIVE_WATCH;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match read_key(&mut conn, &key).await {
            None => return Ok(()),
            Some(now) if now != first => {
                return Err(StartError::Settings(format!(
                    "node id {node_id:?} is alive in Redis: another node refreshes `{key}`; \
                     give every node its own --node-id"
                )));
            }
            Some(_) => {}
        }
    }
    info!(node = %node_id, "the liveness key was not refreshed: a previous run of this node");
    Ok(())
}

/// A string key's value; `None` when it is absent or Redis does not answer.
async fn read_key(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
    let mut get = redis::cmd("GET");
    get.arg(key);
    let reply = get.query_async::<Option<String>>(conn);
    tokio::time::timeout(CHECK_REDIS_TIMEOUT, reply)
        .await
        .ok()?
        .ok()?
}

/// Longest a start-up check waits for Redis.
const CHECK_REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// The internal URL this node publishes for forwarding: only in cluster mode with forwarding on
/// (`--forward-timeout-ms` > 0), and refused at start when it cannot be a reachable URL.
fn advertise_url(config: &Config, listener: &TcpListener) -> Result<Option<String>, StartError> {
    if !config.cluster_mode() || config.forward_timeout_ms == 0 {
        return Ok(None);
    }
    let listen = listener.local_addr()?;
    let url = forward::advertised_url(config.advertise_url.as_deref(), listen, config::hostname())
        .map_err(|why| StartError::Settings(format!("advertise-url: {why}")))?;
    let loopback = switchboard_actors::directory::PeerAddr::parse(&url)
        .and_then(|a| a.host.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback());
    if loopback && config.advertise_url.is_none() && listen.ip().is_unspecified() {
        tracing::warn!(advertise_url = %url, "the hostname resolves to a loopback address: nodes on other hosts cannot forward to this one (set SWITCHBOARD_ADVERTISE_URL)");
    }
    Ok(Some(url))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Everything (no admin listener configured).
    All,
    /// Clients and probes only: `/socket.io/` and `/health*`.
    Public,
    /// Operators only: `/api/v1/*`, `/metrics`, `/admin` and `/health*`.
    Admin,
}

/// The HTTP server: actix-web's `HttpServer` wiring, plus the upgrade hook it does not expose
/// (a websocket handshake is answered by `engineio::upgrade`, which takes the TCP stream from
/// the HTTP dispatcher).
fn serve(
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: web::Data<AppState>,
    admin_page: Option<admin::Admin>,
    registry_start: Arc<switchboard_actors::registry::DeferredRegistry>,
    config: &Config,
) -> Result<actix_server::ServerBuilder, std::io::Error> {
    let conformance = config.conformance;
    let mut server = actix_server::Server::build()
        // Long-lived sockets: the default 25k per worker is too low for a realtime node.
        .max_concurrent_connections(100_000)
        // The drain closes sockets itself (with Close frames); actix only gets a short grace.
        .disable_signals()
        .shutdown_timeout(5);
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    let mut listeners = vec![(
        "switchboard",
        listener,
        if admin.is_some() {
            Role::Public
        } else {
            Role::All
        },
    )];
    listeners.extend(admin.map(|admin| ("admin", admin, Role::Admin)));
    for (name, listener, role) in listeners {
        let local_addr = listener.local_addr()?;
        let state = state.clone();
        let registry_start = registry_start.clone();
        // The page goes where the API goes.
        let admin_page = admin_page
            .clone()
            .filter(|_| role != Role::Public)
            .map(web::Data::new);
        server = server.listen(name, listener, move || {
            // Started by the first HTTP worker, on its thread (see the registry's module docs).
            registry_start.start_here();
            let app = App::new()
                .wrap(TracingLogger::<logging::AccessSpan>::new())
                // No response may be sniffed into another type (an error body as HTML).
                .wrap(DefaultHeaders::new().add((X_CONTENT_TYPE_OPTIONS, "nosniff")))
                .app_data(state.clone())
                .configure(health::routes);
            let app = if role == Role::Public {
                app
            } else {
                app.configure(api::routes).configure(metrics::routes)
            };
            let app = match &admin_page {
                Some(page) => app.app_data(page.clone()).configure(admin::routes),
                None => app,
            };
            let app = if role == Role::Admin {
                app
            } else {
                app.service(web::resource(["/socket.io", "/socket.io/"]).to(socket_io))
            };
            let app = if conformance && role != Role::Admin {
                app.service(web::resource(["/engine.io", "/engine.io/"]).to(engine_io))
            } else {
                app
            };
            let upgrade_state = state.clone();
            let live_stats = admin_page.as_ref().map(|page| page.stats.clone());
            HttpService::build()
                // Realtime frames are small and latency-bound: Nagle's algorithm would hold them
                // for up to ~40 ms (measured in bench/: p99 27.5 → 1.9 ms at 5k msg/s).
                .tcp_nodelay(true)
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(local_addr)
                .upgrade(fn_service(
                    move |(req, framed): (actix_http::Request, _)| {
                        let state = upgrade_state.clone();
                        // The admin page's live feed; every other upgrade goes on as before.
                        let live_stats = live_stats
                            .as_ref()
                            .filter(|_| req.head().uri.path() == admin::LIVE_PATH)
                            .cloned();
                        async move {
                            if let Some(stats) = live_stats {
                                return admin::live::serve(req, framed, state, stats).await;
                            }
                            if role == Role::Admin {
                                // No other websockets on the admin listener: closed unanswered.
                                drop(framed);
                                return Ok(());
                            }
                            engineio::upgrade(req, framed, state).await
                        }
                    },
                ))
                // `finish` (not `h1`): its `tcp()` is the one that applies tcp_nodelay.
                .finish(map_config(
                    app.into_factory()
                        .map_err(|err: actix_web::Error| err.error_response()),
                    |_| AppConfig::default(),
                ))
                .tcp()
        })?;
    }
    Ok(server)
}

/// The graceful shutdown, in DESIGN.md's order, within `budget`.
async fn drain(state: &AppState, budget: Duration) {
    use std::sync::atomic::Ordering;
    use switchboard_actors::ports::journal::Flush;
    use switchboard_actors::ports::presence::Leave;
    use switchboard_actors::ports::registry::{CountSessions, DrainLocal};

    let deadline = tokio::time::Instant::now() + budget;
    // 1. Readiness fails and new handshakes are refused from now on.
    state.draining.store(true, Ordering::Relaxed);
    switchboard_actors::metrics::metrics().draining.set(1);
    info!(budget_secs = budget.as_secs(), "SIGTERM: draining");
    // 2. Warn every socket, then give in-flight work (acks, stores) a moment.
    let _ = state.registry.send(DrainLocal::Maintenance).await;
    let grace = (budget / 10).min(Duration::from_secs(2));
    tokio::time::sleep(grace).await;
    // 3. `server:shutdown {reconnect:true}` and a 1001 close for every socket.
    let _ = state.registry.send(DrainLocal::Shutdown).await;
    // Keep a little of the budget for the flush and the Redis clean-up.
    let close_by = deadline - (budget / 5).min(Duration::from_secs(5));
    while tokio::time::Instant::now() < close_by {
        match state.registry.send(CountSessions).await {
            Ok(0) | Err(_) => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // 4. This node's presence entries, then the journal's queued rows.
    if let Some(product) = &state.product {
        let left = tokio::time::timeout_at(deadline, product.presence.send(Leave));
        if !matches!(left.await, Ok(Ok(Ok(())))) {
            tracing::warn!("could not remove this node's presence entries");
        }
        let flushed = tokio::time::timeout_at(deadline, product.journal.send(Flush));
        if !matches!(flushed.await, Ok(Ok(Ok(())))) {
            tracing::warn!("journal not fully flushed before the drain deadline");
        }
    }
}

async fn socket_io(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::HttpResponse {
    let kind = state.kind.clone();
    engineio::handle(req, payload, state, kind).await
}

async fn engine_io(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::HttpResponse {
    engineio::handle(req, payload, state, SessionKind::EngineEcho).await
}
