//! Every Redis key and pub/sub channel name, built and parsed here and nowhere else.
//!
//! Key names are the reference design's (`user:{id}:sockets`, `socket:{id}:user`,
//! `online_users`, …) behind an optional prefix; channels are `sb:…` behind the same prefix.
//! Lua scripts receive the keys they touch from these functions and never build names
//! themselves, so a layout change happens in this file only.

use crate::ids::{NodeId, Room, SocketId, UserId};

/// The naming scheme of one deployment (its prefix; empty by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// What a channel addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Every socket of a user (`sb:user:{id}`).
    User(UserId),
    /// Every member socket of a room (`sb:room:{room}`).
    Room(Room),
    /// Every socket watching a user's presence (`sb:watch:{id}`).
    Watch(UserId),
    /// One node (`sb:node:{id}`).
    Node(NodeId),
    /// Every node (`sb:broadcast`).
    Broadcast,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The prefix every key and channel carries.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, parts: &[&str]) -> String {
        let len = self.prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut out = String::with_capacity(len);
        out.push_str(&self.prefix);
        for part in parts {
            out.push_str(part);
        }
        out
    }

    // --- presence keys -------------------------------------------------------------------

    /// `user:{id}:sockets` SET of socket ids.
    pub fn user_sockets(&self, user: &str) -> String {
        self.key(&["user:", user, ":sockets"])
    }

    /// `user:{id}:socket_devices` HASH socket id → device id (so a disconnect can tell whether
    /// the device is still used by another socket without building key names in Lua).
    pub fn user_socket_devices(&self, user: &str) -> String {
        self.key(&["user:", user, ":socket_devices"])
    }

    /// `user:{id}:status` STRING `online`/`away`.
    pub fn user_status(&self, user: &str) -> String {
        self.key(&["user:", user, ":status"])
    }

    /// `user:{id}:devices` SET of device ids.
    pub fn user_devices(&self, user: &str) -> String {
        self.key(&["user:", user, ":devices"])
    }

    /// `socket:{id}:user` HASH (userId, deviceId, connectedAt, serverInstance).
    pub fn socket_user(&self, socket: &str) -> String {
        self.key(&["socket:", socket, ":user"])
    }

    /// `socket:{id}:rooms` SET of the rooms a socket is in (to leave them when it goes).
    pub fn socket_rooms(&self, socket: &str) -> String {
        self.key(&["socket:", socket, ":rooms"])
    }

    /// `room:{name}:sockets` HASH socket id → user id: who is in a room, cluster-wide.
    pub fn room_sockets(&self, room: &str) -> String {
        self.key(&["room:", room, ":sockets"])
    }

    /// `online_users` ZSET scored by last seen.
    pub fn online_users(&self) -> String {
        self.key(&["online_users"])
    }

    /// `nodes` SET of node ids that registered sockets.
    pub fn nodes(&self) -> String {
        self.key(&["nodes"])
    }

    /// `node:{id}:alive` liveness key (TTL).
    pub fn node_alive(&self, node: &str) -> String {
        self.key(&["node:", node, ":alive"])
    }

    /// `node:{id}:addr` STRING: the node's internal base URL (`http://10.0.0.7:3000`), where other
    /// nodes forward requests for its sessions. Written with `node:{id}:alive` and its TTL.
    pub fn node_addr(&self, node: &str) -> String {
        self.key(&["node:", node, ":addr"])
    }

    /// `node:{id}:stats` STRING: the node's JSON stats snapshot for the admin page, rewritten
    /// every second with a TTL, so a dead node's numbers vanish with it.
    pub fn node_stats(&self, node: &str) -> String {
        self.key(&["node:", node, ":stats"])
    }

    /// `node:{id}:sockets` SET of the node's socket ids.
    pub fn node_sockets(&self, node: &str) -> String {
        self.key(&["node:", node, ":sockets"])
    }

    /// `node:{id}:sweeping` lock: one surviving node sweeps a dead one.
    pub fn node_sweeping(&self, node: &str) -> String {
        self.key(&["node:", node, ":sweeping"])
    }

    /// The keys a socket's connect and disconnect scripts touch, in their `KEYS` order.
    pub fn transition(&self, user: &UserId, socket: &SocketId, node: &NodeId) -> [String; 7] {
        [
            self.user_sockets(user),
            self.socket_user(socket),
            self.online_users(),
            self.user_status(user),
            self.user_devices(user),
            self.node_sockets(node),
            self.user_socket_devices(user),
        ]
    }

    // --- limits --------------------------------------------------------------------------

    /// `rate_limit:{id}:messages` ZSET sliding window of a user's `message:send`.
    pub fn rate_limit_messages(&self, user: &str) -> String {
        self.key(&["rate_limit:", user, ":messages"])
    }

    /// `rate_limit:{id}:bytes:{day}` STRING: bytes of `message:send` text a user stored on
    /// one UTC day (days since the epoch); expires after two days.
    pub fn rate_limit_bytes(&self, user: &str, day: u64) -> String {
        self.key(&["rate_limit:", user, ":bytes:", &day.to_string()])
    }

    // --- channels ------------------------------------------------------------------------

    /// The channel of `channel`.
    pub fn channel(&self, channel: &Channel) -> String {
        match channel {
            Channel::User(user) => self.key(&["sb:user:", user]),
            Channel::Room(room) => self.key(&["sb:room:", room]),
            Channel::Watch(user) => self.key(&["sb:watch:", user]),
            Channel::Node(node) => self.key(&["sb:node:", node]),
            Channel::Broadcast => self.key(&["sb:broadcast"]),
        }
    }

    /// The recovery stream of a channel: recoverable events published to it, kept for the
    /// recovery window (`rec:sb:user:{id}`, …).
    pub fn stream(&self, channel: &Channel) -> String {
        let name = self.channel(channel);
        let mut out = String::with_capacity(name.len() + 4);
        out.push_str(&self.prefix);
        out.push_str("rec:");
        out.push_str(&name[self.prefix.len()..]);
        out
    }

    /// `rec:clock` HASH (`ms`, `seq`): where recoverable events get their offsets.
    pub fn recovery_clock(&self) -> String {
        self.key(&["rec:clock"])
    }

    /// `rec:session:{pid}`: a socket's state, kept for the recovery window after it goes.
    pub fn recovery_session(&self, pid: &str) -> String {
        self.key(&["rec:session:", pid])
    }

    /// What a channel name addresses; `None` for names that are not ours.
    pub fn parse_channel(&self, name: &str) -> Option<Channel> {
        let name = name
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("sb:")?;
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        if let Some(user) = name.strip_prefix("user:") {
            non_empty(user).map(|u| Channel::User(u.into()))
        } else if let Some(room) = name.strip_prefix("room:") {
            non_empty(room).map(|r| Channel::Room(r.into()))
        } else if let Some(user) = name.strip_prefix("watch:") {
            non_empty(user).map(|u| Channel::Watch(u.into()))
        } else if let Some(node) = name.strip_prefix("node:") {
            non_empty(node).map(|n| Channel::Node(n.into()))
        } else if name == "broadcast" {
            Some(Channel::Broadcast)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_reference_layout_behind_the_prefix() {
        let k = Keys::new("p:");
        assert_eq!(k.user_sockets("u"), "p:user:u:sockets");
        assert_eq!(k.socket_user("s"), "p:socket:s:user");
        assert_eq!(k.online_users(), "p:online_users");
        assert_eq!(k.user_status("u"), "p:user:u:status");
        assert_eq!(k.user_devices("u"), "p:user:u:devices");
        assert_eq!(k.node_alive("n"), "p:node:n:alive");
        assert_eq!(k.node_addr("n"), "p:node:n:addr");
        assert_eq!(k.node_sockets("n"), "p:node:n:sockets");
        assert_eq!(k.node_stats("n"), "p:node:n:stats");
        assert_eq!(k.rate_limit_messages("u"), "p:rate_limit:u:messages");
        assert_eq!(k.room_sockets("r"), "p:room:r:sockets");
        assert_eq!(k.socket_rooms("s"), "p:socket:s:rooms");
        assert_eq!(k.stream(&Channel::Room("r".into())), "p:rec:sb:room:r");
        assert_eq!(k.recovery_session("x"), "p:rec:session:x");
        assert_eq!(Keys::default().nodes(), "nodes");
    }

    #[test]
    fn channels_round_trip() {
        let k = Keys::new("x-");
        for channel in [
            Channel::User("a:b".into()),
            Channel::Room("doc:1".into()),
            Channel::Watch("w".into()),
            Channel::Node("node-1".into()),
            Channel::Broadcast,
        ] {
            let name = k.channel(&channel);
            assert!(name.starts_with("x-sb:"), "{name}");
            assert_eq!(k.parse_channel(&name), Some(channel));
        }
    }

    #[test]
    fn foreign_channels_are_not_ours() {
        let k = Keys::new("x-");
        assert_eq!(k.parse_channel("sb:user:a"), None, "no prefix");
        assert_eq!(k.parse_channel("x-sb:user:"), None, "empty id");
        assert_eq!(k.parse_channel("x-sb:other:a"), None);
        assert_eq!(k.parse_channel("x-user:a"), None);
    }
}
