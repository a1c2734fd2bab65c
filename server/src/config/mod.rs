//! The node's one typed configuration, read once from flags, `SWITCHBOARD_*` variables and an
//! optional TOML file.
//!
//! # Layout
//! - [`Config`]: the clap definition, the single source of every setting's flag, variable,
//!   default and meaning, plus the views each part of the node takes of it.
//! - [`Config::load`]: precedence. Flag > environment variable > file > built-in default.
//! - `file`: reads the `--config` file and hands each value to clap as that setting's default,
//!   so clap's own parser validates it and a flag or variable still wins over it.
//! - `effective`: what won and from where (`--print-config`, secrets redacted), and the README's
//!   settings table.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches, Parser};
use std::collections::HashSet;
use switchboard_actors::SessionConfig;

use switchboard_actors::app::AppLimits;
use switchboard_actors::connector::{Connector, TlsFiles};
use switchboard_actors::hooks::{FailurePolicy, HooksConfig};
use switchboard_actors::ports::hooks::Action;
use switchboard_actors::signing::ClusterKeys;

use crate::transport::addresses::TrustedProxies;
use switchboard_actors::webhooks::WebhooksConfig;

use crate::transport::compress::HttpCompression;
use crate::transport::deflate::WsDeflateConfig;

mod effective;
mod file;

pub use effective::{Effective, Source};
use file::FileSettings;

/// Shortest server API key accepted: 32 bytes is 256 bits of hex-encoded randomness.
pub const MIN_API_KEY_BYTES: usize = 32;

const DAY_SECS: u64 = 24 * 3600;
const DAY_MS: u64 = DAY_SECS * 1000;
/// Longest retention or webhook age: 100 years, far from any overflow.
const MAX_DAYS: u64 = 36_500;

/// The help heading of one-shot actions: command-line only, never settings, so never in a file.
const ACTIONS: &str = "Actions";

/// The id of `--config` (the field name), which a file cannot set.
const CONFIG_ID: &str = "config";

/// Whether `arg` is on or off: a plain flag, or one that takes `true`/`false` (for settings
/// that are on by default).
fn is_on_off(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
        || arg.get_value_parser().type_id() == std::any::TypeId::of::<bool>()
}

