//! The registry's pure core: who is on this node (sessions by sid, authenticated sockets by
//! user and room, presence watchers by watched user) and which cluster channels that makes
//! the node need.
//!
//! Generic over the session handle `H`, so it is unit-tested with plain values instead of
//! running sessions. Every change that makes a channel needed or unneeded is answered with the
//! [`Channel`]s concerned; the actor passes them on to the RedisBridge.

use std::collections::{HashMap as StdMap, HashSet as StdSet};
use std::time::{Duration, Instant};

use crate::ids::{Room, Sid, SocketId, UserId};
use crate::keys::Channel;
use crate::ports::presence::SocketPresence;
use crate::ports::registry::{DirectLink, Target};

/// The maps use a fast seeded hash: they hash a user or room name on every delivery.
pub type HashMap<K, V> = StdMap<K, V, foldhash::fast::RandomState>;
/// See [`HashMap`].
pub type HashSet<T> = StdSet<T, foldhash::fast::RandomState>;

/// A socket of the same user and device within this long after a disconnect is a reconnection.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(60);
/// Most recent disconnects remembered for that count (memory bound).
const MAX_RECENT: usize = 100_000;

/// One session on this node.
pub struct Entry<H> {
    /// How to reach it.
    pub handle: H,
    /// Its authenticated socket, once it has one.
    pub socket: Option<Socket>,
    /// Rooms it is a member of.
    rooms: HashSet<Room>,
    /// Users whose presence it watches.
    watching: HashSet<UserId>,
}

/// An authenticated socket.
pub struct Socket {
    /// The public socket id.
    pub id: SocketId,
    /// Its user.
    pub user: UserId,
    /// Its device.
    pub device: String,
    /// Its websocket, when deliveries may be written into it directly.
    pub direct: Option<DirectLink>,
    /// Recoverable events carry their offset (recovery on, a client that can recover).
    pub offsets: bool,
}

/// The node's sessions and their indexes (see the module docs).
pub struct Index<H> {
    sessions: HashMap<Sid, Entry<H>>,
    users: HashMap<UserId, HashSet<Sid>>,
    rooms: HashMap<Room, HashSet<Sid>>,
    watchers: HashMap<UserId, HashSet<Sid>>,
    /// (user, device) → when its last socket here left, to count reconnections.
    recent: HashMap<(UserId, String), Instant>,
    /// When `recent` is next swept of entries older than the window.
    sweep_recent_at: Option<Instant>,
}

impl<H> Default for Index<H> {
    fn default() -> Self {
        Index {
            sessions: HashMap::default(),
            users: HashMap::default(),
            rooms: HashMap::default(),
            watchers: HashMap::default(),
            recent: HashMap::default(),
            sweep_recent_at: None,
        }
    }
}

impl<H> Index<H> {
    /// Sessions on this node.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is on this node.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A new session.
    pub fn register(&mut self, sid: Sid, handle: H) {
        self.sessions.insert(
            sid,
            Entry {
                handle,
                socket: None,
                rooms: HashSet::default(),
                watching: HashSet::default(),
            },
        );
    }

    /// A session ended; answers the channels no longer needed.
    pub fn unregister(&mut self, sid: &Sid, now: Instant) -> Vec<Channel> {
        let Some(entry) = self.sessions.remove(sid) else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        if let Some(socket) = &entry.socket {
            self.remember_disconnect(&socket.user, &socket.device, now);
            if remove_from(&mut self.users, &socket.user, sid) {
                gone.push(Channel::User(socket.user.clone()));
            }
        }
        for room in &entry.rooms {
            if remove_from(&mut self.rooms, room, sid) {
                gone.push(Channel::Room(room.clone()));
            }
        }
        for watched in &entry.watching {
            if remove_from(&mut self.watchers, watched, sid) {
                gone.push(Channel::Watch(watched.clone()));
            }
        }
        gone
    }

    fn remember_disconnect(&mut self, user: &UserId, device: &str, now: Instant) {
        // Swept once a window (so it holds at most two windows of disconnects), or when full.
        if self.recent.len() >= MAX_RECENT || self.sweep_recent_at.is_none_or(|at| now >= at) {
            self.recent
                .retain(|_, at| now.duration_since(*at) < RECONNECT_WINDOW);
            self.sweep_recent_at = Some(now + RECONNECT_WINDOW);
        }
        if self.recent.len() < MAX_RECENT {
            self.recent.insert((user.clone(), device.to_string()), now);
        }
    }

    /// A session's socket authenticated; answers whether it is a reconnection (same user and
    /// device within [`RECONNECT_WINDOW`]) and the channels now needed.
    pub fn authenticate(
        &mut self,
        sid: &Sid,
        socket: Socket,
        rooms: &[Room],
        now: Instant,
    ) -> (bool, Vec<Channel>) {
        let Some(entry) = self.sessions.get_mut(sid) else {
            return (false, Vec::new());
        };
        let reconnected = self
            .recent
            .remove(&(socket.user.clone(), socket.device.clone()))
            .is_some_and(|at| now.duration_since(at) < RECONNECT_WINDOW);
        let user = socket.user.clone();
        entry.socket = Some(socket);
        let mut needed = Vec::new();
        if index_add(&mut self.users, &user, sid) {
            needed.push(Channel::User(user));
        }
        for room in rooms {
            if let (true, Some(channel)) = self.join(sid, room) {
                needed.push(channel);
            }
        }
        (reconnected, needed)
    }

