//! Presence from a socket's side: watching users (`presence:subscribe` / `unsubscribe`),
//! asking for statuses (`presence:query`) and setting one's own (`status:set`).

use serde_json::{Map, Value, json};
use switchboard_protocol::events::StatusSet;

use super::errors::Refusal;
use super::{App, Conn, Done, User, ack, fail, settle_quietly, work};
use crate::ids::UserId;
use crate::ports::presence::{QueryStatuses, SetStatus, Status};
use crate::ports::registry::Watch;

/// Most users one socket may watch with `presence:subscribe` (each costs a channel in cluster
/// mode).
pub(super) const MAX_WATCHED: usize = 1000;

/// Start (or stop) watching `users`; a subscribe answers with their current statuses.
pub(super) fn watch(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    users: Vec<String>,
    on: bool,
    denied: Vec<String>,
    id: Option<u64>,
) {
    let users: Vec<UserId> = users.into_iter().map(UserId::from).collect();
    let mut added = Vec::new();
    if on {
        added = users
            .iter()
            .filter(|u| !user.watching.contains(*u))
            .cloned()
            .collect();
        if user.watching.len() + added.len() > MAX_WATCHED {
            let message = format!("a socket may watch at most {MAX_WATCHED} users");
            return fail(conn, id, Refusal::invalid(message));
        }
        user.watching.extend(users.iter().cloned());
    } else {
        for u in &users {
            user.watching.remove(u);
        }
    }
    user.keep(app);
    // Watch first (in cluster mode: until the watch channels are subscribed), then read
    // statuses: a transition in between is reported, never missed.
    let watch = Watch {
        sid: conn.sid().clone(),
        users: users.clone(),
        watch: on,
        max_per_user: app.limits.max_watches_per_user,
    };
    if on {
        let watched = app.ports.watch.send(watch);
        let port = app.ports.query_statuses.clone();
        let max = app.limits.max_watches_per_user;
        conn.spawn(work(async move {
            if let Ok(false) = watched.await {
                let message = format!("one user's sockets on a node may watch at most {max} users");
                return Done::WatchRefused {
                    id,
                    added,
                    refusal: Refusal::invalid(message),
                };
            }
            let result = settle_quietly(port.send(QueryStatuses { users }).await);
            Done::Statuses { id, denied, result }
        }));
    } else {
        app.ports.watch.do_send(watch);
        ack(conn, id, json!({"ok": true}));
    }
}

/// `presence:query` of the users the backend allows (`denied`: those it does not).
pub(super) fn query(
    app: &App,
    conn: &mut dyn Conn,
    users: Vec<String>,
    denied: Vec<String>,
    id: Option<u64>,
) {
    ask_statuses(
        app,
        conn,
        users.into_iter().map(UserId::from).collect(),
        denied,
        id,
    );
}

fn ask_statuses(
    app: &App,
    conn: &mut dyn Conn,
    users: Vec<UserId>,
    denied: Vec<String>,
    id: Option<u64>,
) {
    let port = app.ports.query_statuses.clone();
    conn.spawn(work(async move {
        let query = port.send(QueryStatuses { users });
        let result = settle_quietly(query.await);
        Done::Statuses { id, denied, result }
    }));
}

/// The registry refused a `presence:subscribe` (the user's watch budget): the socket does not
/// watch the users it added after all.
pub(super) fn watch_refused(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    id: Option<u64>,
    added: Vec<UserId>,
    refusal: Refusal,
) {
    for u in &added {
        user.watching.remove(u);
    }
    user.keep(app);
    fail(conn, id, refusal);
}

/// Presence answered a query: `{ok, statuses: {user: status}}`, plus `denied: [..]` when the
/// backend refused some of the users.
pub(super) fn statuses(
    conn: &mut dyn Conn,
    id: Option<u64>,
    denied: Vec<String>,
    result: Result<Vec<(UserId, Status)>, Refusal>,
) {
    match result {
        Ok(statuses) => {
            let statuses: Map<String, Value> = statuses
                .into_iter()
                .map(|(u, s)| (u.to_string(), Value::from(s.as_str())))
                .collect();
            let mut answer = json!({"ok": true, "statuses": statuses});
            if !denied.is_empty() {
                answer["denied"] = json!(denied);
            }
            ack(conn, id, answer);
        }
        Err(refusal) => fail(conn, id, refusal),
    }
}

/// `status:set`.
pub(super) fn set_status(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: StatusSet,
    id: Option<u64>,
) {
    // The payload was validated: only settable statuses get here.
    let Some(status) = Status::settable(&msg.status) else {
        return;
    };
    let set = app.ports.set_status.send(SetStatus {
        user: user.user.clone(),
        status,
    });
    conn.spawn(work(async move {
        let result = settle_quietly(set.await);
        Done::Settled { id, result }
    }));
}