/// Whether `arg` is a setting (and so a file key): every option but `--config`, the actions,
/// `--help` and `--version`.
fn is_setting(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && arg.get_id() != CONFIG_ID
        && arg.get_help_heading() != Some(ACTIONS)
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

/// Switchboard: a Socket.IO-compatible realtime node.
///
/// Every setting can also be set through the environment variable named beside it, or in the
/// `--config` file under its flag's name.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub struct Config {
    /// TOML file of settings, keyed by the long flag names (`listen = "0.0.0.0:3000"`); flags and
    /// environment variables override it.
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Public listener for `/socket.io/` and `/health*` (and `/metrics` and `/api/v1/*` unless
    /// `--admin-listen` is set).
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: String,

    /// Internal listener for the server API `/api/v1/*`, `/metrics`, the admin page `/admin` and
    /// `/health*`; when set, the public listener answers 404 for the API, `/metrics` and `/admin`
    /// [default: unset, everything on `--listen`].
    #[arg(long, env = "SWITCHBOARD_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,

    /// This node's id: the `server_instance` label and Redis node keys [default: the hostname,
    /// which is the pod name in a StatefulSet].
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,

    /// Serve what the public Engine.IO/Socket.IO protocol test suites expect of their reference
    /// server: an echo endpoint on `/engine.io/`, namespaces `/` and `/custom` with echo events on
    /// `/socket.io/`, fast heartbeats (300/200 ms), a 1 s connect timeout, and no auth.
    #[arg(long, env = "SWITCHBOARD_CONFORMANCE")]
    pub conformance: bool,

    /// How often the server pings each client, in ms [default: 25000; conformance: 300].
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,

    /// How long a client may take to answer a ping before it is disconnected, in ms
    /// [default: 20000; conformance: 200].
    #[arg(long, env = "SWITCHBOARD_PING_TIMEOUT_MS")]
    pub ping_timeout_ms: Option<u64>,

    /// How long a client may take to send its Socket.IO CONNECT, in ms
    /// [default: 45000; conformance: 1000].
    #[arg(long, env = "SWITCHBOARD_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: Option<u64>,

    /// How long a polling→websocket upgrade may take, in ms.
    #[arg(long, env = "SWITCHBOARD_UPGRADE_TIMEOUT_MS", default_value_t = 10_000)]
    pub upgrade_timeout_ms: u64,

    /// Engine.IO maxPayload: bytes per polling POST (over it: 413) or websocket message (over it:
    /// close 1009).
    #[arg(long, env = "SWITCHBOARD_MAX_PAYLOAD", default_value_t = 1_000_000)]
    pub max_payload: usize,

    /// Outbound frames a client that does not read may have queued before it is disconnected
    /// as `slow_client`.
    #[arg(long, env = "SWITCHBOARD_MAX_BUFFERED_FRAMES", default_value_t = 1024)]
    pub max_buffered_frames: usize,

    /// Outbound bytes a client that does not read may have queued before it is disconnected as
    /// `slow_client` (a single larger frame is still sent).
    #[arg(long, env = "SWITCHBOARD_MAX_BUFFERED_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_buffered_bytes: usize,

    /// Compress polling answers of at least `--http-compression-threshold` bytes with gzip or
    /// deflate, as the request's `Accept-Encoding` allows (`--http-compression=false`: never).
    #[arg(
        long,
        env = "SWITCHBOARD_HTTP_COMPRESSION",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub http_compression: bool,

    /// Smallest polling answer that is compressed, in bytes.
    #[arg(
        long,
        env = "SWITCHBOARD_HTTP_COMPRESSION_THRESHOLD",
        default_value_t = 1024
    )]
    pub http_compression_threshold: usize,

    /// Accept websocket permessage-deflate (RFC 7692, without context takeover) when the client
    /// offers it; a received message may inflate to at most `--max-event-bytes` (and
    /// `--max-payload`), else the socket is closed (1009).
    #[arg(long, env = "SWITCHBOARD_WS_DEFLATE")]
    pub ws_deflate: bool,

    /// Smallest websocket message sent compressed when permessage-deflate is on, in bytes.
    #[arg(long, env = "SWITCHBOARD_WS_DEFLATE_THRESHOLD", default_value_t = 1024)]
    pub ws_deflate_threshold: usize,

    /// Also accept Engine.IO v3 / Socket.IO v2 clients (`EIO=3`, socket.io-client 1.x and 2.x,
    /// like socket.io's `allowEIO3`); when off they get 400 "Unsupported protocol version".
    #[arg(long, env = "SWITCHBOARD_ALLOW_EIO3")]
    pub allow_eio3: bool,

    /// Comma-separated list of allowed browser origins, or `*` for any.
    #[arg(long, env = "SWITCHBOARD_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,

    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "SWITCHBOARD_WORKERS")]
    pub workers: Option<usize>,

    /// Redis URL (`redis://host:6379/0`); setting it turns on cluster mode [default: unset,
    /// single node with in-memory presence and limits].
    #[arg(long, env = "SWITCHBOARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// CA certificate file (PEM) that a `rediss://` server's certificate must chain to
    /// [default: unset, the system's roots].
    #[arg(long, env = "SWITCHBOARD_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Client certificate file (PEM) for a `rediss://` server that asks for one; needs
    /// `redis-client-key-file` [default: unset, no client certificate].
    #[arg(long, env = "SWITCHBOARD_REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<PathBuf>,

    /// The client certificate's private key file (PEM) [default: unset].
    #[arg(long, env = "SWITCHBOARD_REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,

    /// Redis Sentinels, `host:port,…`: the node asks them for the master of
    /// `redis-master-name` and follows failovers; setting it turns on cluster mode (a
    /// `redis-url`, if set, then only gives the master's scheme, password and database)
    /// [default: unset].
    #[arg(long, env = "SWITCHBOARD_REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,

    /// The master's name in the Sentinels' configuration [default: unset; needed with
    /// `redis-sentinels`].
    #[arg(long, env = "SWITCHBOARD_REDIS_MASTER_NAME")]
    pub redis_master_name: Option<String>,

    /// Let cluster mode run on SQLite: only for tests and one-host development where every node
    /// opens the same file (separate files break message ids and `message:sync`).
    #[arg(long, env = "SWITCHBOARD_ALLOW_SQLITE_CLUSTER")]
    pub allow_sqlite_cluster: bool,

    /// Database URL: `sqlite://path?mode=rwc` or `postgres://user:pass@host/db`; migrations
    /// run at start.
    #[arg(
        long,
        env = "SWITCHBOARD_DATABASE_URL",
        default_value = "sqlite://switchboard.db?mode=rwc",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Prefix for every Redis key and channel (to share one Redis between deployments).
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "")]
    pub redis_prefix: String,

    /// This node's internal base URL, published in Redis so that other nodes can forward to it
    /// the requests of sessions it owns: `http://host:port`, or a bare host or IP (the
    /// listener's port is added) [default: the listen address when it is a specific IP, else
    /// the address the hostname resolves to (the pod IP in Kubernetes)].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Cluster mode: how long a request for a session on another node may wait for that node,
    /// in ms, beyond what the request itself waits (a long-poll GET: up to the ping interval);
    /// 0 turns forwarding off (the load balancer must then keep each session on its node).
    #[arg(long, env = "SWITCHBOARD_FORWARD_TIMEOUT_MS", default_value_t = 5_000)]
    pub forward_timeout_ms: u64,

    /// HS256 secret for client tokens; a command-line flag shows in the process list, prefer
    /// the variable or `--jwt-secret-file` [default: random, and a demo token is printed; refused
    /// in cluster mode].
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// File holding the HS256 secret (one line; a trailing newline is ignored), instead of
    /// `--jwt-secret`.
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_SECRET_FILE",
        conflicts_with = "jwt_secret"
    )]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM public key for client tokens: RS256 for an RSA key, ES256 for an EC P-256 key
    /// (replaces the HS256 secret).
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock leeway for `exp` and `nbf`, in seconds.
    #[arg(long, env = "SWITCHBOARD_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,

    /// Bearer key for the server API `/api/v1/*`, at least 32 bytes [default: unset, the API is
    /// off].
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// HMAC keys that sign and verify every cluster frame, comma-separated: the first signs,
    /// each verifies (rotation). At least 32 bytes each. Unset: frames are not signed (warned).
    #[arg(long, env = "SWITCHBOARD_CLUSTER_KEY", hide_env_values = true)]
    pub cluster_key: Option<String>,

    /// Largest application event, in bytes (over it: an `error` event or error ack).
    #[arg(long, env = "SWITCHBOARD_MAX_EVENT_BYTES", default_value_t = 65_536)]
    pub max_event_bytes: usize,

    /// Most sockets one user may have open across the cluster; more are refused with
    /// `connect_refused` / `too_many_sockets` (0: no limit).
    #[arg(long, env = "SWITCHBOARD_MAX_SOCKETS_PER_USER", default_value_t = 50)]
    pub max_sockets_per_user: usize,

    /// Most users the sockets of one user on a node may watch together with
    /// `presence:subscribe` (0: no limit; each socket may watch at most 1000).
    #[arg(long, env = "SWITCHBOARD_MAX_WATCHES_PER_USER", default_value_t = 5000)]
    pub max_watches_per_user: usize,

    /// Handshakes (new Engine.IO sessions) one client address may open per minute on a node;
    /// past it they get `429` (0: no limit).
    #[arg(
        long,
        env = "SWITCHBOARD_HANDSHAKES_PER_IP_PER_MIN",
        default_value_t = 0
    )]
    pub handshakes_per_ip_per_min: u32,

    /// Sessions one client address may hold open at once on a node, logged in or not; past it
    /// handshakes get `429` (0: no limit).
    #[arg(long, env = "SWITCHBOARD_MAX_SESSIONS_PER_IP", default_value_t = 0)]
    pub max_sessions_per_ip: u32,

    /// Requests a second one client address may make to `/health*` and `/metrics` on a node (a
    /// second's worth at once); past it requests are delayed, and refused with `429` when more
    /// than a second behind, so a flood of probes costs the node little (0: no limit).
    #[arg(long, env = "SWITCHBOARD_PROBES_PER_IP_PER_SEC", default_value_t = 50)]
    pub probes_per_ip_per_sec: u32,

    /// Proxies (addresses or networks, comma-separated) whose `X-Forwarded-For` names the
    /// client: the per-address limits and logs then use the last address in it that is not
    /// one of them. Unset: the peer address, whatever the header says.
    #[arg(long, env = "SWITCHBOARD_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Failed logins (refused tokens) one client address may make per minute on a node; past
    /// it the address's CONNECTs are refused with `too_many_attempts` unchecked (0: no limit).
    #[arg(long, env = "SWITCHBOARD_LOGIN_FAILURES_PER_IP", default_value_t = 30)]
    pub login_failures_per_ip: u32,

    /// Events one socket may send per `--socket-event-window-ms`.
    #[arg(long, env = "SWITCHBOARD_SOCKET_EVENT_LIMIT", default_value_t = 100)]
    pub socket_event_limit: u32,

    /// The per-socket event window, in ms.
    #[arg(
        long,
        env = "SWITCHBOARD_SOCKET_EVENT_WINDOW_MS",
        default_value_t = 10_000
    )]
    pub socket_event_window_ms: u64,

    /// `message:send` events one user may send per `--user-message-window-ms`, across all of
    /// the user's sockets.
    #[arg(long, env = "SWITCHBOARD_USER_MESSAGE_LIMIT", default_value_t = 30)]
    pub user_message_limit: u32,

    /// The per-user message window, in ms.
    #[arg(
        long,
        env = "SWITCHBOARD_USER_MESSAGE_WINDOW_MS",
        default_value_t = 60_000
    )]
    pub user_message_window_ms: u64,

    /// Bytes of `message:send` text one user may store per UTC day, across the cluster; past
    /// it sends get `rate_limited` with the time until midnight UTC (0: no quota).
    #[arg(
        long,
        env = "SWITCHBOARD_USER_DAILY_MESSAGE_BYTES",
        default_value_t = 50 * 1024 * 1024
    )]
    pub user_daily_message_bytes: u64,

    /// Graceful shutdown budget in seconds: after SIGTERM the node warns its clients, closes
    /// them (they reconnect elsewhere), flushes its logs and exits within this time.
    #[arg(long, env = "SWITCHBOARD_DRAIN_SECS", default_value_t = 30)]
    pub drain_secs: u64,

    /// Connection and presence log rows the journal may hold while the database is slow or
    /// down; beyond it rows are dropped and counted (`journal_dropped_total`).
    #[arg(
        long,
        env = "SWITCHBOARD_JOURNAL_QUEUE_LIMIT",
        default_value_t = 10_000
    )]
    pub journal_queue_limit: usize,

    /// Days a closed connection row is kept.
    #[arg(
        long,
        env = "SWITCHBOARD_RETENTION_CONNECTIONS_DAYS",
        default_value_t = 7
    )]
    pub retention_connections_days: u64,

    /// Days a presence log row is kept.
    #[arg(
        long,
        env = "SWITCHBOARD_RETENTION_PRESENCE_DAYS",
        default_value_t = 30
    )]
    pub retention_presence_days: u64,

    /// Days a durable message is kept; older ones are deleted by the retention sweep and no
    /// longer returned by `message:sync` (0: kept for ever).
    #[arg(long, env = "SWITCHBOARD_RETENTION_MESSAGES_DAYS", default_value_t = 0)]
    pub retention_messages_days: u64,

    /// Connection state recovery window, in seconds: a client that lost its connection and
    /// comes back within it gets its rooms back and every event it missed (0 turns recovery
    /// off).
    #[arg(long, env = "SWITCHBOARD_RECOVERY_SECS", default_value_t = 120)]
    pub recovery_secs: u64,

    /// Base URL of the application's backend hooks (`{url}/connect`, `/authorize`, `/rpc`)
    /// [default: unset, no hooks; custom events are `unknown_event`].
    #[arg(long, env = "SWITCHBOARD_HOOK_URL")]
    pub hook_url: Option<String>,

    /// HMAC key that signs every hook and webhook request (required with a hook or webhook
    /// URL).
    #[arg(long, env = "SWITCHBOARD_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,

    /// How long a hook call may take, in ms.
    #[arg(long, env = "SWITCHBOARD_HOOK_TIMEOUT_MS", default_value_t = 2_000)]
    pub hook_timeout_ms: u64,

    /// Comma-separated actions the backend's `authorize` hook decides (`message:send`,
    /// `typing`, `signal`, `presence:subscribe`, `presence:query`, `room:join`, `room:emit`);
    /// others cost nothing.
    #[arg(long, env = "SWITCHBOARD_HOOK_AUTHORIZE", default_value = "")]
    pub hook_authorize: String,

    /// When a hook fails or its circuit is open: `closed` refuses with `service_unavailable`,
    /// `open` allows.
    #[arg(long, env = "SWITCHBOARD_HOOK_FAILURE", default_value = "closed", value_parser = ["closed", "open"])]
    pub hook_failure: String,

    /// Where lifecycle webhooks are delivered (`POST {events: [...]}`) [default: unset, off].
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Hours an undelivered webhook event is retried before it is dead-lettered.
    #[arg(long, env = "SWITCHBOARD_WEBHOOK_MAX_AGE_HOURS", default_value_t = 24)]
    pub webhook_max_age_hours: u64,

    /// Log filter (tracing `EnvFilter` syntax); logs are JSON lines on stdout.
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info")]
    pub log: String,

    /// OpenTelemetry collector base URL: traces are exported as OTLP over HTTP with protobuf
    /// bodies to `{url}/v1/traces` (e.g. `http://otel-collector:4318`) [default: unset, no
    /// traces and no spans built].
    #[arg(long, env = "SWITCHBOARD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Share of the traces this node starts that are sampled (0.0 to 1.0); a trace a client
    /// or another node started keeps its own sampling decision.
    #[arg(long, env = "SWITCHBOARD_TRACE_SAMPLE_RATIO", default_value = "1.0")]
    pub trace_sample_ratio: f64,

    /// Print the effective configuration as TOML that `--config` accepts (secrets redacted, each
    /// setting's source in a comment) and exit.
    #[arg(long, help_heading = ACTIONS)]
    pub print_config: bool,

    /// Run the retention sweep once against the database and exit (for a cron job).
    #[arg(long, help_heading = ACTIONS)]
    pub retention_sweep: bool,

    /// Print an HS256 token for this user id (signed with --jwt-secret, valid for 24 hours) and
    /// exit: for development and for trying the node out.
    #[arg(long, value_name = "USER", help_heading = ACTIONS)]
    pub mint_token: Option<String>,
}

