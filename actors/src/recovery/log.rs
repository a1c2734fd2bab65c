//! The single-node recovery state, pure: recoverable events per channel (trimmed by time and
//! bounded in length) and the sessions kept for the recovery window. Time comes in as
//! milliseconds; the Redis store keeps the same things in Redis with the same rules.
//!
//! Only a kept session can be recovered, and it replays only its own channels; a room or
//! presence event that no kept session could replay is therefore not recorded (every connect
//! notifies its user's watchers, and recording that for users nobody watches cost ~0.8 KiB per
//! idle connection). Connected sessions are kept too, so "no kept session" covers live ones.

use std::collections::{HashMap, VecDeque};

use switchboard_protocol::offset::Offset;

use crate::keys::Channel;
use crate::ports::recovery::{Recorded, SavedSession};

#[derive(Debug, Default)]
struct Stream {
    entries: VecDeque<Recorded>,
    /// The newest offset trimmed away: a replay after an earlier offset would miss it.
    max_deleted: Option<Offset>,
}

/// See the module docs.
#[derive(Debug)]
pub struct RecoveryLog {
    streams: HashMap<Channel, Stream>,
    sessions: HashMap<String, (u64, SavedSession)>,
    /// How many kept sessions are in each room or watch each user.
    readers: HashMap<Channel, u32>,
    window_ms: u64,
    max_len: usize,
}

impl RecoveryLog {
    /// Events and sessions kept `window_ms`, at most `max_len` events per channel.
    pub fn new(window_ms: u64, max_len: usize) -> Self {
        RecoveryLog {
            streams: HashMap::new(),
            sessions: HashMap::new(),
            readers: HashMap::new(),
            window_ms,
            max_len: max_len.max(1),
        }
    }

    /// Record an event of `channel` (events arrive in offset order), unless it is a room or
    /// watch event that no connected socket got (`live`) and no kept session could replay.
    pub fn append(&mut self, channel: Channel, event: Recorded, live: bool) {
        if !live
            && matches!(channel, Channel::Room(_) | Channel::Watch(_))
            && !self.readers.contains_key(&channel)
        {
            return;
        }
        let stream = self.streams.entry(channel).or_default();
        stream.entries.push_back(event);
        while stream.entries.len() > self.max_len {
            if let Some(old) = stream.entries.pop_front() {
                stream.max_deleted = Some(old.offset);
            }
        }
    }

    /// Drop what is older than the window.
    pub fn trim(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        self.streams.retain(|_, stream| {
            while stream.entries.front().is_some_and(|e| e.offset.ms < cutoff) {
                if let Some(old) = stream.entries.pop_front() {
                    stream.max_deleted = Some(old.offset);
                }
            }
            // An empty stream holds nothing a valid (in-window) offset could miss.
            !stream.entries.is_empty()
        });
        let mut expired = Vec::new();
        self.sessions.retain(|_, (expires, session)| {
            let keep = *expires > now_ms;
            if !keep {
                expired.push(std::mem::take(session));
            }
            keep
        });
        for session in &expired {
            self.count_readers(session, false);
        }
    }

