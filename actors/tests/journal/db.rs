//! Throwaway databases for the Journal tests: a temporary SQLite file, or a fresh database on
//! the PostgreSQL server at `SWITCHBOARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped again when the test ends, even
//! when it fails. Also a TCP proxy that can cut the database off and bring it back.

use std::net::SocketAddr;
use std::path::PathBuf;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_server_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    // `postgres://user@host:port/db`: the database is after the third slash.
    let server = match base.match_indices('/').nth(2) {
        Some((i, _)) => &base[..i],
        None => base,
    };
    format!("{server}/{name}{query}")
}

/// A database that exists for one test.
pub struct TestDb {
    /// What the Journal connects to.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Files(Vec<PathBuf>),
    Database { server: String, name: String },
}

fn random_name() -> String {
    format!("switchboard_test_{:016x}", rand::random::<u64>())
}

impl TestDb {
    /// A new, empty database (no tables yet).
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{}.db", random_name()));
                let files = ["", "-wal", "-shm"]
                    .iter()
                    .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
                    .collect();
                TestDb {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    cleanup: Cleanup::Files(files),
                }
            }
            Backend::Postgres => {
                let server = postgres_server_url();
                let name = random_name();
                let admin = Database::connect(&server)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {server}: {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                TestDb {
                    url: with_database(&server, &name),
                    cleanup: Cleanup::Database { server, name },
                }
            }
        }
    }

    /// A separate connection for inspecting what the Journal wrote.
    pub async fn inspect(&self) -> DatabaseConnection {
        Database::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Files(files) => {
                for file in files {
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Database { server, name } => {
                // Drop runs outside async code (and during a panic): use a runtime of its own.
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let server = server.clone();
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let admin = Database::connect(&server).await?;
                        admin.execute_unprepared(&sql).await?;
                        admin.close().await
                    })
                })
                .join();
                if !matches!(dropped, Ok(Ok(()))) {
                    eprintln!("could not drop test database {name}: {dropped:?}");
                }
            }
        }
    }
}

/// A TCP proxy in front of the PostgreSQL server: [`Proxy::cut`] closes it and every
/// connection through it (the database "goes away"); [`Proxy::restore`] listens again on the
/// same port.
pub struct Proxy {
    port: u16,
    upstream: SocketAddr,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Proxy to the host and port of `server_url`.
    pub async fn start(server_url: &str) -> Proxy {
        let upstream = server_address(server_url);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy {
            port,
            upstream,
            tasks: JoinSet::new(),
        };
        proxy.serve(listener);
        proxy
    }

    /// `server_url` pointed at the proxy and at database `name`.
    pub fn url(&self, server_url: &str, name: &str) -> String {
        let server = with_database(server_url, name);
        let authority_start = server.find("://").unwrap() + 3;
        let rest = &server[authority_start..];
        let path = rest.find('/').unwrap();
        let userinfo = rest[..path].rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{}{}127.0.0.1:{}{}",
            &server[..authority_start],
            userinfo.unwrap_or_default(),
            self.port,
            &rest[path..]
        )
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        self.tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
    }

    /// Stop listening and close every proxied connection.
    pub async fn cut(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Listen again on the same port.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

fn server_address(url: &str) -> SocketAddr {
    let rest = &url[url.find("://").unwrap() + 3..];
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().unwrap()
}
