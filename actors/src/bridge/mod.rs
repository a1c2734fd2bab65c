//! The RedisBridge actor: one per node, the only owner of the node's pub/sub connection.
//!
//! It keeps one dedicated subscriber connection, subscribed to exactly the channels the registry
//! says the node needs (`sb:user:{id}` while the node holds a socket of that user, `sb:room:{r}`
//! while it holds a member, `sb:watch:{id}` while a local socket watches that user's presence,
//! and always `sb:node:{id}` and `sb:broadcast`). Frames are published on one multiplexed
//! connection, so frames published by this node keep their order. When the subscriber stream
//! ends (Redis restarted, or cut us off as a slow subscriber) the bridge reconnects with backoff
//! and re-subscribes everything, counting the gap. Connections come from the node's
//! [`Connector`] (one server, or the master the Sentinels name; a `+switch-master` makes a lost
//! subscriber reconnect at once).
//!
//! # Layout
//! - this file: the actor shell (connections, the subscriber stream, publishes).
//! - `subscriptions`: the pure core (wanted channels, connection generations, backoff).
//! - [`crate::ports::bridge`]: the messages it accepts.

mod subscriptions;

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use redis::aio::{ConnectionManager, PubSubSink};
use switchboard_protocol::cluster::{ClusterFrame, FrameError, split_recorded};
use switchboard_protocol::offset::Offset;
use tracing::{Instrument, debug, info, warn};

use crate::connector::{Connector, RedisMode};
use crate::ids::{NodeId, Sid};
use crate::keys::{Channel, Keys};
use crate::metrics::{CommandLabel, MeteredActor, metrics};
use crate::ports::Port;
use crate::ports::bridge::{
    BridgeStatus, GetStatus, Hold, Publish, PublishRecorded, Release, Subscribe, SubscribedNow,
};
use crate::ports::registry::ClusterInbound;
use crate::signing::{ClusterKeys, Unsealed, stale};
use crate::store::{RedisSettings, now_micros};
use subscriptions::Subscriptions;

/// The RedisBridge actor (see the module docs).
pub struct RedisBridge {
    connector: Connector,
    /// The reconnect waiting for its backoff, cancelled when a failover calls for one now.
    retry: Option<SpawnHandle>,
    node_id: NodeId,
    inbound: Port<ClusterInbound>,
    channels: Subscriptions,
    /// SUBSCRIBE commands in flight by channel (with a number, so a later one is not taken for
    /// an earlier), for whoever waits for a channel to be in place.
    pending: HashMap<String, (u64, Subscribing)>,
    subscribes: u64,
    /// The channels each connecting session holds.
    holders: HashMap<Sid, Vec<String>>,
    keys: Keys,
    sink: Option<PubSubSink>,
    publisher: Option<ConnectionManager>,
    status: BridgeStatus,
    connecting: bool,
    /// Records and publishes recoverable events (`publish_recorded.lua`).
    record_script: std::sync::Arc<redis::Script>,
    /// `rec:clock`.
    clock_key: String,
    recording: Recording,
    /// Checks inbound frames' signatures, when a cluster key is set.
    cluster_keys: Option<std::sync::Arc<ClusterKeys>>,
}

/// A SUBSCRIBE in flight, awaitable by many.
type Subscribing = Shared<BoxFuture<'static, Result<(), String>>>;

/// How recovery streams are bounded.
#[derive(Debug, Clone, Copy)]
pub struct Recording {
    /// Events kept per stream at most.
    pub max_len: usize,
    /// How long events are kept.
    pub window: Duration,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            max_len: 1000,
            window: Duration::from_secs(120),
        }
    }
}

impl RedisBridge {
    /// A bridge for `node_id`, connected through `connector`, that hands inbound frames to
    /// `inbound` (the registry).
    pub fn new(
        settings: &RedisSettings,
        connector: Connector,
        node_id: NodeId,
        inbound: Port<ClusterInbound>,
    ) -> Self {
        let channels = Subscriptions::new([
            settings.keys.channel(&Channel::Node(node_id.clone())),
            settings.keys.channel(&Channel::Broadcast),
        ]);
        RedisBridge {
            connector,
            retry: None,
            node_id,
            inbound,
            channels,
            pending: HashMap::new(),
            subscribes: 0,
            holders: HashMap::new(),
            keys: settings.keys.clone(),
            sink: None,
            publisher: None,
            record_script: std::sync::Arc::new(redis::Script::new(include_str!(
                "publish_recorded.lua"
            ))),
            clock_key: settings.keys.recovery_clock(),
            recording: Recording::default(),
            cluster_keys: settings.cluster_keys.clone(),
            status: BridgeStatus {
                connected: false,
                gaps: 0,
                rejected: 0,
                publish_errors: 0,
            },
            connecting: false,
        }
    }

