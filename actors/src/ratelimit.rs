//! Rate limiters as pure state machines: the caller passes `now`, nothing sleeps or spawns.
//!
//! - [`TokenBucket`]: the per-socket limit on any event (contract: 100 events / 10 s).
//! - [`SlidingWindow`]: the per-user limit on `message:send` across all of a user's sockets
//!   (contract: 30 / minute).
//!
//! Both answer a refusal with the time until the next attempt would succeed; the caller sends
//! it as `retryAfterMs` (see [`ceil_millis`]). A refused attempt changes no state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Per-socket limit: `capacity` events per `window`, refilled continuously.
///
/// Kept in the GCRA form of a token bucket: instead of a fractional token count it stores the
/// instant at which the bucket would be full again, which is exact and needs no refill step.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Time one token takes to refill: `window / capacity`.
    interval: Duration,
    /// A full bucket's worth of time; a take is allowed while `full_at - now <= window`.
    window: Duration,
    /// When the bucket will be full again if nothing more is taken (`<= now` means full).
    full_at: Instant,
}

impl TokenBucket {
    /// A full bucket; a `capacity` of 0 is treated as 1.
    pub fn new(capacity: u32, window: Duration, now: Instant) -> Self {
        Self {
            interval: window / capacity.max(1),
            window,
            full_at: now,
        }
    }

    /// Whether the bucket is full at `now` (nothing taken that has not refilled).
    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }

    /// Take one token, or say how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        // A full bucket does not bank extra time: start from `now` at the latest.
        let full_at = self.full_at.max(now) + self.interval;
        let debt = full_at.saturating_duration_since(now);
        if debt > self.window {
            return Err(debt - self.window);
        }
        self.full_at = full_at;
        Ok(())
    }
}

/// Per-user limit: at most `limit` hits in any `window` (exact sliding window of timestamps).
///
/// Holds at most `limit` instants, so memory is bounded by the limit, not by the traffic.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    limit: usize,
    window: Duration,
    /// Accepted hits still inside the window, oldest first.
    hits: VecDeque<Instant>,
}

impl SlidingWindow {
    /// An empty window; a `limit` of 0 is treated as 1.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: usize::try_from(limit.max(1)).unwrap_or(usize::MAX),
            window,
            // Grows on demand: most users never come near the limit.
            hits: VecDeque::new(),
        }
    }

    /// Record a hit, or refuse it with the time until the oldest hit leaves the window.
    pub fn try_hit(&mut self, now: Instant) -> Result<(), Duration> {
        // A hit at `t` counts during `[t, t + window)`.
        while let Some(&oldest) = self.hits.front() {
            if oldest + self.window <= now {
                self.hits.pop_front();
            } else {
                break;
            }
        }
        if self.hits.len() >= self.limit {
            // The limit is at least 1, so a full window always has a front.
            let oldest = self.hits.front().copied().unwrap_or(now);
            return Err((oldest + self.window).saturating_duration_since(now));
        }
        // Keep the deque sorted even if a caller's clock reading lags the last one.
        let at = self.hits.back().map_or(now, |&last| last.max(now));
        self.hits.push_back(at);
        Ok(())
    }

    /// No hits inside the window at `now`: the owner can drop this limiter.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.hits
            .back()
            .is_none_or(|&newest| newest + self.window <= now)
    }
}

