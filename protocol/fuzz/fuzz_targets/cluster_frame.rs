//! Fuzz the cross-node frame decoder (anything on a Redis channel may be hostile); whatever
//! decodes must re-encode to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::cluster::ClusterFrame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ClusterFrame::decode(data) {
        assert_eq!(frame.encode(), data);
    }
});
