//! Health endpoints for load balancers and Kubernetes probes.
//!
//! `/health/live` says the process serves HTTP and still has its session registry (it runs on
//! the first HTTP worker's thread; if that worker ever dies, nothing brings the registry back
//! but a restart). `/health/ready` and `/health` check what a node needs to serve clients: its
//! database, Redis in cluster mode, and that it is not draining.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use switchboard_actors::ports::bridge::GetStatus;
use switchboard_actors::ports::journal::CheckDatabase;
use switchboard_actors::ports::registry::CountSessions;

use crate::AppState;

/// Longest a health check waits for one dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

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
        Some(product) => {
            let check = product.journal.send(CheckDatabase);
            match tokio::time::timeout(CHECK_TIMEOUT, check).await {
                Ok(Ok(Ok(()))) => json!("up"),
                _ => json!("down"),
            }
        }
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
