//! `GET /metrics`: the node's Prometheus metrics (OpenMetrics text).
//!
//! Most metrics are updated where things happen; values owned by an actor (the journal's queue,
//! the database check) and process figures from /proc are refreshed here, at scrape time.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use switchboard_actors::metrics::{metrics, refresh_process};
use switchboard_actors::ports::journal::{CheckDatabase, JournalStats};

use crate::AppState;

/// Longest a scrape waits for an actor's figures.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// Register `/metrics`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape));
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
        let up = matches!(
            tokio::time::timeout(SCRAPE_TIMEOUT, product.journal.send(CheckDatabase)).await,
            Ok(Ok(Ok(())))
        );
        m.database_up.set(i64::from(up));
    }
    if let Some(pool) = state.product.as_ref().and_then(|p| p.redis_pool.as_ref()) {
        let s = pool.state();
        m.redis_pool_active
            .set(i64::from(s.connections.saturating_sub(s.idle_connections)));
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &m.registry) {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(body),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}
