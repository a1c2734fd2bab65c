//! The node's one typed configuration, read once from flags and `SWITCHBOARD_*` variables.

use std::time::Duration;

use clap::Parser;
use switchboard_actors::SessionConfig;
use switchboard_actors::app::AppLimits;

/// Switchboard: a Socket.IO-compatible realtime node.
///
/// Every option can also be set through the environment variable named beside it.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub struct Config {
    /// Public listener for `/socket.io/`, `/health*`, `/metrics` and `/api/v1/*`.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: String,

    /// This node's id: the `server_instance` label and Redis node keys (default: the hostname,
    /// which is the pod name in a StatefulSet).
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

    /// HS256 secret for client tokens [default: random, and a demo token is printed].
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key for client tokens: RS256 for an RSA key, ES256 for an EC P-256 key
    /// (replaces the HS256 secret).
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<std::path::PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock leeway for `exp` and `nbf`, in seconds.
    #[arg(long, env = "SWITCHBOARD_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,

    /// Bearer key for the server API `/api/v1/*` [default: unset, the API is off].
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Largest application event, in bytes (over it: an `error` event or error ack).
    #[arg(long, env = "SWITCHBOARD_MAX_EVENT_BYTES", default_value_t = 65_536)]
    pub max_event_bytes: usize,

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

    /// Run the retention sweep once against the database and exit (for a cron job).
    #[arg(long)]
    pub retention_sweep: bool,

    /// Print an HS256 token for this user id (signed with --jwt-secret, valid for 24 hours) and
    /// exit: for development and for trying the node out.
    #[arg(long, value_name = "USER")]
    pub mint_token: Option<String>,

    /// Log filter (tracing `EnvFilter` syntax); logs are JSON lines on stdout.
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// The node id: the configured one, else the hostname, else `switchboard`.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
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
            limits: Default::default(),
        }
    }

    /// Journal settings (batching defaults, the queue bound and retention from the flags).
    pub fn journal(&self) -> switchboard_actors::journal::JournalConfig {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        switchboard_actors::journal::JournalConfig {
            queue_limit: self.journal_queue_limit.max(1),
            retention_connections: DAY * self.retention_connections_days.max(1) as u32,
            retention_presence: DAY * self.retention_presence_days.max(1) as u32,
            ..Default::default()
        }
    }

    /// Product-mode limits.
    pub fn product_limits(&self) -> AppLimits {
        AppLimits {
            max_event_bytes: self.max_event_bytes,
            socket_events: self.socket_event_limit.max(1),
            socket_window: Duration::from_millis(self.socket_event_window_ms.max(1)),
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
}
