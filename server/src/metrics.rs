//! `GET /metrics`: the node's Prometheus metrics (OpenMetrics text).
//!
//! Most metrics are updated where things happen; values owned by an actor (the journal's queue,
//! the database check) and process figures from /proc are refreshed here, at scrape time. The
//! database check is the cached one of `/health` ([`crate::health::DatabaseCheck`]); its count
//! is the one metric the server crate owns (`database_checks_total`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;
use switchboard_actors::metrics::{metrics, refresh_process};
use switchboard_actors::ports::journal::JournalStats;

use crate::AppState;

/// Longest a scrape waits for an actor's figures.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// Register `/metrics`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(crate::health::paced("/metrics").route(web::get().to(scrape)));
}

async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    let m = metrics();
    refresh_process();
    m.draining
        .set(i64::from(state.draining.load(Ordering::Relaxed)));
    if let Some(product) = &state.product {
        if let Ok(Ok(stats)) =
            tokio::time::timeout(SCRAPE_TIMEOUT, product.journal.send(JournalStats)).await
        {
            m.journal_queue_depth.set(stats.queue_depth as i64);
            let seen = m.journal_dropped.get();
            if stats.dropped > seen {
                m.journal_dropped.inc_by(stats.dropped - seen);
            }
        }
        let up = state.database_check.up(&product.journal).await;
        m.database_up.set(i64::from(up));
    }
    if let Some(pool) = state.product.as_ref().and_then(|p| p.redis_pool.as_ref()) {
        let s = pool.state();
        m.redis_pool_active
            .set(i64::from(s.connections.saturating_sub(s.idle_connections)));
    }
    let mut own = Registry::with_labels(std::iter::once((
        "server_instance".into(),
        state.node_id.to_string().into(),
    )));
    own.register(
        "database_checks",
        "Database checks that reached the database (cached for health probes and scrapes)",
        state.database_check.performed.clone(),
    );
    let mut body = String::new();
    let encoded = encode_registry(&mut body, &m.registry)
        .and_then(|()| encode_registry(&mut body, &own))
        .and_then(|()| encode_eof(&mut body));
    match encoded {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}