/// A loaded configuration and the record of where each setting came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed configuration.
    pub config: Config,
    /// Every setting's effective value and source, for `--print-config`.
    pub effective: Effective,
}

/// Why the configuration could not be loaded; the node must not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags or environment variables, or `--help`/`--version` (print it with `exit()`).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// The config file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The config file is not TOML.
    #[error("config file {} is not valid TOML: {source}", path.display())]
    Syntax {
        /// The file named by `--config`.
        path: PathBuf,
        /// Where and why parsing stopped.
        source: toml::de::Error,
    },
    /// The config file has unknown keys or invalid values; each problem names its key.
    #[error("invalid config file {}:\n  - {}", path.display(), problems.join("\n  - "))]
    Settings {
        /// The file named by `--config`.
        path: PathBuf,
        /// One line per bad key.
        problems: Vec<String>,
    },
}

impl Config {
    /// Load the configuration from this process's arguments, its `SWITCHBOARD_*` variables and
    /// the `--config` file, if any.
    pub fn load() -> Result<Loaded, ConfigError> {
        Self::load_from(Self::command(), std::env::args_os())
    }

    /// [`Config::load`] with the given definition (tests strip its environment variables) and
    /// arguments (the first is the program name).
    fn load_from(
        command: Command,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Result<Loaded, ConfigError> {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        // First pass, only to find the file: it may be named by a flag or a variable. Anything it
        // refuses (or `--help`) the second pass would refuse the same way.
        let first = command.clone().try_get_matches_from(&args)?;
        let file = match first.get_one::<PathBuf>(CONFIG_ID) {
            Some(path) => Some(FileSettings::read(path, &command)?),
            None => None,
        };
        // File values become clap defaults, which clap parses like any value and uses only when
        // neither the flag nor the variable is given: flag > env > file > built-in default.
        let matches = match &file {
            Some(file) => {
                let matches = file.apply(command.clone()).try_get_matches_from(&args)?;
                file.check_placeholders(&matches)?;
                matches
            }
            None => first,
        };
        Self::from_matches(command, &matches, file.as_ref())
    }

    fn from_matches(
        mut command: Command,
        matches: &ArgMatches,
        file: Option<&FileSettings>,
    ) -> Result<Loaded, ConfigError> {
        let config = Config::from_arg_matches(matches)?;
        command.build();
        let effective = Effective::new(&command, matches, file);
        Ok(Loaded { config, effective })
    }

    /// The node id: the configured one, else the hostname, else `switchboard`.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(hostname)
            .unwrap_or_else(|| "switchboard".to_string())
    }

