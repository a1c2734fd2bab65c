//! Fuzz the Engine.IO v3 polling payload decoders (text and binary framing); whatever decodes
//! must re-encode, in either framing, to a body that decodes the same.
//!
//! The checks live in `../checks.rs`, shared with `protocol/tests/fuzz_regressions.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::engineio_v3_payload(data));
