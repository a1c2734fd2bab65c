//! Health endpoints for load balancers and Kubernetes probes.
//!
//! `/health/live` says the process serves HTTP and still has its session registry (it runs on
//! the first HTTP worker's thread; if that worker ever dies, nothing brings the registry back
//! but a restart). `/health/ready` says whether the node can take connections: it is not
//! draining and, in cluster mode, Redis has not been unreachable for longer than
//! [`REDIS_GRACE`] (a node without Redis refuses every CONNECT). The database does not count:
//! realtime keeps working without it and durable sends are refused clearly, so taking every
//! node out of the Service during a database outage would turn a partial outage into a total
//! one. `/health` reports each dependency (`ok`, `degraded` when one is down but the node is
//! ready, `unavailable`) with the readiness status code.
//!
//! The database answer is cached ([`DatabaseCheck`]): probes and scrapes are unauthenticated,
//! and without the cache every request would cost a database round trip.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use switchboard_actors::ports::bridge::GetStatus;
use switchboard_actors::ports::journal::CheckDatabase;
use switchboard_actors::ports::registry::CountSessions;
use switchboard_actors::{journal::Journal, metrics::MeteredAddr};

use crate::AppState;
use crate::transport::addresses::{MAX_PACE_WAIT, Pace};

/// Longest a health check waits for one dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long Redis may be unreachable before a cluster node stops being ready: a restart or a
/// failover is over sooner, and a node that leaves the Service for it only moves its clients.
pub const REDIS_GRACE: Duration = Duration::from_secs(15);

/// How long a database check's answer is reused.
pub const DATABASE_CHECK_TTL: Duration = Duration::from_secs(1);

/// The database check shared by `/health*` and `/metrics`: at most one ping per
/// [`DATABASE_CHECK_TTL`], whatever the request rate.
#[derive(Debug, Default)]
pub struct DatabaseCheck {
    /// When the last check finished and what it found.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
    /// Checks that reached the database (`database_checks_total`).
    pub performed: prometheus_client::metrics::counter::Counter,
}

impl DatabaseCheck {
    /// Whether the database answered: the cached answer while it is fresh, else a new ping.
    pub async fn up(&self, journal: &MeteredAddr<Journal>) -> bool {
        // Held across the ping: requests arriving meanwhile wait for it and share its answer,
        // so a burst at expiry still costs one ping.
        let mut last = self.last.lock().await;
        if let Some(up) = fresh(*last, Instant::now()) {
            return up;
        }
        self.performed.inc();
        let check = tokio::time::timeout(CHECK_TIMEOUT, journal.send(CheckDatabase)).await;
        let up = matches!(check, Ok(Ok(Ok(()))));
        *last = Some((Instant::now(), up));
        up
    }
}

/// The cached answer, if it is still fresh at `now`.
fn fresh(last: Option<(Instant, bool)>, now: Instant) -> Option<bool> {
    last.filter(|(at, _)| now.saturating_duration_since(*at) < DATABASE_CHECK_TTL)
        .map(|(_, up)| up)
}

/// Register `/health`, `/health/live` and `/health/ready`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(paced("/health").route(web::get().to(health)))
        .service(paced("/health/live").route(web::get().to(live)))
        .service(paced("/health/ready").route(web::get().to(ready)));
}

/// A resource whose requests are paced per client address (`--probes-per-ip-per-sec`):
/// probes and scrapes are unauthenticated, so a flood of them must not take the node's CPU.
pub(crate) fn paced(
    path: &str,
) -> actix_web::Resource<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path).wrap(from_fn(pace))
}

