//! Volatile relays between users: `typing` and `signal` (signalling, cursors, live state).
//! Never stored; a congested recipient may miss them.

use bytes::Bytes;
use serde_json::json;
use switchboard_protocol::events::{EventName, Signal, Typing};

use super::{App, Conn, User, ack};
use crate::ids::UserId;
use crate::ports::registry::{Deliver, Target};
use crate::transport::encode_event_with;

/// `typing {to}` → `typing {from}` to every socket of `to`.
pub(super) fn typing(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: Typing,
    id: Option<u64>,
) {
    relay(
        app,
        msg.to,
        EventName::Typing,
        json!({"from": user.user}),
        Vec::new(),
    );
    ack(conn, id, json!({"ok": true}));
}

/// `signal {to, data}` → `signal {from, data}` to every socket of `to`.
pub(super) fn signal(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: Signal,
    attachments: Vec<Bytes>,
    id: Option<u64>,
) {
    relay(
        app,
        msg.to,
        EventName::Signal,
        json!({"from": user.user, "data": msg.data}),
        attachments,
    );
    ack(conn, id, json!({"ok": true}));
}

/// Deliver `[event, data]` (with binary `attachments`, which `data`'s placeholders refer to) to
/// every socket of `to`.
fn relay(
    app: &App,
    to: String,
    event: EventName,
    data: serde_json::Value,
    attachments: Vec<Bytes>,
) {
    app.ports.deliver.do_send(Deliver {
        target: Target::User(UserId::from(to)),
        frames: encode_event_with(event.as_str(), data, attachments),
        except: None,
        volatile: true,
        event: event.as_str(),
        span: crate::traces::current(),
    });
}
