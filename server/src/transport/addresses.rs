//! Client addresses: who a request comes from (behind trusted proxies, the address they name
//! in `X-Forwarded-For`), and the per-address limits on handshakes and open sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_http::RequestHead;
use switchboard_actors::ratelimit::TokenBucket;

/// Addresses tracked at once; past it idle ones are dropped, and if none is idle new ones go
/// unlimited rather than growing the map without bound.
const MAX_TRACKED: usize = 100_000;

/// One network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or a single address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address or a network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (canonical(self.addr), ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address mapped into IPv6 is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// A comma-separated list of networks (empty: no proxy is trusted).
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Cidr::parse)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the last
    /// address in `X-Forwarded-For` that is not a trusted proxy (the ones before it could be
    /// anything the client wrote).
    pub fn client(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer.map(canonical)?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut last = peer;
        for hop in forwarded_for.unwrap_or("").rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>().map(canonical) else {
                // A hop we cannot read: the last one we could is the best we know.
                return Some(last);
            };
            if !self.trusts(ip) {
                return Some(ip);
            }
            last = ip;
        }
        Some(last)
    }

    /// The client's address of a request.
    pub fn client_of(&self, head: &RequestHead) -> Option<IpAddr> {
        let forwarded = head
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        self.client(head.peer_addr.map(|a| a.ip()), forwarded)
    }
}

/// Why an address may not open another session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// Over its handshakes per minute.
    Handshakes,
    /// Over its open sessions.
    Sessions,
}

#[derive(Debug)]
struct Entry {
    handshakes: TokenBucket,
    open: u32,
}

