//! `process_*` gauges, read from `/proc` at scrape time (the node's own memory, CPU and fds).

use super::metrics;

/// Refresh the process gauges from /proc (called at scrape time).
pub fn refresh_process() {
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
