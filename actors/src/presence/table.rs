//! The presence table of a single node: pure state (who is online on which sockets and
//! devices, and with which status), unit-tested without actors.

use std::collections::{BTreeMap, HashMap};

use crate::ids::{Room, UserId};
use crate::ports::presence::{OnlinePage, Status};

#[derive(Debug)]
struct UserPresence {
    /// socket id → device id.
    sockets: HashMap<String, String>,
    status: Status,
}

/// Who is online, on which sockets and devices, with which status.
#[derive(Debug, Default)]
pub struct PresenceTable {
    users: BTreeMap<UserId, UserPresence>,
    /// Room → (socket → user).
    rooms: HashMap<Room, HashMap<String, UserId>>,
    /// Socket → its rooms (to leave them when it goes).
    socket_rooms: HashMap<String, Vec<Room>>,
}

impl PresenceTable {
    /// Add a socket; `Some(true)` when it is the user's first (the user comes online), `None`
    /// when the user already has `max_sockets` (0: no limit) and nothing changed.
    pub fn connect(
        &mut self,
        user: &UserId,
        socket: &str,
        device: &str,
        max_sockets: usize,
    ) -> Option<bool> {
        let entry = self
            .users
            .entry(user.clone())
            .or_insert_with(|| UserPresence {
                sockets: HashMap::new(),
                status: Status::Online,
            });
        let full = max_sockets > 0
            && entry.sockets.len() >= max_sockets
            && !entry.sockets.contains_key(socket);
        if full {
            return None;
        }
        let first = entry.sockets.is_empty();
        entry.sockets.insert(socket.to_string(), device.to_string());
        Some(first)
    }

    /// A socket joins (or leaves) rooms.
    pub fn rooms(&mut self, user: &UserId, socket: &str, rooms: &[Room], join: bool) {
        for room in rooms {
            if join {
                let members = self.rooms.entry(room.clone()).or_default();
                members.insert(socket.to_string(), user.clone());
                let mine = self.socket_rooms.entry(socket.to_string()).or_default();
                if !mine.contains(room) {
                    mine.push(room.clone());
                }
            } else {
                self.leave_room(socket, room);
                if let Some(mine) = self.socket_rooms.get_mut(socket) {
                    mine.retain(|r| r != room);
                    if mine.is_empty() {
                        self.socket_rooms.remove(socket);
                    }
                }
            }
        }
    }

    fn leave_room(&mut self, socket: &str, room: &Room) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(socket);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// A room's online members: distinct users (sorted) and the socket count.
    pub fn room_online(&self, room: &str) -> (Vec<UserId>, usize) {
        let Some(members) = self.rooms.get(room) else {
            return (Vec::new(), 0);
        };
        let mut users: Vec<UserId> = members.values().cloned().collect();
        users.sort();
        users.dedup();
        (users, members.len())
    }

    /// Remove a socket; true when it was the user's last (the user goes offline).
    pub fn disconnect(&mut self, user: &UserId, socket: &str) -> bool {
        for room in self.socket_rooms.remove(socket).unwrap_or_default() {
            self.leave_room(socket, &room);
        }
        let Some(entry) = self.users.get_mut(user) else {
            return false;
        };
        if entry.sockets.remove(socket).is_none() {
            return false;
        }
        if entry.sockets.is_empty() {
            self.users.remove(user);
            return true;
        }
        false
    }

    /// Set an online user's status; true when it changed.
    pub fn set_status(&mut self, user: &UserId, status: Status) -> bool {
        match self.users.get_mut(user) {
            Some(entry) if entry.status != status => {
                entry.status = status;
                true
            }
            _ => false,
        }
    }

    /// A user's status.
    pub fn status(&self, user: &str) -> Status {
        self.users.get(user).map_or(Status::Offline, |u| u.status)
    }

    /// The distinct devices a user is connected from.
    pub fn devices(&self, user: &str) -> Vec<String> {
        let mut devices: Vec<String> = self
            .users
            .get(user)
            .map(|u| u.sockets.values().cloned().collect())
            .unwrap_or_default();
        devices.sort();
        devices.dedup();
        devices
    }

