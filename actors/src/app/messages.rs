//! Durable direct messages: `message:send` and `message:sync`.
//!
//! Each socket has one `message:send` in flight at a time (checked against the per-user limit,
//! then stored), so its messages are stored, acked and delivered in the order it sent them.
//! The ack comes only once the row is committed; delivery to the recipient's sockets (and the
//! sender's other sockets) follows.

use serde_json::{Value, json};
use switchboard_protocol::events::{EventName, MessageSend, MessageSync, sanitize_text};

use super::errors::{ErrorCode, Refusal};
use super::{App, Conn, Done, User, ack, fail, gate, settle, work};
use crate::ids::UserId;
use crate::ports::hooks::{Action, Decision, HookFailure};
use crate::ports::journal::{StoreMessage, StoredMessage, SyncMessages};
use crate::ports::ratelimiter::CheckMessage;
use crate::ports::registry::{Deliver, Target};
use crate::traces;
use crate::transport::encode_event;

/// Most `message:send` events one socket may have waiting (beyond the per-socket rate limit,
/// this bounds memory while the database is slow).
const MAX_QUEUED_SENDS: usize = 256;

/// Queue a `message:send` behind the one in flight.
pub(super) fn send(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: MessageSend,
    id: Option<u64>,
) {
    if user.sends.len() >= MAX_QUEUED_SENDS {
        let message = "too many messages waiting for the database; slow down";
        return fail(
            conn,
            id,
            Refusal::new(ErrorCode::ServiceUnavailable, message),
        );
    }
    user.sends.push_back((msg, id, traces::current()));
    if !user.sending {
        next(app, user, conn);
    }
}

/// Start the oldest queued `message:send`, if any: first the backend's `authorize` (when it is
/// asked about `message:send`), then the per-user limit.
fn next(app: &App, user: &mut User, conn: &mut dyn Conn) {
    let Some((msg, id, span)) = user.sends.pop_front() else {
        user.sending = false;
        return;
    };
    // Queued behind another send: its own event's span again.
    let _entered = span.enter();
    user.sending = true;
    let gated = app
        .hooks
        .as_ref()
        .is_some_and(|h| h.actions.contains(&Action::MessageSend));
    if !gated {
        return limit(app, user, conn, msg, id);
    }
    let (decision, missing) = gate::cached(app, user, Action::MessageSend, vec![msg.to.clone()]);
    if missing.is_empty() {
        return authorized(app, user, conn, msg, id, Ok(decision));
    }
    gate::ask(
        app,
        user,
        conn,
        Action::MessageSend,
        missing,
        move |result| Done::SendAuthorized { msg, id, result },
    );
}

/// The backend answered (or the cache did): refuse, or go on to the per-user limit.
pub(super) fn authorized(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: MessageSend,
    id: Option<u64>,
    result: Result<Decision, HookFailure>,
) {
    let decision = result.or_else(|_| gate::on_failure(app, Decision::default()));
    let refusal = match &decision {
        Ok(decision) => decision.refused(&msg.to).map(Refusal::forbidden),
        Err(refusal) => Some(refusal.clone()),
    };
    match refusal {
        Some(refusal) => {
            fail(conn, id, refusal);
            next(app, user, conn)
        }
        None => limit(app, user, conn, msg, id),
    }
}

/// Count the message against the per-user limit.
fn limit(app: &App, user: &mut User, conn: &mut dyn Conn, msg: MessageSend, id: Option<u64>) {
    let check = app.ports.check_message.send(CheckMessage {
        user: user.user.clone(),
        bytes: msg.text.len() as u64,
    });
    conn.spawn(work(async move {
        let verdict = settle(check.await, "rate limiter")
            .and_then(|allowed| allowed.map_err(Refusal::rate_limited));
        Done::SendChecked { msg, id, verdict }
    }));
}

/// The limit answered: store the message, or refuse it and move on.
pub(super) fn checked(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: MessageSend,
    id: Option<u64>,
    verdict: Result<(), Refusal>,
) {
    if let Err(refusal) = verdict {
        fail(conn, id, refusal);
        return next(app, user, conn);
    }
    let store = app.ports.store_message.send(StoreMessage {
        from: user.user.clone(),
        to: UserId::from(msg.to),
        text: sanitize_text(&msg.text),
        client_msg_id: msg.client_msg_id,
        span: traces::current(),
    });
    conn.spawn(work(async move {
        let result = settle(store.await, "journal");
        Done::SendStored { id, result }
    }));
}

/// The Journal answered: ack, deliver, and start the next one.
pub(super) fn stored(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    id: Option<u64>,
    result: Result<StoredMessage, Refusal>,
) {
    match result {
        Ok(stored) if stored.duplicate => {
            // A retry: the first send's answer again, and no second delivery.
            ack(
                conn,
                id,
                json!({"ok": true, "messageId": stored.message_id, "createdAt": stored.created_at, "duplicate": true}),
            );
        }
        Ok(stored) => {
            ack(
                conn,
                id,
                json!({"ok": true, "messageId": stored.message_id, "createdAt": stored.created_at}),
            );
            deliver(app, user, &stored);
        }
        Err(refusal) => fail(conn, id, refusal),
    }
    next(app, user, conn);
}

/// `message:received` to every socket of the recipient, `message:sent` to the sender's other
/// sockets.
fn deliver(app: &App, user: &User, stored: &StoredMessage) {
    let body = serde_json::to_value(stored).unwrap_or(Value::Null);
    app.ports.deliver.do_send(Deliver {
        target: Target::User(UserId::from(stored.to.as_str())),
        frames: encode_event(EventName::MessageReceived.as_str(), body.clone()),
        except: None,
        volatile: false,
        event: EventName::MessageReceived.as_str(),
        span: traces::current(),
    });
    app.ports.deliver.do_send(Deliver {
        target: Target::User(UserId::from(stored.from.as_str())),
        frames: encode_event(EventName::MessageSent.as_str(), body),
        except: Some(user.socket.clone()),
        volatile: false,
        event: EventName::MessageSent.as_str(),
        span: traces::current(),
    });
}

/// `message:sync`: a page of the messages to or from the user after a cursor.
pub(super) fn sync(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: MessageSync,
    id: Option<u64>,
) {
    let page = app.ports.sync_messages.send(SyncMessages {
        user: user.user.clone(),
        after: msg.after,
        limit: msg.page_size(),
    });
    conn.spawn(work(async move {
        let result = settle(page.await, "journal");
        Done::Synced { id, result }
    }));
}
