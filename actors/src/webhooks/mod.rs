//! The Webhooks actor: delivers the outbox of lifecycle events (`socket.connected`,
//! `user.offline`, `message.stored`, …) to `SWITCHBOARD_WEBHOOK_URL`.
//!
//! The Journal writes each event in the same transaction as the row it describes; this actor
//! only moves them. One node at a time delivers (a lease in the database), the oldest pending
//! events first, as `POST {events: [...]}` signed like the hooks. A 2xx acknowledges the whole
//! batch, which is then deleted; anything else leaves the batch pending and the same events are
//! tried again, in the same order, after a doubling pause. Events still undelivered after
//! `max_age` are dead-lettered (kept, counted, skipped). Since the outbox is in the database,
//! events survive a crash of the node: after a restart (or on the node that takes the lease
//! over) delivery resumes where it stopped — at least once, so receivers deduplicate by `id`.
//!
//! # Layout
//! - this file: the actor shell (the delivery cycle, HTTP, metrics).
//! - `plan`: the pure core (dead letters, backoff).

mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::ids::NodeId;
use crate::metrics::{OutcomeLabel, metrics};
use crate::ports::Port;
use crate::ports::journal::{
    AckWebhooks, AcquireWebhookLease, DeadLetterWebhooks, FailWebhooks, TakeWebhooks, WebhookDepth,
};
use crate::signing::signature;
use plan::Backoff;

/// How often the outbox depth is read for `webhook_outbox_depth`.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// Where and how events are delivered.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// The receiver.
    pub url: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// Events per request.
    pub batch: usize,
    /// Undelivered this long after they happened, events are dead-lettered.
    pub max_age: Duration,
    /// How often the outbox is checked when idle.
    pub poll: Duration,
    /// How old a row must be before it is delivered, so rows committed out of id order by
    /// concurrent transactions still go out in order.
    pub settle: Duration,
    /// How long the delivery lease lasts unless renewed.
    pub lease: Duration,
}

impl WebhooksConfig {
    /// Defaults for `url` and `secret`: 100 events a request, 5 s timeout, one day before
    /// dead-lettering, checked every 200 ms.
    pub fn new(url: String, secret: Vec<u8>) -> Self {
        WebhooksConfig {
            url,
            secret,
            timeout: Duration::from_secs(5),
            batch: 100,
            max_age: Duration::from_secs(24 * 3600),
            poll: Duration::from_millis(200),
            settle: Duration::from_millis(250),
            lease: Duration::from_secs(15),
        }
    }
}

/// The Journal messages the deliverer sends.
#[derive(Clone)]
pub struct WebhookPorts {
    /// Take or renew the delivery lease.
    pub lease: Port<AcquireWebhookLease>,
    /// The oldest pending events.
    pub take: Port<TakeWebhooks>,
    /// Delivered: delete.
    pub ack: Port<AckWebhooks>,
    /// Not delivered: count an attempt.
    pub fail: Port<FailWebhooks>,
    /// Given up on.
    pub dead: Port<DeadLetterWebhooks>,
    /// Pending events, for the gauge.
    pub depth: Port<WebhookDepth>,
}

/// What one delivery cycle did.
enum Cycle {
    /// Not the lease holder, nothing pending, or the database did not answer.
    Idle,
    /// Events were delivered (or dead-lettered): more may be waiting.
    Progress { delivered: u64, dead: u64 },
    /// The receiver refused or failed; the events stay pending.
    Failed { events: u64, why: String },
}

