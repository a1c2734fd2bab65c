//! Typed payloads of Switchboard's application events (the first argument of each event).
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

/// Checks a decoded payload beyond its types.
pub trait Validate {
    /// `Err(message)` when the payload is unacceptable.
    fn validate(&self) -> Result<(), &'static str>;
}

fn valid_id(id: &str, what: &'static str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        Err(what)
    } else {
        Ok(())
    }
}

/// `message:send`
#[derive(Debug, Clone, Deserialize)]
pub struct MessageSend {
    /// Recipient user id.
    pub to: String,
    /// Message text (sanitised by the server).
    pub text: String,
}

impl Validate for MessageSend {
    fn validate(&self) -> Result<(), &'static str> {
        valid_id(&self.to, "`to` must be a user id of 1 to 255 bytes")?;
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
        valid_id(&self.to, "`to` must be a user id of 1 to 255 bytes")
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
        valid_id(&self.to, "`to` must be a user id of 1 to 255 bytes")
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
}

impl Validate for RoomEmit {
    fn validate(&self) -> Result<(), &'static str> {
        valid_id(&self.room, "`room` must be a room name of 1 to 255 bytes")
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
            valid_id(id, "each of `userIds` must be a user id of 1 to 255 bytes")?;
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
}
