//! Compressed polling bodies: gzip or deflate (zlib) when the client's `Accept-Encoding` allows
//! it and the body is at least the threshold, like socket.io's `httpCompression`.
//!
//! Only long-poll GET answers are compressed: they are what carries events; POST answers
//! (`ok`) and errors are a few bytes. A forwarded poll is compressed by the owner and relayed
//! as it is (the forwarder passes `Accept-Encoding` on and the answer's headers back).

use std::cell::RefCell;
use std::thread::LocalKey;

use actix_web::http::header::{self, HeaderMap};
use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// How polling answers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCompression {
    /// Off: every body is sent as it is.
    pub enabled: bool,
    /// Bodies shorter than this are sent as they are (compressing them costs more than it saves).
    pub threshold: usize,
}

/// A content coding the node can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950), as HTTP means it.
    Deflate,
}

impl Coding {
    /// The `Content-Encoding` value.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }

    /// `body` in this coding.
    pub fn encode(self, body: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(body.len() / 2 + 64);
        match self {
            Coding::Gzip => {
                // RFC 1952: no name, no time, unknown OS; then the deflate stream, CRC-32, size.
                out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
                compress_into(&RAW, body, &mut out)?;
                let mut crc = Crc::new();
                crc.update(body);
                out.extend_from_slice(&crc.sum().to_le_bytes());
                out.extend_from_slice(&crc.amount().to_le_bytes());
            }
            Coding::Deflate => compress_into(&ZLIB, body, &mut out)?,
        }
        Ok(out)
    }
}

thread_local! {
    /// One compressor per thread and format, reset per body: setting one up (hundreds of KiB
    /// of tables) costs more than compressing a typical polling answer.
    static RAW: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
    /// The same for the zlib format (HTTP's `deflate`).
    static ZLIB: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), true));
}

/// Append `body`, compressed to a finished stream by this thread's `compressor`, to `out`.
fn compress_into(
    compressor: &'static LocalKey<RefCell<Compress>>,
    body: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    compressor.with(|cell| {
        let mut compress = cell.borrow_mut();
        // Level 6, zlib's default and Node's: most of the gain for a fraction of the CPU of 9.
        compress.reset();
        let mut read = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = compress.total_in();
            let status = compress
                .compress_vec(&body[read..], out, FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            read += usize::try_from(compress.total_in() - before).map_err(std::io::Error::other)?;
            if status == Status::StreamEnd {
                return Ok(());
            }
        }
    })
}

impl HttpCompression {
    /// The coding for a body of `len` bytes answering a request with these headers; `None`: as
    /// it is.
    pub fn coding_for(&self, request: &HeaderMap, len: usize) -> Option<Coding> {
        if !self.enabled || len < self.threshold {
            return None;
        }
        let mut accept = String::new();
        for value in request.get_all(header::ACCEPT_ENCODING) {
            // A header that is not ASCII text accepts nothing we can read.
            let Ok(value) = value.to_str() else { continue };
            if !accept.is_empty() {
                accept.push(',');
            }
            accept.push_str(value);
        }
        preferred_coding(&accept)
    }
}

/// The coding an `Accept-Encoding` value prefers among gzip and deflate: the higher quality,
/// gzip on a tie; one with `q=0` (or only matched by a `*;q=0`) is never chosen. `None` when
/// neither is acceptable, or the value is empty (no header: identity only).
pub fn preferred_coding(accept: &str) -> Option<Coding> {
    // Quality in thousandths, so that comparisons are exact.
    let (mut gzip, mut deflate, mut any) = (None, None, None);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        let mut quality = Some(1000);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("q") {
                quality = parse_quality(value.trim());
            }
        }
        // An unreadable quality counts as "not acceptable": safer than guessing.
        let quality = quality.unwrap_or(0);
        let slot = if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if name.eq_ignore_ascii_case("deflate") {
            &mut deflate
        } else if name == "*" {
            &mut any
        } else {
            continue;
        };
        // Listed twice: the first one counts.
        slot.get_or_insert(quality);
    }
    let gzip = gzip.or(any).unwrap_or(0);
    let deflate = deflate.or(any).unwrap_or(0);
    match (gzip, deflate) {
        (0, 0) => None,
        (g, d) if g >= d => Some(Coding::Gzip),
        _ => Some(Coding::Deflate),
    }
}

