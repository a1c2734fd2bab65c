//! Replays every fuzz input kept in the repository through the fuzz targets' own checks.
//!
//! `protocol/fuzz/regressions/<target>/*` holds inputs that once crashed, hung or broke a
//! round-trip; `protocol/fuzz/corpus/<target>/*` is the minimized corpus. Both are judged by
//! `protocol/fuzz/checks.rs`, the file the `cargo fuzz` targets call, so this stable test
//! fails exactly where the fuzzer would. See `protocol/fuzz/README.md`.
//!
//! `WRITE_FUZZ_SEEDS=1 cargo test -p switchboard-protocol --test fuzz_regressions seeds_decode`
//! regenerates the encoder-built seed inputs (`seed-*`) in the corpus directories.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_protocol::Bytes;
use switchboard_protocol::cluster::{Body, ClusterFrame, Part, PresenceWire};
use switchboard_protocol::engineio::{self, Frame, Handshake, payload, v3};
use switchboard_protocol::socketio::{self, PacketData};
use switchboard_protocol::trace::TraceParent;

/// `protocol/fuzz`.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly inside `dir` (none when it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Run `check` on every file of `fuzz/<kind>/<target>/`; returns how many ran and which failed.
fn replay(kind: &str, target: &str, check: fn(&[u8])) -> (usize, Vec<String>) {
    let dir = fuzz_dir().join(kind).join(target);
    let mut failures = Vec::new();
    let paths = files(&dir);
    for path in &paths {
        let data = fs::read(path).expect("readable fuzz input");
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&data)));
        let elapsed = started.elapsed();
        let name = path.strip_prefix(fuzz_dir()).unwrap_or(path).display();
        match outcome {
            Err(_) => failures.push(format!("{name}: panicked")),
            // Far above any input's real cost (milliseconds), far below libFuzzer's timeout:
            // catches a quadratic blowup coming back even in a debug build.
            Ok(()) if elapsed > Duration::from_secs(2) => {
                failures.push(format!("{name}: took {elapsed:?}"))
            }
            Ok(()) => {}
        }
    }
    (paths.len(), failures)
}

#[test]
fn every_regression_and_corpus_input_passes_its_target() {
    let mut failures = Vec::new();
    let mut regressions = 0;
    for (target, check) in checks::TARGETS {
        let (corpus, failed) = replay("corpus", target, check);
        failures.extend(failed);
        // An empty corpus would make this test vacuous: it is kept in the repository.
        assert!(corpus > 0, "no corpus inputs for {target}");
        let (ran, failed) = replay("regressions", target, check);
        regressions += ran;
        failures.extend(failed);
    }
    assert!(regressions > 0, "fuzz/regressions is empty");
    // Every regression directory names a target, so no crash file is silently skipped.
    let regressions = fs::read_dir(fuzz_dir().join("regressions")).expect("fuzz/regressions");
    for entry in regressions {
        let path = entry.expect("readable directory entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        assert!(
            path.is_dir() && checks::TARGETS.iter().any(|(target, _)| *target == name),
            "fuzz/regressions/{name} is not a fuzz target's directory"
        );
    }
    assert!(
        failures.is_empty(),
        "fuzz inputs failing:\n{}",
        failures.join("\n")
    );
}

/// The replay must be able to fail, or passing it proves nothing: a check that refuses
/// every decodable disconnect frame is caught on the cluster corpus.
#[test]
fn replay_reports_a_failing_check() {
    let (ran, failed) = replay("corpus", "cluster_frame", |data| {
        let decoded = ClusterFrame::decode(data).map(|frame| frame.body);
        assert!(!matches!(decoded, Ok(Body::DisconnectUser { .. })));
    });
    assert!(ran > 0);
    assert!(!failed.is_empty(), "the corpus keeps a disconnect frame");
}

// ---------------------------------------------------------------- seeds

