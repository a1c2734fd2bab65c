//! `GET /metrics`: the node's Prometheus metrics (OpenMetrics text).
//!
//! Most metrics are updated where things happen; values owned by an actor (the journal's queue,
//! the database check) and process figures from /proc are refreshed here, at scrape time. The
//! database check is the cached one of `/health` ([`crate::health::DatabaseCheck`]); its count
//! is one of the two metrics the server crate owns (`database_checks_total`); the other is
//! `redis_mode`, an info gauge (1) labelled with the Redis mode and the server in use.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    if let Some(connector) = state
        .product
        .as_ref()
        .and_then(|p| p.redis_connector.as_ref())
    {
        let mode = Family::<Vec<(&'static str, String)>, Gauge>::default();
        mode.get_or_create(&vec![
            ("mode", connector.mode().label().to_owned()),
            ("master", connector.current().unwrap_or_default()),
        ])
        .set(1);
        own.register(
            "redis_mode",
            "How this node reaches Redis (mode: single or sentinel; master: the server in use)",
            mode,
        );
    }
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