    /// Bound recovery streams this way (default: 1000 events, 120 s).
    pub fn with_recording(mut self, recording: Recording) -> Self {
        self.recording = recording;
        self
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        if let Some(retry) = self.retry.take() {
            ctx.cancel_future(retry);
        }
        let connector = self.connector.clone();
        let channels = self.channels.all();
        let fut = async move {
            // Sentinel mode: the master they name now, checked to be one.
            let client = connector.checked_client().await?;
            let pubsub = client.get_async_pubsub().await?;
            let (mut sink, stream) = pubsub.split();
            if !channels.is_empty() {
                sink.subscribe(&channels).await?;
            }
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            let publisher = ConnectionManager::new_with_config(client, config).await?;
            Ok::<_, redis::RedisError>((sink, stream, publisher))
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            match result {
                Ok((sink, stream, publisher)) => {
                    let generation = act.channels.connected();
                    act.sink = Some(sink);
                    act.publisher = Some(publisher);
                    act.status.connected = true;
                    metrics().redis_connected.set(1);
                    info!(channels = act.channels.len(), "redis subscriber connected");
                    // Tag each message with its connection generation.
                    let tagged = futures_util::StreamExt::map(stream, move |m| (generation, m));
                    ctx.add_stream(tagged);
                    // Channels wanted while we were connecting.
                    act.resubscribe_missing(ctx);
                }
                Err(err) => {
                    warn!(%err, retry_in_ms = act.channels.backoff().as_millis() as u64, "redis subscriber connect failed");
                    act.retry_later(ctx);
                }
            }
        }));
    }

    fn retry_later(&mut self, ctx: &mut Context<Self>) {
        let delay = self.channels.next_backoff();
        self.retry = Some(ctx.run_later(delay, |act, ctx| {
            act.retry = None;
            act.connect(ctx);
        }));
    }

    fn resubscribe_missing(&mut self, ctx: &mut Context<Self>) {
        // `connect` subscribed the set as it was when the connection started; subscribing again
        // is idempotent, so simply subscribe everything now wanted.
        let channels = self.channels.all();
        self.start_subscribe(channels, ctx);
    }

    /// Send one SUBSCRIBE for `channels` (when connected) and note it in flight for each.
    fn start_subscribe(&mut self, channels: Vec<String>, ctx: &mut Context<Self>) {
        let Some(sink) = &self.sink else { return };
        if channels.is_empty() {
            return;
        }
        crate::metrics::redis_command("SUBSCRIBE");
        let mut sink = sink.clone();
        let list = channels.clone();
        let subscribing: Subscribing =
            async move { sink.subscribe(&list).await.map_err(|e| e.to_string()) }
                .boxed()
                .shared();
        self.subscribes += 1;
        let n = self.subscribes;
        for channel in &channels {
            self.pending
                .insert(channel.clone(), (n, subscribing.clone()));
        }
        ctx.spawn(subscribing.into_actor(self).map(move |result, act, _ctx| {
            if let Err(err) = result {
                debug!(%err, "subscribe failed; the reconnect will redo it");
            }
            for channel in channels {
                if act.pending.get(&channel).is_some_and(|(m, _)| *m == n) {
                    act.pending.remove(&channel);
                }
            }
        }));
    }

    fn unsubscribe(&mut self, channel: String) {
        self.pending.remove(&channel);
        let Some(sink) = &self.sink else { return };
        crate::metrics::redis_command("UNSUBSCRIBE");
        let mut sink = sink.clone();
        actix::spawn(async move {
            if let Err(err) = sink.unsubscribe(&channel).await {
                debug!(%err, "unsubscribe failed; the reconnect will redo it");
            }
        });
    }

    /// A future that answers once every one of `channels` is subscribed: those in flight are
    /// waited for, those not wanted at all are subscribed once more (idempotent).
    fn ready(
        &mut self,
        channels: Vec<String>,
        ctx: &mut Context<Self>,
    ) -> BoxFuture<'static, Result<(), String>> {
        if self.sink.is_none() {
            return async { Err("the subscriber is not connected".to_string()) }.boxed();
        }
        let missing: Vec<String> = channels
            .iter()
            .filter(|c| !self.channels.is_wanted(c) && !self.pending.contains_key(*c))
            .cloned()
            .collect();
        self.start_subscribe(missing, ctx);
        // Channels sharing one SUBSCRIBE share its future; waiting on it twice is harmless.
        let waits: Vec<Subscribing> = channels
            .iter()
            .filter_map(|c| self.pending.get(c).map(|(_, s)| s.clone()))
            .collect();
        async move {
            for result in futures_util::future::join_all(waits).await {
                result?;
            }
            Ok(())
        }
        .boxed()
    }

    fn on_disconnected(&mut self, ctx: &mut Context<Self>) {
        if self.status.connected {
            self.status.gaps += 1;
            warn!(
                gaps = self.status.gaps,
                "redis subscriber lost; frames may have been missed"
            );
        }
        self.status.connected = false;
        metrics().redis_connected.set(0);
        metrics().pubsub_gaps.inc();
        self.sink = None;
        self.retry_later(ctx);
    }
}

