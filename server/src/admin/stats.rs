//! The Stats actor: this node's numbers for the admin page, rebuilt every [`REFRESH`], and in
//! cluster mode written to Redis (`node:{id}:stats`, with a TTL) and merged with the other
//! nodes' snapshots. Viewers ask it for the finished overview ([`GetOverview`]): it is built
//! and encoded once per refresh, however many pages are open.

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_actors::keys::Keys;
use switchboard_actors::metrics::{ACTORS, ActorLabel, HookLabel, metrics};
use switchboard_actors::store::RedisPool;

use crate::{AppState, health};

/// How often the snapshot is rebuilt (and rewritten to Redis).
pub const REFRESH: Duration = Duration::from_secs(1);

/// How long a node's snapshot outlives its last write: a dead node's numbers vanish with its
/// liveness key (the same TTL).
pub const STATS_TTL_SECS: u64 = 10;

/// How many of the deepest actor mailboxes a snapshot names.
pub const TOP_MAILBOXES: usize = 5;

/// Other nodes' snapshots are read only while a page asked within this long.
const WATCHED_FOR: Duration = Duration::from_secs(5);

/// Longest the Redis part of one refresh may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The backend hooks, in the order the page lists them.
const HOOKS: [&str; 3] = ["connect", "authorize", "rpc"];

/// One node's numbers, as written to Redis and shown on the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's id.
    pub node: String,
    /// When the snapshot was taken (Unix ms).
    pub at_ms: u64,
    /// Authenticated sockets (`socket_connections_active`).
    pub connections: i64,
    /// Engine.IO sessions in the registry; `None` when it did not answer.
    pub sessions: Option<u64>,
    /// `/health`'s `status`: `ok`, `degraded` or `unavailable`.
    pub status: String,
    /// `/health`'s `redis`: `up`, `down` or `none` (single node).
    pub redis: String,
    /// `/health`'s `database`.
    pub database: String,
    /// The node is draining.
    pub draining: bool,
    /// Each backend hook's circuit.
    pub hooks: Vec<HookCircuit>,
    /// Webhook events not yet delivered (`webhook_outbox_depth`); `None` when webhooks are off.
    pub webhook_outbox: Option<i64>,
    /// The deepest actor mailboxes (`actor_mailbox_depth`), deepest first.
    pub mailboxes: Vec<Mailbox>,
}

/// A backend hook's circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCircuit {
    /// `connect`, `authorize` or `rpc`.
    pub hook: String,
    /// `off` (no hooks configured), `closed` (the backend is asked) or `open`.
    pub state: String,
}

/// Messages queued for one actor type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// The actor type.
    pub actor: String,
    /// Queued messages.
    pub depth: i64,
}

/// A node of the overview: known from the `nodes` set (or this node itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// The node's id.
    pub id: String,
    /// Its liveness key exists (always true for this node).
    pub alive: bool,
    /// Whether this is the node that answered.
    pub this: bool,
    /// Its last snapshot; `None` when it wrote none within [`STATS_TTL_SECS`].
    pub stats: Option<NodeStats>,
}

/// What the overview view and the live feed show.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// Always `overview` (the live feed's message type).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The node that answered.
    pub node: String,
    /// `cluster` (Redis) or `single` (in memory).
    pub mode: &'static str,
    /// In cluster mode, whether the other nodes' snapshots could be read just now; `None` when
    /// they were not read (single node, or no page asked lately).
    pub cluster_read: Option<bool>,
    /// When the overview was built (Unix ms).
    pub at_ms: u64,
    /// Every node, sorted by id.
    pub nodes: Vec<NodeView>,
}

/// The live gauges a snapshot is built from, read from the metrics registry.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// `socket_connections_active`.
    pub connections: i64,
    /// `hook_circuit_open{hook}` in [`HOOKS`] order.
    pub circuits_open: [bool; 3],
    /// `webhook_outbox_depth`.
    pub webhook_outbox: i64,
    /// `actor_mailbox_depth{actor}` for every instrumented actor type.
    pub depths: Vec<(&'static str, i64)>,
}

