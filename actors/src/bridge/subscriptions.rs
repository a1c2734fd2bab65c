//! The bridge's pure core: which channels the node wants (the registry's needs, and holds of
//! sessions whose CONNECT waits for its channels), which subscriber connection is the current
//! one, and how long to wait before the next reconnect.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// First pause before reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Wanted channels and the subscriber connection's generation (see the module docs).
#[derive(Debug)]
pub struct Subscriptions {
    wanted: HashSet<String>,
    /// Channels held by connecting sessions, counted (a channel is subscribed while wanted or
    /// held).
    held: HashMap<String, u32>,
    /// Bumped on every (re)connect so a stale stream's end is not mistaken for the current one.
    generation: u64,
    backoff: Duration,
}

impl Subscriptions {
    /// Always wanted: the node's own channel and the broadcast channel.
    pub fn new(always: impl IntoIterator<Item = String>) -> Self {
        Subscriptions {
            wanted: always.into_iter().collect(),
            held: HashMap::new(),
            generation: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Want a channel (or stop wanting it); true when its subscription must change.
    pub fn want(&mut self, channel: &str, on: bool) -> bool {
        let before = self.is_wanted(channel);
        if on {
            self.wanted.insert(channel.to_string());
        } else {
            self.wanted.remove(channel);
        }
        before != self.is_wanted(channel)
    }

    /// Hold a channel once more (or once less); true when its subscription must change.
    pub fn hold(&mut self, channel: &str, on: bool) -> bool {
        let before = self.is_wanted(channel);
        if on {
            *self.held.entry(channel.to_string()).or_default() += 1;
        } else if let Some(n) = self.held.get_mut(channel) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(channel);
            }
        }
        before != self.is_wanted(channel)
    }

    /// Whether the node is (to be) subscribed to `channel`.
    pub fn is_wanted(&self, channel: &str) -> bool {
        self.wanted.contains(channel) || self.held.contains_key(channel)
    }

    /// Every wanted or held channel, to subscribe on a new connection.
    pub fn all(&self) -> Vec<String> {
        self.wanted
            .iter()
            .chain(self.held.keys().filter(|c| !self.wanted.contains(*c)))
            .cloned()
            .collect()
    }

    /// How many channels are subscribed.
    pub fn len(&self) -> usize {
        self.wanted.len()
            + self
                .held
                .keys()
                .filter(|c| !self.wanted.contains(*c))
                .count()
    }

    /// A new subscriber connection is up: its generation (messages tagged with another are
    /// stale), and the backoff starts over.
    pub fn connected(&mut self) -> u64 {
        self.generation += 1;
        self.backoff = FIRST_BACKOFF;
        self.generation
    }

    /// Whether `generation` is the current connection's.
    pub fn is_current(&self, generation: u64) -> bool {
        generation == self.generation
    }

    /// Start the backoff over (a failover was announced: the next attempt should succeed).
    pub fn reset_backoff(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// The pause before the next reconnect attempt (doubling up to a bound).
    pub fn next_backoff(&mut self) -> Duration {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        delay
    }

    /// The pause the next attempt will wait (for logs).
    pub fn backoff(&self) -> Duration {
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_are_counted_once_and_always_channels_stay() {
        let mut s = Subscriptions::new(["node".to_string(), "all".to_string()]);
        assert!(s.want("user:a", true));
        assert!(!s.want("user:a", true));
        assert_eq!(s.len(), 3);
        assert!(s.want("user:a", false));
        assert!(!s.want("user:a", false));
        let mut all = s.all();
        all.sort();
        assert_eq!(all, vec!["all", "node"]);
    }

    #[test]
    fn holds_count_and_keep_a_channel_the_registry_dropped() {
        let mut s = Subscriptions::new([]);
        assert!(s.hold("room:r", true), "first hold subscribes");
        assert!(!s.hold("room:r", true));
        assert!(!s.want("room:r", true), "already subscribed by the holds");
        assert!(!s.hold("room:r", false));
        assert!(!s.want("room:r", false), "still held once");
        assert!(s.is_wanted("room:r"));
        assert_eq!(s.all(), vec!["room:r"]);
        assert_eq!(s.len(), 1);
        assert!(s.hold("room:r", false), "last hold released: unsubscribe");
        assert!(
            !s.hold("room:r", false),
            "releasing what is not held changes nothing"
        );
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn backoff_doubles_to_a_bound_and_resets_on_connect() {
        let mut s = Subscriptions::new([]);
        let delays: Vec<u64> = (0..8)
            .map(|_| s.next_backoff().as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let g = s.connected();
        assert!(s.is_current(g) && !s.is_current(g - 1));
        assert_eq!(s.next_backoff(), Duration::from_millis(100));
    }
}