    /// Count `session` in (or out of) the readers of its rooms and watched users.
    fn count_readers(&mut self, session: &SavedSession, add: bool) {
        let rooms = session
            .rooms
            .iter()
            .map(|r| Channel::Room(r.as_str().into()));
        let watched = session
            .watching
            .iter()
            .map(|u| Channel::Watch(u.as_str().into()));
        for channel in rooms.chain(watched) {
            if add {
                *self.readers.entry(channel).or_default() += 1;
            } else if let Some(n) = self.readers.get_mut(&channel) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.readers.remove(&channel);
                }
            }
        }
    }

    /// The events of `channels` after `after`, in order; `None` when the offset is older than
    /// the window or an event after it was trimmed away.
    pub fn replay(
        &self,
        channels: &[Channel],
        after: Offset,
        now_ms: u64,
    ) -> Option<Vec<Recorded>> {
        if after.ms.saturating_add(self.window_ms) < now_ms {
            return None;
        }
        let mut out = Vec::new();
        for channel in channels {
            let Some(stream) = self.streams.get(channel) else {
                continue;
            };
            if stream.max_deleted.is_some_and(|d| d > after) {
                return None;
            }
            out.extend(stream.entries.iter().filter(|e| e.offset > after).cloned());
        }
        out.sort_by_key(|e| e.offset);
        out.dedup_by_key(|e| e.offset);
        Some(out)
    }

    /// Keep a session until `now_ms + ttl_ms`.
    pub fn save(&mut self, pid: String, session: SavedSession, now_ms: u64, ttl_ms: u64) {
        self.count_readers(&session, true);
        let old = self
            .sessions
            .insert(pid, (now_ms.saturating_add(ttl_ms), session));
        if let Some((_, old)) = old {
            self.count_readers(&old, false);
        }
    }

    /// Take a kept session of `user` (once); another user's stays where it is.
    pub fn take(&mut self, pid: &str, user: &str, now_ms: u64) -> Option<SavedSession> {
        if self.sessions.get(pid)?.1.user != user {
            return None;
        }
        let (expires, session) = self.sessions.remove(pid)?;
        self.count_readers(&session, false);
        (expires > now_ms).then_some(session)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::transport::Outgoing;

    fn ev(ms: u64, seq: u64) -> Recorded {
        Recorded {
            offset: Offset { ms, seq },
            frames: Arc::from(vec![Outgoing::Text(format!("42[\"e\",{seq}]").into())]),
            except: None,
        }
    }

    fn member(room: &str) -> SavedSession {
        SavedSession {
            user: "u".into(),
            socket: "s".into(),
            rooms: vec![room.into()],
            watching: vec![],
        }
    }

    fn seqs(events: &[Recorded]) -> Vec<u64> {
        events.iter().map(|e| e.offset.seq).collect()
    }

    #[test]
    fn replay_merges_the_channels_in_order_after_the_offset() {
        let mut log = RecoveryLog::new(60_000, 100);
        let (u, r) = (Channel::User("u".into()), Channel::Room("r".into()));
        log.append(u.clone(), ev(1000, 1), true);
        log.append(r.clone(), ev(1000, 2), true);
        log.append(u.clone(), ev(1001, 3), true);
        log.append(r.clone(), ev(1002, 4), true);
        let after = Offset { ms: 1000, seq: 1 };
        assert_eq!(
            seqs(&log.replay(&[u.clone(), r.clone()], after, 2000).unwrap()),
            vec![2, 3, 4]
        );
        assert_eq!(seqs(&log.replay(&[u], after, 2000).unwrap()), vec![3]);
        let unknown = Channel::Room("other".into());
        assert_eq!(log.replay(&[unknown], after, 2000).unwrap().len(), 0);
    }

    #[test]
    fn a_trimmed_event_after_the_offset_makes_the_replay_incomplete() {
        let mut log = RecoveryLog::new(60_000, 2);
        let u = Channel::User("u".into());
        for seq in 1..=4 {
            log.append(u.clone(), ev(1000, seq), true);
        }
        assert!(
            log.replay(std::slice::from_ref(&u), Offset { ms: 1000, seq: 1 }, 2000)
                .is_none()
        );
        assert_eq!(
            seqs(
                &log.replay(std::slice::from_ref(&u), Offset { ms: 1000, seq: 2 }, 2000)
                    .unwrap()
            ),
            vec![3, 4]
        );
    }

    #[test]
    fn offsets_and_sessions_older_than_the_window_are_not_recovered() {
        let mut log = RecoveryLog::new(10_000, 100);
        let u = Channel::User("u".into());
        log.append(u.clone(), ev(1000, 1), true);
        assert!(
            log.replay(
                std::slice::from_ref(&u),
                Offset { ms: 1000, seq: 0 },
                20_000
            )
            .is_none()
        );
        log.trim(20_000);
        assert!(log.streams.is_empty());
        let s = SavedSession {
            user: "u".into(),
            socket: "s".into(),
            rooms: vec![],
            watching: vec![],
        };
        log.save("p".into(), s.clone(), 0, 10_000);
        assert_eq!(log.take("p", "v", 9_999), None, "another user's pid");
        assert_eq!(
            log.take("p", "u", 9_999),
            Some(s.clone()),
            "still there for its user"
        );
        assert_eq!(log.take("p", "u", 9_999), None, "taken once");
        log.save("q".into(), s, 0, 10_000);
        assert_eq!(log.take("q", "u", 10_000), None, "expired");
    }

    #[test]
    fn room_and_presence_events_are_recorded_only_while_a_kept_session_reads_them() {
        let mut log = RecoveryLog::new(60_000, 100);
        let (r, w) = (Channel::Room("r".into()), Channel::Watch("v".into()));
        let everyone = [r.clone(), w.clone()];
        let after = Offset { ms: 1000, seq: 0 };
        log.append(r.clone(), ev(1000, 1), false);
        log.append(w.clone(), ev(1000, 2), false);
        assert!(log.streams.is_empty(), "nobody could replay them");
        log.append(r.clone(), ev(1000, 3), true);
        assert_eq!(
            seqs(&log.replay(&everyone, after, 2000).unwrap()),
            vec![3],
            "a connected socket got it: it could come back for it"
        );
        let watcher = SavedSession {
            watching: vec!["v".into()],
            rooms: vec![],
            ..member("")
        };
        log.save("a".into(), watcher.clone(), 1000, 60_000);
        log.save("b".into(), member("r"), 1000, 10_000);
        log.save("c".into(), member("r"), 1000, 60_000);
        log.append(r.clone(), ev(1001, 4), false);
        log.append(w.clone(), ev(1001, 5), false);
        assert_eq!(
            seqs(&log.replay(&everyone, after, 2000).unwrap()),
            vec![3, 4, 5]
        );
        // b expires and c leaves: the room has no reader left, the watch still has a.
        log.trim(11_001);
        assert_eq!(log.take("c", "u", 11_001), Some(member("r")));
        log.append(r.clone(), ev(11_002, 6), false);
        log.append(w.clone(), ev(11_002, 7), false);
        assert_eq!(
            seqs(&log.replay(&everyone, after, 12_000).unwrap()),
            vec![3, 4, 5, 7]
        );
        // Saving a again without the watch replaces its old reading.
        log.save("a".into(), member("x"), 12_000, 60_000);
        log.append(w.clone(), ev(12_001, 8), false);
        assert_eq!(
            seqs(&log.replay(&everyone, after, 13_000).unwrap()),
            vec![3, 4, 5, 7]
        );
    }
}