/// Socket.IO seeds: text, then `\0`-separated attachments, as `checks::socketio_packet` reads them.
fn socketio_seeds() -> Vec<Vec<u8>> {
    let placeholder = |num: usize| json!({ "_placeholder": true, "num": num });
    let mut texts: Vec<(String, Vec<&[u8]>)> = [
        "0",
        r#"0{"token":"x"}"#,
        "0/admin,",
        "0/admin",
        r#"0/admin,{"token":"abc","nested":{"a":[1,2,{"b":null}]}}"#,
        r#"0{"sid":"abc"}"#,
        "0/,",
        "1",
        "1/admin,",
        r#"2["hello",1]"#,
        r#"2/chat,12["msg",{"a":[1,2.5,-3e-7,null,true,false,"é\u0000\"\\"]}]"#,
        r#"212["ev"]"#,
        r#"20["ev"]"#,
        r#"218446744073709551615["ev"]"#,
        "2[1.5]",
        r#"2[7,"x"]"#,
        r#"2["ev",{"z":1,"a":2,"z":3}]"#,
        r#"2["ev",{"a":{"b":{"c":[[[{"d":[{}]}]]]}}}]"#,
        r#"2["ev",123456789012345678901234567890,-9223372036854775809,1e308,5e-324]"#,
        r#"2["message:send",{"to":"bob","text":"hi"}]"#,
        r#"2/chat,7["message:sync",{"after":10,"limit":50}]"#,
        r#"2["presence:subscribe",{"userIds":["a","b"]}]"#,
        r#"2["room:emit",{"room":"r","data":{"x":[1]}}]"#,
        r#"2["status:set",{"status":"away"}]"#,
        r#"2["typing",{"to":"bob"}]"#,
        r#"2["signal",{"to":"bob","data":null}]"#,
        r#"2["ev",{"_placeholder":true,"num":9}]"#,
        "3/custom,5[]",
        r#"31["ok",{"n":2}]"#,
        r#"4{"message":"Invalid namespace"}"#,
        r#"4/x,{"message":"m","data":{"z":1,"a":[2]}}"#,
        r#"4"Not authorized""#,
    ]
    .into_iter()
    .map(|text| (text.to_owned(), Vec::new()))
    .collect();
    texts.push((
        r#"51-["message-back",{"_placeholder":true,"num":0}]"#.to_owned(),
        vec![&[1, 2, 3]],
    ));
    texts.push((
        r#"52-/a,9["up",{"f":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0}]"#
            .to_owned(),
        vec![b"first", b"second"],
    ));
    texts.push((
        r#"61-/custom,3[{"_placeholder":true,"num":0}]"#.to_owned(),
        vec![&[0xff, 0xfe]],
    ));
    texts.push((
        r#"51-["a",{"_placeholder":1,"num":9}]"#.to_owned(),
        vec![b""],
    ));
    // Ten attachments (the default limit), placeholders nested at every depth.
    let mut args = vec![json!("many")];
    let mut nested = json!([]);
    for num in 0..10 {
        if num % 2 == 0 {
            args.push(placeholder(num));
        } else {
            nested = json!({ "file": [placeholder(num)], "inner": nested });
        }
    }
    args.push(nested);
    texts.push((
        format!("510-/upload,42{}", Value::Array(args)),
        vec![b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"],
    ));
    // Built by the encoder, so they are canonical.
    let built = [
        socketio::Packet::connect_ok("/chat", "sid-1"),
        socketio::Packet::connect_error_with_data("/", "nope", json!({"retry": 3})),
        socketio::Packet::disconnect("/chat"),
        socketio::Packet::event("/", "hello", vec![json!({"deep": [[["x"]]]})]),
        socketio::Packet::ack(
            "/files",
            u64::MAX,
            vec![placeholder(0), json!({"more": placeholder(1)})],
            vec![Bytes::from_static(b"\x01\x02"), Bytes::from_static(b"tail")],
        ),
        socketio::Packet::new(
            "/x",
            PacketData::Event {
                data: vec![json!(3), placeholder(0)],
                id: Some(0),
                attachments: vec![Bytes::from_static(b"bin")],
            },
        ),
    ];
    let mut seeds: Vec<Vec<u8>> = texts
        .iter()
        .map(|(text, attachments)| {
            let mut seed = text.clone().into_bytes();
            for attachment in attachments {
                seed.push(0);
                seed.extend_from_slice(attachment);
            }
            seed
        })
        .collect();
    for packet in built {
        let (text, attachments) = packet.encode();
        let mut seed = text.into_bytes();
        for attachment in attachments {
            seed.push(0);
            seed.extend_from_slice(&attachment);
        }
        seeds.push(seed);
    }
    seeds
}

fn handshake() -> String {
    let handshake = Handshake {
        sid: "lv_VI97HAXpY6yYWAAAC".to_owned(),
        upgrades: vec!["websocket".to_owned()],
        ping_interval: 25000,
        ping_timeout: 20000,
        max_payload: 1_000_000,
    };
    match handshake.packet().encode() {
        Frame::Text(text) => text,
        Frame::Binary(_) => unreachable!("an open packet is text"),
    }
}

fn engineio_packet_seeds() -> Vec<Vec<u8>> {
    let mut texts = vec![
        handshake(),
        "1".to_owned(),
        "2".to_owned(),
        "2probe".to_owned(),
        "3".to_owned(),
        "3probe".to_owned(),
        "4hello".to_owned(),
        "4héllo ✓".to_owned(),
        "5".to_owned(),
        "6".to_owned(),
    ];
    for seed in engineio_v3_payload_seeds() {
        let text = v3::payload::decode(&seed, false, checks::MAX_RECORDS);
        let binary = v3::payload::decode(&seed, true, checks::MAX_RECORDS);
        assert!(text.is_ok() || binary.is_ok(), "{seed:?}");
    }
    for seed in socketio_seeds() {
        let text = seed.split(|&b| b == 0).next().unwrap_or_default();
        texts.push(format!("4{}", String::from_utf8_lossy(text)));
    }
    texts.into_iter().map(String::into_bytes).collect()
}

fn engineio_payload_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        &b"4hello\x1e4world\x1ebAQID"[..],
        b"bAQI=",
        b"bAQI",
        b"b",
        b"6",
        b"1",
        b"2probe\x1e3probe\x1e5\x1e6",
        b"451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID",
    ]
    .iter()
    .map(|seed| seed.to_vec())
    .collect();
    seeds.push(handshake().into_bytes());
    let packets = [
        socketio::Packet::event("/chat", "ev", vec![json!({"a": [1, "x"]})]),
        socketio::Packet::ack(
            "/",
            7,
            vec![json!({"_placeholder": true, "num": 0})],
            vec![Bytes::from_static(&[0, 0xff, 0x1e, b'b'])],
        ),
    ];
    for packet in packets {
        seeds.push(payload::encode(&packet.to_frames()));
    }
    seeds.push(payload::encode(&[
        Frame::Text("2".to_owned()),
        Frame::Binary(Bytes::from_static(b"\x00\x01")),
        Frame::Binary(Bytes::from_static(b"abcde")),
        Frame::Text("4x".to_owned()),
    ]));
    seeds
}

