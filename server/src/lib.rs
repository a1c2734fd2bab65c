//! The Switchboard node: configuration, HTTP routes and startup wiring.
//!
//! # Layout
//! - [`config`]: the one typed [`Config`], from flags and `SWITCHBOARD_*` variables.
//! - [`transport`]: the Engine.IO endpoint (polling handlers and the websocket transport actor).
//! - [`health`]: `/health`, `/health/live`, `/health/ready`.
//!
//! [`run`] serves a node on a listener the caller bound, so tests start nodes the way users do.

pub mod config;
pub mod health;
pub mod transport;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::{App, HttpRequest, HttpServer, web};
use switchboard_actors::SessionRegistry;
use switchboard_actors::session::{SessionConfig, SessionKind, SocketIoMode};
use tracing::info;
use tracing_actix_web::TracingLogger;

pub use config::Config;
use transport::engineio::{self, Cors};

/// Shared, read-only state of the HTTP handlers.
pub struct AppState {
    /// This node's id.
    pub node_id: String,
    /// The node's session registry.
    pub registry: Addr<SessionRegistry>,
    /// Settings every session gets.
    pub session: Arc<SessionConfig>,
    /// Browser origin policy.
    pub cors: Cors,
    /// What `/socket.io/` serves.
    pub mode: SocketIoMode,
}

/// Serve a node on `listener` until `shutdown` resolves (or the process is signalled).
///
/// Must run inside an actix `System` (e.g. under `#[actix_web::main]`).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + 'static,
) -> std::io::Result<()> {
    let node_id = config.node_id();
    let conformance = config.conformance;
    let state = web::Data::new(AppState {
        node_id: node_id.clone(),
        registry: SessionRegistry::start_default(),
        session: Arc::new(config.session()),
        cors: Cors::new(config.allowed_origins()),
        mode: if conformance {
            SocketIoMode::Conformance
        } else {
            SocketIoMode::Product
        },
    });

    let mut server = HttpServer::new(move || {
        let app = App::new()
            .wrap(TracingLogger::default())
            .app_data(state.clone())
            .configure(health::routes)
            .service(web::resource(["/socket.io", "/socket.io/"]).to(socket_io));
        if conformance {
            app.service(web::resource(["/engine.io", "/engine.io/"]).to(engine_io))
        } else {
            app
        }
    })
    // Long-lived sockets: the default 25k per worker is too low for a realtime node.
    .max_connections(100_000)
    .listen(listener)?;
    if let Some(workers) = config.workers {
        server = server.workers(workers);
    }
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        shutdown.await;
        handle.stop(true).await;
    });
    info!(node = %node_id, conformance, "node started");
    server.await
}

async fn socket_io(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::HttpResponse {
    let kind = SessionKind::SocketIo(state.mode);
    engineio::handle(req, payload, state, kind).await
}

async fn engine_io(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::HttpResponse {
    engineio::handle(req, payload, state, SessionKind::EngineEcho).await
}