impl Actor for RedisBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        if self.connector.mode() == RedisMode::Sentinel {
            let switches =
                futures_util::stream::unfold(self.connector.failovers(), |mut rx| async {
                    rx.changed().await.ok()?;
                    Some((MasterSwitched, rx))
                });
            ctx.add_message_stream(switches);
        }
        self.connect(ctx);
    }
}

/// The Sentinels announced a new master.
#[derive(Message)]
#[rtype(result = "()")]
struct MasterSwitched;

impl Handler<MasterSwitched> for RedisBridge {
    type Result = ();

    fn handle(&mut self, _msg: MasterSwitched, ctx: &mut Context<Self>) {
        // A live subscriber is cut off by Sentinel's reconfiguration and ends by itself; a lost
        // one reconnects now instead of after its backoff (and an attempt in flight, likely at
        // the old master, retries after the shortest pause).
        self.channels.reset_backoff();
        if !self.status.connected && !self.connecting {
            info!("sentinel: new master; reconnecting now");
            self.connect(ctx);
        }
    }
}

impl Supervised for RedisBridge {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::restarted("redis_bridge");
        // The subscriber stream died with the old context: `started` connects again.
        self.sink = None;
        self.retry = None;
        self.connecting = false;
        self.status.connected = false;
    }
}

/// Why an inbound frame was dropped.
#[derive(Debug, thiserror::Error)]
enum Rejected {
    #[error("{0}")]
    Frame(FrameError),
    #[error("{0}")]
    Seal(Unsealed),
    #[error("stale (sent over a minute away from now)")]
    Stale,
}

impl Rejected {
    /// The `socket_errors_total` label.
    fn label(&self) -> &'static str {
        match self {
            Rejected::Frame(_) => "cluster_frame_invalid",
            Rejected::Seal(Unsealed::Unsigned) => "cluster_frame_unsigned",
            Rejected::Seal(Unsealed::BadSignature) => "cluster_frame_bad_signature",
            Rejected::Stale => "cluster_frame_stale",
        }
    }
}

impl StreamHandler<(u64, redis::Msg)> for RedisBridge {
    fn handle(&mut self, (generation, msg): (u64, redis::Msg), _ctx: &mut Context<Self>) {
        if !self.channels.is_current(generation) {
            return;
        }
        let decoded = split_recorded(msg.get_payload_bytes())
            .map_err(Rejected::Frame)
            .and_then(|(offset, bytes)| {
                let offset = match offset {
                    Some(o) => Some(
                        o.parse::<Offset>()
                            .map_err(|_| Rejected::Frame(FrameError::Invalid))?,
                    ),
                    None => None,
                };
                let bytes = match &self.cluster_keys {
                    Some(keys) => keys.open(bytes).map_err(Rejected::Seal)?,
                    None => bytes,
                };
                let frame = ClusterFrame::decode(bytes).map_err(Rejected::Frame)?;
                if self.cluster_keys.is_some() && stale(frame.sent_at_micros, now_micros()) {
                    return Err(Rejected::Stale);
                }
                Ok((offset, frame))
            });
        let (offset, frame) = match decoded {
            Ok(decoded) => decoded,
            Err(why) => {
                self.status.rejected += 1;
                metrics().error(why.label());
                debug!(%why, channel = msg.get_channel_name(), "dropped a foreign frame");
                return;
            }
        };
        let latency_us = now_micros().saturating_sub(frame.sent_at_micros);
        metrics()
            .pubsub_latency
            .observe(latency_us as f64 / 1_000_000.0);
        if frame.origin == *self.node_id && offset.is_none() {
            // Our own publication: local sockets were served before publishing. (A recorded
            // event is served here, with its offset, by every node, this one included.)
            return;
        }
        self.inbound.do_send(ClusterInbound {
            channel: msg.get_channel_name().to_string(),
            frame,
            offset,
        });
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // Only the current connection's end matters; `add_stream` streams end one by one.
        if self.sink.is_some() || self.status.connected {
            self.on_disconnected(ctx);
        }
    }
}

