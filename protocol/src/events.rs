//! Switchboard's application events: their names ([`EventName`]), the typed client events
//! ([`ClientEvent`]) and their payloads (the first argument of each event).
//!
//! Field names follow the JavaScript clients (camelCase). Validation beyond types (lengths,
//! allowed values) is done by [`Validate`], so every refusal has a clear message.

use serde::Deserialize;
use serde_json::Value;

/// Longest user id or room name accepted from a client.
pub const MAX_ID_LEN: usize = 255;
/// Most user ids one presence request may name.
pub const MAX_USER_IDS: usize = 1000;
/// Largest page `message:sync` returns.
pub const MAX_SYNC_LIMIT: usize = 500;
/// Page size of `message:sync` when the client names none.
pub const DEFAULT_SYNC_LIMIT: usize = 100;

/// The one rule for every id (user ids, room names, device ids) wherever it comes from (a token,
/// an event, the server API): 1 to [`MAX_ID_LEN`] bytes, no control characters. Ids are checked,
/// never cleaned: a cleaned id would name someone else.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("an id may not be empty")
    } else if id.len() > MAX_ID_LEN {
        Err("an id is at most 255 bytes")
    } else if id.chars().any(char::is_control) {
        Err("an id may not contain control characters")
    } else {
        Ok(())
    }
}

/// Checks a decoded payload beyond its types.
pub trait Validate {
    /// `Err(message)` when the payload is unacceptable.
    fn validate(&self) -> Result<(), &'static str>;
}

fn valid_id(id: &str, what: &'static str) -> Result<(), &'static str> {
    check_id(id).map_err(|_| what)
}

/// `message:send`
#[derive(Debug, Clone, Deserialize)]
pub struct MessageSend {
    /// Recipient user id.
    pub to: String,
    /// Message text (sanitised by the server).
    pub text: String,
    /// The client's id for this send, unique per sender: a retry with the same id is stored
    /// once and answered with the first one's `messageId`.
    #[serde(default, rename = "clientMsgId")]
    pub client_msg_id: Option<String>,
}

impl Validate for MessageSend {
    fn validate(&self) -> Result<(), &'static str> {
        valid_id(
            &self.to,
            "`to` must be a user id of 1 to 255 bytes without control characters",
        )?;
        if let Some(client_id) = &self.client_msg_id {
            valid_id(
                client_id,
                "`clientMsgId` must be a string of 1 to 255 bytes without control characters",
            )?;
        }
        if sanitize_text(&self.text).trim().is_empty() {
            return Err("`text` must not be empty");
        }
        Ok(())
    }
}

/// `message:sync`
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MessageSync {
    /// Return messages with an id above this one.
    #[serde(default)]
    pub after: u64,
    /// Page size.
    pub limit: Option<usize>,
}

impl MessageSync {
    /// The page size to use.
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_SYNC_LIMIT)
            .clamp(1, MAX_SYNC_LIMIT)
    }
}

impl Validate for MessageSync {
    fn validate(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

/// `typing`
#[derive(Debug, Clone, Deserialize)]
pub struct Typing {
    /// Who is being typed to.
    pub to: String,
}

impl Validate for Typing {
    fn validate(&self) -> Result<(), &'static str> {
        valid_id(
            &self.to,
            "`to` must be a user id of 1 to 255 bytes without control characters",
        )
    }
}

/// `signal`
#[derive(Debug, Clone, Deserialize)]
pub struct Signal {
    /// Recipient user id.
    pub to: String,
    /// Opaque application data.
    #[serde(default)]
    pub data: Value,
}

impl Validate for Signal {
    fn validate(&self) -> Result<(), &'static str> {
        valid_id(
            &self.to,
            "`to` must be a user id of 1 to 255 bytes without control characters",
        )
    }
}

/// `room:emit`
#[derive(Debug, Clone, Deserialize)]
pub struct RoomEmit {
    /// The room.
    pub room: String,
    /// Opaque application data.
    #[serde(default)]
    pub data: Value,
    /// `true`: may be dropped for a slow member and is not kept for recovery.
    #[serde(default)]
    pub volatile: Option<bool>,
}

