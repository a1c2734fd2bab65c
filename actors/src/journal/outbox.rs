//! The pure side of the webhook outbox: events built as JSON, their rows, and reading pending
//! rows back in a safe order.
//!
//! Nothing here does I/O or reads the clock; event ids and times come in as arguments.
//!
//! # Layout
//! - [`OutboxRow`]: one event, serialised once when its row is queued, so a retried batch
//!   writes the very same event (same `id`, same `at`).
//! - One builder per event type the Journal writes ([`socket_connected`] …
//!   [`custom`]); the field names are the webhook contract.
//! - [`settled`]: how many of the oldest pending rows may be delivered now.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::prelude::{DateTimeUtc, Uuid};
use serde_json::{Map, Value, json};

use super::entities::webhook_outbox;
use super::rows::{OpenedRow, PresenceRow};
use crate::ports::journal::OutboxEvent;
use crate::ports::journal::event_types::{
    MESSAGE_STORED, ROOM_JOINED, ROOM_LEFT, SOCKET_CONNECTED, SOCKET_DISCONNECTED, USER_OFFLINE,
    USER_ONLINE,
};

/// `status` of a row waiting for delivery.
pub(super) const PENDING: &str = "pending";
/// `status` of a row given up on.
pub(super) const DEAD: &str = "dead";
/// `webhook_lease.name` of the delivery job.
pub(super) const LEASE: &str = "webhooks";
/// Longest `event_type` (the column is `VARCHAR(64)`).
pub(super) const EVENT_TYPE_MAX: usize = 64;

/// One event, ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OutboxRow {
    pub event_id: Uuid,
    pub event_type: String,
    /// The whole event, `{"id", "type", "at", …fields}`, as JSON text. serde_json escapes
    /// control characters, so the text never holds the `\u0000` PostgreSQL refuses.
    pub payload: String,
}

impl OutboxRow {
    /// The event `{"id": event_id, "type": event_type, "at": at_ms, …fields}`. An object's
    /// members become fields (never overriding `id`, `type` or `at`); any other value becomes
    /// the field `data`.
    pub fn new(event_id: Uuid, event_type: &str, at_ms: u64, fields: Value) -> Self {
        let mut event = Map::new();
        event.insert("id".into(), Value::String(event_id.to_string()));
        event.insert("type".into(), Value::String(event_type.to_owned()));
        event.insert("at".into(), Value::from(at_ms));
        match fields {
            Value::Object(fields) => {
                for (key, value) in fields {
                    event.entry(key).or_insert(value);
                }
            }
            Value::Null => {}
            other => {
                event.insert("data".into(), other);
            }
        }
        OutboxRow {
            event_id,
            event_type: event_type.to_owned(),
            payload: Value::Object(event).to_string(),
        }
    }

