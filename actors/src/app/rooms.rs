//! Rooms from a socket's side: `room:emit` to the members of a room the socket is in, and
//! membership changes made by the server API.

use serde_json::json;
use switchboard_protocol::events::{EventName, RoomEmit};

use super::errors::{ErrorCode, Refusal};
use super::{App, Conn, User, ack, fail};
use crate::ids::Room;
use crate::ports::registry::{Deliver, Target};
use crate::transport::encode_event;

/// `room:emit`: `room:msg {room, from, data}` to every member socket; members only.
pub(super) fn emit(
    app: &App,
    user: &mut User,
    conn: &mut dyn Conn,
    msg: RoomEmit,
    id: Option<u64>,
) {
    let room = Room::from(msg.room);
    if !user.rooms.contains(&room) {
        let message = format!("not a member of room {:?}", room.as_str());
        return fail(conn, id, Refusal::new(ErrorCode::NotMember, message));
    }
    let frames = encode_event(
        EventName::RoomMsg.as_str(),
        json!({"room": room, "from": user.user, "data": msg.data}),
    );
    app.ports.deliver.do_send(Deliver {
        target: Target::Room(room),
        frames,
        except: None,
        volatile: true,
        event: EventName::RoomMsg.as_str(),
    });
    ack(conn, id, json!({"ok": true}));
}

/// The server API added this socket to a room, or removed it.
pub(super) fn set(user: &mut User, room: Room, member: bool) {
    if member {
        user.rooms.insert(room);
    } else {
        user.rooms.remove(&room);
    }
}