/// Engine.IO v3 bodies in both framings, as engine.io-parser 2 writes them.
fn engineio_v3_payload_seeds() -> Vec<Vec<u8>> {
    let open = v3::Handshake {
        sid: "lv_VI97HAXpY6yYWAAAC".to_owned(),
        upgrades: vec!["websocket".to_owned()],
        ping_interval: 25000,
        ping_timeout: 20000,
    }
    .packet()
    .encode();
    let mut seeds: Vec<Vec<u8>> = [
        "19:42[\"message\",1,\"é\"]3:4😀1:2",
        "0:",
        "1:6",
        "1:2",
        "6:2probe",
        "1:1",
        "6:b4AQID",
        "39:451-[\"m\",{\"_placeholder\":true,\"num\":0}]6:b4AQID",
    ]
    .iter()
    .map(|seed| seed.as_bytes().to_vec())
    .collect();
    seeds
        .push(v3::payload::encode_text(&[open.clone(), Frame::Text("40".to_owned())]).into_bytes());
    seeds.push([&[0u8, 6, 0xFF][..], b"4hello", &[1, 5, 0xFF, 4, 1, 2, 3, 4]].concat());
    let packets = [
        socketio::Packet::event("/chat", "ev", vec![json!({"a": [1, "x", "é😀"]})]),
        socketio::Packet::ack(
            "/",
            7,
            vec![json!({"_placeholder": true, "num": 0})],
            vec![Bytes::from_static(&[0, 0xff, 0x1e, b'b'])],
        ),
    ];
    for packet in packets {
        let frames = packet.to_frames();
        seeds.push(v3::payload::encode_text(&frames).into_bytes());
        seeds.push(v3::payload::encode_binary(&frames));
    }
    seeds.push(v3::payload::encode_binary(&[
        open,
        Frame::Text("2".to_owned()),
        Frame::Binary(Bytes::from_static(b"\x00\x01")),
        Frame::Text("4x".to_owned()),
    ]));
    seeds
}

