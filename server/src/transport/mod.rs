//! The Engine.IO endpoint: request validation, the polling transport and the websocket transport,
//! and the forwarding of requests for sessions that live on another node.

pub mod addresses;
pub mod engineio;
pub mod forward;
pub mod ws;