impl Gauges {
    /// The process's current values.
    pub fn read() -> Gauges {
        let m = metrics();
        let mut circuits_open = [false; 3];
        for (open, hook) in circuits_open.iter_mut().zip(HOOKS) {
            *open = m.hook_circuit_open.get_or_create(&HookLabel { hook }).get() > 0;
        }
        Gauges {
            connections: m.connections_active.get(),
            circuits_open,
            webhook_outbox: m.webhook_outbox_depth.get(),
            depths: ACTORS
                .iter()
                .map(|&actor| {
                    (
                        actor,
                        m.mailbox_depth.get_or_create(&ActorLabel { actor }).get(),
                    )
                })
                .collect(),
        }
    }
}

/// What the node has switched on, which decides how some gauges read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    /// Backend hooks are configured.
    pub hooks: bool,
    /// Webhooks are configured.
    pub webhooks: bool,
}

/// This node's snapshot from `/health`'s body and the gauges.
pub fn node_stats(
    node: &str,
    at_ms: u64,
    health: &Value,
    gauges: &Gauges,
    features: Features,
) -> NodeStats {
    let text = |field: &str| health[field].as_str().unwrap_or("unknown").to_string();
    NodeStats {
        node: node.to_string(),
        at_ms,
        connections: gauges.connections,
        sessions: health["sessions"].as_u64(),
        status: text("status"),
        redis: text("redis"),
        database: text("database"),
        draining: health["draining"].as_bool().unwrap_or(false),
        hooks: HOOKS
            .iter()
            .zip(gauges.circuits_open)
            .map(|(hook, open)| HookCircuit {
                hook: hook.to_string(),
                state: match (features.hooks, open) {
                    (false, _) => "off",
                    (true, false) => "closed",
                    (true, true) => "open",
                }
                .to_string(),
            })
            .collect(),
        webhook_outbox: features.webhooks.then_some(gauges.webhook_outbox),
        mailboxes: top_mailboxes(&gauges.depths, TOP_MAILBOXES),
    }
}

