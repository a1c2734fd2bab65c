//! The signature on every request Switchboard sends to the application's backend (hooks and
//! webhooks): `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` with the shared secret, in
//! `x-switchboard-signature`, next to `x-switchboard-timestamp`. Pure.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
