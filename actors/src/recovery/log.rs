//! The single-node recovery state, pure: recoverable events per channel (trimmed by time and
//! bounded in length) and the sessions kept for the recovery window. Time comes in as
//! milliseconds; the Redis store keeps the same things in Redis with the same rules.

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
    window_ms: u64,
    max_len: usize,
}

impl RecoveryLog {
    /// Events and sessions kept `window_ms`, at most `max_len` events per channel.
    pub fn new(window_ms: u64, max_len: usize) -> Self {
        RecoveryLog {
            streams: HashMap::new(),
            sessions: HashMap::new(),
            window_ms,
            max_len: max_len.max(1),
        }
    }

    /// Record an event of `channel` (events arrive in offset order).
    pub fn append(&mut self, channel: Channel, event: Recorded) {
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
        self.sessions.retain(|_, (expires, _)| *expires > now_ms);
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
        self.sessions
            .insert(pid, (now_ms.saturating_add(ttl_ms), session));
    }

    /// Take a kept session of `user` (once); another user's stays where it is.
    pub fn take(&mut self, pid: &str, user: &str, now_ms: u64) -> Option<SavedSession> {
        if self.sessions.get(pid)?.1.user != user {
            return None;
        }
        let (expires, session) = self.sessions.remove(pid)?;
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

    fn seqs(events: &[Recorded]) -> Vec<u64> {
        events.iter().map(|e| e.offset.seq).collect()
    }

    #[test]
    fn replay_merges_the_channels_in_order_after_the_offset() {
        let mut log = RecoveryLog::new(60_000, 100);
        let (u, r) = (Channel::User("u".into()), Channel::Room("r".into()));
        log.append(u.clone(), ev(1000, 1));
        log.append(r.clone(), ev(1000, 2));
        log.append(u.clone(), ev(1001, 3));
        log.append(r.clone(), ev(1002, 4));
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
            log.append(u.clone(), ev(1000, seq));
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
        log.append(u.clone(), ev(1000, 1));
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
}
