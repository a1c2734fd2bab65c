//! Websocket permessage-deflate (RFC 7692): the offer negotiation and the per-message codec.
//!
//! The node always answers `server_no_context_takeover; client_no_context_takeover`: each
//! message is compressed on its own, so no socket keeps an LZ77 window (about 300 KiB per
//! direction with context takeover) and the compressor and decompressor are one per thread,
//! reset per message. An offer asking for a window under 2^15 from the server is declined:
//! the compressor cannot narrow its window. The client may use any window; the inflater takes
//! them all.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";
/// What a sync flush ends with; stripped from sent messages and put back on received ones.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Inflate in steps of this much, so the output never overshoots the cap by more.
const STEP: usize = 8 * 1024;

/// The websocket compression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsDeflateConfig {
    /// Off: the extension is never accepted.
    pub enabled: bool,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
}

/// A websocket's negotiated compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsDeflate {
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
    /// The most a received message may inflate to.
    pub max_inflated: usize,
}

/// The `Sec-WebSocket-Extensions` answer to the client's offers (its header values, in
/// order), or `None` when no offer is acceptable: the first acceptable permessage-deflate
/// offer wins.
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a str>) -> Option<String> {
    offers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(accept_offer)
}

/// The answer to one offer (`permessage-deflate; param; param=value`), if acceptable.
fn accept_offer(offer: &str) -> Option<String> {
    let mut parts = offer.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_window = false;
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key.trim(), Some(unquote(value.trim())?)),
            None => (param.trim(), None),
        };
        let key = key.to_ascii_lowercase();
        // RFC 7692 §7: an offer with a parameter twice is declined.
        if seen.contains(&key) {
            return None;
        }
        match (key.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            // Accepting a limit means sending with at most that window: only 15 is possible.
            ("server_max_window_bits", Some(bits)) => {
                if window_bits(bits)? != 15 {
                    return None;
                }
                server_window = true;
            }
            // The client may narrow its window; the inflater reads any, so it is not answered.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(bits)) => {
                window_bits(bits)?;
            }
            _ => return None,
        }
        seen.push(key);
    }
    let mut answer = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
    if server_window {
        answer.push_str("; server_max_window_bits=15");
    }
    Some(answer)
}

/// A parameter value without its quotes (RFC 7692 allows a quoted token).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window-bits value: 8 to 15, digits only, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.len() > 2 || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

thread_local! {
    /// One compressor per thread: with no context takeover a message needs no earlier state.
    static COMPRESS: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
    /// One decompressor per thread, for the same reason.
    static DECOMPRESS: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Why a received compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the cap (a decompression bomb, or simply too big).
    TooBig,
    /// It is not a raw deflate stream.
    Corrupt,
}

/// A message's payload compressed for a frame with RSV1 (the sync-flush tail stripped).
pub fn deflate(message: &[u8]) -> Option<Vec<u8>> {
    COMPRESS.with(|cell| {
        let mut compress = cell.borrow_mut();
        compress.reset();
        let mut out = Vec::with_capacity(message.len() / 2 + 64);
        let mut read = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = compress.total_in();
            compress
                .compress_vec(&message[read..], &mut out, FlushCompress::Sync)
                .ok()?;
            read += usize::try_from(compress.total_in() - before).ok()?;
            // Room left after a sync flush with all input taken: the flush is complete.
            if read == message.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        Some(out)
    })
}

