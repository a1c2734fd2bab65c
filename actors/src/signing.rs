//! Signatures, pure:
//! - on every request Switchboard sends to the application's backend (hooks and webhooks):
//!   `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` with the shared secret, in
//!   `x-switchboard-signature`, next to `x-switchboard-timestamp`;
//! - on every cluster frame ([`ClusterKeys`]): whoever may PUBLISH to Redis must not be able to
//!   inject events or disconnect users.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// First bytes of a signed cluster frame: `SG`, the 32-byte HMAC-SHA256 of the frame, the frame.
const SEALED_MAGIC: &[u8; 2] = b"SG";
/// Length of the tag.
const TAG_LEN: usize = 32;
/// Shortest cluster key accepted.
pub const MIN_CLUSTER_KEY_BYTES: usize = 32;
/// Frames older than this (by their send time) are stale: dropped, so a recorded frame cannot
/// be replayed later. Generous, for clock differences between nodes.
pub const MAX_FRAME_AGE: Duration = Duration::from_secs(60);

/// The cluster keys: the first signs, every one verifies (so keys rotate without downtime:
/// add the new one second, roll, move it first, roll, drop the old one).
#[derive(Clone)]
pub struct ClusterKeys {
    keys: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKeys({} keys)", self.keys.len())
    }
}

/// Why a cluster frame was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsealed {
    /// It carries no signature.
    #[error("unsigned")]
    Unsigned,
    /// Its signature matches no key.
    #[error("bad signature")]
    BadSignature,
}

impl Unsealed {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsealed::Unsigned => "unsigned",
            Unsealed::BadSignature => "bad_signature",
        }
    }
}

impl ClusterKeys {
    /// Keys from a comma-separated list; each must be at least [`MIN_CLUSTER_KEY_BYTES`].
    pub fn parse(list: &str) -> Result<ClusterKeys, String> {
        let keys: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            return Err("the cluster key list is empty".into());
        }
        if let Some(short) = keys.iter().position(|k| k.len() < MIN_CLUSTER_KEY_BYTES) {
            return Err(format!(
                "cluster key #{} is shorter than {MIN_CLUSTER_KEY_BYTES} bytes",
                short + 1
            ));
        }
        let keys = keys
            .iter()
            .map(|k| Hmac::<Sha256>::new_from_slice(k.as_bytes()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(ClusterKeys { keys })
    }

    /// `frame`, signed with the first key.
    pub fn seal(&self, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEALED_MAGIC.len() + TAG_LEN + frame.len());
        out.extend_from_slice(SEALED_MAGIC);
        let mut mac = self.keys[0].clone();
        mac.update(frame);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out.extend_from_slice(frame);
        out
    }

    /// The frame inside `payload`, when one of the keys signed it (compared in constant time).
    pub fn open<'a>(&self, payload: &'a [u8]) -> Result<&'a [u8], Unsealed> {
        let rest = payload
            .strip_prefix(SEALED_MAGIC)
            .filter(|r| r.len() >= TAG_LEN)
            .ok_or(Unsealed::Unsigned)?;
        let (tag, frame) = rest.split_at(TAG_LEN);
        self.keys
            .iter()
            .any(|key| {
                let mut mac = key.clone();
                mac.update(frame);
                mac.verify_slice(tag).is_ok()
            })
            .then_some(frame)
            .ok_or(Unsealed::BadSignature)
    }
}

/// Whether a frame sent at `sent_at_micros` is stale at `now_micros` (too old, or from too
/// far in the future).
pub fn stale(sent_at_micros: u64, now_micros: u64) -> bool {
    let limit = MAX_FRAME_AGE.as_micros() as u64;
    now_micros.abs_diff(sent_at_micros) > limit
}

/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, the `x-switchboard-signature` header.
pub fn signature(secret: &[u8], timestamp_ms: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails; an empty signature would.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "cluster-key-a-0123456789abcdef0123456789";
    const B: &str = "cluster-key-b-0123456789abcdef0123456789";

    #[test]
    fn a_sealed_frame_opens_with_any_listed_key_and_not_with_others() {
        let old = ClusterKeys::parse(A).unwrap();
        let rotating = ClusterKeys::parse(&format!("{B}, {A}")).unwrap();
        let sealed = old.seal(b"SB1 frame");
        assert_eq!(
            rotating.open(&sealed),
            Ok(&b"SB1 frame"[..]),
            "old key still verifies"
        );
        let sealed_new = rotating.seal(b"SB1 frame");
        assert_eq!(
            old.open(&sealed_new),
            Err(Unsealed::BadSignature),
            "signed with the new (first) key"
        );
        assert_eq!(old.open(b"SB1 frame"), Err(Unsealed::Unsigned));
        assert_eq!(old.open(b"SG short"), Err(Unsealed::Unsigned));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(old.open(&tampered), Err(Unsealed::BadSignature));
    }

    #[test]
    fn keys_are_checked_when_parsed() {
        assert!(ClusterKeys::parse("").is_err());
        assert!(ClusterKeys::parse(" , ").is_err());
        let err = ClusterKeys::parse(&format!("{A},short")).unwrap_err();
        assert!(err.contains("#2"), "{err}");
    }

    #[test]
    fn frames_older_or_newer_than_a_minute_are_stale() {
        let now = 1_700_000_000_000_000;
        assert!(!stale(now - 59_000_000, now));
        assert!(stale(now - 61_000_000, now));
        assert!(stale(now + 61_000_000, now));
        assert!(!stale(now, now));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let sig = signature(b"secret", 1_700_000_000_000, b"{}");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), "sha256=".len() + 64);
        assert_eq!(sig, signature(b"secret", 1_700_000_000_000, b"{}"));
        assert_ne!(sig, signature(b"secret", 1_700_000_000_001, b"{}"));
        assert_ne!(sig, signature(b"other", 1_700_000_000_000, b"{}"));
        // Computed independently: Python's hmac.new(b"secret", b"1700000000000.{}", sha256).
        assert_eq!(
            sig,
            "sha256=8399216d111287e3bb28e25c0f4f31dffdf831c68c9ee2b96c2f67c9b81d341b"
        );
    }
}