    /// Session settings derived from the flags (conformance mode changes the defaults).
    pub fn session(&self) -> SessionConfig {
        let (interval, timeout, connect) = if self.conformance {
            (300, 200, 1_000)
        } else {
            (25_000, 20_000, 45_000)
        };
        SessionConfig {
            ping_interval: Duration::from_millis(self.ping_interval_ms.unwrap_or(interval)),
            ping_timeout: Duration::from_millis(self.ping_timeout_ms.unwrap_or(timeout)),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.unwrap_or(connect)),
            upgrade_timeout: Duration::from_millis(self.upgrade_timeout_ms),
            max_payload: self.max_payload,
            max_buffered_frames: self.max_buffered_frames,
            max_buffered_bytes: self.max_buffered_bytes,
            limits: Default::default(),
        }
    }

    /// Journal settings (batching defaults, the queue bound and retention from the flags).
    pub fn journal(&self) -> switchboard_actors::journal::JournalConfig {
        // Saturating, never truncating: `validate` refuses values this large anyway.
        let days = |n: u64| Duration::from_secs(n.max(1).saturating_mul(DAY_SECS));
        switchboard_actors::journal::JournalConfig {
            queue_limit: self.journal_queue_limit.max(1),
            retention_connections: days(self.retention_connections_days),
            retention_presence: days(self.retention_presence_days),
            retention_messages: (self.retention_messages_days > 0)
                .then(|| days(self.retention_messages_days)),
            webhooks: self.webhook_url.is_some(),
            ..Default::default()
        }
    }

    /// Cluster mode: a Redis URL or Sentinels are set (and this is not a conformance node).
    pub fn cluster_mode(&self) -> bool {
        !self.conformance && (self.redis_url().is_some() || !self.sentinels().is_empty())
    }

    /// The Redis URL, when set and not empty.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.is_empty())
    }

    /// The Sentinels' `host:port`s (none when unset).
    pub fn sentinels(&self) -> Vec<String> {
        self.redis_sentinels
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// How the node reaches Redis (mode and TLS), in cluster mode; an unusable setting or an
    /// unreadable certificate file is named in the error.
    pub fn redis_connector(&self) -> Result<Option<Connector>, String> {
        if !self.cluster_mode() {
            return Ok(None);
        }
        let read = |setting: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("{setting} {}: {e}", path.display()))
        };
        let ca = match &self.redis_ca_file {
            Some(path) => Some(read("redis-ca-file", path)?),
            None => None,
        };
        let client = match (&self.redis_client_cert_file, &self.redis_client_key_file) {
            (Some(cert), Some(key)) => Some((
                read("redis-client-cert-file", cert)?,
                read("redis-client-key-file", key)?,
            )),
            (None, None) => None,
            _ => {
                return Err(
                    "redis-client-cert-file and redis-client-key-file go together".to_owned(),
                );
            }
        };
        let tls = (ca.is_some() || client.is_some()).then_some(TlsFiles { ca, client });
        let sentinels = self.sentinels();
        let connector = if sentinels.is_empty() {
            // Cluster mode without Sentinels has a URL.
            Connector::single(self.redis_url().unwrap_or_default(), tls)
        } else {
            let name = self
                .redis_master_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .ok_or("redis-sentinels needs redis-master-name")?;
            Connector::sentinel(&sentinels, name, self.redis_url(), tls)
        };
        connector.map(Some).map_err(|e| format!("redis: {e}"))
    }

    /// Replace `--jwt-secret-file` by the secret it holds (a trailing newline is not part of
    /// it); called once at start, before anything uses the secret.
    pub fn read_secret_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.jwt_secret_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("jwt-secret-file {}: {err}", path.display()))?;
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(format!("jwt-secret-file {} is empty", path.display()));
        }
        self.jwt_secret = Some(secret.to_owned());
        Ok(())
    }

    /// Settings that parse but would break a guarantee or a computation, each named with why;
    /// the node refuses to start on any of them.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(key) = self.api_key.as_deref().filter(|k| !k.is_empty())
            && key.len() < MIN_API_KEY_BYTES
        {
            problems.push(format!(
                "api-key is {} bytes; the server API key must be at least {MIN_API_KEY_BYTES} \
                 (e.g. `openssl rand -hex 32`)",
                key.len()
            ));
        }
        if !self.sentinels().is_empty()
            && self.redis_master_name.as_deref().is_none_or(str::is_empty)
        {
            problems.push("redis-sentinels needs redis-master-name".to_owned());
        }
        let tls_files = self.redis_ca_file.is_some()
            || self.redis_client_cert_file.is_some()
            || self.redis_client_key_file.is_some();
        if tls_files && !self.redis_url().is_some_and(|u| u.starts_with("rediss://")) {
            problems.push(
                "redis-ca-file and redis-client-*-file are for TLS: set a rediss:// redis-url \
                 (in Sentinel mode it gives the master's scheme)"
                    .to_owned(),
            );
        }
        if self.cluster_mode() {
            if self.database_url.starts_with("sqlite:") && !self.allow_sqlite_cluster {
                problems.push(
                    "cluster mode (redis-url) needs a shared PostgreSQL database-url: on SQLite \
                     each node has its own message ids and history"
                        .to_owned(),
                );
            }
            let keyed = self.jwt_public_key_file.is_some()
                || self.jwt_secret.as_deref().is_some_and(|s| !s.is_empty());
            if !keyed {
                problems.push(
                    "cluster mode (redis-url) needs jwt-secret, jwt-secret-file or \
                     jwt-public-key-file: a random secret differs on every node"
                        .to_owned(),
                );
            }
        }
        // Port 0 picks a free port for each, so only the same fixed port is a clash.
        if let Some(admin) = &self.admin_listen
            && admin == &self.listen
            && !admin.ends_with(":0")
        {
            problems.push(format!(
                "admin-listen {admin} is the public listen address; give it its own port"
            ));
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            problems.push(format!(
                "trace-sample-ratio {} is not between 0.0 and 1.0",
                self.trace_sample_ratio
            ));
        }
        if let Some(endpoint) = self.otlp_endpoint()
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            problems.push(format!(
                "otlp-endpoint {endpoint:?} is not an http:// or https:// URL"
            ));
        }
        // actix-server asserts at least one worker.
        if self.workers == Some(0) {
            problems.push("workers = 0: at least one HTTP worker is needed".to_owned());
        }
        for (name, value, max) in self.bounded_settings() {
            if let Some(value) = value
                && value > max
            {
                problems.push(format!("{name} = {value} is over its limit of {max}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Durations with their largest accepted value: beyond these a timer or a deadline
    /// overflows, or a value is truncated.
    fn bounded_settings(&self) -> [(&'static str, Option<u64>, u64); 15] {
        [
            ("drain-secs", Some(self.drain_secs), 3_600),
            ("ping-interval-ms", self.ping_interval_ms, DAY_MS),
            ("ping-timeout-ms", self.ping_timeout_ms, DAY_MS),
            ("connect-timeout-ms", self.connect_timeout_ms, DAY_MS),
            ("upgrade-timeout-ms", Some(self.upgrade_timeout_ms), DAY_MS),
            ("forward-timeout-ms", Some(self.forward_timeout_ms), DAY_MS),
            ("hook-timeout-ms", Some(self.hook_timeout_ms), DAY_MS),
            (
                "socket-event-window-ms",
                Some(self.socket_event_window_ms),
                DAY_MS,
            ),
            (
                "user-message-window-ms",
                Some(self.user_message_window_ms),
                DAY_MS,
            ),
            ("jwt-leeway-secs", Some(self.jwt_leeway_secs), 3_600),
            ("recovery-secs", Some(self.recovery_secs), DAY_SECS),
            (
                "retention-connections-days",
                Some(self.retention_connections_days),
                MAX_DAYS,
            ),
            (
                "retention-presence-days",
                Some(self.retention_presence_days),
                MAX_DAYS,
            ),
            (
                "retention-messages-days",
                Some(self.retention_messages_days),
                MAX_DAYS,
            ),
            (
                "webhook-max-age-hours",
                Some(self.webhook_max_age_hours),
                MAX_DAYS * 24,
            ),
        ]
    }

    /// The trusted proxies of `--trusted-proxies`.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, String> {
        TrustedProxies::parse(&self.trusted_proxies).map_err(|e| format!("trusted-proxies: {e}"))
    }

    /// The cluster frame keys, when `--cluster-key` is set.
    pub fn cluster_keys(&self) -> Result<Option<Arc<ClusterKeys>>, String> {
        self.cluster_key
            .as_deref()
            .filter(|k| !k.trim().is_empty())
            .map(|k| {
                ClusterKeys::parse(k)
                    .map(Arc::new)
                    .map_err(|e| format!("cluster-key: {e}"))
            })
            .transpose()
    }

    /// The OTLP collector's base URL, when traces are on.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref().filter(|e| !e.is_empty())
    }

    /// The backend hooks, when a hook URL is set; an unusable setting is named in the error.
    pub fn hooks(&self) -> Result<Option<HooksConfig>, String> {
        let Some(url) = self.hook_url.clone().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let secret = self.signing_secret("--hook-url")?;
        let mut authorize = HashSet::new();
        for name in self
            .hook_authorize
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let action = Action::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "hook-authorize: unknown action {name:?} (known: {})",
                    known.join(", ")
                )
            })?;
            authorize.insert(action);
        }
        Ok(Some(HooksConfig {
            url,
            secret,
            timeout: Duration::from_millis(self.hook_timeout_ms.max(1)),
            authorize,
            failure: if self.hook_failure == "open" {
                FailurePolicy::Open
            } else {
                FailurePolicy::Closed
            },
        }))
    }

    /// The webhook deliverer, when a webhook URL is set.
    pub fn webhooks(&self) -> Result<Option<WebhooksConfig>, String> {
        let Some(url) = self.webhook_url.clone().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let secret = self.signing_secret("--webhook-url")?;
        let mut config = WebhooksConfig::new(url, secret);
        config.max_age = Duration::from_secs(3600 * self.webhook_max_age_hours.max(1));
        Ok(Some(config))
    }

    fn signing_secret(&self, needed_by: &str) -> Result<Vec<u8>, String> {
        self.hook_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| {
                format!(
                    "{needed_by} needs --hook-secret (SWITCHBOARD_HOOK_SECRET) to sign requests"
                )
            })
    }

    /// Product-mode limits.
    pub fn product_limits(&self) -> AppLimits {
        AppLimits {
            max_event_bytes: self.max_event_bytes,
            socket_events: self.socket_event_limit.max(1),
            socket_window: Duration::from_millis(self.socket_event_window_ms.max(1)),
            max_sockets_per_user: self.max_sockets_per_user,
            max_watches_per_user: self.max_watches_per_user,
            login_failures_per_ip: self.login_failures_per_ip,
        }
    }

    /// How polling answers are compressed.
    pub fn http_compression(&self) -> HttpCompression {
        HttpCompression {
            enabled: self.http_compression,
            threshold: self.http_compression_threshold,
        }
    }

    /// Whether and how websockets may use permessage-deflate.
    pub fn ws_deflate(&self) -> WsDeflateConfig {
        WsDeflateConfig {
            enabled: self.ws_deflate,
            threshold: self.ws_deflate_threshold,
        }
    }

    /// The CORS allow-list; `None` means any origin.
    pub fn allowed_origins(&self) -> Option<Vec<String>> {
        let list: Vec<String> = self
            .cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        if list.is_empty() || list.iter().any(|o| o == "*") {
            None
        } else {
            Some(list)
        }
    }
}

