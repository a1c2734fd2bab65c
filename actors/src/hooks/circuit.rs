//! One hook's circuit breaker: after [`FAILURES`] consecutive failures the hook is not asked
//! for [`OPEN_FOR`]; then one trial request decides whether it closes again. Pure: time comes
//! in as `now`.

use std::time::{Duration, Instant};

/// Consecutive failures that open the circuit.
pub const FAILURES: u32 = 5;
/// How long an open circuit refuses before it lets one trial through.
pub const OPEN_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial request is out; the others are refused until it ends.
    Trial,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Circuit {
    state: State,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            state: State::Closed { failures: 0 },
        }
    }
}

impl Circuit {
    /// May a request go out now? (An open circuit past its time lets exactly one through.)
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::Trial;
                true
            }
            State::Open { .. } | State::Trial => false,
        }
    }

    /// A request admitted earlier succeeded.
    pub fn succeeded(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// A request admitted earlier failed.
    pub fn failed(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < FAILURES => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: now + OPEN_FOR,
            },
        };
    }

    /// Whether the circuit is open (or trying one request): `hook_circuit_open`.
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_open_it_and_one_trial_closes_it() {
        let t0 = Instant::now();
        let mut c = Circuit::default();
        for _ in 0..FAILURES - 1 {
            assert!(c.admit(t0));
            c.failed(t0);
        }
        assert!(!c.is_open());
        assert!(c.admit(t0));
        c.failed(t0);
        assert!(c.is_open());
        assert!(!c.admit(t0 + OPEN_FOR / 2), "open: not asked");
        assert!(c.admit(t0 + OPEN_FOR), "one trial after the pause");
        assert!(!c.admit(t0 + OPEN_FOR), "only one trial at a time");
        c.succeeded();
        assert!(!c.is_open());
        assert!(c.admit(t0 + OPEN_FOR));
    }

    #[test]
    fn a_failed_trial_opens_it_again_and_success_resets_the_count() {
        let t0 = Instant::now();
        let mut c = Circuit::default();
        for _ in 0..FAILURES {
            c.admit(t0);
            c.failed(t0);
        }
        let t1 = t0 + OPEN_FOR;
        assert!(c.admit(t1));
        c.failed(t1);
        assert!(!c.admit(t1 + OPEN_FOR / 2));
        assert!(c.admit(t1 + OPEN_FOR));
        c.succeeded();
        for _ in 0..FAILURES - 1 {
            c.admit(t1);
            c.failed(t1);
        }
        c.admit(t1);
        c.succeeded();
        c.admit(t1);
        c.failed(t1);
        assert!(!c.is_open(), "the count started over after a success");
    }
}