fn cluster_frames() -> Vec<Vec<u8>> {
    let sio = socketio::Packet::ack(
        "/",
        1,
        vec![json!({"_placeholder": true, "num": 0})],
        vec![Bytes::from_static(&[1, 2, 3])],
    );
    let parts: Vec<Part> = sio
        .to_frames()
        .into_iter()
        .map(|frame| match frame {
            Frame::Text(text) => Part::Text(Bytes::from(text)),
            Frame::Binary(data) => Part::Binary(data),
        })
        .collect();
    let frame = |sent_at_micros, body| ClusterFrame {
        origin: "node-1".to_owned(),
        sent_at_micros,
        trace: None,
        body,
    };
    [
        frame(
            1_700_000_000_000_000,
            Body::Deliver {
                except: Some("sid123".to_owned()),
                volatile: true,
                parts,
            },
        ),
        frame(
            1,
            Body::Deliver {
                except: None,
                volatile: false,
                parts: vec![Part::Text(Bytes::from_static(b"42[\"ev\"]"))],
            },
        ),
        frame(
            2,
            Body::Presence {
                user: "dave".to_owned(),
                change: PresenceWire::Online,
            },
        ),
        frame(
            3,
            Body::Presence {
                user: "dave".to_owned(),
                change: PresenceWire::Offline,
            },
        ),
        frame(
            4,
            Body::Presence {
                user: "dave".to_owned(),
                change: PresenceWire::Status("away".to_owned()),
            },
        ),
        frame(
            5,
            Body::DisconnectUser {
                user: "eve".to_owned(),
            },
        ),
        frame(
            u64::MAX,
            Body::Membership {
                user: "eve".to_owned(),
                room: "room-é".to_owned(),
                join: true,
            },
        ),
        // A traced frame (version 2): the trace context before the rest.
        ClusterFrame {
            trace: TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ..frame(
                6,
                Body::Deliver {
                    except: None,
                    volatile: false,
                    parts: vec![Part::Text(Bytes::from_static(b"42[\"ev\"]"))],
                },
            )
        },
    ]
    .iter()
    .map(ClusterFrame::encode)
    .collect()
}

/// Write the seeds as `fuzz/corpus/<target>/seed-<n>` (`seeds_decode` calls it when
/// `WRITE_FUZZ_SEEDS=1`, by hand before fuzzing).
fn write_seeds() {
    let seeds = [
        ("engineio_packet", engineio_packet_seeds()),
        ("engineio_payload", engineio_payload_seeds()),
        ("engineio_v3_payload", engineio_v3_payload_seeds()),
        ("socketio_packet", socketio_seeds()),
        ("cluster_frame", cluster_frames()),
    ];
    for (target, inputs) in seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        for (n, input) in inputs.iter().enumerate() {
            fs::write(dir.join(format!("seed-{n:02}")), input).expect("seed written");
        }
    }
}

/// Every seed is valid, so the fuzzer starts from inputs that reach past the decoders' checks.
#[test]
fn seeds_decode() {
    for seed in engineio_packet_seeds() {
        let text = String::from_utf8(seed).expect("UTF-8 seed");
        assert!(engineio::Packet::decode_text(&text).is_ok(), "{text}");
    }
    for seed in engineio_payload_seeds() {
        assert!(payload::decode(&seed, checks::MAX_RECORDS).is_ok());
    }
    for seed in engineio_v3_payload_seeds() {
        let text = v3::payload::decode(&seed, false, checks::MAX_RECORDS);
        let binary = v3::payload::decode(&seed, true, checks::MAX_RECORDS);
        assert!(text.is_ok() || binary.is_ok(), "{seed:?}");
    }
    for seed in socketio_seeds() {
        let text = seed.split(|&b| b == 0).next().unwrap_or_default();
        let text = std::str::from_utf8(text).expect("UTF-8 seed");
        let decoded = socketio::Packet::decode(text, &socketio::Limits::default());
        assert!(decoded.is_ok(), "{text}: {decoded:?}");
    }
    for seed in cluster_frames() {
        assert!(ClusterFrame::decode(&seed).is_ok());
    }
    if std::env::var_os("WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1") {
        write_seeds();
    }
}
