//! The Engine.IO endpoint: request validation, the polling transport and the websocket transport,
//! and the forwarding of requests for sessions that live on another node; compression of polling
//! answers (`compress`) and websocket messages (`deflate`).

pub mod addresses;
pub mod compress;
pub mod deflate;
pub mod engineio;
pub mod forward;
pub mod ws;
