//! Switchboard's actors: one actix `System` per node.
//!
//! # Layout
//! - [`session`]: one [`session::Session`] per Engine.IO connection: the connection only
//!   (Engine.IO state machine, transports, heartbeat, outbox, the Socket.IO layer).
//! - [`app`]: what the application does with an authenticated socket's events, and the
//!   client-facing error codes.
//! - [`registry`]: the per-node [`registry::SessionRegistry`] that indexes and supervises
//!   sessions and delivers fan-out.
//! - [`bridge`]: the [`bridge::RedisBridge`], the node's pub/sub link to the other nodes.
//! - [`hooks`]: the [`hooks::Hooks`] actor, the node's client of the application's backend
//!   (`connect`, `authorize`, `rpc`), and [`webhooks`]: the [`webhooks::Webhooks`] actor that
//!   delivers the outbox of lifecycle events; [`decisions`]: the `authorize` decision cache
//!   the Hooks actor fills and sessions read.
//! - [`presence`], [`ratelimiter`], [`journal`]: the infrastructure actors (presence, per-user
//!   limits, the database writer), each with an in-memory or Redis store where that applies.
//! - [`ports`]: what each actor accepts (its messages, answers and errors) and [`ports::Port`],
//!   the metered handle senders hold. Actor modules import ports, never each other.
//! - [`node`]: the composition root that starts the actors and wires their ports.
//! - [`connector`]: where every Redis connection comes from (one server or Sentinel, TLS).
//! - [`ids`], [`keys`], [`store`], [`transport`]: shared types — id newtypes, every Redis key and
//!   channel name, store errors and Redis settings, frames and close reasons.
//! - [`auth`], [`ratelimit`], [`signing`], [`logins`]: pure parts (JWT verification, rate-limit
//!   state machines, the backend requests' signature, failed logins per address).
//! - [`metrics`]: the Prometheus metrics and the mailbox instrumentation; [`traces`]: the
//!   OpenTelemetry spans (built only when the node exports traces).
//!
//! Actors talk only through typed messages; no actor shares mutable state with another (the
//! one sanctioned exception, the registry's direct websocket writes, is documented in
//! [`registry`]).

pub mod app;
pub mod auth;
pub mod bridge;
pub mod connector;
pub mod decisions;
pub mod directory;
pub mod hooks;
pub mod ids;
pub mod journal;
pub mod keys;
pub mod logins;
pub mod metrics;
pub mod node;
pub mod ports;
pub mod presence;
pub mod ratelimit;
pub mod ratelimiter;
pub mod recovery;
pub mod registry;
pub mod session;
pub mod signing;
pub mod store;
pub mod traces;
pub mod transport;
pub mod webhooks;

pub use ids::{NodeId, NodeTag, Room, Sid, SocketId, UserId};
pub use node::{Node, NodeConfig};
pub use registry::SessionRegistry;
pub use session::{Session, SessionConfig, SessionKind};
pub use transport::{CloseReason, Outgoing};
