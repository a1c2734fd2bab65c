//! A TCP proxy a test cuts and restores.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A TCP proxy in front of a service (a database, Redis): [`TcpProxy::cut`] stops listening and
/// resets every connection through it (the service "goes away"); [`TcpProxy::restore`] listens
/// again on the same port.
pub struct TcpProxy {
    port: u16,
    upstream: SocketAddr,
    tasks: JoinSet<()>,
}

impl TcpProxy {
    /// Listen on `127.0.0.1:<random port>` and forward every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let mut proxy = TcpProxy {
            port,
            upstream,
            tasks: JoinSet::new(),
        };
        proxy.serve(listener);
        proxy
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` with its host and port replaced by the proxy's (user, path and query kept).
    pub fn url(&self, url: &str) -> String {
        let start = url.find("://").expect("a URL") + 3;
        let rest = &url[start..];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let userinfo = rest[..end]
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!(
            "{}{userinfo}127.0.0.1:{}{}",
            &url[..start],
            self.port,
            &rest[end..]
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
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("re-bind the proxy on port {}: {e}", self.port));
        self.serve(listener);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream that echoes every connection.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<[u8; 4]> {
        stream.write_all(b"ping").await?;
        let mut reply = [0; 4];
        stream.read_exact(&mut reply).await?;
        Ok(reply)
    }

    #[tokio::test]
    async fn cut_closes_connections_and_restore_listens_again() {
        let mut proxy = TcpProxy::start(echo_server().await).await;
        let addr = ("127.0.0.1", proxy.port());
        let mut before = TcpStream::connect(addr).await.unwrap();
        assert_eq!(&round_trip(&mut before).await.unwrap(), b"ping");

        proxy.cut().await;
        let outcome = tokio::time::timeout(Duration::from_secs(5), round_trip(&mut before)).await;
        assert!(matches!(outcome, Ok(Err(_))), "{outcome:?}");
        assert!(TcpStream::connect(addr).await.is_err());

        proxy.restore().await;
        let mut after = TcpStream::connect(addr).await.unwrap();
        assert_eq!(&round_trip(&mut after).await.unwrap(), b"ping");
    }

    #[test]
    fn url_points_at_the_proxy() {
        let proxy = TcpProxy {
            port: 4321,
            upstream: "127.0.0.1:5432".parse().unwrap(),
            tasks: JoinSet::new(),
        };
        assert_eq!(
            proxy.url("postgres://u:p@db.example:5432/test_1?sslmode=disable"),
            "postgres://u:p@127.0.0.1:4321/test_1?sslmode=disable"
        );
        assert_eq!(proxy.url("redis://db"), "redis://127.0.0.1:4321");
    }
}