    /// Add a session to a room; answers whether it changed and the channel now needed.
    pub fn join(&mut self, sid: &Sid, room: &Room) -> (bool, Option<Channel>) {
        let Some(entry) = self.sessions.get_mut(sid) else {
            return (false, None);
        };
        if !entry.rooms.insert(room.clone()) {
            return (false, None);
        }
        let first = index_add(&mut self.rooms, room, sid);
        (true, first.then(|| Channel::Room(room.clone())))
    }

    /// Remove a session from a room; answers whether it changed and the channel no longer
    /// needed.
    pub fn leave(&mut self, sid: &Sid, room: &Room) -> (bool, Option<Channel>) {
        let Some(entry) = self.sessions.get_mut(sid) else {
            return (false, None);
        };
        if !entry.rooms.remove(room) {
            return (false, None);
        }
        let last = remove_from(&mut self.rooms, room, sid);
        (true, last.then(|| Channel::Room(room.clone())))
    }

    /// Whether `sid` may watch `users` as well while its user's sessions watch at most `max`
    /// users together (0: no limit); counts what each session watches.
    pub fn may_watch(&self, sid: &Sid, users: &[UserId], max: usize) -> bool {
        let Some(entry) = self.sessions.get(sid) else {
            return true;
        };
        let Some(owner) = entry.socket.as_ref().map(|s| &s.user) else {
            return true;
        };
        if max == 0 {
            return true;
        }
        let added = users
            .iter()
            .filter(|u| !entry.watching.contains(*u))
            .count();
        let now: usize = self
            .users
            .get(owner.as_str())
            .into_iter()
            .flatten()
            .filter_map(|s| self.sessions.get(s))
            .map(|e| e.watching.len())
            .sum();
        now + added <= max
    }

    /// Start or stop watching `users` for a session; answers the channels whose need changed
    /// (`true`: now needed).
    pub fn watch(&mut self, sid: &Sid, users: Vec<UserId>, on: bool) -> Vec<(Channel, bool)> {
        let Some(entry) = self.sessions.get_mut(sid) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for user in users {
            let flipped = if on {
                entry.watching.insert(user.clone());
                index_add(&mut self.watchers, &user, sid)
            } else {
                entry.watching.remove(&user);
                remove_from(&mut self.watchers, &user, sid)
            };
            if flipped {
                changed.push((Channel::Watch(user), on));
            }
        }
        changed
    }

    /// Visit the sessions a target addresses, without copying the index (hot path).
    pub fn each_target(&self, target: &Target, mut visit: impl FnMut(&Sid, &Entry<H>)) {
        let mut each = |sids: Option<&HashSet<Sid>>| {
            for sid in sids.into_iter().flatten() {
                if let Some(entry) = self.sessions.get(sid) {
                    visit(sid, entry);
                }
            }
        };
        match target {
            Target::User(user) => each(self.users.get(user)),
            Target::Room(room) => each(self.rooms.get(room)),
            Target::All => {
                for (sid, entry) in &self.sessions {
                    if entry.socket.is_some() {
                        visit(sid, entry);
                    }
                }
            }
        }
    }

    /// Visit the sessions watching `user`.
    pub fn each_watcher(&self, user: &str, mut visit: impl FnMut(&Sid, &Entry<H>)) {
        for sid in self.watchers.get(user).into_iter().flatten() {
            if let Some(entry) = self.sessions.get(sid) {
                visit(sid, entry);
            }
        }
    }

    /// One session.
    pub fn get(&self, sid: &Sid) -> Option<&Entry<H>> {
        self.sessions.get(sid)
    }

    /// Every session.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<H>> {
        self.sessions.values()
    }

    /// The sessions of `user`.
    pub fn sessions_of(&self, user: &str) -> Vec<Sid> {
        self.users
            .get(user)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every authenticated socket, for presence re-assertion.
    pub fn live_sockets(&self) -> Vec<SocketPresence> {
        self.sessions
            .values()
            .filter_map(|e| {
                let s = e.socket.as_ref()?;
                Some(SocketPresence {
                    user: s.user.clone(),
                    socket: s.id.clone(),
                    device: s.device.clone(),
                    rooms: e.rooms.iter().cloned().collect(),
                })
            })
            .collect()
    }

    /// Every channel the node needs for its sockets now (user, room and watch channels).
    pub fn channels(&self) -> Vec<Channel> {
        let users = self.users.keys().map(|u| Channel::User(u.clone()));
        let rooms = self.rooms.keys().map(|r| Channel::Room(r.clone()));
        let watched = self.watchers.keys().map(|u| Channel::Watch(u.clone()));
        users.chain(rooms).chain(watched).collect()
    }
}