/// The `n` deepest mailboxes, deepest first (ties by name, so the order is stable).
pub fn top_mailboxes(depths: &[(&'static str, i64)], n: usize) -> Vec<Mailbox> {
    let mut sorted = depths.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    sorted
        .into_iter()
        .take(n)
        .map(|(actor, depth)| Mailbox {
            actor: actor.to_string(),
            depth,
        })
        .collect()
}

/// The nodes of the overview: this node with its fresh snapshot, and every other member of the
/// `nodes` set with its liveness and its stored snapshot (`replies[i]` is member `i`'s
/// liveness value and snapshot JSON). A snapshot that does not parse counts as missing.
pub fn node_views(
    own: &NodeStats,
    members: &[String],
    replies: &[(Option<String>, Option<String>)],
) -> Vec<NodeView> {
    let mut views = vec![NodeView {
        id: own.node.clone(),
        alive: true,
        this: true,
        stats: Some(own.clone()),
    }];
    for (id, (alive, stats)) in members.iter().zip(replies) {
        if *id == own.node {
            continue;
        }
        views.push(NodeView {
            id: id.clone(),
            alive: alive.is_some(),
            this: false,
            stats: stats.as_deref().and_then(|s| serde_json::from_str(s).ok()),
        });
    }
    views.sort_by(|a, b| a.id.cmp(&b.id));
    views
}

/// Ask for the latest overview (JSON, encoded once per refresh); `None` before the first one.
#[derive(Message)]
#[rtype(result = "Option<ByteString>")]
pub struct GetOverview;

/// The node's one Stats actor (see the module docs).
pub struct Stats {
    state: web::Data<AppState>,
    keys: Keys,
    latest: Option<ByteString>,
    last_asked: Option<Instant>,
    /// A refresh is under way: a slow Redis must not stack them up.
    busy: bool,
}

impl Stats {
    /// A Stats actor for the node of `state`, naming Redis keys with `keys`.
    pub fn new(state: web::Data<AppState>, keys: Keys) -> Self {
        Stats {
            state,
            keys,
            latest: None,
            last_asked: None,
            busy: false,
        }
    }

    /// Whether a page asked recently enough to read the other nodes.
    fn watched(&self) -> bool {
        self.last_asked.is_some_and(|at| at.elapsed() < WATCHED_FOR)
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let watched = self.watched();
        let (state, keys) = (self.state.clone(), self.keys.clone());
        let build = async move { build(&state, &keys, watched).await };
        ctx.spawn(build.into_actor(self).map(|overview, act, _| {
            act.busy = false;
            act.latest = overview;
        }));
    }
}

impl Actor for Stats {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.refresh(ctx);
        ctx.run_interval(REFRESH, |act, ctx| act.refresh(ctx));
    }
}

impl Handler<GetOverview> for Stats {
    type Result = Option<ByteString>;

    fn handle(&mut self, _msg: GetOverview, ctx: &mut Context<Self>) -> Self::Result {
        let was_watched = self.watched();
        self.last_asked = Some(Instant::now());
        if !was_watched {
            // The latest overview left the other nodes out: read them now, not in a second.
            self.refresh(ctx);
        }
        self.latest.clone()
    }
}

/// One refresh: this node's snapshot, written to Redis, merged with the others' when `watched`.
async fn build(state: &AppState, keys: &Keys, watched: bool) -> Option<ByteString> {
    let report = health::report(state).await;
    let features = state
        .product
        .as_ref()
        .map_or(Features::default(), |p| Features {
            hooks: p.app.hooks.is_some(),
            webhooks: p.webhooks.is_some(),
        });
    let at_ms = crate::unix_now_ms();
    let own = node_stats(
        &state.node_id,
        at_ms,
        &report.body,
        &Gauges::read(),
        features,
    );
    let pool = state.product.as_ref().and_then(|p| p.redis_pool.as_ref());
    let (nodes, cluster_read) = match pool {
        None => (node_views(&own, &[], &[]), None),
        Some(pool) => {
            let cluster = tokio::time::timeout(REDIS_TIMEOUT, cluster(pool, keys, &own, watched));
            match cluster.await {
                Ok(Ok(Some(nodes))) => (nodes, Some(true)),
                Ok(Ok(None)) => (node_views(&own, &[], &[]), None),
                Ok(Err(err)) => {
                    tracing::debug!(%err, "admin stats: Redis");
                    (node_views(&own, &[], &[]), Some(false))
                }
                Err(_) => (node_views(&own, &[], &[]), Some(false)),
            }
        }
    };
    let overview = Overview {
        kind: "overview",
        node: state.node_id.to_string(),
        mode: if pool.is_some() { "cluster" } else { "single" },
        cluster_read,
        at_ms,
        nodes,
    };
    serde_json::to_string(&overview).ok().map(ByteString::from)
}

/// Write this node's snapshot; when `watched`, read every node's (`None` when not watched).
async fn cluster(
    pool: &RedisPool,
    keys: &Keys,
    own: &NodeStats,
    watched: bool,
) -> Result<Option<Vec<NodeView>>, Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = pool.get().await?;
    let json = serde_json::to_string(own)?;
    let _: () = redis::cmd("SET")
        .arg(keys.node_stats(&own.node))
        .arg(json)
        .arg("EX")
        .arg(STATS_TTL_SECS)
        .query_async(&mut *conn)
        .await?;
    if !watched {
        return Ok(None);
    }
    let mut members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.nodes())
        .query_async(&mut *conn)
        .await?;
    members.sort();
    if members.is_empty() {
        return Ok(Some(node_views(own, &[], &[])));
    }
    let mut mget = redis::cmd("MGET");
    for id in &members {
        mget.arg(keys.node_alive(id)).arg(keys.node_stats(id));
    }
    let values: Vec<Option<String>> = mget.query_async(&mut *conn).await?;
    let replies: Vec<_> = values
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair.get(1).cloned().flatten()))
        .collect();
    Ok(Some(node_views(own, &members, &replies)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gauges() -> Gauges {
        Gauges {
            connections: 7,
            circuits_open: [false, true, false],
            webhook_outbox: 12,
            depths: vec![
                ("session", 3),
                ("journal", 40),
                ("presence", 0),
                ("hooks", 3),
            ],
        }
    }

    #[test]
    fn a_snapshot_takes_health_and_gauges() {
        let health = json!({"status": "degraded", "sessions": 9, "redis": "down",
            "database": "up", "draining": false, "node": "n1"});
        let on = Features {
            hooks: true,
            webhooks: true,
        };
        let s = node_stats("n1", 5, &health, &gauges(), on);
        assert_eq!(s.connections, 7);
        assert_eq!(s.sessions, Some(9));
        assert_eq!((s.status.as_str(), s.redis.as_str()), ("degraded", "down"));
        assert_eq!(s.webhook_outbox, Some(12));
        let states: Vec<_> = s.hooks.iter().map(|h| h.state.as_str()).collect();
        assert_eq!(states, ["closed", "open", "closed"]);
        let off = node_stats("n1", 5, &health, &gauges(), Features::default());
        assert_eq!(off.webhook_outbox, None, "webhooks off: no depth");
        assert!(off.hooks.iter().all(|h| h.state == "off"));
    }

    #[test]
    fn mailboxes_are_deepest_first_with_a_stable_order() {
        let top = top_mailboxes(&gauges().depths, 3);
        let names: Vec<_> = top.iter().map(|m| (m.actor.as_str(), m.depth)).collect();
        assert_eq!(names, [("journal", 40), ("hooks", 3), ("session", 3)]);
        assert!(top_mailboxes(&[], 3).is_empty());
    }

    #[test]
    fn node_views_merge_own_fresh_stats_with_the_stored_ones() {
        let health = json!({"status": "ok", "sessions": 1, "redis": "up", "database": "up"});
        let own = node_stats("b", 1, &health, &gauges(), Features::default());
        let mut other = own.clone();
        other.node = "a".into();
        other.connections = 99;
        let stale = NodeStats {
            connections: -1,
            ..own.clone()
        };
        let members = ["a", "b", "c", "d"].map(String::from);
        let replies = [
            (
                Some("1".into()),
                Some(serde_json::to_string(&other).unwrap()),
            ),
            // This node's stored snapshot is older than the fresh one: ignored.
            (
                Some("1".into()),
                Some(serde_json::to_string(&stale).unwrap()),
            ),
            (None, None),
            (Some("1".into()), Some("not json".into())),
        ];
        let views = node_views(&own, &members, &replies);
        let ids: Vec<_> = views.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(views[0].stats.as_ref().unwrap().connections, 99);
        assert!(views[1].this && views[1].stats.as_ref().unwrap().connections == 7);
        assert!(
            !views[2].alive && views[2].stats.is_none(),
            "dead, no snapshot"
        );
        assert!(
            views[3].alive && views[3].stats.is_none(),
            "unreadable snapshot"
        );
        assert_eq!(
            node_views(&own, &[], &[]).len(),
            1,
            "single node: just this one"
        );
    }

    #[test]
    fn a_snapshot_round_trips_through_its_json() {
        let own = node_stats("n", 3, &json!({}), &gauges(), Features::default());
        let json = serde_json::to_string(&own).unwrap();
        assert!(json.contains("\"webhookOutbox\":null"), "{json}");
        assert_eq!(serde_json::from_str::<NodeStats>(&json).unwrap(), own);
    }
}