    /// Its `webhook_outbox` row, written at `created_at`.
    pub fn model(&self, created_at: DateTimeUtc) -> webhook_outbox::ActiveModel {
        webhook_outbox::ActiveModel {
            id: NotSet,
            event_id: Set(self.event_id.to_string()),
            event_type: Set(self.event_type.clone()),
            payload: Set(self.payload.clone()),
            created_at: Set(created_at),
            status: Set(PENDING.to_owned()),
            attempts: Set(0),
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn db_ms(t: DateTimeUtc) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// `None` for an empty string (an unknown address or device).
fn non_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

/// `socket.connected` for a new connection row.
pub(super) fn socket_connected(event_id: Uuid, row: &OpenedRow) -> OutboxRow {
    OutboxRow::new(
        event_id,
        SOCKET_CONNECTED,
        db_ms(row.connected_at),
        json!({
            "socketId": row.socket_id,
            "userId": row.user_id,
            "deviceId": row.device_id,
            "nodeId": row.server_instance,
            "ip": non_empty(&row.ip_address),
        }),
    )
}

/// `socket.disconnected` for a connection row closed at `at`.
pub(super) fn socket_disconnected(
    event_id: Uuid,
    socket_id: &str,
    user_id: &str,
    node_id: &str,
    reason: &str,
    at: DateTimeUtc,
) -> OutboxRow {
    OutboxRow::new(
        event_id,
        SOCKET_DISCONNECTED,
        db_ms(at),
        json!({
            "socketId": socket_id,
            "userId": user_id,
            "nodeId": node_id,
            "reason": reason,
        }),
    )
}

/// `user.online` / `user.offline` for a presence row; `None` for other statuses (`away`).
pub(super) fn presence_changed(event_id: Uuid, row: &PresenceRow) -> Option<OutboxRow> {
    let event_type = match row.status.as_str() {
        "online" => USER_ONLINE,
        "offline" => USER_OFFLINE,
        _ => return None,
    };
    Some(OutboxRow::new(
        event_id,
        event_type,
        db_ms(row.at),
        json!({"userId": row.user_id, "deviceId": row.device_id}),
    ))
}

/// `room.joined` (`joined`) or `room.left` for a durable membership made through the API.
pub(super) fn membership_changed(
    event_id: Uuid,
    joined: bool,
    room: &str,
    user_id: &str,
    at: DateTimeUtc,
) -> OutboxRow {
    OutboxRow::new(
        event_id,
        if joined { ROOM_JOINED } else { ROOM_LEFT },
        db_ms(at),
        json!({"room": room, "userId": user_id, "source": "api"}),
    )
}

/// `message.stored` for a committed message.
pub(super) fn message_stored(
    event_id: Uuid,
    message_id: i64,
    from: &str,
    to: &str,
    text: &str,
    created_at: DateTimeUtc,
) -> OutboxRow {
    let at = db_ms(created_at);
    OutboxRow::new(
        event_id,
        MESSAGE_STORED,
        at,
        json!({
            "messageId": message_id,
            "from": from,
            "to": to,
            "text": text,
            "createdAt": at,
        }),
    )
}

/// An event of another actor's ([`WebhookEvent`](crate::ports::journal::WebhookEvent)); `None`
/// when its type is empty, over [`EVENT_TYPE_MAX`] bytes or holds control characters.
pub(super) fn custom(
    event_id: Uuid,
    event_type: &str,
    data: Value,
    at: SystemTime,
) -> Option<OutboxRow> {
    let valid = !event_type.is_empty()
        && event_type.len() <= EVENT_TYPE_MAX
        && !event_type.chars().any(char::is_control);
    valid.then(|| OutboxRow::new(event_id, event_type, unix_ms(at), data))
}

/// How many of `rows` (pending, ascending by id) may be delivered now: those up to, not
/// including, the first written after `cutoff`. A row still inside the settle window may have
/// neighbours with lower ids that are not committed yet; delivering rows behind it would break
/// the order.
pub(super) fn settled(rows: &[webhook_outbox::Model], cutoff: DateTimeUtc) -> usize {
    rows.iter()
        .position(|row| row.created_at > cutoff)
        .unwrap_or(rows.len())
}

/// A pending row as [`OutboxEvent`]. A payload that is not JSON (never written by the Journal)
/// is handed over as a JSON string rather than blocking every event behind it.
pub(super) fn to_event(row: webhook_outbox::Model) -> OutboxEvent {
    let event = serde_json::from_str(&row.payload).unwrap_or(Value::String(row.payload));
    let ms = u64::try_from(row.created_at.timestamp_millis()).unwrap_or(0);
    OutboxEvent {
        id: row.id,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        created_at: UNIX_EPOCH + Duration::from_millis(ms),
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTimeUtc {
        // unwrap: small constant timestamps are in range.
        DateTimeUtc::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn parse(row: &OutboxRow) -> Value {
        serde_json::from_str(&row.payload).unwrap()
    }

    fn stored(id: i64, created_at: DateTimeUtc) -> webhook_outbox::Model {
        webhook_outbox::Model {
            id,
            event_id: Uuid::new_v4().to_string(),
            event_type: "t".into(),
            payload: "{}".into(),
            created_at,
            status: PENDING.into(),
            attempts: 0,
        }
    }

    #[test]
    fn events_carry_id_type_and_at_and_keep_them() {
        let id = Uuid::new_v4();
        let row = OutboxRow::new(
            id,
            "room.joined",
            42,
            json!({"id": "forged", "type": "forged", "room": "r1", "n": 1}),
        );
        assert_eq!(row.event_id, id);
        assert_eq!(row.event_type, "room.joined");
        assert_eq!(
            parse(&row),
            json!({"id": id.to_string(), "type": "room.joined", "at": 42, "room": "r1", "n": 1})
        );
        let scalar = OutboxRow::new(id, "x", 1, json!([1, 2]));
        assert_eq!(parse(&scalar)["data"], json!([1, 2]));
        let empty = OutboxRow::new(id, "x", 1, Value::Null);
        assert_eq!(parse(&empty).as_object().unwrap().len(), 3);
    }

    #[test]
    fn payloads_never_hold_a_nul_byte() {
        let row = OutboxRow::new(Uuid::new_v4(), "x", 1, json!({"text": "a\u{0}b"}));
        assert!(!row.payload.contains('\u{0}'));
        assert_eq!(parse(&row)["text"], "a\u{0}b");
    }

    #[test]
    fn lifecycle_events_have_the_documented_fields() {
        let opened = OpenedRow {
            id: Uuid::new_v4(),
            socket_id: "s1".into(),
            user_id: "alice".into(),
            device_id: "phone".into(),
            server_instance: "n1".into(),
            ip_address: String::new(),
            user_agent: None,
            connected_at: at(0),
            event: None,
        };
        let event = parse(&socket_connected(Uuid::new_v4(), &opened));
        assert_eq!(event["type"], "socket.connected");
        assert_eq!(event["at"], 1_700_000_000_000_u64);
        assert_eq!(
            (
                &event["socketId"],
                &event["userId"],
                &event["deviceId"],
                &event["nodeId"],
                &event["ip"]
            ),
            (
                &json!("s1"),
                &json!("alice"),
                &json!("phone"),
                &json!("n1"),
                &Value::Null
            )
        );

        let event = parse(&socket_disconnected(
            Uuid::new_v4(),
            "s1",
            "alice",
            "n1",
            "timeout",
            at(5),
        ));
        assert_eq!(event["type"], "socket.disconnected");
        assert_eq!(event["reason"], "timeout");
        assert_eq!(event["userId"], "alice");
        assert_eq!(event["nodeId"], "n1");
        assert_eq!(event["at"], 1_700_000_005_000_u64);

        let mut presence = PresenceRow {
            user_id: "alice".into(),
            status: "online".into(),
            device_id: None,
            at: at(0),
            event: None,
        };
        let event = parse(&presence_changed(Uuid::new_v4(), &presence).unwrap());
        assert_eq!(
            (&event["type"], &event["userId"], &event["deviceId"]),
            (&json!("user.online"), &json!("alice"), &Value::Null)
        );
        presence.status = "offline".into();
        presence.device_id = Some("phone".into());
        let event = parse(&presence_changed(Uuid::new_v4(), &presence).unwrap());
        assert_eq!(
            (&event["type"], &event["deviceId"]),
            (&json!("user.offline"), &json!("phone"))
        );
        presence.status = "away".into();
        assert_eq!(presence_changed(Uuid::new_v4(), &presence), None);

        let event = parse(&membership_changed(
            Uuid::new_v4(),
            false,
            "r1",
            "alice",
            at(0),
        ));
        assert_eq!(
            (
                &event["type"],
                &event["room"],
                &event["userId"],
                &event["source"]
            ),
            (
                &json!("room.left"),
                &json!("r1"),
                &json!("alice"),
                &json!("api")
            )
        );

        let event = parse(&message_stored(
            Uuid::new_v4(),
            7,
            "alice",
            "bob",
            "hi",
            at(1),
        ));
        assert_eq!(
            event,
            json!({
                "id": event["id"], "type": "message.stored", "at": 1_700_000_001_000_u64,
                "messageId": 7, "from": "alice", "to": "bob", "text": "hi",
                "createdAt": 1_700_000_001_000_u64,
            })
        );
    }

    #[test]
    fn custom_event_types_are_checked_not_cleaned() {
        let now = UNIX_EPOCH + Duration::from_millis(5);
        let ok = custom(Uuid::new_v4(), "room.joined", json!({"room": "r"}), now).unwrap();
        assert_eq!(parse(&ok)["at"], 5);
        for bad in ["", "a\u{0}b", "tab\there", &"x".repeat(65)] {
            assert_eq!(
                custom(Uuid::new_v4(), bad, Value::Null, now),
                None,
                "{bad:?}"
            );
        }
        assert!(custom(Uuid::new_v4(), &"x".repeat(64), Value::Null, now).is_some());
    }

    #[test]
    fn only_the_settled_prefix_is_delivered() {
        let rows = vec![stored(1, at(0)), stored(2, at(10)), stored(3, at(1))];
        assert_eq!(
            settled(&rows, at(5)),
            1,
            "row 2 is not settled: row 3 waits"
        );
        assert_eq!(settled(&rows, at(10)), 3);
        assert_eq!(settled(&rows, at(-1)), 0);
        assert_eq!(settled(&[], at(0)), 0);
    }

    #[test]
    fn rows_read_back_as_events() {
        let mut row = stored(9, at(2));
        row.payload = r#"{"id":"e","type":"t","at":1}"#.into();
        row.attempts = 3;
        let event = to_event(row.clone());
        assert_eq!((event.id, event.attempts), (9, 3));
        assert_eq!(event.event["type"], "t");
        assert_eq!(unix_ms(event.created_at), 1_700_000_002_000);
        row.payload = "not json".into();
        assert_eq!(to_event(row).event, json!("not json"));
    }
}
