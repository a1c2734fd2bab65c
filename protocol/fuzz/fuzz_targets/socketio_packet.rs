//! Fuzz the Socket.IO decoder and attachment reassembly (text, then `\0`-separated attachments).
//!
//! The checks live in `../checks.rs`, shared with `protocol/tests/fuzz_regressions.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::socketio_packet(data));