/// Handshakes per minute and open sessions per client address (0: no limit).
#[derive(Debug)]
pub struct AddressLimits {
    handshakes_per_min: u32,
    max_sessions: u32,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

/// An open session's place in its address's count, given back when dropped (with the
/// session).
#[derive(Debug)]
pub struct SessionSlot {
    limits: Arc<AddressLimits>,
    ip: IpAddr,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut entries = self.limits.lock();
        if let Some(entry) = entries.get_mut(&self.ip) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

impl AddressLimits {
    /// Limits of `handshakes_per_min` and `max_sessions` per address (0: none).
    pub fn new(handshakes_per_min: u32, max_sessions: u32) -> Arc<Self> {
        Arc::new(AddressLimits {
            handshakes_per_min,
            max_sessions,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Whether any limit is on.
    pub fn enabled(&self) -> bool {
        self.handshakes_per_min > 0 || self.max_sessions > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handshake from `ip`: its slot, or why it is refused.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<SessionSlot, Crowded> {
        let mut entries = self.lock();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&ip) {
            entries.retain(|_, e| e.open > 0 || !e.handshakes.is_full(now));
        }
        let fresh = || Entry {
            handshakes: TokenBucket::new(
                self.handshakes_per_min.max(1),
                Duration::from_secs(60),
                now,
            ),
            open: 0,
        };
        let entry = if entries.len() < MAX_TRACKED || entries.contains_key(&ip) {
            entries.entry(ip).or_insert_with(fresh)
        } else {
            // Full of busy addresses: this one goes unlimited rather than unbounded memory.
            drop(entries);
            return Ok(SessionSlot {
                limits: Arc::new(AddressLimits {
                    handshakes_per_min: 0,
                    max_sessions: 0,
                    entries: Mutex::new(HashMap::new()),
                }),
                ip,
            });
        };
        if self.max_sessions > 0 && entry.open >= self.max_sessions {
            return Err(Crowded::Sessions);
        }
        if self.handshakes_per_min > 0 && entry.handshakes.try_take(now).is_err() {
            return Err(Crowded::Handshakes);
        }
        entry.open += 1;
        Ok(SessionSlot {
            limits: self.clone(),
            ip,
        })
    }
}

/// What a request to a paced endpoint does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Served at once.
    Now,
    /// Served after waiting this long (its address is over its rate).
    After(Duration),
    /// Refused: its address is so far over its rate that even [`MAX_PACE_WAIT`] is not enough.
    Refuse,
}

/// The longest a paced request is held before it is served; refusals are held this long too,
/// so a client that ignores `429` cannot spin on cheap refusals.
pub const MAX_PACE_WAIT: Duration = Duration::from_secs(1);

/// Requests per second per client address on the unauthenticated probe and scrape endpoints,
/// with a burst of one second's worth (a generic cell rate: one "next free time" per address).
/// Over the rate, requests are delayed rather than refused, so a monitor that polls too fast
/// slows down instead of failing; a flood is held to the rate and costs the node little.
#[derive(Debug)]
pub struct ProbePacer {
    /// Time between requests at the rate; `None`: no limit.
    interval: Option<Duration>,
    /// How far ahead of now an address's next free time may be and still be served at once.
    burst: Duration,
    next_free: Mutex<HashMap<IpAddr, Instant>>,
}

impl ProbePacer {
    /// `per_sec` requests a second per address (0: no limit).
    pub fn new(per_sec: u32) -> Self {
        let interval = (per_sec > 0).then(|| Duration::from_secs(1) / per_sec);
        ProbePacer {
            interval,
            burst: interval.map_or(Duration::ZERO, |i| i * per_sec.saturating_sub(1)),
            next_free: Mutex::new(HashMap::new()),
        }
    }

    /// What a request from `ip` arriving at `now` does.
    pub fn pace(&self, ip: IpAddr, now: Instant) -> Pace {
        let Some(interval) = self.interval else {
            return Pace::Now;
        };
        let mut next_free = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        if next_free.len() >= MAX_TRACKED && !next_free.contains_key(&ip) {
            // An address whose next free time has passed is as good as untracked.
            next_free.retain(|_, at| *at > now);
            if next_free.len() >= MAX_TRACKED {
                return Pace::Now;
            }
        }
        let slot = next_free.get(&ip).copied().unwrap_or(now).max(now);
        let wait = slot.saturating_duration_since(now + self.burst);
        if wait > MAX_PACE_WAIT {
            return Pace::Refuse;
        }
        next_free.insert(ip, slot + interval);
        if wait.is_zero() {
            Pace::Now
        } else {
            Pace::After(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains(ip("10.0.0.1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        let xff = Some("6.6.6.6, 203.0.113.7, 10.0.0.5");
        // A client talking to us directly: its own address, whatever it writes.
        assert_eq!(
            proxies.client(Some(ip("198.51.100.1")), xff),
            Some(ip("198.51.100.1"))
        );
        // Through two trusted hops: the last untrusted address; what the client prepended
        // (6.6.6.6) is ignored.
        assert_eq!(
            proxies.client(Some(ip("192.168.1.1")), xff),
            Some(ip("203.0.113.7"))
        );
        // Trusted peer, no header: the peer.
        assert_eq!(
            proxies.client(Some(ip("10.0.0.2")), None),
            Some(ip("10.0.0.2"))
        );
        // Garbage in the header stops the walk.
        assert_eq!(
            proxies.client(Some(ip("10.0.0.2")), Some("junk, 10.0.0.9")),
            Some(ip("10.0.0.9"))
        );
        assert_eq!(TrustedProxies::default().client(None, xff), None);
        assert!(TrustedProxies::parse("10.0.0.0/99").is_err());
    }

    #[test]
    fn an_address_gets_its_handshakes_and_sessions_and_its_slots_back() {
        let limits = AddressLimits::new(3, 2);
        let now = Instant::now();
        let a = ip("203.0.113.1");
        let first = limits.admit(a, now).unwrap();
        let _second = limits.admit(a, now).unwrap();
        assert_eq!(limits.admit(a, now).unwrap_err(), Crowded::Sessions);
        assert!(limits.admit(ip("203.0.113.2"), now).is_ok(), "per address");
        drop(first);
        let third = limits.admit(a, now).unwrap();
        drop(third);
        assert_eq!(
            limits.admit(a, now).unwrap_err(),
            Crowded::Handshakes,
            "three handshakes a minute"
        );
        assert!(limits.admit(a, now + Duration::from_secs(21)).is_ok());
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = AddressLimits::new(0, 0);
        assert!(!limits.enabled());
        let now = Instant::now();
        let slots: Vec<_> = (0..1000)
            .map(|_| limits.admit(ip("203.0.113.1"), now).unwrap())
            .collect();
        assert_eq!(slots.len(), 1000);
    }
    #[test]
    fn probes_are_paced_per_address_after_a_burst() {
        let pacer = ProbePacer::new(10);
        let t0 = Instant::now();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        for i in 0..10 {
            assert_eq!(pacer.pace(a, t0), Pace::Now, "burst request {i}");
        }
        // Past the burst: one more every 100 ms, the wait growing with the queue.
        assert_eq!(pacer.pace(a, t0), Pace::After(Duration::from_millis(100)));
        assert_eq!(pacer.pace(a, t0), Pace::After(Duration::from_millis(200)));
        assert_eq!(
            pacer.pace(b, t0),
            Pace::Now,
            "another address has its own budget"
        );
        for _ in 0..8 {
            assert!(matches!(pacer.pace(a, t0), Pace::After(_)));
        }
        assert_eq!(pacer.pace(a, t0), Pace::Refuse, "more than a second behind");
        // Once the queue has drained the budget refills.
        let later = t0 + Duration::from_secs(3);
        for _ in 0..10 {
            assert_eq!(pacer.pace(a, later), Pace::Now);
        }
        assert!(matches!(pacer.pace(a, later), Pace::After(_)));
        let unlimited = ProbePacer::new(0);
        for _ in 0..1000 {
            assert_eq!(unlimited.pace(a, t0), Pace::Now);
        }
    }
}
