//! The cluster recovery store: sessions as `rec:session:{pid}` strings with a TTL, events in
//! one Redis stream per channel (`rec:sb:user:{id}`, …), written by the RedisBridge's publish
//! script in the same call as the PUBLISH, with ids `<ms>-<seq>` that order every stream the
//! same way. Streams are trimmed by time (`MINID`) and length (`MAXLEN`) and expire when idle.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use switchboard_protocol::cluster::{Body, ClusterFrame, Part};
use switchboard_protocol::offset::Offset;

use super::store::{RecoveryStore, now_ms};
use crate::ids::SocketId;
use crate::keys::{Channel, Keys};
use crate::ports::recovery::{Recorded, SavedSession};
use crate::signing::ClusterKeys;
use crate::store::{RedisPool, RedisSettings, StoreError, StoreFuture, cmd};
use crate::transport::Outgoing;

/// One XRANGE entry: its id and its field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Most events read back for one replay (a client missing more reconnects as a new session).
const MAX_REPLAY: usize = 10_000;

/// See the module docs.
#[derive(Clone)]
pub struct RedisRecoveryStore {
    pool: RedisPool,
    keys: Keys,
    window: Duration,
    /// `take.lua`.
    take: Arc<redis::Script>,
    /// Checks recorded frames' signatures, when a cluster key is set.
    cluster_keys: Option<Arc<ClusterKeys>>,
}

impl RedisRecoveryStore {
    /// A store on `pool` keeping events and sessions for `window`.
    pub fn new(pool: RedisPool, settings: &RedisSettings, window: Duration) -> Self {
        RedisRecoveryStore {
            pool,
            keys: settings.keys.clone(),
            window,
            take: Arc::new(redis::Script::new(include_str!("take.lua"))),
            cluster_keys: settings.cluster_keys.clone(),
        }
    }
}

/// The frames and except of a recorded cluster frame; one not signed by a cluster key (when
/// one is set) is left out like a malformed one.
fn decode(bytes: &[u8], keys: Option<&ClusterKeys>) -> Option<(Arc<[Outgoing]>, Option<SocketId>)> {
    let bytes = match keys {
        Some(keys) => keys.open(bytes).ok()?,
        None => bytes,
    };
    let frame = ClusterFrame::decode(bytes).ok()?;
    let Body::Deliver { except, parts, .. } = frame.body else {
        return None;
    };
    let frames: Option<Arc<[Outgoing]>> = parts
        .into_iter()
        .map(|p| match p {
            Part::Text(b) => ByteString::try_from(b).ok().map(Outgoing::Text),
            Part::Binary(b) => Some(Outgoing::Binary(b)),
        })
        .collect();
    Some((frames?, except.map(SocketId::from)))
}

impl RecoveryStore for RedisRecoveryStore {
    fn save(&self, pid: String, session: SavedSession, ttl: Duration) -> StoreFuture<()> {
        let this = self.clone();
        Box::pin(async move {
            let json = serde_json::to_string(&session).map_err(|e| StoreError(e.to_string()))?;
            let mut conn = this.pool.get().await?;
            let _: () = cmd("SET")
                .arg(this.keys.recovery_session(&pid))
                .arg(json)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .query_async(&mut *conn)
                .await?;
            Ok(())
        })
    }

    fn take(&self, pid: String, user: String) -> StoreFuture<Option<SavedSession>> {
        let this = self.clone();
        Box::pin(async move {
            let mut conn = this.pool.get().await?;
            let json: Option<String> = this
                .take
                .key(this.keys.recovery_session(&pid))
                .arg(user)
                .invoke_async(&mut *conn)
                .await?;
            Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
        })
    }

    fn replay(&self, streams: Vec<Channel>, after: Offset) -> StoreFuture<Option<Vec<Recorded>>> {
        let this = self.clone();
        Box::pin(async move {
            if after.ms.saturating_add(this.window.as_millis() as u64) < now_ms() {
                return Ok(None);
            }
            let mut conn = this.pool.get().await?;
            let mut out = Vec::new();
            for channel in &streams {
                let key = this.keys.stream(channel);
                // An event after the offset trimmed away (length bound): not recoverable whole.
                let info: redis::Value = match cmd("XINFO")
                    .arg("STREAM")
                    .arg(&key)
                    .query_async(&mut *conn)
                    .await
                {
                    Ok(info) => info,
                    // No such stream: nothing was published to it within the window.
                    Err(_) => continue,
                };
                if let Some(deleted) = max_deleted(&info)
                    && deleted > after
                {
                    return Ok(None);
                }
                let entries: Vec<StreamEntry> = cmd("XRANGE")
                    .arg(&key)
                    .arg(format!("({after}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(MAX_REPLAY)
                    .query_async(&mut *conn)
                    .await?;
                if entries.len() >= MAX_REPLAY {
                    return Ok(None);
                }
                for (id, fields) in entries {
                    let (Ok(offset), Some((_, bytes))) = (id.parse::<Offset>(), fields.first())
                    else {
                        continue;
                    };
                    if let Some((frames, except)) = decode(bytes, this.cluster_keys.as_deref()) {
                        out.push(Recorded {
                            offset,
                            frames,
                            except,
                        });
                    }
                }
            }
            out.sort_by_key(|e| e.offset);
            out.dedup_by_key(|e| e.offset);
            Ok(Some(out))
        })
    }
}

/// `max-deleted-entry-id` of an `XINFO STREAM` answer (Redis ≥ 7), if any entry was trimmed.
fn max_deleted(info: &redis::Value) -> Option<Offset> {
    let redis::Value::Array(items) = info else {
        return None;
    };
    let mut it = items.iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let is_key = matches!(k, redis::Value::BulkString(b) if b == b"max-deleted-entry-id")
            || matches!(k, redis::Value::SimpleString(s) if s == "max-deleted-entry-id");
        if is_key {
            let text = match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            return text
                .parse::<Offset>()
                .ok()
                .filter(|o| o.ms > 0 || o.seq > 0);
        }
    }
    None
}
