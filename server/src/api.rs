//! The server API for application backends: emit to users, rooms or everyone, read presence,
//! disconnect users and manage room membership. Off unless an API key is configured.
//!
//! JSON in and out; every refusal is `{"error":{"code","message"}}` with a 400, 401, 404 or
//! 429 (a client address past [`MAX_FAILURES_PER_SECOND`] wrong keys in a second).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_actors::logins::LoginGuard;
use switchboard_actors::node::Product;
use switchboard_actors::ports::journal::{AddMembership, MembersOf, RemoveMembership};
use switchboard_actors::ports::presence::{OnlineUsers, QueryStatuses, RoomOnline};
use switchboard_actors::ports::registry::{Deliver, DisconnectUser, RoomMembership, Target};
use switchboard_actors::transport::encode_event_with;
use switchboard_actors::{Room, UserId};
use switchboard_protocol::binary;
use switchboard_protocol::events::{self, EventName, MAX_ID_LEN, MAX_USER_IDS};
use switchboard_protocol::socketio::RESERVED_EVENTS;

use crate::AppState;

/// Most binary values one emit may carry (socket.io-client accepts any number; keep it sane).
const MAX_BINARIES: usize = 64;

/// Largest API request body.
const MAX_BODY: usize = 1024 * 1024;
/// Events the server itself emits; applications may not forge them.
const SERVER_EVENTS: [&str; 6] = [
    "error",
    "authenticated",
    "rate_limited",
    "server:maintenance",
    "server:shutdown",
    "message",
];

/// Wrong API keys one client address may present per second; beyond it every API request from
/// that address is answered 429 until the second is over.
pub const MAX_FAILURES_PER_SECOND: u32 = 10;

const FAILURE_WINDOW: Duration = Duration::from_secs(1);

/// Failed API-key attempts per client address, in fixed one-second windows (the guard that
/// counts refused logins, with the API's own budget).
pub fn failed_keys() -> LoginGuard {
    LoginGuard::new(MAX_FAILURES_PER_SECOND, FAILURE_WINDOW)
}

/// Judge a key `presented` by `ip` at `now` against `key`, counting it in `failures` when
/// wrong; an address past its budget is refused even the right key until the window is over.
fn judge(
    failures: &LoginGuard,
    ip: IpAddr,
    now: Instant,
    key: &str,
    presented: Option<&str>,
) -> Result<(), KeyRefusal> {
    if failures.blocked(ip, now) {
        return Err(KeyRefusal::RateLimited);
    }
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), key.as_bytes()) => Ok(()),
        _ => {
            failures.failed(ip, now);
            Err(KeyRefusal::Wrong)
        }
    }
}

/// Register `/api/v1/*`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/emit", web::post().to(emit))
            .route("/presence", web::get().to(presence))
            .route("/online", web::get().to(online))
            .route("/users/{id}/disconnect", web::post().to(disconnect_user))
            .route("/rooms/{room}/members", web::post().to(room_join))
            .route("/rooms/{room}/members", web::get().to(room_members))
            .route("/rooms/{room}/members/{user}", web::delete().to(room_leave)),
    );
}

/// An API refusal; the one place API errors become HTTP responses.
#[derive(Debug)]
pub(crate) struct ApiError {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The stable `error.code`.
    pub(crate) code: &'static str,
    /// What went wrong, for people.
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(err: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "service_unavailable",
            message: err.to_string(),
        }
    }

    pub(crate) fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.insert_header(("retry-after", "1"));
        }
        response.json(json!({"error": {"code": self.code, "message": self.message}}))
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "the node is not ready".into(),
        }
    }
}

pub(crate) type ApiResult = Result<HttpResponse, ApiError>;

/// A database refusal: the caller's mistake (400) or an outage (503).
fn journal_error(err: switchboard_actors::ports::journal::JournalError) -> ApiError {
    match err {
        switchboard_actors::ports::journal::JournalError::Invalid(why) => {
            ApiError::bad_request(why)
        }
        other => ApiError::unavailable(other),
    }
}

/// Check the API key and hand back the product's actors.
pub(crate) fn authorize<'a>(
    req: &HttpRequest,
    state: &'a AppState,
) -> Result<&'a Product, ApiError> {
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    check_key(state, req.peer_addr().map(|addr| addr.ip()), presented)
}

