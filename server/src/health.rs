//! Health endpoints for load balancers and Kubernetes probes.

use actix_web::{HttpResponse, web};
use serde_json::json;
use switchboard_actors::registry::CountSessions;

use crate::AppState;

/// Register `/health`, `/health/live` and `/health/ready`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.registry.send(CountSessions).await {
        Ok(sessions) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "node": state.node_id,
            "sessions": sessions,
            "draining": false,
        })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "node": state.node_id,
            "draining": false,
        })),
    }
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.registry.connected() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable"}))
    }
}