/// The Webhooks actor (see the module docs).
pub struct Webhooks {
    config: Arc<WebhooksConfig>,
    node_id: NodeId,
    ports: WebhookPorts,
    /// Made in `started`: the HTTP client belongs to this actor's thread.
    client: Option<awc::Client>,
    /// A cycle is running.
    busy: bool,
    backoff: Backoff,
    /// After a failure, no cycle before this.
    resume_at: Option<Instant>,
    /// The receiver is failing (so only the first failure of a run is logged).
    failing: bool,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Webhooks {
    /// A deliverer for node `node_id`.
    pub fn new(config: WebhooksConfig, node_id: NodeId, ports: WebhookPorts) -> Self {
        Webhooks {
            config: Arc::new(config),
            node_id,
            ports,
            client: None,
            busy: false,
            backoff: Backoff::default(),
            resume_at: None,
            failing: false,
        }
    }

    fn cycle(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.resume_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.busy = true;
        let client = self.client.get_or_insert_with(awc::Client::default).clone();
        let (config, ports, holder) = (
            self.config.clone(),
            self.ports.clone(),
            self.node_id.clone(),
        );
        let run = async move {
            let lease = ports.lease.send(AcquireWebhookLease {
                holder,
                ttl: config.lease,
            });
            if !matches!(lease.await, Ok(Ok(true))) {
                return Cycle::Idle;
            }
            let taken = ports.take.send(TakeWebhooks {
                limit: config.batch,
                settled_for: config.settle,
            });
            let events = match taken.await {
                Ok(Ok(events)) if !events.is_empty() => events,
                Ok(Ok(_)) => return Cycle::Idle,
                Ok(Err(err)) => {
                    debug!(%err, "webhook outbox unavailable");
                    return Cycle::Idle;
                }
                Err(_) => return Cycle::Idle,
            };
            let batch = plan::split(events, SystemTime::now(), config.max_age);
            let dead = batch.dead.len() as u64;
            if dead > 0 {
                warn!(
                    events = dead,
                    "webhook events undelivered past the bound: dead-lettered"
                );
                let _ = ports
                    .dead
                    .send(DeadLetterWebhooks { ids: batch.dead })
                    .await;
            }
            if batch.deliver.is_empty() {
                return Cycle::Progress { delivered: 0, dead };
            }
            let ids: Vec<i64> = batch.deliver.iter().map(|e| e.id).collect();
            let events: Vec<Value> = batch.deliver.into_iter().map(|e| e.event).collect();
            match post(&client, &config, &events).await {
                Ok(()) => {
                    let _ = ports.ack.send(AckWebhooks { ids }).await;
                    Cycle::Progress {
                        delivered: events.len() as u64,
                        dead,
                    }
                }
                Err(why) => {
                    let _ = ports.fail.send(FailWebhooks { ids }).await;
                    Cycle::Failed {
                        events: events.len() as u64,
                        why,
                    }
                }
            }
        };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(run).map(|cycle, act, ctx| {
            act.busy = false;
            let count = |outcome: &'static str, n: u64| {
                if n > 0 {
                    metrics()
                        .webhook_deliveries
                        .get_or_create(&OutcomeLabel { outcome })
                        .inc_by(n);
                }
            };
            match cycle {
                Cycle::Idle => {}
                Cycle::Progress { delivered, dead } => {
                    count("delivered", delivered);
                    count("dead", dead);
                    if act.failing {
                        info!("webhook deliveries resumed");
                    }
                    act.failing = false;
                    act.backoff.reset();
                    act.resume_at = None;
                    // More may be waiting: go on without waiting for the next poll.
                    act.cycle(ctx);
                }
                Cycle::Failed { events, why } => {
                    count("failed", events);
                    let pause = act.backoff.failed();
                    if !act.failing {
                        warn!(%why, retry_in_ms = pause.as_millis() as u64, "webhook delivery failed; events kept");
                    }
                    act.failing = true;
                    act.resume_at = Some(Instant::now() + pause);
                }
            }
        }));
    }

    fn refresh_depth(&mut self, ctx: &mut Context<Self>) {
        let depth = self.ports.depth.send(WebhookDepth);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(depth).map(|depth, _act, _ctx| {
                if let Ok(Ok(depth)) = depth {
                    metrics()
                        .webhook_outbox_depth
                        .set(i64::try_from(depth).unwrap_or(i64::MAX));
                }
            }),
        );
    }
}

/// One signed delivery; `Err` says why it did not count.
async fn post(
    client: &awc::Client,
    config: &WebhooksConfig,
    events: &[Value],
) -> Result<(), String> {
    let body = serde_json::to_vec(&json!({ "events": events })).map_err(|e| e.to_string())?;
    let timestamp = unix_ms();
    let sig = signature(&config.secret, timestamp, &body);
    let send = client
        .post(config.url.as_str())
        .timeout(config.timeout)
        .insert_header(("content-type", "application/json"))
        .insert_header(("x-switchboard-timestamp", timestamp.to_string()))
        .insert_header(("x-switchboard-signature", sig))
        .send_body(body);
    let response = tokio::time::timeout(config.timeout, send)
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "the receiver answered {}",
            response.status().as_u16()
        ))
    }
}

impl Actor for Webhooks {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.client = Some(awc::Client::builder().timeout(self.config.timeout).finish());
        ctx.run_interval(self.config.poll, |act, ctx| act.cycle(ctx));
        ctx.run_interval(DEPTH_EVERY, |act, ctx| act.refresh_depth(ctx));
        self.cycle(ctx);
    }
}

impl Supervised for Webhooks {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        crate::metrics::restarted("webhooks");
        // The cycle that was out died with the old context; its events are still pending.
        self.busy = false;
    }
}