impl Handler<Subscribe> for RedisBridge {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        if !self.channels.want(&msg.channel, msg.on) {
            return;
        }
        if msg.on {
            self.start_subscribe(vec![msg.channel], ctx);
        } else {
            self.unsubscribe(msg.channel);
        }
    }
}

impl Handler<Hold> for RedisBridge {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: Hold, ctx: &mut Context<Self>) -> Self::Result {
        let channels: Vec<String> = msg.channels.iter().map(|c| self.keys.channel(c)).collect();
        let changed = channels
            .iter()
            .filter(|c| self.channels.hold(c, true))
            .cloned()
            .collect();
        self.holders
            .entry(msg.sid)
            .or_default()
            .extend(channels.iter().cloned());
        self.start_subscribe(changed, ctx);
        self.ready(channels, ctx)
    }
}

impl Handler<Release> for RedisBridge {
    type Result = ();

    fn handle(&mut self, msg: Release, _ctx: &mut Context<Self>) {
        for channel in self.holders.remove(&msg.sid).unwrap_or_default() {
            if self.channels.hold(&channel, false) {
                self.unsubscribe(channel);
            }
        }
    }
}

impl Handler<Publish> for RedisBridge {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        let Some(publisher) = &self.publisher else {
            self.status.publish_errors += 1;
            return;
        };
        let mut conn = publisher.clone();
        metrics()
            .redis_commands
            .get_or_create(&CommandLabel { command: "PUBLISH" })
            .inc();
        let Publish {
            channel,
            payload,
            span,
        } = msg;
        // Started in handling order on one multiplexed connection, so publishes keep order.
        let fut = async move {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(payload.as_ref())
                .query_async::<i64>(&mut conn)
                .await
        }
        .instrument(span);
        ctx.spawn(fut.into_actor(self).map(|result, act, _ctx| {
            if let Err(err) = result {
                act.status.publish_errors += 1;
                debug!(%err, "publish failed");
            }
        }));
    }
}

impl Handler<PublishRecorded> for RedisBridge {
    type Result = ();

    fn handle(&mut self, msg: PublishRecorded, ctx: &mut Context<Self>) {
        let Some(publisher) = &self.publisher else {
            self.status.publish_errors += 1;
            return;
        };
        let mut conn = publisher.clone();
        crate::metrics::redis_command("EVALSHA");
        let (script, clock, recording) = (
            self.record_script.clone(),
            self.clock_key.clone(),
            self.recording,
        );
        let PublishRecorded {
            channel,
            stream,
            payload,
            span,
        } = msg;
        // In handling order on the one publishing connection, like plain publishes.
        let fut = async move {
            script
                .key(clock)
                .key(&stream)
                .arg(&channel)
                .arg(payload.as_ref())
                .arg(recording.max_len)
                .arg(recording.window.as_millis() as u64)
                .arg(recording.window.as_secs().max(1))
                .invoke_async::<String>(&mut conn)
                .await
        }
        .instrument(span);
        ctx.spawn(fut.into_actor(self).map(|result, act, _ctx| {
            if let Err(err) = result {
                act.status.publish_errors += 1;
                debug!(%err, "recorded publish failed");
            }
        }));
    }
}

impl Handler<SubscribedNow> for RedisBridge {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: SubscribedNow, ctx: &mut Context<Self>) -> Self::Result {
        self.ready(msg.channels, ctx)
    }
}

impl Handler<GetStatus> for RedisBridge {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status)
    }
}

impl MeteredActor for RedisBridge {
    const NAME: &'static str = "redis_bridge";
}

crate::metered!(RedisBridge: Subscribe, Hold, Release, Publish, PublishRecorded, SubscribedNow,
    MessageResult(GetStatus));