impl Validate for RoomEmit {
    fn validate(&self) -> Result<(), &'static str> {
        valid_id(
            &self.room,
            "`room` must be a room name of 1 to 255 bytes without control characters",
        )
    }
}

/// `room:join`, `room:leave` and `room:presence`
#[derive(Debug, Clone, Deserialize)]
pub struct RoomName {
    /// The room.
    pub room: String,
}

impl Validate for RoomName {
    fn validate(&self) -> Result<(), &'static str> {
        valid_id(
            &self.room,
            "`room` must be a room name of 1 to 255 bytes without control characters",
        )
    }
}

/// `presence:subscribe`, `presence:unsubscribe` and `presence:query`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceUsers {
    /// The users concerned.
    pub user_ids: Vec<String>,
}

impl Validate for PresenceUsers {
    fn validate(&self) -> Result<(), &'static str> {
        if self.user_ids.len() > MAX_USER_IDS {
            return Err("`userIds` may name at most 1000 users");
        }
        for id in &self.user_ids {
            valid_id(
                id,
                "each of `userIds` must be a user id of 1 to 255 bytes without control characters",
            )?;
        }
        Ok(())
    }
}

/// `status:set`
#[derive(Debug, Clone, Deserialize)]
pub struct StatusSet {
    /// `online` or `away`.
    pub status: String,
}

impl Validate for StatusSet {
    fn validate(&self) -> Result<(), &'static str> {
        match self.status.as_str() {
            "online" | "away" => Ok(()),
            _ => Err("`status` must be \"online\" or \"away\""),
        }
    }
}

/// Every event name Switchboard itself uses, client → server and server → client. The one
/// list of names: metrics labels come from it ([`EventName::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventName {
    /// `message:send` (client).
    MessageSend,
    /// `message:sync` (client).
    MessageSync,
    /// `message:received` (server).
    MessageReceived,
    /// `message:sent` (server).
    MessageSent,
    /// `typing` (both).
    Typing,
    /// `signal` (both).
    Signal,
    /// `room:emit` (client).
    RoomEmit,
    /// `room:msg` (server).
    RoomMsg,
    /// `room:join` (client).
    RoomJoin,
    /// `room:leave` (client).
    RoomLeave,
    /// `room:presence` (client).
    RoomPresence,
    /// `presence:subscribe` (client).
    PresenceSubscribe,
    /// `presence:unsubscribe` (client).
    PresenceUnsubscribe,
    /// `presence:query` (client).
    PresenceQuery,
    /// `status:set` (client).
    StatusSet,
    /// `friend:online` (server).
    FriendOnline,
    /// `friend:offline` (server).
    FriendOffline,
    /// `friend:status` (server).
    FriendStatus,
    /// `authenticated` (server).
    Authenticated,
    /// `error` (server).
    Error,
    /// `rate_limited` (server).
    RateLimited,
    /// `server:maintenance` (server).
    ServerMaintenance,
    /// `server:shutdown` (server).
    ServerShutdown,
}

