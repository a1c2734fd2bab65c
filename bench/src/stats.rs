//! Counters shared by every client task: delivery tracking per message id, latency samples,
//! errors, and the server's RSS/CPU sampled from `/proc`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Number of independent locks the delivery tracker and the latency samples are split over.
const SHARDS: usize = 64;

/// Most error messages kept verbatim in the result (the count is always exact).
const MAX_ERROR_SAMPLES: usize = 20;

/// Microseconds since the Unix epoch (sender and receiver share the machine's clock).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Lock a mutex, recovering the data if a task panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything the client tasks record during a run.
#[derive(Debug)]
pub struct Recorder {
    /// Delivery counts per key (message id, or `id * members + member` for room fan-out).
    seen: Vec<Mutex<HashMap<u64, u32>>>,
    /// Latency samples in microseconds.
    latencies: Vec<Mutex<Vec<u64>>>,
    /// Distinct keys delivered.
    pub delivered: AtomicU64,
    /// Deliveries of a key already seen.
    pub duplicated: AtomicU64,
    /// Deliveries of a key the scenario never sent (wrong routing or stale data).
    pub unexpected: AtomicU64,
    /// Messages sent by the scenario.
    pub sent: AtomicU64,
    /// Client connections currently open and authenticated.
    pub alive: AtomicI64,
    /// Most connections open at once.
    pub peak_alive: AtomicI64,
    /// Errors of any kind (connect failures, error events, unexpected disconnects…).
    pub errors: AtomicU64,
    /// The first few error messages.
    error_samples: Mutex<Vec<String>>,
    /// Members of the fan-out room (1 for the other scenarios): the key multiplier.
    pub members: u64,
    /// Keys below this bound are the only ones the scenario sends (ids are sequential).
    pub max_id: AtomicU64,
    /// Separate tracker for `room:msg` when a scenario also relays (soak), so the two id
    /// spaces do not collide.
    pub room: Option<Box<Recorder>>,
    /// Connections the server ended unasked are counted in `dropped`, not as errors (a
    /// scenario that kills a server and reconnects its clients).
    pub drops_expected: bool,
    /// Connections the server ended unasked while `drops_expected`.
    pub dropped: AtomicU64,
}

impl Recorder {
    /// An empty recorder; `members` is the fan-out multiplier (1 outside room-fanout).
    pub fn new(members: u64) -> Recorder {
        Recorder {
            seen: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            latencies: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            delivered: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            alive: AtomicI64::new(0),
            peak_alive: AtomicI64::new(0),
            errors: AtomicU64::new(0),
            error_samples: Mutex::new(Vec::new()),
            members: members.max(1),
            max_id: AtomicU64::new(0),
            room: None,
            drops_expected: false,
            dropped: AtomicU64::new(0),
        }
    }

    /// This recorder, counting connections the server ends as drops rather than errors.
    pub fn expecting_drops(self) -> Recorder {
        Recorder {
            drops_expected: true,
            ..self
        }
    }

    /// A recorder whose `room:msg` deliveries go to their own tracker of `members` members.
    pub fn with_room(members: u64) -> Recorder {
        Recorder {
            room: Some(Box::new(Recorder::new(members))),
            ..Recorder::new(1)
        }
    }

    /// Count one error and keep its message if there is room.
    pub fn error(&self, message: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = lock(&self.error_samples);
        if samples.len() < MAX_ERROR_SAMPLES {
            samples.push(message.into());
        }
    }

    /// The kept error messages.
    pub fn error_samples(&self) -> Vec<String> {
        lock(&self.error_samples).clone()
    }

    /// A connection became usable.
    pub fn connected(&self) {
        let now = self.alive.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_alive.fetch_max(now, Ordering::Relaxed);
    }

    /// A connection ended.
    pub fn disconnected(&self) {
        self.alive.fetch_sub(1, Ordering::Relaxed);
    }

    /// Record one latency sample, in microseconds.
    pub fn latency(&self, micros: u64) {
        let shard = (micros as usize) % SHARDS;
        lock(&self.latencies[shard]).push(micros);
    }