/// A received message's payload inflated, refused once it would exceed `cap` bytes; memory
/// used never exceeds the cap plus one step.
pub fn inflate(payload: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
    DECOMPRESS.with(|cell| {
        let mut decompress = cell.borrow_mut();
        decompress.reset(false);
        let mut out = Vec::with_capacity(cap.min(payload.len().saturating_mul(2)).min(STEP));
        let mut step = [0u8; STEP];
        for input in [payload, &TAIL[..]] {
            let mut read = 0;
            loop {
                let (in_before, out_before) = (decompress.total_in(), decompress.total_out());
                let status = decompress
                    .decompress(&input[read..], &mut step, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                let took = usize::try_from(decompress.total_in() - in_before)
                    .map_err(|_| InflateError::Corrupt)?;
                let made = usize::try_from(decompress.total_out() - out_before)
                    .map_err(|_| InflateError::Corrupt)?;
                read += took;
                if out.len() + made > cap {
                    return Err(InflateError::TooBig);
                }
                out.extend_from_slice(&step[..made]);
                if status == Status::StreamEnd {
                    // A final block ends the message; the tail is not needed.
                    return Ok(out);
                }
                if took == 0 && made == 0 {
                    if read == input.len() {
                        break;
                    }
                    return Err(InflateError::Corrupt);
                }
                if read == input.len() && made < step.len() {
                    break;
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn plain_offer_is_accepted_without_context_takeover() {
        assert_eq!(negotiate(["permessage-deflate"]).as_deref(), Some(ANSWER));
        assert_eq!(negotiate(["Permessage-Deflate "]).as_deref(), Some(ANSWER));
    }

    #[test]
    fn node_ws_default_offer() {
        // What the `ws` package (engine.io-client in Node) sends.
        let offer = "permessage-deflate; client_max_window_bits";
        assert_eq!(negotiate([offer]).as_deref(), Some(ANSWER));
        let browser =
            "permessage-deflate; client_max_window_bits=\"10\"; client_no_context_takeover";
        assert_eq!(negotiate([browser]).as_deref(), Some(ANSWER));
    }

    #[test]
    fn server_window_only_15() {
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=15"]).as_deref(),
            Some(format!("{ANSWER}; server_max_window_bits=15").as_str())
        );
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=10"]),
            None
        );
        // Without a value it is malformed.
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits"]),
            None
        );
        // A fallback offer after a declined one is taken.
        assert_eq!(
            negotiate(["permessage-deflate; server_max_window_bits=9, permessage-deflate"])
                .as_deref(),
            Some(ANSWER)
        );
    }

    #[test]
    fn malformed_or_unknown_offers_are_declined() {
        for offer in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(negotiate([offer]), None, "{offer:?}");
        }
    }

    #[test]
    fn several_header_values_in_order() {
        assert_eq!(
            negotiate(["foo", "permessage-deflate; client_no_context_takeover"]).as_deref(),
            Some(ANSWER)
        );
    }

    #[test]
    fn deflate_round_trips_and_strips_the_tail() {
        let message = br#"42["message",{"text":"hello hello hello"}]"#.repeat(100);
        let packed = deflate(&message).expect("deflate");
        assert!(packed.len() < message.len() / 5);
        assert!(!packed.ends_with(&TAIL));
        assert_eq!(inflate(&packed, message.len()).expect("inflate"), message);
        // Each message stands alone: the second one is the same bytes again.
        assert_eq!(deflate(&message).expect("again"), packed);
        assert_eq!(inflate(&deflate(b"").expect("empty"), 10), Ok(Vec::new()));
    }

    #[test]
    fn inflate_is_capped() {
        let bomb = deflate(&vec![b'a'; 10 * 1024 * 1024]).expect("deflate");
        assert!(bomb.len() < 20 * 1024);
        assert_eq!(inflate(&bomb, 65_536), Err(InflateError::TooBig));
        let exact = deflate(&[b'x'; 1000]).expect("deflate");
        assert_eq!(inflate(&exact, 1000).map(|v| v.len()), Ok(1000));
        assert_eq!(inflate(&exact, 999), Err(InflateError::TooBig));
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        assert_eq!(inflate(&[0xff; 64], 1000), Err(InflateError::Corrupt));
        // Random-looking bytes: any answer but a panic or a runaway.
        let mut x: u32 = 12345;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = inflate(&bytes, 4096);
        }
    }
}
