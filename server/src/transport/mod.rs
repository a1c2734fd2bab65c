//! The Engine.IO endpoint: request validation, the polling transport and the websocket transport.

pub mod engineio;
pub mod ws;
