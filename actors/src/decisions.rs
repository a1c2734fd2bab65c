//! The node's `authorize` decision cache: `authorize` answers per (action, user, target), reused for the
//! answer's `cacheSecs`. Sessions read it directly, without a message, so a cached decision
//! costs a hash lookup and no hop; only the Hooks actor writes it. A concurrent map shared
//! between actors is a deliberate exception to message-only actors (see README, "departs from
//! DESIGN"): it holds decisions, never state an actor depends on for correctness.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::ports::hooks::Action;

/// Shards, so sessions on different workers rarely meet on one lock.
const SHARDS: usize = 16;

/// A cached decision: allowed, or refused with a reason.
pub type Cached = Result<(), Arc<str>>;

struct Entry {
    until: Instant,
    decision: Cached,
}

/// See the module docs.
pub struct DecisionCache {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    hasher: foldhash::fast::RandomState,
    /// Most entries per shard; inserts beyond it (after dropping expired ones) are skipped.
    per_shard: usize,
}

/// `action NUL len(user) : user target`: the length makes the split unambiguous whatever
/// the ids contain.
fn key(action: Action, user: &str, target: &str) -> String {
    use std::fmt::Write;
    let action = action.as_str();
    let mut k = String::with_capacity(action.len() + user.len() + target.len() + 8);
    k.push_str(action);
    k.push('\0');
    let _ = write!(k, "{}:", user.len());
    k.push_str(user);
    k.push_str(target);
    k
}

impl DecisionCache {
    /// A cache of at most about `capacity` decisions.
    pub fn new(capacity: usize) -> Self {
        DecisionCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, Entry>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A poisoned shard still holds valid decisions.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decision about `target`, if one is cached and fresh.
    pub fn get(&self, action: Action, user: &str, target: &str, now: Instant) -> Option<Cached> {
        let k = key(action, user, target);
        let shard = self.shard(&k);
        shard
            .get(&k)
            .filter(|e| e.until > now)
            .map(|e| e.decision.clone())
    }

    /// Remember a decision until `until`.
    pub fn put(&self, action: Action, user: &str, target: &str, decision: Cached, until: Instant) {
        let k = key(action, user, target);
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut shard = self.shard(&k);
        if shard.len() >= self.per_shard && !shard.contains_key(&k) {
            shard.retain(|_, e| e.until > now);
            if shard.len() >= self.per_shard {
                return;
            }
        }
        shard.insert(k, Entry { until, decision });
    }

    /// Cached decisions (fresh or not yet swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn decisions_are_kept_per_action_user_and_target_until_they_expire() {
        let cache = DecisionCache::new(100);
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        cache.put(Action::Signal, "alice", "bob", Ok(()), later);
        cache.put(Action::Signal, "alice", "eve", Err("blocked".into()), later);
        assert_eq!(cache.get(Action::Signal, "alice", "bob", now), Some(Ok(())));
        assert_eq!(
            cache.get(Action::Signal, "alice", "eve", now),
            Some(Err("blocked".into()))
        );
        assert_eq!(cache.get(Action::Typing, "alice", "bob", now), None);
        assert_eq!(cache.get(Action::Signal, "bob", "alice", now), None);
        assert_eq!(
            cache.get(Action::Signal, "alice", "bob", later),
            None,
            "expired"
        );
        // Ids containing the separator cannot collide with others.
        cache.put(Action::Signal, "a\0b", "c", Ok(()), later);
        assert_eq!(cache.get(Action::Signal, "a", "b\0c", now), None);
        assert_eq!(cache.get(Action::Signal, "a\0b", "c", now), Some(Ok(())));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = DecisionCache::new(32);
        let until = Instant::now() + Duration::from_secs(60);
        for i in 0..10_000 {
            cache.put(Action::Signal, "u", &i.to_string(), Ok(()), until);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        cache.put(Action::Signal, "u", "x", Ok(()), Instant::now());
        assert!(
            cache
                .get(Action::Signal, "u", "x", Instant::now())
                .is_none()
        );
    }
}
