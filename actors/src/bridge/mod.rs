//! The RedisBridge actor: one per node, the only owner of the node's pub/sub connection.
//!
//! It keeps one dedicated subscriber connection, subscribed to exactly the channels the registry
//! says the node needs (`sb:user:{id}` while the node holds a socket of that user, `sb:room:{r}`
//! while it holds a member, `sb:watch:{id}` while a local socket watches that user's presence,
//! and always `sb:node:{id}` and `sb:broadcast`). Frames are published on one multiplexed
//! connection, so frames published by this node keep their order. When the subscriber stream
//! ends (Redis restarted, or cut us off as a slow subscriber) the bridge reconnects with backoff
//! and re-subscribes everything, counting the gap.
//!
//! # Layout
//! - this file: the actor shell (connections, the subscriber stream, publishes).
//! - `subscriptions`: the pure core (wanted channels, connection generations, backoff).
//! - [`crate::ports::bridge`]: the messages it accepts.

mod subscriptions;

use std::time::Duration;

use actix::prelude::*;
use redis::aio::{ConnectionManager, PubSubSink};
use switchboard_protocol::cluster::ClusterFrame;
use tracing::{debug, info, warn};

use crate::ids::NodeId;
use crate::keys::Channel;
use crate::metrics::{CommandLabel, MeteredActor, metrics};
use crate::ports::Port;
use crate::ports::bridge::{BridgeStatus, GetStatus, Publish, Subscribe};
use crate::ports::registry::ClusterInbound;
use crate::store::{RedisSettings, now_micros};
use subscriptions::Subscriptions;

/// The RedisBridge actor (see the module docs).
pub struct RedisBridge {
    client: redis::Client,
    node_id: NodeId,
    inbound: Port<ClusterInbound>,
    channels: Subscriptions,
    sink: Option<PubSubSink>,
    publisher: Option<ConnectionManager>,
    status: BridgeStatus,
    connecting: bool,
}

impl RedisBridge {
    /// A bridge for `node_id` that hands inbound frames to `inbound` (the registry).
    pub fn new(
        settings: &RedisSettings,
        node_id: NodeId,
        inbound: Port<ClusterInbound>,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(settings.url.as_str())?;
        let channels = Subscriptions::new([
            settings.keys.channel(&Channel::Node(node_id.clone())),
            settings.keys.channel(&Channel::Broadcast),
        ]);
        Ok(RedisBridge {
            client,
            node_id,
            inbound,
            channels,
            sink: None,
            publisher: None,
            status: BridgeStatus {
                connected: false,
                gaps: 0,
                rejected: 0,
                publish_errors: 0,
            },
            connecting: false,
        })
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        self.connecting = true;
        let client = self.client.clone();
        let channels = self.channels.all();
        let fut = async move {
            let pubsub_client = client.clone();
            let pubsub = pubsub_client.get_async_pubsub().await?;
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
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }

    fn resubscribe_missing(&mut self, _ctx: &mut Context<Self>) {
        // `connect` subscribed the set as it was when the connection started; subscribing again
        // is idempotent, so simply subscribe everything now wanted.
        if let Some(sink) = &self.sink {
            let mut sink = sink.clone();
            let channels = self.channels.all();
            actix::spawn(async move {
                if let Err(err) = sink.subscribe(&channels).await {
                    debug!(%err, "re-subscribe failed; the reconnect will retry");
                }
            });
        }
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
        self.connect(ctx);
    }
}

impl Supervised for RedisBridge {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::restarted("redis_bridge");
        // The subscriber stream died with the old context: `started` connects again.
        self.sink = None;
        self.connecting = false;
        self.status.connected = false;
    }
}

impl StreamHandler<(u64, redis::Msg)> for RedisBridge {
    fn handle(&mut self, (generation, msg): (u64, redis::Msg), _ctx: &mut Context<Self>) {
        if !self.channels.is_current(generation) {
            return;
        }
        let frame = match ClusterFrame::decode(msg.get_payload_bytes()) {
            Ok(frame) => frame,
            Err(err) => {
                self.status.rejected += 1;
                debug!(%err, channel = msg.get_channel_name(), "dropped a foreign frame");
                return;
            }
        };
        let latency_us = now_micros().saturating_sub(frame.sent_at_micros);
        metrics()
            .pubsub_latency
            .observe(latency_us as f64 / 1_000_000.0);
        if frame.origin == *self.node_id {
            // Our own publication: local sockets were served before publishing.
            return;
        }
        self.inbound.do_send(ClusterInbound {
            channel: msg.get_channel_name().to_string(),
            frame,
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

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        if !self.channels.want(&msg.channel, msg.on) {
            return;
        }
        if let Some(sink) = &self.sink {
            crate::metrics::redis_command(if msg.on { "SUBSCRIBE" } else { "UNSUBSCRIBE" });
            let mut sink = sink.clone();
            let on = msg.on;
            actix::spawn(async move {
                let result = if on {
                    sink.subscribe(&msg.channel).await
                } else {
                    sink.unsubscribe(&msg.channel).await
                };
                if let Err(err) = result {
                    debug!(%err, "subscription change failed; the reconnect will redo it");
                }
            });
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
        // Started in handling order on one multiplexed connection, so publishes keep order.
        let fut = async move {
            redis::cmd("PUBLISH")
                .arg(&msg.channel)
                .arg(msg.payload.as_ref())
                .query_async::<i64>(&mut conn)
                .await
        };
        ctx.spawn(fut.into_actor(self).map(|result, act, _ctx| {
            if let Err(err) = result {
                act.status.publish_errors += 1;
                debug!(%err, "publish failed");
            }
        }));
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

crate::metered!(RedisBridge: Subscribe, Publish, MessageResult(GetStatus));
