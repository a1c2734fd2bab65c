//! Fuzz the cross-node frame decoder (anything on a Redis channel may be hostile); whatever
//! decodes must re-encode to the same bytes.
//!
//! The checks live in `../checks.rs`, shared with `protocol/tests/fuzz_regressions.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::cluster_frame(data));
