//! The Presence actor: who is online on which sockets and devices, and each user's status.
//!
//! Single-node mode keeps the table in memory ([`PresenceTable`]); transitions (first socket of a
//! user → online, last socket gone → offline, status changes) are reported to the registry, which
//! notifies the watchers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use crate::registry::{PresenceChange, PresenceChanged};

/// A user id (the JWT subject), shared cheaply between indexes.
pub type UserId = Arc<str>;

/// A user's presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// At least one socket connected, active.
    Online,
    /// At least one socket connected, user set away.
    Away,
    /// No socket connected.
    Offline,
}

impl Status {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }

    /// Parse a status a client may set (`online` or `away`).
    pub fn settable(s: &str) -> Option<Status> {
        match s {
            "online" => Some(Status::Online),
            "away" => Some(Status::Away),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct UserPresence {
    /// socket id → device id.
    sockets: HashMap<String, String>,
    status: Status,
}

/// The presence table: pure state, unit-tested without actors.
#[derive(Debug, Default)]
pub struct PresenceTable {
    users: BTreeMap<UserId, UserPresence>,
}

/// One page of online users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlinePage {
    /// How many users are online in all.
    pub count: usize,
    /// This page, ascending by id.
    pub users: Vec<String>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl PresenceTable {
    /// Add a socket; true when it is the user's first (the user comes online).
    pub fn connect(&mut self, user: &UserId, socket: &str, device: &str) -> bool {
        let entry = self
            .users
            .entry(user.clone())
            .or_insert_with(|| UserPresence {
                sockets: HashMap::new(),
                status: Status::Online,
            });
        let first = entry.sockets.is_empty();
        entry.sockets.insert(socket.to_string(), device.to_string());
        first
    }

    /// Remove a socket; true when it was the user's last (the user goes offline).
    pub fn disconnect(&mut self, user: &UserId, socket: &str) -> bool {
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

/// A socket of `user` connected.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceConnect {
    /// The user.
    pub user: UserId,
    /// The public socket id.
    pub socket: String,
    /// The device id.
    pub device: String,
}

/// A socket of `user` is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceDisconnect {
    /// The user.
    pub user: UserId,
    /// The public socket id.
    pub socket: String,
}

/// A user sets their status.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetStatus {
    /// The user.
    pub user: UserId,
    /// The new status.
    pub status: Status,
}

/// Statuses of several users.
#[derive(Message)]
#[rtype(result = "Vec<(String, Status)>")]
pub struct QueryStatuses {
    /// Who to look up.
    pub users: Vec<String>,
}

/// A page of online users.
#[derive(Message)]
#[rtype(result = "OnlinePage")]
pub struct OnlineUsers {
    /// Page size.
    pub limit: usize,
    /// Start after this id.
    pub cursor: Option<String>,
}

/// The Presence actor (see the module docs).
pub struct Presence {
    table: PresenceTable,
    notify: Recipient<PresenceChanged>,
}

impl Presence {
    /// A presence actor that reports transitions to `notify` (the registry).
    pub fn new(notify: Recipient<PresenceChanged>) -> Self {
        Presence {
            table: PresenceTable::default(),
            notify,
        }
    }

    fn changed(&self, user: UserId, change: PresenceChange) {
        self.notify.do_send(PresenceChanged { user, change });
    }
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<PresenceConnect> for Presence {
    type Result = ();

    fn handle(&mut self, msg: PresenceConnect, _ctx: &mut Context<Self>) {
        if self.table.connect(&msg.user, &msg.socket, &msg.device) {
            self.changed(msg.user, PresenceChange::Online);
        }
    }
}

impl Handler<PresenceDisconnect> for Presence {
    type Result = ();

    fn handle(&mut self, msg: PresenceDisconnect, _ctx: &mut Context<Self>) {
        if self.table.disconnect(&msg.user, &msg.socket) {
            self.changed(msg.user, PresenceChange::Offline);
        }
    }
}

impl Handler<SetStatus> for Presence {
    type Result = ();

    fn handle(&mut self, msg: SetStatus, _ctx: &mut Context<Self>) {
        if self.table.set_status(&msg.user, msg.status) {
            self.changed(msg.user, PresenceChange::Status(msg.status));
        }
    }
}

impl Handler<QueryStatuses> for Presence {
    type Result = MessageResult<QueryStatuses>;

    fn handle(&mut self, msg: QueryStatuses, _ctx: &mut Context<Self>) -> Self::Result {
        let statuses = msg
            .users
            .into_iter()
            .map(|u| {
                let status = self.table.status(&u);
                (u, status)
            })
            .collect();
        MessageResult(statuses)
    }
}

impl Handler<OnlineUsers> for Presence {
    type Result = MessageResult<OnlineUsers>;

    fn handle(&mut self, msg: OnlineUsers, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.table.online(msg.limit, msg.cursor.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> UserId {
        Arc::from(s)
    }

    #[test]
    fn first_and_last_socket_are_the_transitions() {
        let mut t = PresenceTable::default();
        let dave = uid("dave");
        assert!(t.connect(&dave, "s1", "phone"));
        assert!(!t.connect(&dave, "s2", "laptop"));
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
    fn status_changes_only_for_online_users() {
        let mut t = PresenceTable::default();
        let a = uid("a");
        assert!(!t.set_status(&a, Status::Away));
        t.connect(&a, "s", "d");
        assert!(t.set_status(&a, Status::Away));
        assert!(!t.set_status(&a, Status::Away));
        assert_eq!(t.status("a"), Status::Away);
    }

    #[test]
    fn online_users_page_in_order() {
        let mut t = PresenceTable::default();
        for u in ["c", "a", "b", "d"] {
            t.connect(&uid(u), "s", "d");
        }
        let p1 = t.online(3, None);
        assert_eq!(p1.count, 4);
        assert_eq!(p1.users, vec!["a", "b", "c"]);
        assert_eq!(p1.next_cursor.as_deref(), Some("c"));
        let p2 = t.online(3, p1.next_cursor.as_deref());
        assert_eq!(p2.users, vec!["d"]);
        assert_eq!(p2.next_cursor, None);
    }
}
