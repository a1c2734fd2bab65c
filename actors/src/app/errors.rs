//! The one place an internal failure becomes what the client sees: an [`ErrorCode`] (a closed
//! set with stable names) and a short message, in an `error` event or an error ack.

use std::borrow::Cow;
use std::time::Duration;

use actix::MailboxError;
use switchboard_protocol::events::EventError;

use crate::ports::journal::JournalError;
use crate::store::StoreError;

/// The client-facing error codes (README lists them; clients branch on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Wrong types, missing fields, empty text, values out of range.
    InvalidPayload,
    /// The event is larger than the configured maximum.
    PayloadTooLarge,
    /// No such event.
    UnknownEvent,
    /// `room:emit` to a room the socket is not in.
    NotMember,
    /// The application does not allow it (the token's rooms, or the backend's `authorize`);
    /// the refusal carries the backend's reason.
    Forbidden,
    /// Over a rate limit (the refusal carries `retryAfterMs`).
    RateLimited,
    /// The token expired.
    TokenExpired,
    /// A part of the node (Redis, the database, an actor) cannot answer now; retry later.
    ServiceUnavailable,
    /// A durable send whose commit outcome is unknown: retry it with the same `clientMsgId`,
    /// which the server deduplicates.
    InDoubt,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidPayload,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnknownEvent,
        ErrorCode::NotMember,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::TokenExpired,
        ErrorCode::ServiceUnavailable,
        ErrorCode::InDoubt,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::InDoubt => "in_doubt",
        }
    }
}

/// An event refused, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code.
    pub code: ErrorCode,
    /// A short explanation for people.
    pub message: Cow<'static, str>,
    /// When the client may try again (rate limits).
    pub retry_after: Option<Duration>,
    /// The application's reason (`forbidden`).
    pub reason: Option<String>,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Refusal {
            code,
            message: message.into(),
            retry_after: None,
            reason: None,
        }
    }

    /// The application refuses, for `reason` (the backend's, or the token's rooms).
    pub fn forbidden(reason: &str) -> Self {
        Refusal {
            reason: Some(reason.to_string()),
            ..Refusal::new(ErrorCode::Forbidden, format!("not allowed: {reason}"))
        }
    }

    /// The application's backend could not be asked (failure policy `closed`).
    pub fn backend_unavailable() -> Self {
        Refusal::new(
            ErrorCode::ServiceUnavailable,
            "the application's backend is unavailable; try again later",
        )
    }

    /// Over a rate limit; the client may retry after `retry`.
    pub fn rate_limited(retry: Duration) -> Self {
        Refusal {
            retry_after: Some(retry),
            ..Refusal::new(ErrorCode::RateLimited, "rate limit exceeded")
        }
    }

    /// The event is larger than `max` bytes.
    pub fn too_large(max: usize) -> Self {
        Refusal::new(
            ErrorCode::PayloadTooLarge,
            format!("events are limited to {max} bytes"),
        )
    }

    /// No built-in event and nobody else to ask has this name.
    pub fn unknown_event(name: &str) -> Self {
        Refusal::new(ErrorCode::UnknownEvent, format!("unknown event {name:?}"))
    }

    /// The payload is unacceptable.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Refusal::new(ErrorCode::InvalidPayload, message)
    }

    /// The socket's token expired.
    pub fn token_expired() -> Self {
        Refusal::new(ErrorCode::TokenExpired, "the token expired")
    }
}

/// An actor did not answer (its mailbox is gone or full): the node is restarting a part.
impl From<MailboxError> for Refusal {
    fn from(_: MailboxError) -> Self {
        Refusal::new(ErrorCode::ServiceUnavailable, "try again later")
    }
}

/// Presence or the limits store (Redis) cannot answer.
impl From<StoreError> for Refusal {
    fn from(_: StoreError) -> Self {
        Refusal::new(ErrorCode::ServiceUnavailable, "try again later")
    }
}

/// The database refused or could not answer.
impl From<JournalError> for Refusal {
    fn from(err: JournalError) -> Self {
        match err {
            JournalError::Invalid(why) => Refusal::invalid(why),
            JournalError::InDoubt(_) => Refusal::new(
                ErrorCode::InDoubt,
                "the message may or may not be stored: retry with the same clientMsgId",
            ),
            // An outage, or a statement the database refused: nothing the client did wrong.
            JournalError::Unavailable(_)
            | JournalError::Database(_)
            | JournalError::Config(_)
            | JournalError::Migration(_) => {
                Refusal::new(ErrorCode::ServiceUnavailable, "try again later")
            }
        }
    }
}

/// A built-in event with a bad payload.
impl From<EventError> for Refusal {
    fn from(err: EventError) -> Self {
        match err {
            EventError::InvalidPayload(message) => Refusal::invalid(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_internal_failure_maps_to_a_code() {
        let cases: Vec<(Refusal, ErrorCode)> = vec![
            (
                Refusal::from(EventError::InvalidPayload("x".into())),
                ErrorCode::InvalidPayload,
            ),
            (
                Refusal::from(JournalError::Invalid("user ids are limited")),
                ErrorCode::InvalidPayload,
            ),
            (Refusal::too_large(10), ErrorCode::PayloadTooLarge),
            (Refusal::unknown_event("x"), ErrorCode::UnknownEvent),
            (
                Refusal::new(ErrorCode::NotMember, "not a member"),
                ErrorCode::NotMember,
            ),
            (Refusal::forbidden("blocked"), ErrorCode::Forbidden),
            (
                Refusal::backend_unavailable(),
                ErrorCode::ServiceUnavailable,
            ),
            (
                Refusal::rate_limited(Duration::from_millis(5)),
                ErrorCode::RateLimited,
            ),
            (Refusal::token_expired(), ErrorCode::TokenExpired),
            (
                Refusal::from(MailboxError::Closed),
                ErrorCode::ServiceUnavailable,
            ),
            (
                Refusal::from(MailboxError::Timeout),
                ErrorCode::ServiceUnavailable,
            ),
            (
                Refusal::from(StoreError("down".into())),
                ErrorCode::ServiceUnavailable,
            ),
            (
                Refusal::from(JournalError::Unavailable("down".into())),
                ErrorCode::ServiceUnavailable,
            ),
            (
                Refusal::from(JournalError::Database("refused".into())),
                ErrorCode::ServiceUnavailable,
            ),
            (
                Refusal::from(JournalError::InDoubt("no answer to COMMIT".into())),
                ErrorCode::InDoubt,
            ),
        ];
        for (refusal, code) in &cases {
            assert_eq!(refusal.code, *code, "{refusal:?}");
            assert!(!refusal.message.is_empty());
        }
        let reached: HashSet<ErrorCode> = cases.iter().map(|(r, _)| r.code).collect();
        for code in ErrorCode::ALL {
            assert!(
                reached.contains(&code),
                "{} is never produced",
                code.as_str()
            );
        }
        assert_eq!(
            Refusal::rate_limited(Duration::from_millis(5)).retry_after,
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn codes_have_stable_distinct_names() {
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert!(names.contains("service_unavailable"));
    }
}