    /// Mark message `id` as delivered to member `member` (0 outside room-fanout), with the
    /// send timestamp `t` (µs since the epoch) embedded by the sender.
    pub fn deliver(&self, id: u64, member: u64, t: u64) {
        if id >= self.max_id.load(Ordering::Relaxed) {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let key = id.saturating_mul(self.members).saturating_add(member);
        let first = {
            let mut shard = lock(&self.seen[(key as usize) % SHARDS]);
            let count = shard.entry(key).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            self.latency(now_micros().saturating_sub(t));
        } else {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Handle an application event received by client `member`.
    pub fn on_event(&self, member: u64, name: &str, args: &[Value]) {
        let arg = args.first().unwrap_or(&Value::Null);
        match name {
            "signal" => match id_and_time(&arg["data"]) {
                Some((id, t)) => self.deliver(id, 0, t),
                None => self.error(format!("signal without {{id,t}}: {arg}")),
            },
            "room:msg" => match id_and_time(&arg["data"]) {
                Some((id, t)) => self.room.as_deref().unwrap_or(self).deliver(id, member, t),
                None => self.error(format!("room:msg without {{id,t}}: {arg}")),
            },
            "message:received" => match arg["text"].as_str().and_then(parse_text) {
                Some((id, t)) => self.deliver(id, 0, t),
                None => self.error(format!("message:received with a foreign text: {arg}")),
            },
            "error" | "rate_limited" => self.error(format!("{name} event: {arg}")),
            _ => {}
        }
    }

    /// Sorted latency samples in microseconds.
    pub fn sorted_latencies(&self) -> Vec<u64> {
        let mut all = Vec::new();
        for shard in &self.latencies {
            all.extend_from_slice(&lock(shard));
        }
        all.sort_unstable();
        all
    }
}

/// `{id, t}` from a payload built by [`payload`].
fn id_and_time(data: &Value) -> Option<(u64, u64)> {
    Some((data["id"].as_u64()?, data["t"].as_u64()?))
}

/// The `{id, t}` payload every routed message carries.
pub fn payload(id: u64) -> Value {
    serde_json::json!({ "id": id, "t": now_micros() })
}

/// The text of a durable message: `bench:<id>:<t>`.
pub fn message_text(id: u64) -> String {
    format!("bench:{id}:{}", now_micros())
}

/// Parse a text built by [`message_text`].
pub fn parse_text(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.strip_prefix("bench:")?.split(':');
    let id = parts.next()?.parse().ok()?;
    let t = parts.next()?.parse().ok()?;
    Some((id, t))
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// Percentiles of sorted microsecond samples (all zero when there are none).
    pub fn from_sorted(samples: &[u64]) -> Percentiles {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest-rank percentile.
            let rank = (q * samples.len() as f64).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        let mean = if samples.is_empty() {
            0.0
        } else {
            let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
            ((sum as f64 / samples.len() as f64) / 1000.0 * 1000.0).round() / 1000.0
        };
        Percentiles {
            count: samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: samples.last().map(|&s| ms(s)).unwrap_or(0.0),
            mean,
        }
    }
}

impl Percentiles {
    /// Percentiles from a histogram: nearest rank over buckets (each bucket reported by its
    /// midpoint, within 0.2 % of the true sample); `max` and `mean` are exact.
    pub fn from_histogram(h: &Histogram) -> Percentiles {
        let ms = |us: u64| (us as f64).round() / 1000.0;
        let at = |q: f64| -> f64 {
            if h.count == 0 {
                return 0.0;
            }
            let rank = ((q * h.count as f64).ceil() as u64).clamp(1, h.count);
            let mut seen = 0u64;
            for &(index, n) in &h.buckets {
                seen += n;
                if seen >= rank {
                    return ms(bucket_value(index).min(h.max_us));
                }
            }
            ms(h.max_us)
        };
        let mean = if h.count == 0 {
            0.0
        } else {
            ((h.sum_us as f64 / h.count as f64) / 1000.0 * 1000.0).round() / 1000.0
        };
        Percentiles {
            count: h.count as usize,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: ms(h.max_us),
            mean,
        }
    }
}

/// Significant bits kept per histogram bucket: values under 2^SIG_BITS µs are exact, larger
/// ones are bucketed with a relative width of 2^-(SIG_BITS-1) (0.2 %).
const SIG_BITS: u32 = 10;

/// Bucket index of a value in µs (monotonic in the value).
fn bucket_index(us: u64) -> u32 {
    if us < (1 << SIG_BITS) {
        return us as u32;
    }
    let shift = (63 - us.leading_zeros()) - (SIG_BITS - 1);
    shift * (1 << (SIG_BITS - 1)) + (us >> shift) as u32
}

/// The value a bucket stands for: its only value when exact, else its midpoint.
fn bucket_value(index: u32) -> u64 {
    let half = 1u32 << (SIG_BITS - 1);
    if index < (1 << SIG_BITS) {
        return u64::from(index);
    }
    let shift = index / half - 1;
    let top = u64::from(index - shift * half);
    (top << shift) + (1u64 << shift) / 2
}

/// A mergeable latency histogram (µs): what each shard of a multi-process run reports so the
/// parent can compute the percentiles of all samples together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Samples.
    pub count: u64,
    /// Sum of the samples (exact mean).
    pub sum_us: u64,
    /// Largest sample (exact max).
    pub max_us: u64,
    /// Non-empty buckets as `[index, count]`, by increasing index.
    pub buckets: Vec<(u32, u64)>,
}

impl Histogram {
    /// The histogram of sorted samples.
    pub fn from_sorted(samples: &[u64]) -> Histogram {
        let mut h = Histogram::default();
        for &us in samples {
            h.count += 1;
            h.sum_us = h.sum_us.saturating_add(us);
            h.max_us = h.max_us.max(us);
            let index = bucket_index(us);
            match h.buckets.last_mut() {
                Some((last, n)) if *last == index => *n += 1,
                _ => h.buckets.push((index, 1)),
            }
        }
        h
    }

    /// Add another histogram's samples to this one.
    pub fn merge(&mut self, other: &Histogram) {
        let mut all: std::collections::BTreeMap<u32, u64> = self.buckets.iter().copied().collect();
        for &(index, n) in &other.buckets {
            *all.entry(index).or_insert(0) += n;
        }
        self.buckets = all.into_iter().collect();
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// Process figures (the server's, or the load generator's own) sampled from `/proc/<pid>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerUsage {
    /// The sampled process id.
    pub pid: u32,
    /// Resident set size when the run started, in MiB.
    pub rss_start_mb: f64,
    /// Largest resident set size seen, in MiB.
    pub rss_peak_mb: f64,
    /// Resident set size at the end, in MiB.
    pub rss_end_mb: f64,
    /// CPU used over the whole run, in percent of one core.
    pub cpu_avg_pct: f64,
    /// Busiest one-second interval, in percent of one core.
    pub cpu_peak_pct: f64,
    /// CPU seconds (user + system) used during the run.
    pub cpu_seconds: f64,
    /// Samples taken.
    pub samples: u32,
}

impl ServerUsage {
    /// Sum of several processes' figures (pid 0): RSS and CPU add up; the peaks are sums of
    /// each process's own peak, so an upper bound of the combined peak.
    pub fn total(all: &[ServerUsage]) -> ServerUsage {
        let sum = |f: fn(&ServerUsage) -> f64| round2(all.iter().map(f).sum());
        ServerUsage {
            pid: 0,
            rss_start_mb: sum(|u| u.rss_start_mb),
            rss_peak_mb: sum(|u| u.rss_peak_mb),
            rss_end_mb: sum(|u| u.rss_end_mb),
            cpu_avg_pct: sum(|u| u.cpu_avg_pct),
            cpu_peak_pct: sum(|u| u.cpu_peak_pct),
            cpu_seconds: sum(|u| u.cpu_seconds),
            samples: all.iter().map(|u| u.samples).min().unwrap_or(0),
        }
    }
}

/// Samples a process's RSS and CPU time once a second.
#[derive(Debug)]
pub struct Sampler {
    /// The process.
    pid: u32,
    /// Clock ticks per second for `/proc/<pid>/stat` times.
    ticks: f64,
    /// Figures so far.
    usage: Mutex<ServerUsage>,
}

impl Sampler {
    /// A sampler for `pid`; takes the first sample now.
    pub fn new(pid: u32) -> Sampler {
        let ticks = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0);
        let rss = rss_mb(pid).unwrap_or(0.0);
        Sampler {
            pid,
            ticks,
            usage: Mutex::new(ServerUsage {
                pid,
                rss_start_mb: rss,
                rss_peak_mb: rss,
                rss_end_mb: rss,
                ..ServerUsage::default()
            }),
        }
    }

    /// CPU seconds used so far by the process.
    fn cpu_seconds(&self) -> Option<f64> {
        cpu_ticks(self.pid).map(|t| t / self.ticks)
    }

    /// Sample until `stop` resolves, then return the figures.
    pub async fn run(&self, stop: tokio::sync::watch::Receiver<bool>) -> ServerUsage {
        let started = tokio::time::Instant::now();
        let cpu_start = self.cpu_seconds().unwrap_or(0.0);
        let mut last_cpu = cpu_start;
        let mut last_at = started;
        let mut stop = stop;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
            let now = tokio::time::Instant::now();
            let cpu = self.cpu_seconds().unwrap_or(last_cpu);
            let interval = now.duration_since(last_at).as_secs_f64().max(1e-3);
            let pct = (cpu - last_cpu) / interval * 100.0;
            last_cpu = cpu;
            last_at = now;
            let mut usage = lock(&self.usage);
            usage.samples += 1;
            usage.cpu_peak_pct = usage.cpu_peak_pct.max(round2(pct));
            if let Some(rss) = rss_mb(self.pid) {
                usage.rss_peak_mb = usage.rss_peak_mb.max(rss);
                usage.rss_end_mb = rss;
            }
        }
        let wall = started.elapsed().as_secs_f64().max(1e-3);
        let cpu = self.cpu_seconds().unwrap_or(last_cpu);
        let mut usage = lock(&self.usage);
        if let Some(rss) = rss_mb(self.pid) {
            usage.rss_peak_mb = usage.rss_peak_mb.max(rss);
            usage.rss_end_mb = rss;
        }
        usage.cpu_seconds = round2(cpu - cpu_start);
        usage.cpu_avg_pct = round2((cpu - cpu_start) / wall * 100.0);
        usage.clone()
    }
}

/// Round to two decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `VmRSS` of the process in MiB.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round2(kb / 1024.0))
}

