//! Volatile relays between users: `typing` and `signal` (signalling, cursors, live state).
//! Never stored; a congested recipient may miss them.

use serde_json::json;
use switchboard_protocol::events::{EventName, Signal, Typing};

use super::{App, Conn, User, ack};
use crate::ids::UserId;
use crate::ports::registry::{Deliver, Target};
use crate::transport::encode_event;

/// `typing {to}` → `typing {from}` to every socket of `to`.
pub(super) fn typing(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: Typing,
    id: Option<u64>,
) {
    relay(app, msg.to, EventName::Typing, json!({"from": user.user}));
    ack(conn, id, json!({"ok": true}));
}

/// `signal {to, data}` → `signal {from, data}` to every socket of `to`.
pub(super) fn signal(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: Signal,
    id: Option<u64>,
) {
    relay(
        app,
        msg.to,
        EventName::Signal,
        json!({"from": user.user, "data": msg.data}),
    );
    ack(conn, id, json!({"ok": true}));
}

fn relay(app: &App, to: String, event: EventName, data: serde_json::Value) {
    app.ports.deliver.do_send(Deliver {
        target: Target::User(UserId::from(to)),
        frames: encode_event(event.as_str(), data),
        except: None,
        volatile: true,
        event: event.as_str(),
    });
}