    /// Online users after `cursor`, at most `limit`.
    pub fn online(&self, limit: usize, cursor: Option<&str>) -> OnlinePage {
        use std::ops::Bound;
        let start = match cursor {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let mut users: Vec<String> = self
            .users
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit + 1)
            .map(|(id, _)| id.to_string())
            .collect();
        let next_cursor = if users.len() > limit {
            users.truncate(limit);
            users.last().cloned()
        } else {
            None
        };
        OnlinePage {
            count: self.users.len(),
            users,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        UserId::from(s)
    }

    #[test]
    fn first_and_last_socket_are_the_transitions() {
        let mut t = PresenceTable::default();
        let dave = uid("dave");
        assert_eq!(t.connect(&dave, "s1", "phone", 0), Some(true));
        assert_eq!(t.connect(&dave, "s2", "laptop", 0), Some(false));
        assert_eq!(t.devices("dave"), vec!["laptop", "phone"]);
        assert!(!t.disconnect(&dave, "s1"));
        assert_eq!(t.status("dave"), Status::Online);
        assert!(t.disconnect(&dave, "s2"));
        assert_eq!(t.status("dave"), Status::Offline);
        assert!(
            !t.disconnect(&dave, "s2"),
            "a second disconnect is not a transition"
        );
    }

    #[test]
    fn room_members_are_counted_per_socket_and_listed_per_user() {
        let mut t = PresenceTable::default();
        let (a, b) = (uid("a"), uid("b"));
        let room = Room::from("r");
        t.connect(&a, "a1", "d", 0);
        t.connect(&a, "a2", "d", 0);
        t.connect(&b, "b1", "d", 0);
        t.rooms(&a, "a1", std::slice::from_ref(&room), true);
        t.rooms(&a, "a2", std::slice::from_ref(&room), true);
        t.rooms(&b, "b1", std::slice::from_ref(&room), true);
        assert_eq!(t.room_online("r"), (vec![a.clone(), b.clone()], 3));
        t.rooms(&b, "b1", std::slice::from_ref(&room), false);
        assert_eq!(t.room_online("r"), (vec![a.clone()], 2));
        t.disconnect(&a, "a1");
        t.disconnect(&a, "a2");
        assert_eq!(t.room_online("r"), (vec![], 0));
    }

    #[test]
    fn status_changes_only_for_online_users() {
        let mut t = PresenceTable::default();
        let a = uid("a");
        assert!(!t.set_status(&a, Status::Away));
        t.connect(&a, "s", "d", 0);
        assert!(t.set_status(&a, Status::Away));
        assert!(!t.set_status(&a, Status::Away));
        assert_eq!(t.status("a"), Status::Away);
    }

    #[test]
    fn online_users_page_in_order() {
        let mut t = PresenceTable::default();
        for u in ["c", "a", "b", "d"] {
            t.connect(&uid(u), "s", "d", 0);
        }
        let p1 = t.online(3, None);
        assert_eq!(p1.count, 4);
        assert_eq!(p1.users, vec!["a", "b", "c"]);
        assert_eq!(p1.next_cursor.as_deref(), Some("c"));
        let p2 = t.online(3, p1.next_cursor.as_deref());
        assert_eq!(p2.users, vec!["d"]);
        assert_eq!(p2.next_cursor, None);
    }

    #[test]
    fn sockets_per_user_are_capped_and_a_known_socket_is_never_refused() {
        let mut t = PresenceTable::default();
        let u = uid("u");
        assert_eq!(t.connect(&u, "s1", "d", 2), Some(true));
        assert_eq!(t.connect(&u, "s2", "d", 2), Some(false));
        assert_eq!(
            t.connect(&u, "s3", "d", 2),
            None,
            "a third socket is refused"
        );
        assert_eq!(
            t.connect(&u, "s2", "d", 2),
            Some(false),
            "re-asserting one is not"
        );
        assert_eq!(
            t.connect(&uid("v"), "s4", "d", 2),
            Some(true),
            "others are not affected"
        );
    }
}