impl EventName {
    /// Every name.
    pub const ALL: [EventName; 23] = [
        EventName::MessageSend,
        EventName::MessageSync,
        EventName::MessageReceived,
        EventName::MessageSent,
        EventName::Typing,
        EventName::Signal,
        EventName::RoomEmit,
        EventName::RoomMsg,
        EventName::RoomJoin,
        EventName::RoomLeave,
        EventName::RoomPresence,
        EventName::PresenceSubscribe,
        EventName::PresenceUnsubscribe,
        EventName::PresenceQuery,
        EventName::StatusSet,
        EventName::FriendOnline,
        EventName::FriendOffline,
        EventName::FriendStatus,
        EventName::Authenticated,
        EventName::Error,
        EventName::RateLimited,
        EventName::ServerMaintenance,
        EventName::ServerShutdown,
    ];

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::MessageSend => "message:send",
            EventName::MessageSync => "message:sync",
            EventName::MessageReceived => "message:received",
            EventName::MessageSent => "message:sent",
            EventName::Typing => "typing",
            EventName::Signal => "signal",
            EventName::RoomEmit => "room:emit",
            EventName::RoomMsg => "room:msg",
            EventName::RoomJoin => "room:join",
            EventName::RoomLeave => "room:leave",
            EventName::RoomPresence => "room:presence",
            EventName::PresenceSubscribe => "presence:subscribe",
            EventName::PresenceUnsubscribe => "presence:unsubscribe",
            EventName::PresenceQuery => "presence:query",
            EventName::StatusSet => "status:set",
            EventName::FriendOnline => "friend:online",
            EventName::FriendOffline => "friend:offline",
            EventName::FriendStatus => "friend:status",
            EventName::Authenticated => "authenticated",
            EventName::Error => "error",
            EventName::RateLimited => "rate_limited",
            EventName::ServerMaintenance => "server:maintenance",
            EventName::ServerShutdown => "server:shutdown",
        }
    }

    /// The known name `name` is, if any.
    pub fn from_name(name: &str) -> Option<EventName> {
        EventName::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The metrics label of any event name: the known name, else `other` (labels stay bounded).
    pub fn label(name: &str) -> &'static str {
        EventName::from_name(name).map_or("other", EventName::as_str)
    }
}

/// One event from a client, with its payload typed and validated.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// `message:send {to, text}`.
    MessageSend(MessageSend),
    /// `message:sync {after?, limit?}` (the payload may be left out).
    MessageSync(MessageSync),
    /// `typing {to}`.
    Typing(Typing),
    /// `signal {to, data}`.
    Signal(Signal),
    /// `room:emit {room, data}`.
    RoomEmit(RoomEmit),
    /// `room:join {room}`.
    RoomJoin(RoomName),
    /// `room:leave {room}`.
    RoomLeave(RoomName),
    /// `room:presence {room}`.
    RoomPresence(RoomName),
    /// `presence:subscribe {userIds}`.
    PresenceSubscribe(PresenceUsers),
    /// `presence:unsubscribe {userIds}`.
    PresenceUnsubscribe(PresenceUsers),
    /// `presence:query {userIds}`.
    PresenceQuery(PresenceUsers),
    /// `status:set {status}`.
    StatusSet(StatusSet),
    /// Any other name: an event of the application's own, passed on as it came.
    Custom {
        /// The event name (a number name in its decimal form).
        name: String,
        /// The arguments after the name.
        args: Vec<Value>,
    },
}

/// Why a client event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A built-in event whose payload is missing, mistyped or out of range.
    #[error("{0}")]
    InvalidPayload(String),
}

impl ClientEvent {
    /// Type the `[name, args…]` of an EVENT packet.
    pub fn parse(mut data: Vec<Value>) -> Result<ClientEvent, EventError> {
        let name = match data.first() {
            Some(Value::String(name)) => EventName::from_name(name).ok_or(name.clone()),
            Some(other) => Err(other.to_string()),
            None => Err(String::new()),
        };
        let kind = match name {
            Ok(kind) => kind,
            Err(name) => {
                let args = if data.is_empty() {
                    data
                } else {
                    data.split_off(1)
                };
                return Ok(ClientEvent::Custom { name, args });
            }
        };
        let arg = data.get(1);
        let invalid = EventError::InvalidPayload;
        Ok(match kind {
            EventName::MessageSend => ClientEvent::MessageSend(parse(arg).map_err(invalid)?),
            EventName::MessageSync => {
                let empty = Value::Object(Default::default());
                ClientEvent::MessageSync(parse(arg.or(Some(&empty))).map_err(invalid)?)
            }
            EventName::Typing => ClientEvent::Typing(parse(arg).map_err(invalid)?),
            EventName::Signal => ClientEvent::Signal(parse(arg).map_err(invalid)?),
            EventName::RoomEmit => ClientEvent::RoomEmit(parse(arg).map_err(invalid)?),
            EventName::RoomJoin => ClientEvent::RoomJoin(parse(arg).map_err(invalid)?),
            EventName::RoomLeave => ClientEvent::RoomLeave(parse(arg).map_err(invalid)?),
            EventName::RoomPresence => ClientEvent::RoomPresence(parse(arg).map_err(invalid)?),
            EventName::PresenceSubscribe => {
                ClientEvent::PresenceSubscribe(parse(arg).map_err(invalid)?)
            }
            EventName::PresenceUnsubscribe => {
                ClientEvent::PresenceUnsubscribe(parse(arg).map_err(invalid)?)
            }
            EventName::PresenceQuery => ClientEvent::PresenceQuery(parse(arg).map_err(invalid)?),
            EventName::StatusSet => ClientEvent::StatusSet(parse(arg).map_err(invalid)?),
            // A server → client name sent by a client is not one of its events.
            _ => {
                let name = kind.as_str().to_string();
                return Ok(ClientEvent::Custom {
                    name,
                    args: data.split_off(1),
                });
            }
        })
    }

