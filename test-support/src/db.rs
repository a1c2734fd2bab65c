//! Throwaway databases: a SQLite file in a scratch directory, or a fresh database on the
//! PostgreSQL server at `SWITCHBOARD_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped again when the test ends, even when
//! it fails.

use std::net::SocketAddr;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

use crate::ScratchDir;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A database on the PostgreSQL server of [`postgres_server_url`].
    Postgres,
}

/// Run an async scenario `fn(Backend)` once per backend, as `scenario::sqlite` and
/// `scenario::postgres`, under the test attribute given first (`#[tokio::test]`,
/// `#[actix::test]`).
#[macro_export]
macro_rules! on_both_backends {
    (#[$test:meta] $($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[$test]
            async fn sqlite() {
                super::$scenario($crate::Backend::Sqlite).await;
            }

            #[$test]
            async fn postgres() {
                super::$scenario($crate::Backend::Postgres).await;
            }
        }
    )*};
}

/// The PostgreSQL server the throwaway databases are created on.
pub fn postgres_server_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `url` with its database name replaced by `name` (query kept).
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

/// Host and port of a `postgres://` URL (port 5432 when it names none).
pub fn server_address(url: &str) -> SocketAddr {
    let rest = &url[url.find("://").expect("a URL") + 3..];
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    // SocketAddr parses addresses, not names.
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("PostgreSQL address {host_port:?} of {url}: {e}"))
}

/// A database that exists for one test.
pub struct TestDb {
    /// What the code under test (a Journal, a node, the migration CLI) connects to.
    pub url: String,
    /// PostgreSQL: the server URL and the database to drop at the end.
    postgres: Option<(String, String)>,
    /// SQLite: the directory holding the file and its `-wal`/`-shm` companions.
    _dir: Option<ScratchDir>,
}

impl TestDb {
    /// A new, empty database (no tables yet).
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = ScratchDir::new();
                let path = dir.0.join("switchboard.db");
                TestDb {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    postgres: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let server = postgres_server_url();
                let name = format!("switchboard_test_{:016x}", rand::random::<u64>());
                let admin = Database::connect(&server).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {server} (set SWITCHBOARD_TEST_POSTGRES_URL): {e}")
                });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
                let _ = admin.close().await;
                TestDb {
                    url: with_database(&server, &name),
                    postgres: Some((server, name)),
                    _dir: None,
                }
            }
        }
    }

    /// A separate connection for reading what the code under test wrote.
    pub async fn inspect(&self) -> DatabaseConnection {
        Database::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside async code (and during a panic): use a runtime of its own. FORCE
        // ends the connections of a node or Journal that is still alive.
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let admin = Database::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute_unprepared(&sql)
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {name}: {dropped:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_name() {
        assert_eq!(
            with_database("postgres://u:p@db:5433/postgres?sslmode=disable", "t1"),
            "postgres://u:p@db:5433/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@db", "t1"), "postgres://u@db/t1");
    }

    #[test]
    fn server_address_defaults_the_port_and_resolves_localhost() {
        assert_eq!(
            server_address("postgres://u:p@localhost/db?x=1"),
            "127.0.0.1:5432".parse().unwrap()
        );
        assert_eq!(
            server_address("postgres://10.0.0.2:6543"),
            "10.0.0.2:6543".parse().unwrap()
        );
    }
}
