//! The deliverer's pure core: which events of a batch are too old to keep trying (dead
//! letters), and how long to wait after a failed delivery.

use std::time::{Duration, SystemTime};

use crate::ports::journal::OutboxEvent;

/// First pause after a failed delivery.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A batch split into what to give up on and what to deliver.
#[derive(Debug, Default)]
pub struct Batch {
    /// Ids of events older than the delivery bound: dead-lettered, not delivered.
    pub dead: Vec<i64>,
    /// Events to deliver, oldest first.
    pub deliver: Vec<OutboxEvent>,
}

/// Split `events` (oldest first): those created more than `max_age` before `now` are dead.
pub fn split(events: Vec<OutboxEvent>, now: SystemTime, max_age: Duration) -> Batch {
    let mut batch = Batch::default();
    for event in events {
        let age = now.duration_since(event.created_at).unwrap_or_default();
        if age > max_age {
            batch.dead.push(event.id);
        } else {
            batch.deliver.push(event);
        }
    }
    batch
}

/// Doubling pauses between failed attempts, reset by a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// The pause after one more failure.
    pub fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        pause
    }

    /// A delivery succeeded.
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(id: i64, created_at: SystemTime) -> OutboxEvent {
        OutboxEvent {
            id,
            attempts: 0,
            created_at,
            event: json!({"id": id.to_string()}),
        }
    }

    #[test]
    fn events_past_the_bound_are_dead_letters() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let batch = split(
            vec![
                event(1, now - hour * 2),
                event(2, now - hour / 2),
                event(3, now),
            ],
            now,
            hour,
        );
        assert_eq!(batch.dead, vec![1]);
        let ids: Vec<i64> = batch.deliver.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![2, 3]);
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..8).map(|_| b.failed().as_secs()).collect();
        assert_eq!(pauses, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.failed(), FIRST_BACKOFF);
    }
}