    /// The built-in name, or `None` for a custom event.
    pub fn known(&self) -> Option<EventName> {
        Some(match self {
            ClientEvent::MessageSend(_) => EventName::MessageSend,
            ClientEvent::MessageSync(_) => EventName::MessageSync,
            ClientEvent::Typing(_) => EventName::Typing,
            ClientEvent::Signal(_) => EventName::Signal,
            ClientEvent::RoomEmit(_) => EventName::RoomEmit,
            ClientEvent::RoomJoin(_) => EventName::RoomJoin,
            ClientEvent::RoomLeave(_) => EventName::RoomLeave,
            ClientEvent::RoomPresence(_) => EventName::RoomPresence,
            ClientEvent::PresenceSubscribe(_) => EventName::PresenceSubscribe,
            ClientEvent::PresenceUnsubscribe(_) => EventName::PresenceUnsubscribe,
            ClientEvent::PresenceQuery(_) => EventName::PresenceQuery,
            ClientEvent::StatusSet(_) => EventName::StatusSet,
            ClientEvent::Custom { .. } => return None,
        })
    }
}

/// Decode and validate an event's first argument.
pub fn parse<T: for<'de> Deserialize<'de> + Validate>(arg: Option<&Value>) -> Result<T, String> {
    // serde would also read a struct from an array, positionally: only objects are payloads.
    let arg = arg
        .filter(|a| a.is_object())
        .ok_or_else(|| "the event needs a payload object".to_string())?;
    let value = T::deserialize(arg).map_err(|e| format!("invalid payload: {e}"))?;
    value.validate().map_err(str::to_string)?;
    Ok(value)
}

