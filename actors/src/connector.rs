//! Where every Redis connection comes from: one server (`redis://` or `rediss://`), or the
//! master that a set of Sentinels names. The pool, the bridge's subscriber and publisher, the
//! directory and the start-up checks all connect through a [`Connector`], so the mode (and the
//! TLS settings) live in this one place.
//!
//! In Sentinel mode each new connection asks the Sentinels for the master's address and checks
//! that the server it reaches still calls itself master (a Sentinel may lag behind a failover);
//! pooled connections are checked with `ROLE` rather than `PING` on checkout, so a connection to a
//! master that was demoted to a replica is dropped instead of answering `READONLY`. The
//! Sentinels' `+switch-master` announcements are followed too ([`Connector::failovers`]), so the
//! bridge reconnects as soon as a failover is decided rather than on its next backoff.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use redis::{ErrorKind, RedisError, RedisResult, TlsCertificates};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a connection attempt (TCP, TLS and handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a question to one Sentinel may take before the next one is asked.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause before a lost `+switch-master` subscription is tried again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// How the node reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// One server at a fixed address.
    Single,
    /// The master a set of Sentinels names, followed through failovers.
    Sentinel,
}

impl RedisMode {
    /// The `redis_mode` label in `/health` and metrics.
    pub fn label(self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

/// TLS material for `rediss://`: PEM bytes, read from files at start.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, for servers that ask for one (`tls-auth-clients`).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Hands out Redis connections in the configured mode (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Connector(Arc<Inner>);

struct Inner {
    target: Target,
    tls: Option<TlsFiles>,
    /// `host:port` of the server connections go to now (Sentinel mode: the last master found).
    current: Mutex<Option<String>>,
    /// Bumped on every `+switch-master` for our master (started by the first `failovers`).
    switched: OnceLock<watch::Sender<u64>>,
}

enum Target {
    Single(Client),
    Sentinel {
        sentinels: Vec<(String, Client)>,
        master_name: String,
        /// Scheme, credentials and database of the master (its address is replaced).
        template: ConnectionInfo,
    },
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("mode", &self.mode())
            .field("current", &self.current())
            .finish()
    }
}

impl Connector {
    /// One server at `url` (`redis://…` or `rediss://…`, verified against `tls` when given).
    pub fn single(url: &str, tls: Option<TlsFiles>) -> RedisResult<Connector> {
        let info = url.into_connection_info()?;
        let current = address(info.addr());
        let client = build_client(info, tls.as_ref())?;
        Ok(Connector(Arc::new(Inner {
            target: Target::Single(client),
            tls,
            current: Mutex::new(current),
            switched: OnceLock::new(),
        })))
    }

