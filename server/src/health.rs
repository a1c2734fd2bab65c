//! Health endpoints for load balancers and Kubernetes probes.
//!
//! `/health/live` says the process serves HTTP and still has its session registry (it runs on
//! the first HTTP worker's thread; if that worker ever dies, nothing brings the registry back
//! but a restart). `/health/ready` and `/health` check what a node needs to serve clients: its
//! database, Redis in cluster mode, and that it is not draining.
//!
//! The database answer is cached ([`DatabaseCheck`]): probes and scrapes are unauthenticated,
//! and without the cache every request would cost a database round trip.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use switchboard_actors::ports::bridge::GetStatus;
use switchboard_actors::ports::journal::CheckDatabase;
use switchboard_actors::ports::registry::CountSessions;
use switchboard_actors::{journal::Journal, metrics::MeteredAddr};

use crate::AppState;

/// Longest a health check waits for one dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

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
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

/// What the node's dependencies say, and whether it can take clients.
struct Report {
    ready: bool,
    body: Value,
}

async fn report(state: &AppState) -> Report {
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
    let draining = state.draining.load(Ordering::Relaxed);
    let ready = sessions.is_some() && database != "down" && redis != "down" && !draining;
    Report {
        ready,
        body: json!({
            "status": if ready { "ok" } else { "unavailable" },
            "node": state.node_id,
            "sessions": sessions,
            "database": database,
            "redis": redis,
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

#[cfg(test)]
mod tests {
    use super::*;

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