/// Remove control characters other than newline and tab (they break logs, terminals and
/// PostgreSQL text columns, which refuse `\u0000`).
pub fn sanitize_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn message_send_is_typed_and_validated() {
        let ok: MessageSend = parse(Some(&json!({"to": "bob", "text": "hi"}))).unwrap();
        assert_eq!((ok.to.as_str(), ok.text.as_str()), ("bob", "hi"));
        assert!(parse::<MessageSend>(Some(&json!({"text": "hi"}))).is_err());
        assert!(parse::<MessageSend>(Some(&json!({"to": "bob", "text": 5}))).is_err());
        assert!(parse::<MessageSend>(Some(&json!({"to": "bob", "text": "\u{1}\u{2}"}))).is_err());
        assert!(parse::<MessageSend>(Some(&json!({"to": "", "text": "x"}))).is_err());
        assert!(parse::<MessageSend>(None).is_err());
        assert!(parse::<MessageSend>(Some(&json!("str"))).is_err());
        assert!(parse::<MessageSend>(Some(&json!(["bob", "hi"]))).is_err());
    }

    #[test]
    fn sanitize_keeps_newlines_and_tabs_only() {
        assert_eq!(sanitize_text("a\u{0}b\u{7}c\nd\te\u{1b}"), "abc\nd\te");
    }

    #[test]
    fn presence_users_bounded_and_status_checked() {
        let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        assert!(parse::<PresenceUsers>(Some(&json!({"userIds": many}))).is_err());
        assert!(parse::<PresenceUsers>(Some(&json!({"userIds": ["a"]}))).is_ok());
        assert!(parse::<StatusSet>(Some(&json!({"status": "busy"}))).is_err());
        assert!(parse::<StatusSet>(Some(&json!({"status": "away"}))).is_ok());
        let sync: MessageSync = parse(Some(&json!({"limit": 9999}))).unwrap();
        assert_eq!((sync.after, sync.page_size()), (0, MAX_SYNC_LIMIT));
    }

    #[test]
    fn client_events_are_typed_by_name() {
        let ev = |v: Value| ClientEvent::parse(v.as_array().unwrap().clone());
        assert!(matches!(
            ev(json!(["message:send", {"to": "b", "text": "hi"}])),
            Ok(ClientEvent::MessageSend(MessageSend { .. }))
        ));
        assert!(matches!(
            ev(json!(["message:sync"])),
            Ok(ClientEvent::MessageSync(MessageSync { after: 0, .. }))
        ));
        assert!(matches!(
            ev(json!(["typing", {"to": "b"}])),
            Ok(ClientEvent::Typing(_))
        ));
        assert!(matches!(
            ev(json!(["signal", {"to": "b", "data": [1]}])),
            Ok(ClientEvent::Signal(_))
        ));
        assert!(matches!(
            ev(json!(["room:emit", {"room": "r"}])),
            Ok(ClientEvent::RoomEmit(_))
        ));
        for (name, expected) in [
            ("presence:subscribe", EventName::PresenceSubscribe),
            ("presence:unsubscribe", EventName::PresenceUnsubscribe),
            ("presence:query", EventName::PresenceQuery),
        ] {
            let parsed = ev(json!([name, {"userIds": ["a"]}])).unwrap();
            assert_eq!(parsed.known(), Some(expected));
        }
        assert!(matches!(
            ev(json!(["status:set", {"status": "away"}])),
            Ok(ClientEvent::StatusSet(_))
        ));
        for (name, expected) in [
            ("room:join", EventName::RoomJoin),
            ("room:leave", EventName::RoomLeave),
            ("room:presence", EventName::RoomPresence),
        ] {
            let parsed = ev(json!([name, {"room": "doc:1"}])).unwrap();
            assert_eq!(parsed.known(), Some(expected));
        }
    }

    #[test]
    fn other_names_are_custom_events_with_their_arguments() {
        let parsed = ClientEvent::parse(vec![json!("order:track"), json!({"id": 1}), json!(2)]);
        match parsed {
            Ok(ClientEvent::Custom { name, args }) => {
                assert_eq!(name, "order:track");
                assert_eq!(args, vec![json!({"id": 1}), json!(2)]);
            }
            other => panic!("{other:?}"),
        }
        // A server → client name is not a client event; a number name keeps its digits.
        assert!(matches!(
            ClientEvent::parse(vec![json!("message:received"), json!({})]),
            Ok(ClientEvent::Custom { ref name, .. }) if name == "message:received"
        ));
        assert!(matches!(
            ClientEvent::parse(vec![json!(7)]),
            Ok(ClientEvent::Custom { ref name, ref args }) if name == "7" && args.is_empty()
        ));
        assert!(
            ClientEvent::parse(vec![json!("x")])
                .unwrap()
                .known()
                .is_none()
        );
    }

    #[test]
    fn bad_payloads_of_built_in_events_are_refused_with_a_message() {
        for bad in [
            json!(["message:send", {"to": "b"}]),
            json!(["message:send"]),
            json!(["typing", "bob"]),
            json!(["status:set", {"status": "busy"}]),
            json!(["presence:query", {"userIds": [""]}]),
            json!(["room:emit", {"room": ""}]),
        ] {
            match ClientEvent::parse(bad.as_array().unwrap().clone()) {
                Err(EventError::InvalidPayload(message)) => assert!(!message.is_empty()),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn event_names_are_one_list_and_label_unknown_names_other() {
        for name in EventName::ALL {
            assert_eq!(EventName::from_name(name.as_str()), Some(name));
            assert_eq!(EventName::label(name.as_str()), name.as_str());
        }
        assert_eq!(EventName::label("order:track"), "other");
        let distinct: std::collections::HashSet<&str> =
            EventName::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(distinct.len(), EventName::ALL.len());
    }
}
