//! `process_*` gauges, read from `/proc` at scrape time (the node's own memory, CPU and fds).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::metrics;

/// Least time between two reads of /proc: listing `/proc/self/fd` is linear in open sockets and
/// runs on a worker that also serves sessions, so a scrape flood must not repeat it.
const REFRESH_EVERY: Duration = Duration::from_millis(250);

static LAST_REFRESH: Mutex<Option<Instant>> = Mutex::new(None);

/// Refresh the process gauges from /proc (called at scrape time; at most four times a second).
pub fn refresh_process() {
    {
        let mut last = LAST_REFRESH.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < REFRESH_EVERY) {
            return;
        }
        *last = Some(now);
    }
    let m = metrics();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
    {
        m.process_rss.set(kb * 1024);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        // Fields after the command name, which is in parentheses and may contain spaces.
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line (index 11, 12 here).
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let total = (ticks(11) + ticks(12)) / clock_ticks();
        let seen = m.process_cpu.get();
        if total > seen {
            m.process_cpu.inc_by(total - seen);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        m.process_open_fds.set(dir.count() as i64);
    }
    if let Ok((soft, _)) = rlimit_nofile() {
        m.process_max_fds.set(soft as i64);
    }
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux platform we run on.
    100.0
}

fn rlimit_nofile() -> Result<(u64, u64), std::io::Error> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| std::io::Error::other("no open-files line"))?;
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.as_slice() {
        [soft, hard, ..] => Ok((*soft, *hard)),
        _ => Err(std::io::Error::other("unparsable open-files line")),
    }
}