    /// The master Sentinels at `sentinels` (`host:port` each) know as `master_name`. `template`
    /// (a `redis://` or `rediss://` URL whose host is ignored) gives the master's scheme,
    /// credentials and database; `None`: plain `redis://`, no password, database 0.
    pub fn sentinel(
        sentinels: &[String],
        master_name: &str,
        template: Option<&str>,
        tls: Option<TlsFiles>,
    ) -> RedisResult<Connector> {
        if sentinels.is_empty() || master_name.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "Sentinel mode needs at least one sentinel and a master name",
            )));
        }
        let sentinels = sentinels
            .iter()
            .map(|addr| Ok((addr.clone(), Client::open(format!("redis://{addr}"))?)))
            .collect::<RedisResult<Vec<_>>>()?;
        let template = template
            .unwrap_or("redis://localhost")
            .into_connection_info()?;
        Ok(Connector(Arc::new(Inner {
            target: Target::Sentinel {
                sentinels,
                master_name: master_name.to_owned(),
                template,
            },
            tls,
            current: Mutex::new(None),
            switched: OnceLock::new(),
        })))
    }

    /// How this connector reaches Redis.
    pub fn mode(&self) -> RedisMode {
        match self.0.target {
            Target::Single(_) => RedisMode::Single,
            Target::Sentinel { .. } => RedisMode::Sentinel,
        }
    }

    /// `host:port` of the server connections go to now (in Sentinel mode, the last master
    /// found; `None` before the first one is found).
    pub fn current(&self) -> Option<String> {
        self.0
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_current(&self, addr: &str) {
        let mut current = self.0.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_deref() != Some(addr) {
            info!(master = addr, "redis master");
            *current = Some(addr.to_owned());
        }
    }

    /// A client for the server to use now (Sentinel mode: the master they name now).
    pub async fn client(&self) -> RedisResult<Client> {
        match &self.0.target {
            Target::Single(client) => Ok(client.clone()),
            Target::Sentinel { template, .. } => {
                let (host, port) = self.ask_sentinels().await?;
                let addr = match template.addr() {
                    ConnectionAddr::TcpTls { .. } => ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port,
                        insecure: false,
                        tls_params: None,
                    },
                    _ => ConnectionAddr::Tcp(host.clone(), port),
                };
                build_client(template.clone().set_addr(addr), self.0.tls.as_ref())
            }
        }
    }

    /// A new multiplexed connection to the server to use now; in Sentinel mode, one that the
    /// server it reaches confirms is the master.
    pub async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        Ok(self.connect_checked().await?.1)
    }

    /// A client for the server to use now, checked like [`Connector::connection`] (for
    /// connections that are not multiplexed: pub/sub, the connection manager).
    pub async fn checked_client(&self) -> RedisResult<Client> {
        Ok(self.connect_checked().await?.0)
    }

    async fn connect_checked(&self) -> RedisResult<(Client, MultiplexedConnection)> {
        let client = self.client().await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(explain)?;
        if self.mode() == RedisMode::Sentinel {
            check_master(&mut conn).await?;
            if let Some(addr) = address(client.get_connection_info().addr()) {
                self.set_current(&addr);
            }
        }
        Ok((client, conn))
    }

    /// The master's `(host, port)` from the first Sentinel that knows it.
    async fn ask_sentinels(&self) -> RedisResult<(String, u16)> {
        let Target::Sentinel {
            sentinels,
            master_name,
            ..
        } = &self.0.target
        else {
            unreachable!("only called in Sentinel mode");
        };
        let mut last = None;
        for (addr, client) in sentinels {
            let ask = async {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(SENTINEL_TIMEOUT))
                    .set_response_timeout(Some(SENTINEL_TIMEOUT));
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                crate::metrics::redis_command("SENTINEL");
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(master_name)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match ask.await {
                Ok(Some(master)) => return Ok(master),
                Ok(None) => last = Some(format!("sentinel {addr} does not know {master_name:?}")),
                Err(err) => last = Some(format!("sentinel {addr}: {err}")),
            }
        }
        Err(RedisError::from((
            ErrorKind::MasterNameNotFoundBySentinel,
            "no Sentinel named a master",
            last.unwrap_or_default(),
        )))
    }

    /// A counter bumped whenever the Sentinels announce a new master (`+switch-master`) for
    /// ours; in single mode it never changes. The first call starts the watch (on the calling
    /// runtime).
    pub fn failovers(&self) -> watch::Receiver<u64> {
        let mut started = false;
        let sender = self.0.switched.get_or_init(|| {
            started = true;
            watch::channel(0).0
        });
        let receiver = sender.subscribe();
        if started && let Target::Sentinel { .. } = self.0.target {
            let me = self.clone();
            tokio::spawn(async move { me.watch_switches().await });
        }
        receiver
    }

    /// Follow `+switch-master` on the Sentinels, one at a time, for as long as the node runs.
    async fn watch_switches(self) {
        let Target::Sentinel {
            sentinels,
            master_name,
            ..
        } = &self.0.target
        else {
            return;
        };
        let mut next = 0;
        loop {
            let (addr, client) = &sentinels[next % sentinels.len()];
            next += 1;
            let watched = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe("+switch-master").await?;
                let mut messages = pubsub.on_message();
                while let Some(msg) = futures_util::StreamExt::next(&mut messages).await {
                    let text: String = msg.get_payload()?;
                    // `<name> <old-ip> <old-port> <new-ip> <new-port>`
                    let parts: Vec<&str> = text.split(' ').collect();
                    if let [name, _, _, host, port] = parts[..]
                        && name == master_name
                    {
                        info!(master = %format!("{host}:{port}"), "sentinel: +switch-master");
                        self.set_current(&format!("{host}:{port}"));
                        if let Some(sender) = self.0.switched.get() {
                            sender.send_modify(|n| *n += 1);
                        }
                    }
                }
                Ok::<_, RedisError>(())
            };
            if let Err(err) = watched.await {
                warn!(sentinel = %addr, %err, "lost the +switch-master subscription; trying the next sentinel");
            }
            tokio::time::sleep(WATCH_RETRY).await;
        }
    }
}

/// The pool's connections: made by the connector; checked on checkout with `PING` (single) or
/// `ROLE` (Sentinel: a demoted master's connections must not be reused).
impl bb8::ManageConnection for Connector {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        self.connection().await
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        match self.mode() {
            RedisMode::Single => redis::cmd("PING").query_async::<()>(conn).await,
            RedisMode::Sentinel => check_master(conn).await,
        }
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

/// Fail unless the server on `conn` is a master (`ROLE`'s first element).
async fn check_master(conn: &mut MultiplexedConnection) -> RedisResult<()> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    let is_master = matches!(role.first(),
        Some(redis::Value::BulkString(b)) if b == b"master")
        || matches!(role.first(), Some(redis::Value::SimpleString(s)) if s == "master");
    if is_master {
        Ok(())
    } else {
        Err(RedisError::from((
            ErrorKind::Client,
            "the server the Sentinels named is not (or no longer) the master",
        )))
    }
}

fn build_client(info: ConnectionInfo, tls: Option<&TlsFiles>) -> RedisResult<Client> {
    match (tls, info.addr()) {
        (Some(tls), ConnectionAddr::TcpTls { .. }) => {
            Client::build_with_tls(info, tls.certificates())
        }
        _ => Client::open(info),
    }
}

/// `host:port` of a TCP address.
fn address(addr: &ConnectionAddr) -> Option<String> {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some(format!("{host}:{port}"))
        }
        _ => None,
    }
}

/// A TLS certificate failure says so (the rustls message alone reads like a network error).
fn explain(err: RedisError) -> RedisError {
    let text = err.to_string();
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        RedisError::from((
            ErrorKind::InvalidClientConfig,
            "Redis TLS: the server's certificate was refused (is SWITCHBOARD_REDIS_CA_FILE the CA that signed it?)",
            text,
        ))
    } else {
        err
    }
}

/// Whether `err` is a TLS certificate refusal (a setting to fix, not an outage to wait out).
pub fn is_certificate_error(err: &RedisError) -> bool {
    err.kind() == ErrorKind::InvalidClientConfig && err.to_string().contains("Redis TLS")
}