async fn pace(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let pace = req.app_data::<web::Data<AppState>>().and_then(|state| {
        let ip = state.proxies.client_of(req.head())?;
        Some(state.probes.pace(ip, Instant::now()))
    });
    match pace {
        None | Some(Pace::Now) => {}
        Some(Pace::After(wait)) => tokio::time::sleep(wait).await,
        Some(Pace::Refuse) => {
            tokio::time::sleep(MAX_PACE_WAIT).await;
            let refusal = HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", "1"))
                .json(json!({"error": "too_many_requests"}));
            return Ok(req.into_response(refusal).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// What the node's dependencies say, and whether it can take clients.
pub(crate) struct Report {
    /// Whether the node can take clients (`/health/ready`).
    pub(crate) ready: bool,
    /// `/health`'s JSON body.
    pub(crate) body: Value,
}

/// Check every dependency, as `/health` does (the admin page shows the same answer).
pub(crate) async fn report(state: &AppState) -> Report {
    let sessions = state.registry.send(CountSessions).await.ok();
    let database = match &state.product {
        None => json!("none"),
        Some(product) => match state.database_check.up(&product.journal).await {
            true => json!("up"),
            false => json!("down"),
        },
    };
    let redis = match state.product.as_ref().and_then(|p| p.bridge.as_ref()) {
        None => json!("none"),
        Some(bridge) => match tokio::time::timeout(CHECK_TIMEOUT, bridge.send(GetStatus)).await {
            Ok(Ok(status)) if status.connected => json!("up"),
            _ => json!("down"),
        },
    };
    let connector = state
        .product
        .as_ref()
        .and_then(|p| p.redis_connector.as_ref());
    let redis_mode = connector.map_or("none", |c| c.mode().label());
    let redis_master = connector.and_then(|c| c.current());
    let draining = state.draining.load(Ordering::Relaxed);
    let redis_down_for = state.redis_down.observe(redis == "down", Instant::now());
    let redis_ok = redis_down_for.is_none_or(|down| down <= REDIS_GRACE);
    let ready = sessions.is_some() && redis_ok && !draining;
    let degraded = database == "down" || redis == "down";
    Report {
        ready,
        body: json!({
            "status": match (ready, degraded) {
                (false, _) => "unavailable",
                (true, true) => "degraded",
                (true, false) => "ok",
            },
            "node": state.node_id,
            "sessions": sessions,
            "database": database,
            "redis": redis,
            "redis_mode": redis_mode,
            "redis_master": redis_master,
            "draining": draining,
        }),
    }
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    let report = report(&state).await;
    if report.ready {
        HttpResponse::Ok().json(report.body)
    } else {
        HttpResponse::ServiceUnavailable().json(report.body)
    }
}

async fn live(state: web::Data<AppState>) -> HttpResponse {
    if state.registry.connected() {
        HttpResponse::Ok().json(json!({"status": "ok"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "session registry stopped"}))
    }
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let report = report(&state).await;
    let status = if report.ready { "ready" } else { "unavailable" };
    let body = json!({"status": status, "draining": report.body["draining"]});
    if report.ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Since when a dependency has been seen down (by the health checks).
#[derive(Debug, Default)]
pub struct DownSince(std::sync::Mutex<Option<Instant>>);

impl DownSince {
    /// Record what a check saw at `now`; how long the dependency has been down, if it is.
    pub fn observe(&self, down: bool, now: Instant) -> Option<Duration> {
        let mut since = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !down {
            *since = None;
            return None;
        }
        Some(now.duration_since(*since.get_or_insert(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_is_down_since_the_first_check_that_saw_it_down() {
        let down = DownSince::default();
        let t0 = Instant::now();
        assert_eq!(down.observe(false, t0), None);
        assert_eq!(down.observe(true, t0), Some(Duration::ZERO));
        let later = t0 + REDIS_GRACE + Duration::from_secs(1);
        assert_eq!(
            down.observe(true, later),
            Some(REDIS_GRACE + Duration::from_secs(1))
        );
        assert_eq!(
            down.observe(false, later),
            None,
            "back up: the clock resets"
        );
        assert_eq!(down.observe(true, later), Some(Duration::ZERO));
    }

    #[test]
    fn an_answer_is_reused_for_one_second_only() {
        let at = Instant::now();
        assert_eq!(fresh(None, at), None);
        assert_eq!(fresh(Some((at, true)), at), Some(true));
        let later = at + Duration::from_millis(999);
        assert_eq!(fresh(Some((at, false)), later), Some(false));
        assert_eq!(fresh(Some((at, true)), at + DATABASE_CHECK_TTL), None);
    }
}
