//! What the Hooks actor accepts: questions for the application's backend (`connect`,
//! `authorize`, `rpc`), answered with the backend's checked answer or why there is none.

use actix::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::ids::{Room, SocketId, UserId};

/// A backend hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `POST /connect`: may this socket connect?
    Connect,
    /// `POST /authorize`: may this user act on these targets?
    Authorize,
    /// `POST /rpc`: the backend's answer to a custom event.
    Rpc,
}

impl Hook {
    /// Every hook.
    pub const ALL: [Hook; 3] = [Hook::Connect, Hook::Authorize, Hook::Rpc];

    /// The path segment and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Authorize => "authorize",
            Hook::Rpc => "rpc",
        }
    }
}

/// What to do when a hook fails (or its circuit is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Refuse with `service_unavailable` (the default: the backend's rules hold or nothing).
    Closed,
    /// Allow, as if the backend had said yes.
    Open,
}

/// The actions the `authorize` hook can be asked about (`SWITCHBOARD_HOOK_AUTHORIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `message:send` to a user.
    MessageSend,
    /// `typing` to a user.
    Typing,
    /// `signal` to a user.
    Signal,
    /// `presence:subscribe` to users.
    PresenceSubscribe,
    /// `presence:query` of users.
    PresenceQuery,
    /// `room:join` of a room.
    RoomJoin,
    /// `room:emit` to a room.
    RoomEmit,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 7] = [
        Action::MessageSend,
        Action::Typing,
        Action::Signal,
        Action::PresenceSubscribe,
        Action::PresenceQuery,
        Action::RoomJoin,
        Action::RoomEmit,
    ];

    /// The name in the request and in the setting (the client event's name).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::MessageSend => "message:send",
            Action::Typing => "typing",
            Action::Signal => "signal",
            Action::PresenceSubscribe => "presence:subscribe",
            Action::PresenceQuery => "presence:query",
            Action::RoomJoin => "room:join",
            Action::RoomEmit => "room:emit",
        }
    }

    /// The action named `name`.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Why a hook produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookFailure {
    /// No hook URL is configured.
    #[error("no backend is configured")]
    NotConfigured,
    /// The circuit is open after repeated failures: not asked.
    #[error("the backend is failing; not asked")]
    CircuitOpen,
    /// No answer within the timeout.
    #[error("the backend did not answer in time")]
    Timeout,
    /// The backend could not be reached.
    #[error("the backend is unreachable: {0}")]
    Unreachable(String),
    /// An answer other than 200.
    #[error("the backend answered {0}")]
    Status(u16),
    /// A 200 whose body is not a valid answer.
    #[error("the backend's answer is invalid: {0}")]
    BadAnswer(String),
}

impl HookFailure {
    /// The `hook_requests_total{outcome}` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            HookFailure::NotConfigured => "not_configured",
            HookFailure::CircuitOpen => "circuit_open",
            HookFailure::Timeout => "timeout",
            HookFailure::Unreachable(_) => "unreachable",
            HookFailure::Status(_) => "bad_status",
            HookFailure::BadAnswer(_) => "bad_answer",
        }
    }
}

/// May this socket connect?
#[derive(Message)]
#[rtype(result = "Result<ConnectAnswer, HookFailure>")]
pub struct AskConnect {
    /// The request body.
    pub request: ConnectRequest,
    /// The CONNECT's span: the call joins its trace (disabled when traces are off).
    pub span: tracing::Span,
}

/// The body of a `connect` call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectRequest {
    /// The JWT subject.
    pub user_id: String,
    /// The device id the socket will use.
    pub device_id: String,
    /// The socket id it will have.
    pub socket_id: String,
    /// This node.
    pub node_id: String,
    /// Every claim of the verified token.
    pub claims: Map<String, Value>,
    /// The CONNECT `auth` payload without the token.
    pub auth: Value,
    /// The client's address.
    pub ip: Option<String>,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
    /// Its `Origin`.
    pub origin: Option<String>,
}

/// The backend's `connect` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectAnswer {
    /// Connect, joining these rooms too, and echo `data` in `authenticated`.
    Allow {
        /// Rooms to join.
        rooms: Vec<Room>,
        /// Echoed to the client.
        data: Option<Value>,
    },
    /// Refuse, for this reason.
    Refuse {
        /// Told to the client.
        reason: String,
    },
}

/// May `user` act on `targets`? Decisions land in the node's decision cache too.
#[derive(Message)]
#[rtype(result = "Result<Decision, HookFailure>")]
pub struct AskAuthorize {
    /// The action.
    pub action: Action,
    /// Who acts.
    pub user: UserId,
    /// From which socket.
    pub socket: SocketId,
    /// The users, or the one room, acted on (distinct).
    pub targets: Vec<String>,
    /// The event's span: the call joins its trace (disabled when traces are off).
    pub span: tracing::Span,
}

/// Which targets of a question are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Refused targets, each with the reason.
    pub denied: Vec<(String, String)>,
}

impl Decision {
    /// Whether `target` was refused.
    pub fn refused(&self, target: &str) -> Option<&str> {
        self.denied
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, reason)| reason.as_str())
    }
}

/// The backend's answer to a custom event.
#[derive(Message)]
#[rtype(result = "Result<RpcAnswer, HookFailure>")]
pub struct AskRpc {
    /// The event name.
    pub event: String,
    /// Its data.
    pub data: Value,
    /// Who sent it.
    pub user: UserId,
    /// From which socket.
    pub socket: SocketId,
    /// The event's span: the call joins its trace (disabled when traces are off).
    pub span: tracing::Span,
}

/// What `rpc` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcAnswer {
    /// Ack `{ok: true, result}`.
    Result(Value),
    /// Ack `{ok: false, error: {code, message}}` (the application's own code).
    Error {
        /// The application's error code.
        code: String,
        /// Its message.
        message: String,
    },
}
