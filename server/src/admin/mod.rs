//! The operator's admin page, `/admin`: cluster overview with a live feed, user lookup (with a
//! disconnect button) and room lookup. Served where `/api/v1` is (the admin listener when one
//! is configured, else the public one) and, like the API, only when an API key is set.
//!
//! # Layout
//! - `page.html`, `app.js`, `app.css`: the page, embedded in the binary; no external assets,
//!   and a Content-Security-Policy that allows none.
//! - [`stats`]: the Stats actor, which builds the overview once a second (and shares this
//!   node's numbers with the others through Redis).
//! - [`live`]: the live feed, one websocket actor per open page.
//! - [`users`]: user lookup.
//!
//! Everything behind the page takes the API key as `/api/v1` does ([`crate::api::authorize`]);
//! the disconnect button and the room view call `/api/v1` itself.

pub mod live;
pub mod stats;
pub mod users;

use actix::{Actor, Addr};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use switchboard_actors::UserId;
use switchboard_actors::keys::Keys;

use crate::AppState;
use crate::api::{self, ApiError};
use stats::{GetOverview, Stats};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The page loads only its own script and style, and talks only to its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Path of the live feed (a websocket upgrade, answered by the listener's upgrade hook).
pub const LIVE_PATH: &str = "/admin/live";

/// The admin page's shared parts.
#[derive(Clone)]
pub struct Admin {
    /// The node's Stats actor.
    pub stats: Addr<Stats>,
    /// Redis key names (user lookup in cluster mode).
    pub keys: Keys,
}

/// Start the admin page's actor; `None` (no page) unless the node serves the API.
pub fn start(state: &web::Data<AppState>, keys: Keys) -> Option<Admin> {
    if state.api_key.is_none() || state.product.is_none() {
        return None;
    }
    let stats = Stats::new(state.clone(), keys.clone()).start();
    Some(Admin { stats, keys })
}

/// Register `/admin` and what the page loads and calls.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", web::get().to(page))
        .route("/admin/", web::get().to(page))
        .route("/admin/app.js", web::get().to(script))
        .route("/admin/app.css", web::get().to(style))
        .route("/admin/login", web::post().to(login))
        .route("/admin/api/overview", web::get().to(overview))
        .route("/admin/api/users/{id}", web::get().to(user));
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// Check the key (the page keeps it in memory only, for the calls below and the live feed).
async fn login(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    api::respond(
        api::authorize(&req, &state)
            .map(|_| HttpResponse::Ok().json(json!({"ok": true, "node": state.node_id}))),
    )
}

/// The latest overview, as the live feed pushes it.
async fn overview(
    req: HttpRequest,
    state: web::Data<AppState>,
    admin: web::Data<Admin>,
) -> HttpResponse {
    api::respond(
        async {
            api::authorize(&req, &state)?;
            let overview = admin.stats.send(GetOverview).await?;
            let overview = overview.ok_or_else(|| ApiError::unavailable("no overview yet"))?;
            Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(overview.into_bytes()))
        }
        .await,
    )
}

async fn user(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    admin: web::Data<Admin>,
) -> HttpResponse {
    api::respond(
        async {
            let product = api::authorize(&req, &state)?;
            let user = path.into_inner();
            api::check_id(&user, "the user id")?;
            let view = users::lookup(&state, product, &admin.keys, UserId::from(user)).await?;
            Ok(HttpResponse::Ok().json(view))
        }
        .await,
    )
}
