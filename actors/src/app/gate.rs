//! The application's backend has the last word on the actions listed in
//! `SWITCHBOARD_HOOK_AUTHORIZE`: before such an event acts, its targets are looked up in the
//! node's decision cache, and only the ones not cached are asked about (one request for all of
//! them; the Hooks actor merges identical questions from other sockets). An action not listed
//! costs nothing: the event goes straight through.

use std::time::Instant;

use bytes::Bytes;
use switchboard_protocol::events::ClientEvent;

use super::errors::Refusal;
use super::{App, Conn, Done, User, fail, presence, rooms, signals, work};
use crate::metrics::metrics;
use crate::ports::hooks::FailurePolicy;
use crate::ports::hooks::{Action, AskAuthorize, Decision, HookFailure};

/// The action and targets `event` would ask the backend about, if it must ask.
fn question(app: &App, user: &User, event: &ClientEvent) -> Option<(Action, Vec<String>)> {
    let (action, targets) = match event {
        ClientEvent::Typing(msg) => (Action::Typing, vec![msg.to.clone()]),
        ClientEvent::Signal(msg) => (Action::Signal, vec![msg.to.clone()]),
        ClientEvent::PresenceSubscribe(msg) => (Action::PresenceSubscribe, distinct(&msg.user_ids)),
        ClientEvent::PresenceQuery(msg) => (Action::PresenceQuery, distinct(&msg.user_ids)),
        // The token's rooms need no question; a non-member's emit is refused without one.
        ClientEvent::RoomJoin(msg) if user.claim.allows(&msg.room) => return None,
        ClientEvent::RoomJoin(msg) => (Action::RoomJoin, vec![msg.room.clone()]),
        ClientEvent::RoomEmit(msg) if user.rooms.contains(msg.room.as_str()) => {
            (Action::RoomEmit, vec![msg.room.clone()])
        }
        _ => return None,
    };
    let hooks = app.hooks.as_ref()?;
    hooks.actions.contains(&action).then_some((action, targets))
}

fn distinct(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    ids
}

/// What the cache knows about `targets`: the decision so far and the targets it does not know.
pub(super) fn cached(
    app: &App,
    user: &User,
    action: Action,
    targets: Vec<String>,
) -> (Decision, Vec<String>) {
    let mut decision = Decision::default();
    let mut missing = Vec::new();
    let Some(hooks) = &app.hooks else {
        return (decision, missing);
    };
    let now = Instant::now();
    let mut hits = 0;
    for target in targets {
        match hooks.cache.get(action, &user.user, &target, now) {
            Some(Ok(())) => hits += 1,
            Some(Err(reason)) => {
                hits += 1;
                decision.denied.push((target, reason.to_string()));
            }
            None => missing.push(target),
        }
    }
    if hits > 0 {
        metrics().hook_cache_hits.inc_by(hits);
    }
    (decision, missing)
}

/// Ask the backend about `targets` (none cached).
pub(super) fn ask(
    app: &App,
    user: &User,
    conn: &mut dyn Conn,
    action: Action,
    targets: Vec<String>,
    then: impl FnOnce(Result<Decision, HookFailure>) -> Done + 'static,
) {
    let Some(hooks) = &app.hooks else { return };
    let asked = hooks.authorize.send(AskAuthorize {
        action,
        user: user.user.clone(),
        socket: user.socket.clone(),
        targets,
        span: crate::traces::current(),
    });
    conn.spawn(work(async move {
        let result = match asked.await {
            Ok(result) => result,
            Err(_) => Err(HookFailure::Unreachable(
                "the hooks actor is restarting".into(),
            )),
        };
        then(result)
    }));
}

/// The decision to act on after a failed call: the cache's part alone (`open`), or a refusal
/// of the whole event (`closed`).
pub(super) fn on_failure(app: &App, cached: Decision) -> Result<Decision, Refusal> {
    match app.hooks.as_ref().map(|h| h.failure) {
        Some(FailurePolicy::Open) => Ok(cached),
        _ => Err(Refusal::backend_unavailable()),
    }
}

/// An event at the gate: through at once, or after the backend answers.
pub(super) fn check(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    event: ClientEvent,
    attachments: Vec<Bytes>,
    id: Option<u64>,
) {
    let Some((action, targets)) = question(app, user, &event) else {
        return act(
            app,
            user,
            conn,
            event,
            attachments,
            id,
            Decision::default(),
            false,
        );
    };
    let (decision, missing) = cached(app, user, action, targets);
    if missing.is_empty() {
        return act(app, user, conn, event, attachments, id, decision, true);
    }
    let event = Box::new(event);
    ask(app, user, conn, action, missing, move |result| {
        Done::Gated {
            event,
            attachments,
            id,
            cached: decision,
            result,
        }
    });
}

/// The backend answered for an event at the gate.
#[allow(clippy::too_many_arguments)]
pub(super) fn answered(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    event: ClientEvent,
    attachments: Vec<Bytes>,
    id: Option<u64>,
    mut cached: Decision,
    result: Result<Decision, HookFailure>,
) {
    let decision = match result {
        Ok(decision) => {
            cached.denied.extend(decision.denied);
            cached
        }
        Err(_) => match on_failure(app, cached) {
            Ok(decision) => decision,
            Err(refusal) => return fail(conn, id, refusal),
        },
    };
    act(app, user, conn, event, attachments, id, decision, true);
}

/// Carry out a gated event under `decision`; `vetted` when the backend (or its cache) was
/// consulted.
#[allow(clippy::too_many_arguments)]
fn act(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    event: ClientEvent,
    attachments: Vec<Bytes>,
    id: Option<u64>,
    decision: Decision,
    vetted: bool,
) {
    let refused = |target: &str| decision.refused(target).map(Refusal::forbidden);
    match event {
        ClientEvent::Typing(msg) => match refused(&msg.to) {
            Some(refusal) => fail(conn, id, refusal),
            None => signals::typing(app, user, conn, msg, id),
        },
        ClientEvent::Signal(msg) => match refused(&msg.to) {
            Some(refusal) => fail(conn, id, refusal),
            None => signals::signal(app, user, conn, msg, attachments, id),
        },
        ClientEvent::RoomEmit(msg) => match refused(&msg.room) {
            Some(refusal) => fail(conn, id, refusal),
            None => rooms::emit(app, user, conn, msg, attachments, id),
        },
        ClientEvent::RoomJoin(msg) => {
            if let Some(refusal) = refused(&msg.room) {
                fail(conn, id, refusal)
            } else if vetted || user.claim.allows(&msg.room) {
                rooms::join(app, user, conn, msg.room, id)
            } else {
                fail(conn, id, Refusal::forbidden("room_not_allowed"))
            }
        }
        ClientEvent::PresenceSubscribe(msg) => {
            let (allowed, denied) = split(msg.user_ids, &decision);
            presence::watch(app, user, conn, allowed, true, denied, id)
        }
        ClientEvent::PresenceQuery(msg) => {
            let (allowed, denied) = split(msg.user_ids, &decision);
            presence::query(app, conn, allowed, denied, id)
        }
        // Only the events `question` knows come through the gate.
        _ => {}
    }
}

/// The ids the decision allows, and those it refuses.
fn split(ids: Vec<String>, decision: &Decision) -> (Vec<String>, Vec<String>) {
    ids.into_iter()
        .partition(|id| decision.refused(id).is_none())
}