/// Add `sid` under `key`; true when the key is new (first local member).
fn index_add<K>(index: &mut HashMap<K, HashSet<Sid>>, key: &K, sid: &Sid) -> bool
where
    K: std::hash::Hash + Eq + Clone,
{
    match index.get_mut(key) {
        Some(set) => {
            set.insert(sid.clone());
            false
        }
        None => {
            index.insert(key.clone(), HashSet::from_iter([sid.clone()]));
            true
        }
    }
}

/// Remove `sid` from `key`; true when that emptied the key (last local member gone).
fn remove_from<K>(index: &mut HashMap<K, HashSet<Sid>>, key: &K, sid: &Sid) -> bool
where
    K: std::hash::Hash + Eq,
{
    if let Some(set) = index.get_mut(key) {
        set.remove(sid);
        if set.is_empty() {
            index.remove(key);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(user: &str, device: &str) -> Socket {
        Socket {
            id: SocketId::random(),
            user: user.into(),
            device: device.into(),
            direct: None,
            offsets: true,
        }
    }

    fn sids(index: &Index<u32>, target: &Target) -> Vec<u32> {
        let mut out = Vec::new();
        index.each_target(target, |_, e| out.push(e.handle));
        out.sort();
        out
    }

    #[test]
    fn first_and_last_local_member_change_the_channels() {
        let t0 = Instant::now();
        let mut index = Index::default();
        let (a, b) = (Sid::from("a"), Sid::from("b"));
        index.register(a.clone(), 1);
        index.register(b.clone(), 2);
        let room = Room::from("r");
        let (_, needed) =
            index.authenticate(&a, socket("u", "d1"), std::slice::from_ref(&room), t0);
        assert_eq!(
            needed,
            vec![Channel::User("u".into()), Channel::Room(room.clone())]
        );
        let (_, needed) =
            index.authenticate(&b, socket("u", "d2"), std::slice::from_ref(&room), t0);
        assert!(needed.is_empty(), "the node already has both channels");
        assert_eq!(sids(&index, &Target::User("u".into())), vec![1, 2]);
        assert_eq!(sids(&index, &Target::Room(room.clone())), vec![1, 2]);
        assert_eq!(sids(&index, &Target::All), vec![1, 2]);
        assert!(index.unregister(&a, t0).is_empty());
        assert_eq!(
            index.unregister(&b, t0),
            vec![Channel::User("u".into()), Channel::Room(room)]
        );
        assert!(index.is_empty());
    }

    #[test]
    fn a_socket_back_within_the_window_is_a_reconnection() {
        let t0 = Instant::now();
        let mut index = Index::default();
        let a = Sid::from("a");
        index.register(a.clone(), 1);
        index.authenticate(&a, socket("u", "phone"), &[], t0);
        index.unregister(&a, t0);
        let b = Sid::from("b");
        index.register(b.clone(), 2);
        let (reconnected, _) =
            index.authenticate(&b, socket("u", "phone"), &[], t0 + RECONNECT_WINDOW / 2);
        assert!(reconnected);
        index.unregister(&b, t0);
        let c = Sid::from("c");
        index.register(c.clone(), 3);
        let late = t0 + RECONNECT_WINDOW * 2;
        assert!(!index.authenticate(&c, socket("u", "phone"), &[], late).0);
    }

    #[test]
    fn watches_need_a_channel_per_watched_user() {
        let t0 = Instant::now();
        let mut index: Index<u32> = Index::default();
        let (a, b) = (Sid::from("a"), Sid::from("b"));
        index.register(a.clone(), 1);
        index.register(b.clone(), 2);
        let v = UserId::from("v");
        assert_eq!(
            index.watch(&a, vec![v.clone()], true),
            vec![(Channel::Watch(v.clone()), true)]
        );
        assert!(index.watch(&b, vec![v.clone()], true).is_empty());
        let mut seen = Vec::new();
        index.each_watcher("v", |_, e| seen.push(e.handle));
        seen.sort();
        assert_eq!(seen, vec![1, 2]);
        assert!(index.watch(&a, vec![v.clone()], false).is_empty());
        assert_eq!(index.unregister(&b, t0), vec![Channel::Watch(v)]);
    }

    #[test]
    fn live_sockets_describe_authenticated_sockets_and_their_rooms() {
        let t0 = Instant::now();
        let mut index = Index::default();
        let room = Room::from("r");
        for (i, user) in ["b", "a", "a"].iter().enumerate() {
            let sid = Sid::from(format!("s{i}"));
            index.register(sid.clone(), i as u32);
            index.authenticate(&sid, socket(user, "d"), std::slice::from_ref(&room), t0);
        }
        index.register(Sid::from("anon"), 9);
        let live = index.live_sockets();
        assert_eq!(live.len(), 3);
        assert!(live.iter().all(|s| s.rooms == vec![room.clone()]));
        assert_eq!(index.sessions_of("a").len(), 2);
        assert_eq!(index.len(), 4);
        let (changed, gone) = index.leave(&Sid::from("s0"), &room);
        assert!(changed && gone.is_none());
        assert_eq!(index.join(&Sid::from("s0"), &room), (true, None));
        assert_eq!(index.join(&Sid::from("s0"), &room), (false, None));
    }
}
