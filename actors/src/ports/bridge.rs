//! What the RedisBridge accepts: channel needs and frames to publish from the registry, status
//! queries from `/health`.

use actix::prelude::*;
use bytes::Bytes;

use crate::ids::Sid;
use crate::keys::Channel;

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
    /// The publish's span, ended when Redis answers (disabled when traces are off).
    pub span: tracing::Span,
}

/// Record a recoverable event in its channel's recovery stream and publish it with its offset
/// (one script call: the event's offset is the cluster's next).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishRecorded {
    /// The full channel name.
    pub channel: String,
    /// The channel's recovery stream key.
    pub stream: String,
    /// `ClusterFrame::encode` output.
    pub payload: Bytes,
    /// The publish's span, ended when Redis answers (disabled when traces are off).
    pub span: tracing::Span,
}

/// Answer once the subscriber connection is subscribed to `channels` (so that what is published
/// to them from now on reaches this node).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SubscribedNow {
    /// Full channel names.
    pub channels: Vec<String>,
}

/// A connecting session holds its channels: answered once they are subscribed, so what is
/// published to them after its CONNECT answer reaches it.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Hold {
    /// The session.
    pub sid: Sid,
    /// The channels.
    pub channels: Vec<Channel>,
}

/// The session's holds end: the registry needs its channels now, or it went away (releasing
/// what is not held does nothing).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    /// The session.
    pub sid: Sid,
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
