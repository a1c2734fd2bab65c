//! User lookup for the admin page: a user's sockets (by their public socket id, never the
//! Engine.IO sid), the nodes they are on, their rooms, and the user's presence status.
//!
//! In cluster mode the sockets come from presence's Redis keys (`user:{id}:sockets`, then each
//! socket's `socket:{id}:user` hash and `socket:{id}:rooms` set), so sockets on every node are
//! seen; on a single node, from the registry's live sockets.

use std::collections::BTreeSet;
use std::collections::HashMap;

use serde::Serialize;
use switchboard_actors::UserId;
use switchboard_actors::keys::Keys;
use switchboard_actors::node::Product;
use switchboard_actors::ports::presence::QueryStatuses;
use switchboard_actors::ports::registry::LiveSockets;
use switchboard_actors::store::RedisPool;

use crate::AppState;
use crate::api::ApiError;

/// One socket of the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketView {
    /// The public socket id (what `socket.id` is in the client).
    pub id: String,
    /// The node it is connected to.
    pub node: String,
    /// Its device id.
    pub device: String,
    /// The rooms it is in, sorted.
    pub rooms: Vec<String>,
    /// When it connected (Unix ms), when known.
    pub connected_at: Option<u64>,
}

/// What the user view shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// The user id.
    pub user: String,
    /// `online`, `away` or `offline`.
    pub status: String,
    /// The nodes the user's sockets are on, sorted.
    pub nodes: Vec<String>,
    /// The user's sockets, sorted by node then id.
    pub sockets: Vec<SocketView>,
}

/// Assemble the view; sockets sorted by node then id, their rooms sorted.
pub fn user_view(user: &str, status: &str, mut sockets: Vec<SocketView>) -> UserView {
    for socket in &mut sockets {
        socket.rooms.sort();
    }
    sockets.sort_by(|a, b| a.node.cmp(&b.node).then(a.id.cmp(&b.id)));
    let nodes: BTreeSet<String> = sockets.iter().map(|s| s.node.clone()).collect();
    UserView {
        user: user.to_string(),
        status: status.to_string(),
        nodes: nodes.into_iter().collect(),
        sockets,
    }
}

/// A socket from its `socket:{id}:user` hash and rooms; `None` when the hash is gone (the
/// socket closed between the two reads) or names another user.
pub fn socket_from_hash(
    user: &str,
    id: &str,
    hash: &HashMap<String, String>,
    rooms: Vec<String>,
) -> Option<SocketView> {
    if hash.get("userId").map(String::as_str) != Some(user) {
        return None;
    }
    Some(SocketView {
        id: id.to_string(),
        node: hash.get("serverInstance").cloned().unwrap_or_default(),
        device: hash.get("deviceId").cloned().unwrap_or_default(),
        rooms,
        connected_at: hash.get("connectedAt").and_then(|v| v.parse().ok()),
    })
}

/// Look `user` up (see the module docs).
pub(crate) async fn lookup(
    state: &AppState,
    product: &Product,
    keys: &Keys,
    user: UserId,
) -> Result<UserView, ApiError> {
    let statuses = product
        .presence
        .send(QueryStatuses {
            users: vec![user.clone()],
        })
        .await?
        .map_err(ApiError::unavailable)?;
    let status = statuses
        .first()
        .map_or("offline", |(_, status)| status.as_str());
    let sockets = match &product.redis_pool {
        Some(pool) => from_redis(pool, keys, &user)
            .await
            .map_err(ApiError::unavailable)?,
        None => state
            .registry
            .send(LiveSockets)
            .await?
            .into_iter()
            .filter(|s| s.user == user)
            .map(|s| SocketView {
                id: s.socket.to_string(),
                node: state.node_id.to_string(),
                device: s.device,
                rooms: s.rooms.iter().map(|r| r.to_string()).collect(),
                connected_at: None,
            })
            .collect(),
    };
    Ok(user_view(&user, status, sockets))
}

async fn from_redis(
    pool: &RedisPool,
    keys: &Keys,
    user: &str,
) -> Result<Vec<SocketView>, Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = pool.get().await?;
    let ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.user_sockets(user))
        .query_async(&mut *conn)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HGETALL").arg(keys.socket_user(id));
        pipe.cmd("SMEMBERS").arg(keys.socket_rooms(id));
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut *conn).await?;
    let mut sockets = Vec::with_capacity(ids.len());
    for (id, pair) in ids.iter().zip(replies.chunks(2)) {
        let [hash, rooms] = pair else { continue };
        let hash: HashMap<String, String> = redis::from_redis_value_ref(hash)?;
        let rooms: Vec<String> = redis::from_redis_value_ref(rooms)?;
        sockets.extend(socket_from_hash(user, id, &hash, rooms));
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(id: &str, node: &str, rooms: &[&str]) -> SocketView {
        SocketView {
            id: id.into(),
            node: node.into(),
            device: "d".into(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            connected_at: None,
        }
    }

    #[test]
    fn the_view_lists_nodes_once_and_sorts_sockets() {
        let view = user_view(
            "u",
            "online",
            vec![
                socket("s2", "node-2", &["b", "a"]),
                socket("s9", "node-1", &[]),
                socket("s1", "node-2", &[]),
            ],
        );
        assert_eq!(view.nodes, ["node-1", "node-2"]);
        let ids: Vec<_> = view.sockets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s9", "s1", "s2"]);
        assert_eq!(view.sockets[2].rooms, ["a", "b"]);
        let empty = user_view("u", "offline", Vec::new());
        assert!(empty.nodes.is_empty() && empty.sockets.is_empty());
    }

    #[test]
    fn a_socket_hash_must_still_belong_to_the_user() {
        let hash: HashMap<String, String> = [
            ("userId", "u"),
            ("deviceId", "phone"),
            ("connectedAt", "1700000000000"),
            ("serverInstance", "node-2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = socket_from_hash("u", "s1", &hash, vec!["r".into()]).unwrap();
        assert_eq!((s.node.as_str(), s.device.as_str()), ("node-2", "phone"));
        assert_eq!(s.connected_at, Some(1_700_000_000_000));
        assert_eq!(socket_from_hash("other", "s1", &hash, Vec::new()), None);
        assert_eq!(
            socket_from_hash("u", "s1", &HashMap::new(), Vec::new()),
            None,
            "the socket closed meanwhile"
        );
    }
}
