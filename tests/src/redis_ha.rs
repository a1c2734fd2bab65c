//! Redis high-availability parts: a throwaway certificate authority made with the `openssl`
//! command ([`TestCa`]), a `redis-server` that speaks only TLS ([`TlsRedis`]), and a
//! Sentinel-managed pair — one master, one replica, three `redis-sentinel`s ([`SentinelGroup`]).
//! Every server is a child process on a free loopback port, killed when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard_test_support::ScratchDir;
use tokio::process::{Child, Command};

use crate::faults::{free_port, run};

/// A CA with a server certificate (for `localhost` and `127.0.0.1`) and a client certificate,
/// all in a scratch directory.
pub struct TestCa {
    dir: ScratchDir,
}

impl TestCa {
    /// Make a fresh CA and sign a server and a client certificate with it (P-256 keys).
    pub fn new() -> TestCa {
        let ca = TestCa {
            dir: ScratchDir::new(),
        };
        let p = |name: &str| ca.path(name).display().to_string();
        let key = |name: &str| {
            run(
                "openssl",
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &p(name),
                ],
            );
        };
        key("ca.key");
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &p("ca.key"),
                "-out",
                &p("ca.crt"),
                "-days",
                "2",
                "-subj",
                "/CN=switchboard test CA",
            ],
        );
        std::fs::write(
            ca.path("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        std::fs::write(ca.path("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("write client.ext");
        for who in ["server", "client"] {
            key(&format!("{who}.key"));
            run(
                "openssl",
                &[
                    "req",
                    "-new",
                    "-key",
                    &p(&format!("{who}.key")),
                    "-out",
                    &p(&format!("{who}.csr")),
                    "-subj",
                    &format!("/CN={who}"),
                ],
            );
            run(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &p(&format!("{who}.csr")),
                    "-CA",
                    &p("ca.crt"),
                    "-CAkey",
                    &p("ca.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &p(&format!("{who}.ext")),
                    "-out",
                    &p(&format!("{who}.crt")),
                ],
            );
        }
        ca
    }

    /// A file of this CA's: `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A `redis-server` listening only on TLS (127.0.0.1, a free port) with `ca`'s server
/// certificate, asking clients for a certificate when `client_certs` is set.
pub struct TlsRedis {
    /// The TLS port.
    pub port: u16,
    _child: Child,
}

impl TlsRedis {
    /// Start it and wait until it answers over TLS.
    pub async fn start(ca: &TestCa, client_certs: bool) -> TlsRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--tls-cert-file")
            .arg(ca.path("server.crt"))
            .arg("--tls-key-file")
            .arg(ca.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(ca.path("ca.crt"))
            .args([
                "--tls-auth-clients",
                if client_certs { "yes" } else { "no" },
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn redis-server: {e}"));
        let redis = TlsRedis {
            port,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(ca, &["PING"]).await.trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server --tls-port {port} did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        redis
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// `redis-cli --tls` with the CA's client certificate; its output (empty when it fails).
    pub async fn cli(&self, ca: &TestCa, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--tls"])
            .arg("--cacert")
            .arg(ca.path("ca.crt"))
            .arg("--cert")
            .arg(ca.path("client.crt"))
            .arg("--key")
            .arg(ca.path("client.key"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The Sentinels' name for the master.
pub const MASTER_NAME: &str = "sbmaster";

/// One master, one replica and three Sentinels (quorum 2, a master is down after 1 s).
pub struct SentinelGroup {
    /// The master's and the replica's ports, in the order they were started.
    pub data_ports: [u16; 2],
    /// The Sentinels' ports.
    pub sentinel_ports: [u16; 3],
    data: Vec<Option<Child>>,
    _sentinels: Vec<Child>,
    dir: ScratchDir,
}

fn spawn_redis(args: &[String]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn redis-server: {e}"))
}

fn data_args(dir: &std::path::Path, port: u16, replica_of: Option<u16>) -> Vec<String> {
    // A replica's full sync writes an RDB file: into a scratch directory, not the cwd.
    let dir = dir.join(port.to_string());
    std::fs::create_dir_all(&dir).expect("a data directory");
    let mut args: Vec<String> = vec!["--dir".into(), dir.display().to_string()];
    args.extend(
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    if let Some(master) = replica_of {
        args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
    }
    args
}

impl SentinelGroup {
    /// Start the master, its replica and three Sentinels; wait until the replica is in sync and
    /// every Sentinel knows the replica and the other Sentinels.
    pub async fn start() -> SentinelGroup {
        let dir = ScratchDir::new();
        let (master, replica) = (free_port(), free_port());
        let data = vec![
            Some(spawn_redis(&data_args(&dir.0, master, None))),
            Some(spawn_redis(&data_args(&dir.0, replica, Some(master)))),
        ];
        let sentinel_ports = [free_port(), free_port(), free_port()];
        let mut sentinels = Vec::new();
        for port in sentinel_ports {
            let conf = dir.0.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n"
                ),
            )
            .expect("write a sentinel config");
            sentinels.push(
                Command::new("redis-sentinel")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("cannot spawn redis-sentinel (is it installed?): {e}")
                    }),
            );
        }
        let group = SentinelGroup {
            data_ports: [master, replica],
            sentinel_ports,
            data,
            _sentinels: sentinels,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let synced = cli(replica, &["INFO", "replication"])
                .await
                .contains("master_link_status:up");
            let mut known = synced;
            for port in sentinel_ports {
                let replicas = cli(port, &["SENTINEL", "replicas", MASTER_NAME]).await;
                let peers = cli(port, &["SENTINEL", "sentinels", MASTER_NAME]).await;
                known &= replicas.contains(&replica.to_string())
                    && sentinel_ports
                        .iter()
                        .filter(|p| **p != port)
                        .all(|p| peers.contains(&p.to_string()));
            }
            if known {
                return group;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinel group did not settle within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `host:port,…` of the Sentinels.
    pub fn sentinels(&self) -> String {
        self.sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master the Sentinels name now.
    pub async fn master_port(&self) -> Option<u16> {
        let reply = cli(
            self.sentinel_ports[0],
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        )
        .await;
        reply.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }

    /// Start the (killed) data server on `port` again, empty; the Sentinels make it a replica
    /// of the current master. Returns once it is in sync and every Sentinel lists it as a
    /// healthy replica.
    pub async fn restart(&mut self, port: u16) {
        let i = self
            .data_ports
            .iter()
            .position(|p| *p == port)
            .expect("one of the group's data servers");
        assert!(self.data[i].is_none(), "{port} is still running");
        self.data[i] = Some(spawn_redis(&data_args(&self.dir.0, port, None)));
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let synced = cli(port, &["INFO", "replication"])
                .await
                .contains("master_link_status:up");
            let mut healthy = synced;
            for sentinel in self.sentinel_ports {
                let replicas = cli(sentinel, &["SENTINEL", "replicas", MASTER_NAME]).await;
                // `flags` of that replica: plain `slave`, not `s_down`/`disconnected`.
                let lines: Vec<&str> = replicas.lines().collect();
                let entry = lines
                    .iter()
                    .position(|l| l.trim() == port.to_string())
                    .map(|at| &lines[at..]);
                healthy &= entry.is_some_and(|rest| {
                    rest.iter()
                        .position(|l| l.trim() == "flags")
                        .and_then(|f| rest.get(f + 1))
                        .is_some_and(|flags| flags.trim() == "slave")
                });
            }
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted {port} did not become a healthy replica within 40 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ask the Sentinels for a planned failover (`SENTINEL FAILOVER`): the master is demoted
    /// while nodes are connected to it. Retried while a Sentinel answers that no replica is
    /// ready yet.
    pub async fn failover(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = cli(
                self.sentinel_ports[0],
                &["SENTINEL", "FAILOVER", MASTER_NAME],
            )
            .await;
            if reply.trim() == "OK" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SENTINEL FAILOVER kept answering {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGKILL the data server on `port`.
    pub async fn kill(&mut self, port: u16) {
        let i = self
            .data_ports
            .iter()
            .position(|p| *p == port)
            .expect("one of the group's data servers");
        if let Some(mut child) = self.data[i].take() {
            let _ = child.kill().await;
        }
    }
}

/// `redis-cli -p PORT args…` on 127.0.0.1; its output (empty when it fails).
pub async fn cli(port: u16, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await;
    match out {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => String::new(),
    }
}