/// utime + stime of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis
    // start at field 3, so utime (14) and stime (15) are at indices 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let p = Percentiles::from_sorted(&samples);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p90, 900.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
        assert_eq!(Percentiles::from_sorted(&[]).max, 0.0);
    }

    #[test]
    fn tracker_counts_duplicates_and_strangers() {
        let r = Recorder::new(2);
        r.max_id.store(10, Ordering::Relaxed);
        r.deliver(3, 0, now_micros());
        r.deliver(3, 1, now_micros());
        r.deliver(3, 1, now_micros());
        r.deliver(11, 0, now_micros());
        assert_eq!(r.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(r.duplicated.load(Ordering::Relaxed), 1);
        assert_eq!(r.unexpected.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn histogram_buckets_are_tight_and_monotonic() {
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let index = bucket_index(us);
            assert!(index >= last);
            last = index;
            let back = bucket_value(index);
            assert!(
                back.abs_diff(us) as f64 <= us as f64 * 0.002 + 0.5,
                "{us} -> {back}"
            );
        }
    }

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_samples() {
        let all: Vec<u64> = (1..=10_000u64).map(|i| i * 37 % 9_001 + i).collect();
        let (a, b): (Vec<u64>, Vec<u64>) = all.iter().partition(|&&v| v % 3 == 0);
        let sorted = |mut v: Vec<u64>| {
            v.sort_unstable();
            v
        };
        let mut merged = Histogram::from_sorted(&sorted(a));
        merged.merge(&Histogram::from_sorted(&sorted(b)));
        let whole = Histogram::from_sorted(&sorted(all.clone()));
        assert_eq!(merged, whole);
        let from_h = Percentiles::from_histogram(&merged);
        let exact = Percentiles::from_sorted(&sorted(all));
        assert_eq!(from_h.count, exact.count);
        assert_eq!(from_h.max, exact.max);
        assert_eq!(from_h.mean, exact.mean);
        for (h, e) in [(from_h.p50, exact.p50), (from_h.p99, exact.p99)] {
            assert!((h - e).abs() <= e * 0.002 + 0.001, "{h} vs {e}");
        }
    }

    #[test]
    fn room_deliveries_go_to_the_room_tracker() {
        let r = Recorder::with_room(3);
        r.max_id.store(1, Ordering::Relaxed);
        let room = r.room.as_deref().expect("room tracker");
        room.max_id.store(1, Ordering::Relaxed);
        let data = serde_json::json!({ "data": payload(0) });
        r.on_event(2, "room:msg", std::slice::from_ref(&data));
        r.on_event(0, "signal", &[data]);
        assert_eq!(room.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(r.delivered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn message_text_round_trips() {
        let (id, _) = parse_text(&message_text(42)).expect("parses");
        assert_eq!(id, 42);
        assert_eq!(parse_text("hello"), None);
    }
}
