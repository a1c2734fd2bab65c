//! Rooms from a socket's side: `room:join` (rooms the token's `rooms` claim names or matches,
//! or that the backend's `authorize` allows — checked at the gate), `room:leave`,
//! `room:presence` (online members, cluster-wide), `room:emit` to the members of a room the
//! socket is in, and membership changes made by the server API.

use bytes::Bytes;
use serde_json::json;
use switchboard_protocol::events::{EventName, RoomEmit};

use super::errors::{ErrorCode, Refusal};
use super::{App, Conn, Done, User, ack, fail, settle_quietly, work};
use crate::ids::{Room, UserId};
use crate::ports::journal::{WebhookEvent, event_types};
use crate::ports::presence::RoomOnline;
use crate::ports::registry::{Deliver, JoinRoom, Target};
use crate::transport::encode_event_with;

fn not_member(room: &Room) -> Refusal {
    Refusal::new(
        ErrorCode::NotMember,
        format!("not a member of room {:?}", room.as_str()),
    )
}

/// `room:join` that the gate allowed.
pub(super) fn join(app: &App, user: &mut User, conn: &mut dyn Conn, room: String, id: Option<u64>) {
    let room = Room::from(room);
    // Answered once the room is in place (in cluster mode: its channel subscribed), so what is
    // sent to the room after the answer reaches this socket.
    let joined = app.ports.join_room.send(JoinRoom {
        sid: conn.sid().clone(),
        room: room.clone(),
        join: true,
    });
    if user.rooms.insert(room.clone()) {
        webhook(app, event_types::ROOM_JOINED, &room, &user.user);
        user.keep(app);
    }
    conn.spawn(work(async move {
        let _ = joined.await;
        Done::Settled { id, result: Ok(()) }
    }));
}

/// `room:leave`: idempotent, like socket.io's `leave`.
pub(super) fn leave(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    room: String,
    id: Option<u64>,
) {
    let room = Room::from(room);
    if user.rooms.remove(&room) {
        app.ports.join_room.do_send(JoinRoom {
            sid: conn.sid().clone(),
            room: room.clone(),
            join: false,
        });
        webhook(app, event_types::ROOM_LEFT, &room, &user.user);
        user.keep(app);
    }
    ack(conn, id, json!({"ok": true}));
}

fn webhook(app: &App, event_type: &'static str, room: &Room, user: &UserId) {
    if app.webhooks {
        app.ports.webhook_event.do_send(WebhookEvent {
            event_type: event_type.into(),
            data: json!({"room": room, "userId": user, "source": "client"}),
        });
    }
}

/// `room:presence`: the room's online members across the cluster; members only.
pub(super) fn presence(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    room: String,
    id: Option<u64>,
) {
    let room = Room::from(room);
    if !user.rooms.contains(&room) {
        return fail(conn, id, not_member(&room));
    }
    let online = app
        .ports
        .room_online
        .send(RoomOnline { room: room.clone() });
    conn.spawn(work(async move {
        let result = settle_quietly(online.await);
        Done::RoomPresence { id, room, result }
    }));
}

/// Presence answered `room:presence`: `{ok, room, users, sockets}`.
pub(super) fn presence_answered(
    conn: &mut dyn Conn,
    id: Option<u64>,
    room: Room,
    result: Result<(Vec<UserId>, usize), Refusal>,
) {
    match result {
        Ok((users, sockets)) => ack(
            conn,
            id,
            json!({"ok": true, "room": room, "users": users, "sockets": sockets}),
        ),
        Err(refusal) => fail(conn, id, refusal),
    }
}

/// `room:emit`: `room:msg {room, from, data}` to every member socket; members only.
pub(super) fn emit(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: RoomEmit,
    attachments: Vec<Bytes>,
    id: Option<u64>,
) {
    let room = Room::from(msg.room);
    if !user.rooms.contains(&room) {
        return fail(conn, id, not_member(&room));
    }
    let frames = encode_event_with(
        EventName::RoomMsg.as_str(),
        json!({"room": room, "from": user.user, "data": msg.data}),
        attachments,
    );
    // Recoverable (kept for reconnecting members) unless the sender says it may be lost.
    app.ports.deliver.do_send(Deliver {
        target: Target::Room(room),
        frames,
        except: None,
        volatile: msg.volatile.unwrap_or(false),
        event: EventName::RoomMsg.as_str(),
        span: crate::traces::current(),
    });
    ack(conn, id, json!({"ok": true}));
}

/// The server API added this socket to a room, or removed it.
pub(super) fn set(app: &App, user: &mut User, room: Room, member: bool) {
    let changed = if member {
        user.rooms.insert(room)
    } else {
        user.rooms.remove(&room)
    };
    if changed {
        user.keep(app);
    }
}
