//! Fuzz the Socket.IO decoder and attachment reassembly.
//!
//! Input: a text packet, then optionally `\0` and attachment bytes, split at further `\0`s.
//! Whatever completes must re-encode to a packet that decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::Bytes;
use switchboard_protocol::socketio::{Assembly, Decoded, Limits, Packet};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let Some(Ok(text)) = parts.next().map(std::str::from_utf8) else {
        return;
    };
    let limits = Limits::default();
    let packet = match Packet::decode(text, &limits) {
        Err(_) => return,
        Ok(Decoded::Complete(packet)) => packet,
        Ok(Decoded::Partial(mut pending)) => loop {
            // Too few attachments in the input simply leaves the packet pending.
            let Some(part) = parts.next() else { return };
            match pending.push(Bytes::copy_from_slice(part)) {
                Ok(Assembly::Pending(next)) => pending = next,
                Ok(Assembly::Complete(packet)) => break packet,
                Err(_) => return,
            }
        },
    };

    let (encoded, attachments) = packet.encode();
    let again = match Packet::decode(&encoded, &limits) {
        Ok(Decoded::Complete(again)) => again,
        Ok(Decoded::Partial(mut pending)) => {
            let mut complete = None;
            for attachment in attachments {
                match pending.push(attachment) {
                    Ok(Assembly::Pending(next)) => pending = next,
                    Ok(Assembly::Complete(again)) => {
                        complete = Some(again);
                        break;
                    }
                    Err(err) => panic!("re-encoded attachment refused: {err}"),
                }
            }
            match complete {
                Some(again) => again,
                None => panic!("re-encoded packet never completed"),
            }
        }
        Err(err) => panic!("re-encoded packet does not decode: {err} ({encoded})"),
    };
    assert_eq!(again, packet);
});