/// Check a presented API key from `peer` (a header, or the admin page's live feed), counting
/// wrong keys per address: the one place the key and the 429 rule are applied.
pub(crate) fn check_key<'a>(
    state: &'a AppState,
    peer: Option<IpAddr>,
    presented: Option<&str>,
) -> Result<&'a Product, ApiError> {
    let (Some(key), Some(product)) = (&state.api_key, &state.product) else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "the server API is off (set SWITCHBOARD_API_KEY)".into(),
        });
    };
    // No address (not TCP): one shared bucket, which errs on the side of refusing.
    let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let verdict = judge(&state.api_failures, ip, Instant::now(), key, presented);
    match verdict {
        Ok(()) => Ok(product),
        Err(KeyRefusal::RateLimited) => Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "too many wrong API keys from this address; retry in a second".into(),
        }),
        Err(KeyRefusal::Wrong) => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "a valid API key is required (`Authorization: Bearer <api key>`)".into(),
        }),
    }
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyRefusal {
    /// The address used up its wrong keys this second (even a right key is refused).
    RateLimited,
    /// Missing or wrong (and counted).
    Wrong,
}

/// Compare without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn respond(result: ApiResult) -> HttpResponse {
    result.unwrap_or_else(|err| err.response())
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub(crate) fn check_id(id: &str, what: &str) -> Result<(), ApiError> {
    events::check_id(id).map_err(|why| {
        ApiError::bad_request(format!(
            "{what} must be 1 to 255 bytes without control characters ({why})"
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitTo {
    user: Option<String>,
    room: Option<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
struct EmitBody {
    to: EmitTo,
    event: String,
    #[serde(default)]
    data: Value,
}

async fn emit(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    respond(
        async {
            authorize(&req, &state)?;
            let body: EmitBody = parse_json(&body)?;
            let target = match (body.to.user, body.to.room, body.to.all) {
                (Some(user), None, false) => {
                    check_id(&user, "`to.user`")?;
                    Target::User(UserId::from(user))
                }
                (None, Some(room), false) => {
                    check_id(&room, "`to.room`")?;
                    Target::Room(Room::from(room))
                }
                (None, None, true) => Target::All,
                _ => {
                    return Err(ApiError::bad_request(
                        "`to` must be exactly one of {user}, {room} or {all: true}",
                    ));
                }
            };
            if body.event.is_empty() || body.event.len() > MAX_ID_LEN {
                return Err(ApiError::bad_request("`event` must be 1 to 255 bytes"));
            }
            let event = body.event.as_str();
            if RESERVED_EVENTS.contains(&event) || SERVER_EVENTS.contains(&event) {
                return Err(ApiError::bad_request(format!(
                    "`{event}` is a reserved event name"
                )));
            }
            // `{"$binary": base64}` values are sent as binary attachments.
            let (data, attachments) = binary::from_json(body.data, MAX_BINARIES)
                .map_err(|e| ApiError::bad_request(format!("`data`: {e}")))?;
            state.registry.do_send(Deliver {
                target,
                frames: encode_event_with(event, data, attachments),
                except: None,
                volatile: false,
                event: EventName::label(event),
                // The server API's emits are not traced (yet): no client event started them.
                span: tracing::Span::none(),
            });
            Ok(HttpResponse::Accepted().json(json!({"ok": true})))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresenceQuery {
    user_ids: Option<String>,
}

async fn presence(
    req: HttpRequest,
    query: web::Query<PresenceQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    respond(
        async {
            let product = authorize(&req, &state)?;
            let ids = query
                .user_ids
                .as_deref()
                .ok_or_else(|| ApiError::bad_request("`userIds` (comma-separated) is required"))?;
            let users: Vec<UserId> = ids
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(UserId::from)
                .collect();
            if users.is_empty() || users.len() > MAX_USER_IDS {
                return Err(ApiError::bad_request("`userIds` must name 1 to 1000 users"));
            }
            for user in &users {
                check_id(user, "each user id")?;
            }
            let statuses = product
                .presence
                .send(QueryStatuses { users })
                .await?
                .map_err(ApiError::unavailable)?;
            let statuses: serde_json::Map<String, Value> = statuses
                .into_iter()
                .map(|(u, s)| (u.to_string(), Value::from(s.as_str())))
                .collect();
            Ok(HttpResponse::Ok().json(json!({"statuses": statuses})))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct OnlineQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn online(
    req: HttpRequest,
    query: web::Query<OnlineQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    respond(
        async {
            let product = authorize(&req, &state)?;
            let limit = match &query.limit {
                None => 100,
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| ApiError::bad_request("`limit` must be 1 to 1000"))?,
            };
            let page = product
                .presence
                .send(OnlineUsers {
                    limit,
                    cursor: query.cursor.clone().filter(|c| !c.is_empty()),
                })
                .await?
                .map_err(ApiError::unavailable)?;
            Ok(HttpResponse::Ok().json(page))
        }
        .await,
    )
}

async fn disconnect_user(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    respond(
        async {
            authorize(&req, &state)?;
            let user = path.into_inner();
            check_id(&user, "the user id")?;
            let user = UserId::from(user);
            let n = state.registry.send(DisconnectUser { user }).await?;
            Ok(HttpResponse::Ok().json(json!({"ok": true, "disconnected": n})))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberBody {
    user_id: String,
}

async fn room_join(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let room = path.into_inner();
    let user = parse_json::<MemberBody>(&body).map(|b| b.user_id);
    respond(membership(&req, &state, room, user, true).await)
}

async fn room_leave(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (room, user) = path.into_inner();
    respond(membership(&req, &state, room, Ok(user), false).await)
}

/// Store (or delete) a user's durable membership of a room, then join (leave) the user's
/// sockets on every node; answers how many changed on this node.
async fn membership(
    req: &HttpRequest,
    state: &AppState,
    room: String,
    user: Result<String, ApiError>,
    join: bool,
) -> ApiResult {
    let product = authorize(req, state)?;
    check_id(&room, "the room name")?;
    let user = user?;
    check_id(&user, "the user id")?;
    let (user, room) = (UserId::from(user), Room::from(room));
    // Stored first: once the call answers, the membership holds for sockets opened later too.
    let stored = if join {
        product
            .journal
            .send(AddMembership {
                room: room.clone(),
                user: user.clone(),
            })
            .await?
    } else {
        product
            .journal
            .send(RemoveMembership {
                room: room.clone(),
                user: user.clone(),
            })
            .await?
    };
    stored.map_err(journal_error)?;
    let n = state
        .registry
        .send(RoomMembership { user, room, join })
        .await?;
    Ok(HttpResponse::Ok().json(json!({"ok": true, "sockets": n})))
}

async fn room_members(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    respond(
        async {
            let product = authorize(&req, &state)?;
            let room = path.into_inner();
            check_id(&room, "the room name")?;
            let room = Room::from(room);
            let (online, members) = futures_util::join!(
                product.presence.send(RoomOnline { room: room.clone() }),
                product.journal.send(MembersOf { room: room.clone() }),
            );
            let (users, sockets) = online?.map_err(ApiError::unavailable)?;
            let members = members?.map_err(journal_error)?;
            Ok(HttpResponse::Ok().json(
                json!({"room": room, "users": users, "sockets": sockets, "members": members}),
            ))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_keys_are_limited_per_address_and_second() {
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let start = Instant::now();
        let failures = failed_keys();
        for _ in 0..MAX_FAILURES_PER_SECOND {
            assert!(!failures.blocked(a, start));
            failures.failed(a, start);
        }
        assert!(failures.blocked(a, start));
        assert!(
            !failures.blocked(b, start),
            "other addresses are not affected"
        );
        let next = start + FAILURE_WINDOW;
        assert!(!failures.blocked(a, next), "a new second starts afresh");
        failures.failed(a, next);
        assert!(!failures.blocked(a, next));
    }

    #[test]
    fn keys_are_judged_and_wrong_ones_counted() {
        let ip = IpAddr::from([10, 0, 0, 3]);
        let now = Instant::now();
        let failures = failed_keys();
        assert_eq!(judge(&failures, ip, now, "key", Some("key")), Ok(()));
        assert_eq!(
            judge(&failures, ip, now, "key", None),
            Err(KeyRefusal::Wrong)
        );
        assert_eq!(
            judge(&failures, ip, now, "key", Some("ke")),
            Err(KeyRefusal::Wrong)
        );
        for _ in 2..MAX_FAILURES_PER_SECOND {
            assert_eq!(
                judge(&failures, ip, now, "key", Some("x")),
                Err(KeyRefusal::Wrong)
            );
        }
        assert_eq!(
            judge(&failures, ip, now, "key", Some("key")),
            Err(KeyRefusal::RateLimited),
            "the right key too, within the second"
        );
        let later = now + FAILURE_WINDOW;
        assert_eq!(judge(&failures, ip, later, "key", Some("key")), Ok(()));
    }

    #[test]
    fn constant_time_eq_compares_whole_keys() {
        assert!(constant_time_eq(b"key", b"key"));
        assert!(!constant_time_eq(b"key", b"kez"));
        assert!(!constant_time_eq(b"key", b"key2"));
    }
}