/// An RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn parse_quality(value: &str) -> Option<u32> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use std::io::Read;

    #[test]
    fn plain_gzip_and_deflate() {
        assert_eq!(preferred_coding("gzip"), Some(Coding::Gzip));
        assert_eq!(preferred_coding("deflate"), Some(Coding::Deflate));
        assert_eq!(preferred_coding("gzip, deflate, br"), Some(Coding::Gzip));
        assert_eq!(preferred_coding("deflate, gzip"), Some(Coding::Gzip));
        assert_eq!(preferred_coding("GZIP"), Some(Coding::Gzip));
        assert_eq!(preferred_coding("x-gzip"), Some(Coding::Gzip));
    }

    #[test]
    fn nothing_acceptable() {
        assert_eq!(preferred_coding(""), None);
        assert_eq!(preferred_coding("identity"), None);
        assert_eq!(preferred_coding("br"), None);
        assert_eq!(preferred_coding(" , ;q=1"), None);
    }

    #[test]
    fn quality_decides_and_zero_refuses() {
        assert_eq!(preferred_coding("gzip;q=0, deflate"), Some(Coding::Deflate));
        assert_eq!(
            preferred_coding("gzip;q=0.5, deflate;q=0.8"),
            Some(Coding::Deflate)
        );
        assert_eq!(
            preferred_coding("gzip;q=0.8, deflate;q=0.8"),
            Some(Coding::Gzip)
        );
        assert_eq!(preferred_coding("gzip; q=0.000"), None);
        assert_eq!(preferred_coding("gzip;Q=0"), None);
        assert_eq!(preferred_coding("gzip;q=0, deflate;q=0"), None);
    }

    #[test]
    fn wildcard_fills_in_only_for_unlisted_codings() {
        assert_eq!(preferred_coding("*"), Some(Coding::Gzip));
        assert_eq!(preferred_coding("gzip;q=0, *"), Some(Coding::Deflate));
        assert_eq!(preferred_coding("*;q=0"), None);
        assert_eq!(preferred_coding("deflate, *;q=0"), Some(Coding::Deflate));
    }

    #[test]
    fn malformed_quality_is_not_acceptable() {
        assert_eq!(preferred_coding("gzip;q=abc"), None);
        assert_eq!(preferred_coding("gzip;q=1.5"), None);
        assert_eq!(preferred_coding("gzip;q=2"), None);
        assert_eq!(preferred_coding("gzip;q=0.1234"), None);
        assert_eq!(
            preferred_coding("gzip;q=-1, deflate;q=0.001"),
            Some(Coding::Deflate)
        );
        assert_eq!(parse_quality("0.5"), Some(500));
        assert_eq!(parse_quality("1.000"), Some(1000));
        assert_eq!(parse_quality("0."), Some(0));
    }

    #[test]
    fn threshold_switch_and_several_headers() {
        let on = HttpCompression {
            enabled: true,
            threshold: 10,
        };
        let mut headers = HeaderMap::new();
        assert_eq!(on.coding_for(&headers, 100), None, "no header: identity");
        headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static("deflate"));
        assert_eq!(on.coding_for(&headers, 100), Some(Coding::Deflate));
        assert_eq!(on.coding_for(&headers, 9), None, "under the threshold");
        let off = HttpCompression {
            enabled: false,
            ..on
        };
        assert_eq!(off.coding_for(&headers, 100), None);
    }

    #[test]
    fn encodings_round_trip() {
        let body = b"42[\"message\",\"hello hello hello hello\"]".repeat(50);
        let gz = Coding::Gzip.encode(&body).expect("gzip");
        assert!(gz.len() < body.len() / 4);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .expect("gunzip");
        assert_eq!(out, body);
        // The thread's compressor is reset between bodies: the same input, the same bytes.
        assert_eq!(Coding::Gzip.encode(&body).expect("again"), gz);
        let z = Coding::Deflate.encode(&body).expect("deflate");
        assert_eq!(Coding::Deflate.encode(&body).expect("again"), z);
        out.clear();
        flate2::read::ZlibDecoder::new(&z[..])
            .read_to_end(&mut out)
            .expect("inflate");
        assert_eq!(out, body);
        for coding in [Coding::Gzip, Coding::Deflate] {
            let empty = coding.encode(b"").expect("empty");
            out.clear();
            let read = match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&empty[..]).read_to_end(&mut out),
                Coding::Deflate => flate2::read::ZlibDecoder::new(&empty[..]).read_to_end(&mut out),
            };
            assert_eq!(read.expect("decodes"), 0);
        }
    }
}