/// A retry-after in whole milliseconds, rounded up so a client that waits exactly that long
/// is not refused again.
pub fn ceil_millis(duration: Duration) -> u64 {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bucket_allows_capacity_then_refuses() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, Duration::from_secs(10), t0);
        for i in 0..100 {
            assert_eq!(bucket.try_take(t0), Ok(()), "take {i}");
        }
        assert_eq!(bucket.try_take(t0), Err(100 * MS));
        // Refusals cost nothing: asking again gives the same answer.
        assert_eq!(bucket.try_take(t0), Err(100 * MS));
        assert_eq!(bucket.try_take(t0 + 40 * MS), Err(60 * MS));
    }

    #[test]
    fn bucket_refills_continuously() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, Duration::from_secs(10), t0);
        for _ in 0..100 {
            bucket.try_take(t0).unwrap();
        }
        let t1 = t0 + 100 * MS;
        assert_eq!(bucket.try_take(t1), Ok(()));
        assert!(bucket.try_take(t1).is_err());

        // One second refills ten tokens, no more.
        let t2 = t1 + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(bucket.try_take(t2), Ok(()));
        }
        assert_eq!(bucket.try_take(t2), Err(100 * MS));

        // A long pause refills to capacity, never beyond.
        let t3 = t2 + Duration::from_secs(3600);
        for _ in 0..100 {
            assert_eq!(bucket.try_take(t3), Ok(()));
        }
        assert!(bucket.try_take(t3).is_err());
    }

    #[test]
    fn bucket_zero_capacity_is_one() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, Duration::from_secs(1), t0);
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Err(Duration::from_secs(1)));
    }

    #[test]
    fn window_allows_limit_then_refuses_until_oldest_leaves() {
        let minute = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(30, minute);
        for i in 0..30 {
            assert_eq!(window.try_hit(t0 + i * Duration::from_secs(1)), Ok(()));
        }
        let now = t0 + Duration::from_secs(45);
        // retry_after = oldest + window - now
        assert_eq!(window.try_hit(now), Err(t0 + minute - now));
        assert_eq!(window.try_hit(now), Err(Duration::from_secs(15)));

        // The oldest hit leaves exactly at oldest + window, not a nanosecond earlier.
        let edge = t0 + minute;
        assert_eq!(
            window.try_hit(edge - Duration::from_nanos(1)),
            Err(Duration::from_nanos(1))
        );
        assert_eq!(window.try_hit(edge), Ok(()));
        // That slot is used again; the next one frees at t0 + 1 s + window.
        assert_eq!(window.try_hit(edge), Err(Duration::from_secs(1)));
        assert!(window.hits.len() <= 30);
    }

    #[test]
    fn refused_hits_are_not_recorded() {
        let second = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(2, second);
        window.try_hit(t0).unwrap();
        window.try_hit(t0).unwrap();
        for i in 1..100 {
            assert!(window.try_hit(t0 + i * MS).is_err());
        }
        assert_eq!(window.hits.len(), 2);
        // Had the refusals been counted, this would still be refused.
        assert_eq!(window.try_hit(t0 + second), Ok(()));
        assert_eq!(window.try_hit(t0 + second), Ok(()));
    }

    #[test]
    fn window_is_idle_once_every_hit_left() {
        let second = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(3, second);
        assert!(window.is_idle(t0));
        window.try_hit(t0).unwrap();
        window.try_hit(t0 + 500 * MS).unwrap();
        assert!(!window.is_idle(t0 + second));
        assert!(!window.is_idle(t0 + 1499 * MS));
        assert!(window.is_idle(t0 + 1500 * MS));
    }

    #[test]
    fn window_memory_bounded_by_limit() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(5, Duration::from_secs(60));
        for i in 0..10_000 {
            let _ = window.try_hit(t0 + i * MS);
        }
        assert_eq!(window.hits.len(), 5);
    }

    #[test]
    fn lagging_clock_keeps_order() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(3, Duration::from_secs(1));
        window.try_hit(t0 + 10 * MS).unwrap();
        window.try_hit(t0).unwrap();
        assert!(
            window
                .hits
                .iter()
                .zip(window.hits.iter().skip(1))
                .all(|(a, b)| a <= b)
        );
    }

    #[test]
    fn ceil_millis_rounds_up() {
        assert_eq!(ceil_millis(Duration::ZERO), 0);
        assert_eq!(ceil_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_millis(100 * MS), 100);
        assert_eq!(ceil_millis(100 * MS + Duration::from_nanos(1)), 101);
    }
}
