//! What the RedisBridge accepts: channel needs and frames to publish from the registry, status
//! queries from `/health`.

use actix::prelude::*;
use bytes::Bytes;

/// The node needs (or no longer needs) a channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The full channel name.
    pub channel: String,
    /// Subscribe (true) or unsubscribe.
    pub on: bool,
}

/// Publish an encoded frame.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The full channel name.
    pub channel: String,
    /// `ClusterFrame::encode` output.
    pub payload: Bytes,
}

/// Is the bridge connected to Redis?
#[derive(Message)]
#[rtype(result = "BridgeStatus")]
pub struct GetStatus;

/// What [`GetStatus`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeStatus {
    /// The subscriber connection is up.
    pub connected: bool,
    /// Subscriber reconnects so far (each may have lost frames).
    pub gaps: u64,
    /// Frames dropped as foreign or malformed.
    pub rejected: u64,
    /// Publishes that failed.
    pub publish_errors: u64,
}
