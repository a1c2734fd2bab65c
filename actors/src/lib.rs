//! Switchboard's actors: one actix `System` per node.
//!
//! # Layout
//! - [`session`]: one [`session::Session`] per Engine.IO connection. It owns the heartbeat, the
//!   bounded outbound queue and the Socket.IO state, and is transport-independent: polling HTTP
//!   handlers and a websocket transport actor (in the server crate) attach to it through
//!   [`transport`] messages.
//! - [`registry`]: the per-node [`registry::SessionRegistry`] that indexes and supervises sessions.
//! - [`transport`]: the typed messages between a Session and whatever carries its frames.
//! - [`presence`], [`ratelimiter`], [`journal`]: the infrastructure actors (presence table,
//!   per-user limits, stored messages), in memory for a single node.
//! - [`auth`], [`ratelimit`]: pure parts (JWT verification, rate-limit state machines).
//!
//! Actors talk only through typed messages; no actor shares mutable state with another.

pub mod auth;
pub mod bridge;
pub mod journal;
pub mod metrics;
pub mod presence;
pub mod ratelimit;
pub mod ratelimiter;
pub mod registry;
pub mod session;
pub mod transport;

pub use registry::SessionRegistry;
pub use session::{Session, SessionConfig, SessionKind};
pub use transport::{CloseReason, Outgoing, Sid};
