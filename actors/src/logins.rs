//! Failed logins per client address (refused tokens; the server API counts wrong keys with
//! it too), and a sampler for the log lines a flood repeats.
//!
//! A token check costs real CPU (an ES256 verify is ~340 µs), so one address sending bad
//! tokens could spend a node's CPU on them. [`LoginGuard`] counts failed CONNECTs per address
//! in a fixed window; an address over its budget is refused before its token is looked at.
//! Both types are shared by every socket of a node: a short lock, never held across an await.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once; past it new addresses go unlimited (and are counted)
/// rather than growing the map without bound.
const MAX_TRACKED: usize = 65_536;

/// Failures of one address in the current window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Failed logins per client address in a fixed window (see the module docs).
#[derive(Debug)]
pub struct LoginGuard {
    /// Failures allowed per address per window; 0 turns the guard off.
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginGuard {
    /// A guard allowing `limit` failures per address per `window` (0: no limit).
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` used up its failures: its next CONNECT is refused unchecked.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip)
            .is_some_and(|f| now.duration_since(f.since) < self.window && f.count >= self.limit)
    }

    /// Count a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let window = self.window;
            map.retain(|_, f| now.duration_since(f.since) < window);
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = map.entry(ip).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(entry.since) >= self.window {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
    }
}

/// Lets through at most `per_second` log lines a second and counts the rest, so a flood of
/// refusals neither fills the disk nor hides how many there were.
#[derive(Debug)]
pub struct LogSampler {
    per_second: u32,
    state: Mutex<SamplerState>,
}

#[derive(Debug)]
struct SamplerState {
    second: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogSampler {
    /// A sampler letting `per_second` lines through each second.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: Mutex::new(SamplerState {
                second: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this line should be logged, `n` being the lines suppressed since the
    /// last one that was; `None` when it is suppressed.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let new_second = st
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1));
        if new_second {
            st.second = Some(now);
            st.logged = 0;
        }
        if st.logged >= self.per_second {
            st.suppressed += 1;
            return None;
        }
        st.logged += 1;
        Some(std::mem::take(&mut st.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_is_blocked_after_its_failures_and_free_again_after_the_window() {
        let guard = LoginGuard::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..2 {
            guard.failed(ip(1), t0);
        }
        assert!(!guard.blocked(ip(1), t0));
        guard.failed(ip(1), t0);
        assert!(guard.blocked(ip(1), t0));
        assert!(
            !guard.blocked(ip(2), t0),
            "other addresses are not affected"
        );
        assert!(guard.blocked(ip(1), t0 + Duration::from_secs(59)));
        assert!(!guard.blocked(ip(1), t0 + Duration::from_secs(60)));
        guard.failed(ip(1), t0 + Duration::from_secs(61));
        assert!(
            !guard.blocked(ip(1), t0 + Duration::from_secs(61)),
            "a new window"
        );
    }

    #[test]
    fn a_limit_of_zero_never_blocks() {
        let guard = LoginGuard::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..100 {
            guard.failed(ip(1), now);
        }
        assert!(!guard.blocked(ip(1), now));
    }

    #[test]
    fn the_map_stays_bounded() {
        let guard = LoginGuard::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            guard.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        let len = guard.failures.lock().map(|m| m.len()).unwrap_or(0);
        assert_eq!(len, MAX_TRACKED);
        // Once the old entries expire, new addresses are tracked again.
        let later = now + Duration::from_secs(61);
        guard.failed(ip(200), later);
        assert!(guard.blocked(ip(200), later));
    }

    #[test]
    fn the_sampler_lets_a_few_lines_through_and_counts_the_rest() {
        let sampler = LogSampler::new(2);
        let t0 = Instant::now();
        assert_eq!(sampler.admit(t0), Some(0));
        assert_eq!(sampler.admit(t0), Some(0));
        assert_eq!(sampler.admit(t0), None);
        assert_eq!(sampler.admit(t0), None);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            sampler.admit(t1),
            Some(2),
            "the suppressed lines are reported"
        );
        assert_eq!(sampler.admit(t1), Some(0));
        assert_eq!(sampler.admit(t1), None);
    }
}