/// The machine's hostname (`$HOSTNAME`, else `/etc/hostname`): the pod name in Kubernetes.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_conformance_defaults() {
        let cfg = Config::parse_from(["switchboard"]);
        assert_eq!(cfg.listen, "0.0.0.0:3000");
        assert_eq!(cfg.session().ping_interval, Duration::from_millis(25_000));
        let cfg = Config::parse_from(["switchboard", "--conformance"]);
        let s = cfg.session();
        assert_eq!(s.ping_interval, Duration::from_millis(300));
        assert_eq!(s.ping_timeout, Duration::from_millis(200));
        assert_eq!(s.connect_timeout, Duration::from_millis(1_000));
        let cfg = Config::parse_from(["switchboard", "--conformance", "--ping-interval-ms", "50"]);
        assert_eq!(cfg.session().ping_interval, Duration::from_millis(50));
    }

    #[test]
    fn origins_allow_list() {
        let cfg = Config::parse_from(["switchboard"]);
        assert_eq!(cfg.allowed_origins(), None);
        let cfg = Config::parse_from([
            "switchboard",
            "--cors-origins",
            "https://a.io, https://b.io",
        ]);
        assert_eq!(
            cfg.allowed_origins(),
            Some(vec!["https://a.io".to_string(), "https://b.io".to_string()])
        );
    }

    fn problems(args: &[&str]) -> Vec<String> {
        let cfg = Config::parse_from(std::iter::once("switchboard").chain(args.iter().copied()));
        cfg.validate().err().unwrap_or_default()
    }

    #[test]
    fn traces_are_off_by_default_and_their_settings_are_checked() {
        let cfg = Config::parse_from(["switchboard"]);
        assert_eq!(cfg.otlp_endpoint(), None);
        assert_eq!(cfg.trace_sample_ratio, 1.0);
        let on = ["--otlp-endpoint", "http://collector:4318"];
        assert!(problems(&on).is_empty());
        assert!(problems(&["--otlp-endpoint", ""]).is_empty(), "empty: off");
        let scheme = problems(&["--otlp-endpoint", "collector:4318"]);
        assert!(scheme[0].contains("http://"), "{scheme:?}");
        for ratio in ["1.5", "-0.1", "NaN"] {
            let flag = format!("--trace-sample-ratio={ratio}");
            let bad = problems(&[&on[..], &[flag.as_str()]].concat());
            assert!(bad[0].contains("between 0.0 and 1.0"), "{ratio}: {bad:?}");
        }
        assert!(problems(&[&on[..], &["--trace-sample-ratio", "0.25"]].concat()).is_empty());
    }

    #[test]
    fn short_api_keys_are_refused() {
        let short = problems(&["--api-key", "0123456789abcdef0123456789abcde"]);
        assert_eq!(short.len(), 1, "{short:?}");
        assert!(short[0].contains("at least 32"), "{short:?}");
        assert!(problems(&["--api-key", "0123456789abcdef0123456789abcdef"]).is_empty());
        // An empty key turns the API off, as before.
        assert!(problems(&["--api-key", ""]).is_empty());
    }

    #[test]
    fn cluster_mode_needs_postgres_and_a_configured_key() {
        let redis = ["--redis-url", "redis://127.0.0.1:6379"];
        let both = problems(&redis);
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both[0].contains("PostgreSQL"), "{both:?}");
        assert!(both[1].contains("random secret"), "{both:?}");
        let pg = ["--database-url", "postgres://u:p@db/sb"];
        let args = [&redis[..], &pg, &["--jwt-secret", "s"]].concat();
        assert!(problems(&args).is_empty());
        let args = [
            &redis[..],
            &["--allow-sqlite-cluster", "--jwt-public-key-file", "k.pem"],
        ]
        .concat();
        assert!(problems(&args).is_empty());
        // Conformance nodes have no database or tokens.
        assert!(problems(&[&redis[..], &["--conformance"]].concat()).is_empty());
    }

    #[test]
    fn sentinel_and_tls_settings_are_checked() {
        let ok = [
            "--database-url",
            "postgres://u:p@db/sb",
            "--jwt-secret",
            "s",
        ];
        let sentinels = ["--redis-sentinels", "s1:26379, s2:26379"];
        let args = [&ok[..], &sentinels].concat();
        let cfg = Config::parse_from(std::iter::once("switchboard").chain(args.iter().copied()));
        assert!(cfg.cluster_mode(), "Sentinels alone turn on cluster mode");
        assert_eq!(cfg.sentinels(), ["s1:26379", "s2:26379"]);
        let missing = problems(&args);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].contains("redis-master-name"), "{missing:?}");
        let named = [&args[..], &["--redis-master-name", "m"]].concat();
        assert!(problems(&named).is_empty());
        // TLS files without a rediss:// URL are a mistake, not silently plain text.
        let plain = [
            &ok[..],
            &["--redis-url", "redis://r:6379", "--redis-ca-file", "ca.pem"],
        ];
        let plain = plain.concat();
        assert!(problems(&plain).iter().any(|p| p.contains("rediss://")));
        let tls = [
            &ok[..],
            &[
                "--redis-url",
                "rediss://r:6380",
                "--redis-ca-file",
                "ca.pem",
            ],
        ];
        assert!(problems(&tls.concat()).is_empty());
    }

    #[test]
    fn durations_that_would_overflow_are_refused() {
        for (flag, value) in [
            ("--drain-secs", "18446744073709551615"),
            ("--retention-presence-days", "4294967296"),
            ("--webhook-max-age-hours", "18446744073709551615"),
            ("--ping-interval-ms", "18446744073709551615"),
        ] {
            let found = problems(&[flag, value]);
            assert_eq!(found.len(), 1, "{flag}: {found:?}");
            assert!(found[0].contains("over its limit"), "{found:?}");
        }
        assert_eq!(problems(&["--workers", "0"]).len(), 1);
        // And the journal's view never truncates to zero.
        let cfg = Config::parse_from(["switchboard", "--retention-presence-days", "4294967296"]);
        assert!(cfg.journal().retention_presence > Duration::from_secs(DAY_SECS));
    }

    #[test]
    fn the_secret_file_replaces_the_flag() {
        let file = TempFile::new("from-a-file\n");
        let mut cfg = Config::parse_from(["switchboard", "--jwt-secret-file", file.path()]);
        cfg.read_secret_file().expect("a readable file");
        assert_eq!(cfg.jwt_secret.as_deref(), Some("from-a-file"));
        let empty = TempFile::new("\n");
        let mut cfg = Config::parse_from(["switchboard", "--jwt-secret-file", empty.path()]);
        assert!(cfg.read_secret_file().is_err());
        assert!(
            Config::try_parse_from(["switchboard", "--jwt-secret", "a", "--jwt-secret-file", "b"])
                .is_err(),
            "the two are exclusive"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Loading: file, precedence, errors. The environment level is covered by the black-box
    // test (tests/tests/config.rs): a test process cannot set variables safely.

    /// The definition without its variables, so that the developer's `SWITCHBOARD_*` cannot
    /// change what these tests see.
    fn definition() -> Command {
        Config::command().mut_args(|arg| arg.env(None))
    }

    fn load(args: &[&str]) -> Result<Loaded, ConfigError> {
        Config::load_from(
            definition(),
            std::iter::once("switchboard").chain(args.iter().copied()),
        )
    }

    /// A config file that is removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "switchboard-config-{}-{n}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).expect("write the config file");
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("a UTF-8 temp path")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn load_file(text: &str, flags: &[&str]) -> Result<Loaded, ConfigError> {
        let file = TempFile::new(text);
        let mut args = vec!["--config", file.path()];
        args.extend_from_slice(flags);
        load(&args)
    }

    fn settings_error(result: Result<Loaded, ConfigError>) -> String {
        match result {
            Err(err @ ConfigError::Settings { .. }) => err.to_string(),
            Err(other) => panic!("expected a settings error, got {other:?}"),
            Ok(loaded) => panic!("expected a settings error, got {:?}", loaded.config),
        }
    }

    #[test]
    fn compression_settings_from_flags_and_file() {
        let cfg = load(&[]).expect("defaults").config;
        assert_eq!(
            cfg.http_compression(),
            HttpCompression {
                enabled: true,
                threshold: 1024
            }
        );
        assert_eq!(
            cfg.ws_deflate(),
            WsDeflateConfig {
                enabled: false,
                threshold: 1024
            }
        );
        let cfg = load(&["--http-compression=false", "--ws-deflate"])
            .expect("flags")
            .config;
        assert!(!cfg.http_compression().enabled);
        assert!(cfg.ws_deflate().enabled);
        assert!(
            load(&["--http-compression"])
                .expect("bare")
                .config
                .http_compression
        );
        assert!(load(&["--http-compression=maybe"]).is_err());
        let loaded = load_file(
            "http-compression = false\nhttp-compression-threshold = 10\nws-deflate = true\n\
             ws-deflate-threshold = 20\n",
            &[],
        )
        .expect("a valid file");
        let cfg = &loaded.config;
        assert_eq!(
            (cfg.http_compression, cfg.http_compression_threshold),
            (false, 10)
        );
        assert_eq!((cfg.ws_deflate, cfg.ws_deflate_threshold), (true, 20));
        // --print-config writes it back as a TOML boolean.
        let printed = loaded.effective.to_string();
        assert!(printed.contains("http-compression = false"), "{printed}");
        // The flag wins over the file.
        let cfg = load_file("http-compression = false\n", &["--http-compression=true"])
            .expect("file and flag")
            .config;
        assert!(cfg.http_compression);
        let why = settings_error(load_file("http-compression = \"off\"\n", &[]));
        assert!(why.contains("http-compression"), "{why}");
    }

    #[test]
    fn every_kind_of_value_comes_from_the_file() {
        let loaded = load_file(
            r#"
            listen = "127.0.0.1:4000"          # string
            ping_interval_ms = 1234            # number, snake_case spelling
            conformance = true                 # boolean
            jwt-public-key-file = "/etc/sb/jwt.pem"   # path
            workers = 3                        # optional number
            jwt-issuer = "https://issuer.example"     # optional string
            jwt-secret = "a-secret-from-the-file"     # secret
            redis-prefix = ""                  # empty string
            "#,
            &[],
        )
        .expect("a valid file");
        let cfg = &loaded.config;
        assert_eq!(cfg.listen, "127.0.0.1:4000");
        assert_eq!(cfg.ping_interval_ms, Some(1234));
        assert!(cfg.conformance);
        assert_eq!(
            cfg.jwt_public_key_file.as_deref(),
            Some(std::path::Path::new("/etc/sb/jwt.pem"))
        );
        assert_eq!(cfg.workers, Some(3));
        assert_eq!(cfg.jwt_issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(cfg.jwt_secret.as_deref(), Some("a-secret-from-the-file"));
        assert_eq!(cfg.redis_prefix, "");
        for key in [
            "listen",
            "ping-interval-ms",
            "conformance",
            "workers",
            "jwt-secret",
        ] {
            assert_eq!(loaded.effective.source(key), Some(Source::File), "{key}");
        }
        assert_eq!(loaded.effective.source("log"), Some(Source::Default));
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let loaded = load_file(
            "listen = \"127.0.0.1:4000\"\ndrain-secs = 7\nconformance = true\n",
            &["--listen", "127.0.0.1:5000"],
        )
        .expect("a valid file");
        let (cfg, effective) = (&loaded.config, &loaded.effective);
        assert_eq!(cfg.listen, "127.0.0.1:5000");
        assert_eq!(effective.source("listen"), Some(Source::Flag));
        assert_eq!(cfg.drain_secs, 7);
        assert_eq!(effective.source("drain-secs"), Some(Source::File));
        assert!(cfg.conformance);
        assert_eq!(cfg.max_payload, 1_000_000);
        assert_eq!(effective.source("max-payload"), Some(Source::Default));
        let printed = effective.to_string();
        assert!(
            printed.contains("\nlisten = \"127.0.0.1:5000\" # flag\n"),
            "{printed}"
        );
        assert!(printed.contains("\ndrain-secs = 7 # file\n"), "{printed}");
        assert!(
            printed.contains("\nmax-payload = 1000000 # default\n"),
            "{printed}"
        );
        assert!(printed.contains("\n# node-id is unset"), "{printed}");
    }

    #[test]
    fn without_a_file_everything_is_a_flag_or_a_default() {
        let loaded = load(&["--drain-secs", "9"]).expect("valid flags");
        assert_eq!(loaded.config.drain_secs, 9);
        assert_eq!(loaded.effective.source("drain-secs"), Some(Source::Flag));
        assert_eq!(loaded.effective.source("listen"), Some(Source::Default));
        assert!(
            loaded
                .effective
                .to_string()
                .contains("# Config file: none\n")
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let file = TempFile::new("listne = \"0.0.0.0:3000\"\nlog = \"debug\"\n[server]\nx = 1\n");
        let message = settings_error(load(&["--config", file.path()]));
        assert!(message.contains(file.path()), "names the file: {message}");
        assert!(message.contains("unknown key `listne`"), "{message}");
        assert!(message.contains("unknown key `server`"), "{message}");
        assert!(
            !message.contains("`log`"),
            "a good key is not blamed: {message}"
        );
    }

    #[test]
    fn actions_and_the_file_itself_are_not_settings() {
        let message = settings_error(load_file(
            "mint-token = \"alice\"\nprint-config = true\nconfig = \"other.toml\"\n",
            &[],
        ));
        assert!(
            message.contains("`mint-token` is a command-line action"),
            "{message}"
        );
        assert!(
            message.contains("`print-config` is a command-line action"),
            "{message}"
        );
        assert!(
            message.contains("`config`: a config file cannot name another"),
            "{message}"
        );
    }

    #[test]
    fn bad_values_are_refused_by_clap_s_parser_naming_the_key() {
        let message = settings_error(load_file(
            "ping-interval-ms = \"soon\"\nmax-payload = -1\nconformance = \"yes\"\n\
             listen = true\nworkers = [1, 2]\njwt-secret = 5\njwt_secret = \"twice\"\n",
            &[],
        ));
        for expected in [
            // The same words clap uses for `--ping-interval-ms soon`.
            "`ping-interval-ms` = \"soon\": invalid value: invalid digit found in string",
            "`max-payload` = -1: invalid value: invalid digit found in string",
            "`conformance` = \"yes\": takes true or false",
            "`listen` = true: takes a string or a number, not true/false",
            "`workers` = [1, 2]: takes one value, not a list",
            "`jwt_secret` and `jwt-secret` are the same setting",
        ] {
            assert!(message.contains(expected), "{expected:?} in {message}");
        }
        let flag = Config::try_parse_from(["switchboard", "--ping-interval-ms", "soon"])
            .expect_err("clap refuses the same value as a flag")
            .to_string();
        assert!(flag.contains("invalid digit found in string"), "{flag}");
    }

    #[test]
    fn a_bad_file_value_is_refused_even_when_a_flag_overrides_it() {
        let message = settings_error(load_file("drain-secs = \"x\"\n", &["--drain-secs", "5"]));
        assert!(message.contains("`drain-secs`"), "{message}");
    }

    #[test]
    fn a_missing_or_broken_file_is_refused() {
        let missing = std::env::temp_dir().join("switchboard-config-does-not-exist.toml");
        let missing = missing.to_str().expect("a UTF-8 temp path");
        match load(&["--config", missing]) {
            Err(err @ ConfigError::Read { .. }) => {
                let message = err.to_string();
                assert!(message.contains(missing), "{message}");
                assert!(message.contains("No such file"), "{message}");
            }
            other => panic!("expected a read error, got {other:?}"),
        }
        match load_file("listen = \n", &[]) {
            Err(err @ ConfigError::Syntax { .. }) => {
                assert!(err.to_string().contains("line 1"), "{err}")
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let loaded = load_file(
            "redis-url = \"redis://:redis-pw@redis:6379/0\"\njwt-secret = \"jwt-shh\"\n",
            &[
                "--api-key",
                "api-shh",
                "--database-url",
                "postgres://app:db-pw@db:5432/sb",
                "--jwt-public-key-file",
                "/keys/jwt.pem",
            ],
        )
        .expect("a valid file");
        let printed = loaded.effective.to_string();
        for secret in ["redis-pw", "jwt-shh", "api-shh", "db-pw", "/keys/jwt.pem"] {
            assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
        }
        for line in [
            "redis-url = \"redis://:<redacted>@redis:6379/0\" # file",
            "jwt-secret = \"<redacted>\" # file",
            "api-key = \"<redacted>\" # flag",
            "database-url = \"postgres://app:<redacted>@db:5432/sb\" # flag",
            // The name says `key`: redacted like any other.
            "jwt-public-key-file = \"<redacted>\" # flag",
        ] {
            assert!(
                printed.contains(&format!("\n{line}\n")),
                "{line:?} in\n{printed}"
            );
        }
        assert!(!format!("{:?}", loaded.effective).contains("jwt-shh"));
    }

    #[test]
    fn print_config_output_is_accepted_by_config() {
        let first = load(&[
            "--listen",
            "127.0.0.1:4000",
            "--conformance",
            "--workers",
            "2",
            "--redis-prefix",
            "sb:",
            "--cors-origins",
            "https://a.io, https://b.io",
            "--log",
            "info,switchboard=\"debug\"",
        ])
        .expect("valid flags");
        let printed = first.effective.to_string();
        let second = load_file(&printed, &[]).expect("--config accepts --print-config's output");
        // The same values, now every one that was set from the file.
        let strip = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| {
                    l.rsplit_once(" # ")
                        .map_or(l, |(value, _)| value)
                        .to_owned()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&printed), strip(&second.effective.to_string()));
        let mut reread = second.config.clone();
        reread.config = None;
        assert_eq!(format!("{:?}", first.config), format!("{reread:?}"));
        for key in ["listen", "conformance", "workers", "log", "max-payload"] {
            assert_eq!(second.effective.source(key), Some(Source::File), "{key}");
        }
    }

    #[test]
    fn a_copied_placeholder_is_refused_unless_overridden() {
        let printed = load(&["--jwt-secret", "real-secret"])
            .expect("valid flags")
            .effective
            .to_string();
        let message = settings_error(load_file(&printed, &[]));
        assert!(
            message.contains("`jwt-secret` holds the placeholder \"<redacted>\""),
            "{message}"
        );
        assert!(message.contains("set it with --jwt-secret"), "{message}");
        let loaded = load_file(&printed, &["--jwt-secret", "real-secret"])
            .expect("the flag replaces the placeholder");
        assert_eq!(loaded.config.jwt_secret.as_deref(), Some("real-secret"));
    }

    #[test]
    fn repeatable_options_take_lists() {
        // No setting repeats yet; this is what one added later gets.
        let command = Command::new("t")
            .arg(Arg::new("origin").long("origin").action(ArgAction::Append))
            .arg(Arg::new("one").long("one"));
        let file = TempFile::new("origin = [\"a\", \"b\"]\n");
        let settings = FileSettings::read(&file.0, &command).expect("a list for a list");
        let matches = settings
            .apply(command.clone())
            .try_get_matches_from(["t"])
            .expect("valid defaults");
        let origins: Vec<&String> = matches.get_many("origin").expect("set").collect();
        assert_eq!(origins, ["a", "b"]);
        let file = TempFile::new("one = [\"a\"]\n");
        match FileSettings::read(&file.0, &command) {
            Err(err) => assert!(err.to_string().contains("`one` = [\"a\"]: takes one value")),
            Ok(_) => panic!("a list for a single value is refused"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // The definition itself.

    #[test]
    fn every_setting_has_its_variable() {
        let mut command = Config::command();
        command.build();
        for arg in command.get_arguments() {
            let long = arg.get_long().unwrap_or_default();
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            if is_setting(arg) || arg.get_id() == CONFIG_ID {
                let expected = format!("SWITCHBOARD_{}", long.to_uppercase().replace('-', "_"));
                assert_eq!(
                    env.as_deref(),
                    Some(expected.as_str()),
                    "--{long} needs `env = \"{expected}\"` (or `help_heading = ACTIONS` if it \
                     is a one-shot action)"
                );
            } else {
                assert_eq!(env, None, "--{long} is an action: it has no variable");
            }
        }
    }

    /// Where the generated settings table sits in the README.
    const TABLE_BEGIN: &str = "<!-- settings:begin (generated from server/src/config/mod.rs) -->\n";
    const TABLE_END: &str = "<!-- settings:end -->";

    #[test]
    fn readme_settings_table_matches_the_definition() {
        let readme_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(readme_path).expect("read README.md");
        let (Some(begin), Some(end)) = (readme.find(TABLE_BEGIN), readme.find(TABLE_END)) else {
            panic!("README.md has no `{TABLE_BEGIN}` … `{TABLE_END}` markers");
        };
        let mut command = Config::command();
        command.build();
        let table = effective::settings_markdown(&command);
        let current = &readme[begin + TABLE_BEGIN.len()..end];
        if current == table {
            return;
        }
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!(
                "{}{table}{}",
                &readme[..begin + TABLE_BEGIN.len()],
                &readme[end..]
            );
            std::fs::write(readme_path, updated).expect("write README.md");
            return;
        }
        panic!(
            "README.md's settings table is not what server/src/config/mod.rs defines; \
             regenerate it with `UPDATE_README=1 cargo nextest run -p switchboard readme_settings` \
             (or `cargo test`) and commit README.md.\nExpected:\n{table}"
        );
    }
}
