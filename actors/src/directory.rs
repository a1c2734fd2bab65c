//! Where each node of the cluster can be reached, for request forwarding: node tag (the suffix
//! of every sid, [`NodeTag`]) → node id and internal base URL.
//!
//! Every node publishes its URL in `node:{id}:addr` beside its liveness key (see the presence
//! store). The [`Directory`] reads the `nodes` set and those keys into memory every couple of
//! seconds, so deciding where a request goes costs no Redis round trip; a tag it does not know
//! (a node that joined a moment ago) triggers one early refresh, at most every
//! [`MISS_REFRESH_GAP`], whoever asks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use crate::ids::{NodeId, NodeTag};
use crate::keys::Keys;
use crate::metrics::redis_command;
use crate::store::{RedisPool, StoreError, cmd};

/// The shortest time between two refreshes caused by unknown tags.
pub const MISS_REFRESH_GAP: Duration = Duration::from_millis(200);

/// A node's internal address: an `http://host:port` base URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl PeerAddr {
    /// Parse `http://host[:port][/]` (port 80 when absent). Anything else (another scheme, a
    /// path, user info, an empty host) is refused: nodes talk plain HTTP to each other.
    pub fn parse(url: &str) -> Option<PeerAddr> {
        let rest = url.trim().strip_prefix("http://")?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            let port = match after {
                "" => 80,
                p => p.strip_prefix(':')?.parse().ok()?,
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().ok()?),
                None => (authority, 80),
            }
        };
        if host.is_empty() || host.contains([':', '[', ']']) && !authority.starts_with('[') {
            return None;
        }
        Some(PeerAddr {
            base: format!("http://{authority}"),
            host: host.to_string(),
            port,
        })
    }
}

/// A node other nodes can forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub node: NodeId,
    /// Its address.
    pub addr: Arc<PeerAddr>,
}

/// The tag → peer table (pure: built from what Redis holds).
#[derive(Debug, Default, Clone)]
pub struct Table {
    peers: HashMap<String, Peer>,
}

impl Table {
    /// The table of these (node, published URL) pairs; nodes without a usable URL are left out.
    pub fn from_entries(entries: impl IntoIterator<Item = (NodeId, Option<String>)>) -> Table {
        let mut peers = HashMap::new();
        for (node, url) in entries {
            let Some(url) = url else { continue };
            let Some(addr) = PeerAddr::parse(&url) else {
                warn!(node = %node, "node:{{id}}:addr holds no usable http://host:port URL; not forwarding to it");
                continue;
            };
            let tag = NodeTag::of(&node);
            let peer = Peer {
                node,
                addr: Arc::new(addr),
            };
            if let Some(other) = peers.insert(tag.as_str().to_string(), peer) {
                warn!(node = %other.node, tag = %tag, "two nodes share a sid tag; requests for one of them will not reach it");
            }
        }
        Table { peers }
    }

    /// The peer of `tag`.
    pub fn get(&self, tag: &str) -> Option<&Peer> {
        self.peers.get(tag)
    }

    /// Known peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No peer known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// The cluster's node addresses, from Redis, cached (see the module docs).
pub struct Directory {
    pool: RedisPool,
    keys: Keys,
    table: RwLock<Table>,
    /// When the last refresh caused by an unknown tag ran (one at a time).
    miss_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl Directory {
    /// An empty directory over `pool`; call [`Directory::refresh`] or [`Directory::keep_fresh`].
    pub fn new(pool: RedisPool, keys: Keys) -> Arc<Directory> {
        Arc::new(Directory {
            pool,
            keys,
            table: RwLock::new(Table::default()),
            miss_refresh: tokio::sync::Mutex::new(None),
        })
    }

    /// The peer of `tag`, from memory.
    pub fn lookup(&self, tag: &str) -> Option<Peer> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(tag)
            .cloned()
    }

    /// The peer of `tag`; when it is not known, refresh first (at most once per
    /// [`MISS_REFRESH_GAP`] across all callers).
    pub async fn resolve(&self, tag: &str) -> Option<Peer> {
        if let Some(peer) = self.lookup(tag) {
            return Some(peer);
        }
        let mut last = self.miss_refresh.lock().await;
        // Someone else may have refreshed while this caller waited.
        if let Some(peer) = self.lookup(tag) {
            return Some(peer);
        }
        if last.is_some_and(|at| at.elapsed() < MISS_REFRESH_GAP) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(err) = self.refresh().await {
            debug!(%err, "node directory refresh failed");
        }
        self.lookup(tag)
    }

    /// Read every node's address from Redis; answers how many peers are known.
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let mut conn = self.pool.get().await?;
        let nodes: Vec<String> = cmd("SMEMBERS")
            .arg(self.keys.nodes())
            .query_async(&mut *conn)
            .await?;
        let mut pipe = redis::pipe();
        for node in &nodes {
            redis_command("GET");
            pipe.cmd("GET").arg(self.keys.node_addr(node));
        }
        let urls: Vec<Option<String>> = if nodes.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut *conn).await?
        };
        let table = Table::from_entries(nodes.into_iter().map(NodeId::from).zip(urls));
        let known = table.len();
        *self
            .table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = table;
        Ok(known)
    }

    /// Refresh every `every`, on the calling arbiter, for as long as the system runs.
    pub fn keep_fresh(self: &Arc<Directory>, every: Duration) {
        let this = self.clone();
        actix::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = this.refresh().await {
                    debug!(%err, "node directory refresh failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_parse() {
        let a = PeerAddr::parse("http://10.0.0.7:3000").expect("ip:port");
        assert_eq!(
            (a.base.as_str(), a.host.as_str(), a.port),
            ("http://10.0.0.7:3000", "10.0.0.7", 3000)
        );
        let a =
            PeerAddr::parse("http://switchboard-0.switchboard-headless:3000/").expect("dns name");
        assert_eq!(a.base, "http://switchboard-0.switchboard-headless:3000");
        let a = PeerAddr::parse("http://[fd00::7]:3000").expect("ipv6");
        assert_eq!((a.host.as_str(), a.port), ("fd00::7", 3000));
        assert_eq!(PeerAddr::parse("http://node").map(|a| a.port), Some(80));
        for bad in [
            "",
            "10.0.0.7:3000",
            "https://10.0.0.7:3000",
            "http://",
            "http://:3000",
            "http://host:port",
            "http://host:99999",
            "http://host:3000/socket.io/",
            "http://user@host:3000",
            "http://fd00::7:3000",
            "http://[fd00::7",
            "http://[fd00::7]x",
        ] {
            assert_eq!(PeerAddr::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_table_maps_tags_to_nodes_with_a_usable_url() {
        let table = Table::from_entries([
            (NodeId::from("a"), Some("http://127.0.0.1:1".to_string())),
            (NodeId::from("b"), None),
            (NodeId::from("c"), Some("ftp://x".to_string())),
        ]);
        assert_eq!(table.len(), 1);
        let tag = NodeTag::of(&NodeId::from("a"));
        let peer = table.get(tag.as_str()).expect("a is known");
        assert_eq!(peer.node, NodeId::from("a"));
        assert_eq!(peer.addr.port, 1);
        assert!(
            table
                .get(NodeTag::of(&NodeId::from("b")).as_str())
                .is_none()
        );
    }
}
