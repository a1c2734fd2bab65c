//! The Socket.IO layer of a session: namespaces, binary reassembly and the per-mode event rules.
//!
//! Pure state machine: packets in, packets out (or a violation). The Session actor wraps it.
//! It speaks the Socket.IO revision that goes with the session's Engine.IO revision
//! ([`Revision`]): v5, or v4 for Socket.IO 1.x/2.x clients, whose connection to `/` is implicit.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde_json::Value;
use switchboard_protocol::socketio::{
    Assembly, DEFAULT_NAMESPACE, Decoded, Limits, Packet, PacketData, PartialPacket,
};

use crate::ids::random_id;

/// Which application the `/socket.io/` endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketIoMode {
    /// The behaviour the public Socket.IO protocol test suite expects of its reference server:
    /// namespaces `/` and `/custom`, `auth` echoed on connect, `message` → `message-back`,
    /// `message-with-ack` acked with its own arguments.
    Conformance,
    /// The product: namespace `/` only.
    Product,
}

impl SocketIoMode {
    fn allows(self, nsp: &str) -> bool {
        match self {
            SocketIoMode::Conformance => nsp == "/" || nsp == "/custom",
            SocketIoMode::Product => nsp == "/",
        }
    }
}

/// The Socket.IO protocol revision of a session (fixed by its Engine.IO revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// Socket.IO v5, on Engine.IO v4: every namespace, `/` included, is joined with a CONNECT
    /// that may carry an `auth` object, and the answer carries the socket id.
    V5,
    /// Socket.IO v4, on Engine.IO v3 (socket.io 1.x/2.x clients): the client is on `/` as soon
    /// as the Engine.IO session opens ([`SocketIo::open`]); other namespaces are joined with a
    /// bare CONNECT whose namespace may carry a query (`40/admin?x=1,`); CONNECT answers carry
    /// no socket id, and refusals are plain `ERROR` packets (`44"…"`).
    V4,
}

/// A broken Socket.IO rule; the whole connection is closed for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The packet did not decode.
    #[error("malformed packet: {0}")]
    Decode(#[from] switchboard_protocol::socketio::DecodeError),
    /// A text packet arrived while binary attachments were still awaited.
    #[error("text packet while attachments are pending")]
    TextDuringAttachments,
    /// A binary frame arrived when none was awaited.
    #[error("unexpected binary attachment")]
    UnexpectedAttachment,
    /// A packet other than CONNECT for a namespace the client has not joined.
    #[error("packet for a namespace not joined")]
    NotJoined,
    /// A second CONNECT for a namespace already joined.
    #[error("namespace already joined")]
    AlreadyJoined,
    /// A packet type only a server may send.
    #[error("packet type reserved to the server")]
    ServerOnly,
}

/// What the session must do after a packet.
#[derive(Debug)]
pub enum Output {
    /// Send this packet to the client.
    Reply(Packet),
    /// Product mode: a CONNECT to an allowed namespace; the session authenticates it and then
    /// calls [`SocketIo::join`] or refuses it.
    Connect {
        /// The namespace.
        nsp: String,
        /// The CONNECT payload (the `auth` object).
        auth: Option<Value>,
    },
    /// Product mode: an event for the application.
    Event {
        /// The namespace.
        nsp: String,
        /// `[name, args…]`.
        data: Vec<Value>,
        /// Ack id, when the client wants an answer.
        id: Option<u64>,
        /// Binary attachments.
        attachments: Vec<Bytes>,
        /// Encoded size of the event (text plus attachments), for the event size limit.
        size: usize,
    },
    /// Product mode: a binary event grew past the event size cap while its attachments
    /// arrived; it was dropped (its remaining attachments are read and discarded).
    TooLarge {
        /// Ack id, when the client wants an answer.
        id: Option<u64>,
    },
    /// Product mode: the client left a namespace.
    Disconnected {
        /// The namespace.
        nsp: String,
    },
}

/// Socket.IO state of one Engine.IO session.
#[derive(Debug)]
pub struct SocketIo {
    mode: SocketIoMode,
    revision: Revision,
    limits: Limits,
    /// Joined namespace → socket id (the public id, distinct from the private Engine.IO sid).
    namespaces: HashMap<String, String>,
    /// A binary packet still waiting for attachments.
    partial: Option<PartialPacket>,
    /// Size of the pending binary packet so far (text plus attachments).
    partial_size: usize,
    /// Largest event accepted (text plus attachments), checked as each attachment arrives.
    max_event_bytes: usize,
    /// Attachments of a refused binary packet still to read and drop.
    discarding: usize,
    /// Conformance mode: ack ids of server emits awaiting the client's ack.
    pending_acks: HashSet<(String, u64)>,
    next_ack: u64,
}

/// Most server emits awaiting an ack at once (conformance mode).
const MAX_PENDING_ACKS: usize = 1024;

impl SocketIo {
    /// Fresh state: no namespace joined yet.
    pub fn new(mode: SocketIoMode, limits: Limits) -> Self {
        SocketIo {
            mode,
            revision: Revision::V5,
            limits,
            namespaces: HashMap::new(),
            partial: None,
            partial_size: 0,
            max_event_bytes: usize::MAX,
            discarding: 0,
            pending_acks: HashSet::new(),
            next_ack: 0,
        }
    }

    /// Speak `revision` (v5 unless told otherwise).
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }

    /// The revision it speaks.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The Engine.IO session opened. In v4 that connects the client to `/`: in conformance
    /// mode at once (`40`), in product mode through the session's authentication
    /// ([`Output::Connect`] with no `auth`: the token comes from the handshake request).
    pub fn open(&mut self, out: &mut Vec<Output>) {
        if self.revision == Revision::V5 {
            return;
        }
        let nsp = DEFAULT_NAMESPACE.to_string();
        match self.mode {
            SocketIoMode::Product => out.push(Output::Connect { nsp, auth: None }),
            SocketIoMode::Conformance => {
                out.push(Output::Reply(Packet::new(&nsp, PacketData::Connect(None))));
                self.namespaces.insert(nsp, random_id());
            }
        }
    }

    /// Whether `nsp` is the namespace a v4 client is connected to implicitly (`/`), so that
    /// refusing it must end the connection rather than leave it open on no namespace.
    pub fn implicit(&self, nsp: &str) -> bool {
        self.revision == Revision::V4 && nsp == DEFAULT_NAMESPACE
    }

    /// `packet` as this session's revision writes it: a v4 CONNECT answer carries no payload.
    pub fn for_client<'a>(&self, packet: &'a Packet) -> Cow<'a, Packet> {
        match (&packet.data, self.revision) {
            (PacketData::Connect(Some(_)), Revision::V4) => {
                Cow::Owned(Packet::new(&packet.nsp, PacketData::Connect(None)))
            }
            _ => Cow::Borrowed(packet),
        }
    }

    /// Refuse events larger than `max` bytes (text plus attachments) as they arrive.
    pub fn with_event_cap(mut self, max: usize) -> Self {
        self.max_event_bytes = max;
        self
    }

    /// Join `nsp` as socket `socket_id` (product mode, after the session accepted the CONNECT).
    pub fn join(&mut self, nsp: &str, socket_id: &str) {
        self.namespaces
            .insert(nsp.to_string(), socket_id.to_string());
    }

    /// The socket id of a joined namespace.
    pub fn socket_id(&self, nsp: &str) -> Option<&str> {
        self.namespaces.get(nsp).map(String::as_str)
    }

    /// Whether a binary packet is waiting for (or discarding) attachments.
    pub fn awaiting_attachments(&self) -> bool {
        self.partial.is_some() || self.discarding > 0
    }

    /// Whether the client has joined any namespace (the connect timeout stops once it has).
    pub fn connected(&self) -> bool {
        !self.namespaces.is_empty()
    }

    /// Handle an Engine.IO text message; replies are pushed onto `out`.
    pub fn on_text(&mut self, text: &str, out: &mut Vec<Output>) -> Result<(), Violation> {
        if self.partial.is_some() || self.discarding > 0 {
            return Err(Violation::TextDuringAttachments);
        }
        match Packet::decode(text, &self.limits)? {
            Decoded::Complete(packet) => self.on_packet(packet, text.len(), out),
            Decoded::Partial(partial) => {
                // Attachments are held only for a joined namespace (after authentication).
                if !self.namespaces.contains_key(partial.nsp()) {
                    return Err(Violation::NotJoined);
                }
                if text.len() > self.max_event_bytes {
                    self.refuse(&partial, 0, out);
                    return Ok(());
                }
                self.partial = Some(partial);
                self.partial_size = text.len();
                Ok(())
            }
        }
    }

    /// Drop a binary packet that grew too large (`read` of its attachments arrived), and read
    /// its remaining attachments without keeping them.
    fn refuse(&mut self, partial: &PartialPacket, read: usize, out: &mut Vec<Output>) {
        self.discarding = partial.expected().saturating_sub(read);
        self.partial_size = 0;
        if partial.is_event() && self.mode == SocketIoMode::Product {
            out.push(Output::TooLarge {
                id: partial.ack_id(),
            });
        }
    }

    /// Handle an Engine.IO binary message (an attachment).
    pub fn on_binary(&mut self, data: Bytes, out: &mut Vec<Output>) -> Result<(), Violation> {
        if self.discarding > 0 {
            self.discarding -= 1;
            return Ok(());
        }
        let partial = self.partial.take().ok_or(Violation::UnexpectedAttachment)?;
        self.partial_size = self.partial_size.saturating_add(data.len());
        if self.partial_size > self.max_event_bytes {
            let read = partial.received() + 1;
            self.refuse(&partial, read, out);
            return Ok(());
        }
        match partial.push(data)? {
            Assembly::Pending(partial) => {
                self.partial = Some(partial);
                Ok(())
            }
            Assembly::Complete(packet) => {
                let size = std::mem::take(&mut self.partial_size);
                self.on_packet(packet, size, out)
            }
        }
    }

    fn on_packet(
        &mut self,
        packet: Packet,
        size: usize,
        out: &mut Vec<Output>,
    ) -> Result<(), Violation> {
        let Packet { nsp, data } = packet;
        match data {
            PacketData::Connect(auth) => {
                let nsp = match self.revision {
                    Revision::V5 => nsp,
                    // `/admin?token=x`: the query is the v4 client's only way to pass auth
                    // data; no namespace here takes any.
                    Revision::V4 => match nsp.split_once('?') {
                        Some((name, _query)) => name.to_string(),
                        None => nsp,
                    },
                };
                if self.implicit(&nsp) {
                    // The v4 client is on `/` already (or being authenticated for it).
                    return Ok(());
                }
                if self.namespaces.contains_key(&nsp) {
                    return Err(Violation::AlreadyJoined);
                }
                if !self.mode.allows(&nsp) {
                    let refusal = match self.revision {
                        Revision::V5 => Packet::connect_error(&nsp, "Invalid namespace"),
                        // What socket.io 2 sends, a bare string.
                        Revision::V4 => Packet::new(
                            &nsp,
                            PacketData::ConnectError(Value::from("Invalid namespace")),
                        ),
                    };
                    out.push(Output::Reply(refusal));
                    return Ok(());
                }
                if self.mode == SocketIoMode::Product {
                    out.push(Output::Connect { nsp, auth });
                    return Ok(());
                }
                let id = random_id();
                out.push(Output::Reply(Packet::connect_ok(&nsp, &id)));
                if self.revision == Revision::V5 {
                    let auth = auth.unwrap_or_else(|| Value::Object(Default::default()));
                    out.push(Output::Reply(Packet::event(&nsp, "auth", vec![auth])));
                }
                self.namespaces.insert(nsp, id);
                Ok(())
            }
            _ if !self.namespaces.contains_key(&nsp) => Err(Violation::NotJoined),
            PacketData::Disconnect => {
                self.namespaces.remove(&nsp);
                if self.mode == SocketIoMode::Product {
                    out.push(Output::Disconnected { nsp });
                }
                Ok(())
            }
            PacketData::Event {
                data,
                id,
                attachments,
            } => {
                match self.mode {
                    SocketIoMode::Conformance => {
                        self.conformance_event(nsp, data, id, attachments, out)
                    }
                    SocketIoMode::Product => out.push(Output::Event {
                        nsp,
                        data,
                        id,
                        attachments,
                        size,
                    }),
                }
                Ok(())
            }
            PacketData::Ack {
                data,
                id,
                attachments,
            } => {
                // An ack for an id we never sent (or already got) is ignored, as Node does.
                if self.pending_acks.remove(&(nsp.clone(), id)) {
                    out.push(Output::Reply(Packet {
                        nsp,
                        data: PacketData::Event {
                            data: [vec![Value::from("ack-response")], data].concat(),
                            id: None,
                            attachments,
                        },
                    }));
                }
                Ok(())
            }
            PacketData::ConnectError(_) => Err(Violation::ServerOnly),
        }
    }
}

impl SocketIo {
    /// The reference test server's event rules, plus `server-ack-request`: the server emits
    /// `ack-request` with the same arguments and an ack id, and answers the client's ack with
    /// `ack-response` carrying the ack's arguments (the server → client ack direction).
    fn conformance_event(
        &mut self,
        nsp: String,
        mut data: Vec<Value>,
        id: Option<u64>,
        attachments: Vec<Bytes>,
        out: &mut Vec<Output>,
    ) {
        match (data.first().and_then(Value::as_str), id) {
            (Some("server-ack-request"), _) if self.pending_acks.len() < MAX_PENDING_ACKS => {
                let ack = self.next_ack;
                self.next_ack += 1;
                self.pending_acks.insert((nsp.clone(), ack));
                data[0] = Value::String("ack-request".into());
                out.push(Output::Reply(Packet {
                    nsp,
                    data: PacketData::Event {
                        data,
                        id: Some(ack),
                        attachments,
                    },
                }));
            }
            (Some("message"), _) => {
                data[0] = Value::String("message-back".into());
                out.push(Output::Reply(Packet {
                    nsp,
                    data: PacketData::Event {
                        data,
                        id: None,
                        attachments,
                    },
                }));
            }
            (Some("message-with-ack"), Some(id)) => {
                data.remove(0);
                out.push(Output::Reply(Packet {
                    nsp,
                    data: PacketData::Ack {
                        data,
                        id,
                        attachments,
                    },
                }));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(out: &[Output]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Output::Reply(p) => p.encode().0,
                other => panic!("expected a reply, got {other:?}"),
            })
            .collect()
    }

    fn run(sio: &mut SocketIo, text: &str) -> Result<Vec<String>, Violation> {
        let mut out = Vec::new();
        sio.on_text(text, &mut out)?;
        Ok(replies(&out))
    }

    #[test]
    fn conformance_connect_echoes_auth() {
        let mut sio = SocketIo::new(SocketIoMode::Conformance, Limits::default());
        let out = run(&mut sio, r#"0{"token":"abc"}"#).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with(r#"0{"sid":""#), "{}", out[0]);
        assert_eq!(out[1], r#"2["auth",{"token":"abc"}]"#);
        assert!(sio.connected());
    }

    #[test]
    fn product_mode_hands_connects_and_events_to_the_session() {
        let mut sio = SocketIo::new(SocketIoMode::Product, Limits::default());
        let mut out = Vec::new();
        sio.on_text(r#"0{"token":"t"}"#, &mut out).unwrap();
        assert!(matches!(&out[0], Output::Connect { nsp, auth: Some(_) } if nsp == "/"));
        assert!(!sio.connected(), "joined only once the session accepts");
        sio.join("/", "sock1");
        out.clear();
        sio.on_text(r#"23["typing",{"to":"b"}]"#, &mut out).unwrap();
        assert!(matches!(
            &out[0],
            Output::Event {
                id: Some(3),
                size: 23,
                ..
            }
        ));
    }

    #[test]
    fn unknown_namespace_is_refused_without_closing() {
        let mut sio = SocketIo::new(SocketIoMode::Product, Limits::default());
        let out = run(&mut sio, "0/admin,").unwrap();
        assert_eq!(
            out,
            vec![r#"4/admin,{"message":"Invalid namespace"}"#.to_string()]
        );
        assert!(!sio.connected());
    }

    #[test]
    fn events_before_connect_and_double_connect_are_violations() {
        let mut sio = SocketIo::new(SocketIoMode::Conformance, Limits::default());
        assert_eq!(run(&mut sio, r#"2["message"]"#), Err(Violation::NotJoined));
        run(&mut sio, "0").unwrap();
        assert_eq!(run(&mut sio, "0"), Err(Violation::AlreadyJoined));
    }

    #[test]
    fn message_is_echoed_and_acks_answered() {
        let mut sio = SocketIo::new(SocketIoMode::Conformance, Limits::default());
        run(&mut sio, "0/custom,").unwrap();
        let out = run(&mut sio, r#"2/custom,["message",1,"two"]"#).unwrap();
        assert_eq!(
            out,
            vec![r#"2/custom,["message-back",1,"two"]"#.to_string()]
        );
        let out = run(&mut sio, r#"2/custom,7["message-with-ack",{"a":1}]"#).unwrap();
        assert_eq!(out, vec![r#"3/custom,7[{"a":1}]"#.to_string()]);
    }

    #[test]
    fn server_emits_with_ack_and_reports_the_clients_answer() {
        let mut sio = SocketIo::new(SocketIoMode::Conformance, Limits::default());
        run(&mut sio, "0").unwrap();
        let out = run(&mut sio, r#"2["server-ack-request",1,"a"]"#).unwrap();
        assert_eq!(out, vec![r#"20["ack-request",1,"a"]"#.to_string()]);
        let out = run(&mut sio, r#"30["got",{"x":2}]"#).unwrap();
        assert_eq!(out, vec![r#"2["ack-response","got",{"x":2}]"#.to_string()]);
        // The same id twice, or an id never sent: ignored.
        assert!(run(&mut sio, r#"30["again"]"#).unwrap().is_empty());
        assert!(run(&mut sio, r#"399[]"#).unwrap().is_empty());
    }

    #[test]
    fn binary_event_is_reassembled_and_echoed() {
        let mut sio = SocketIo::new(SocketIoMode::Conformance, Limits::default());
        run(&mut sio, "0").unwrap();
        let mut out = Vec::new();
        sio.on_text(r#"51-["message",{"_placeholder":true,"num":0}]"#, &mut out)
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(
            run(&mut sio, "0"),
            Err(Violation::TextDuringAttachments),
            "text while an attachment is pending"
        );
    }

    #[test]
    fn binary_attachment_completes_the_packet() {
        let mut sio = SocketIo::new(SocketIoMode::Conformance, Limits::default());
        run(&mut sio, "0").unwrap();
        let mut out = Vec::new();
        sio.on_text(r#"51-["message",{"_placeholder":true,"num":0}]"#, &mut out)
            .unwrap();
        sio.on_binary(Bytes::from_static(&[1, 2, 3]), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        let Output::Reply(packet) = &out[0] else {
            panic!("expected a reply")
        };
        let (text, attachments) = packet.encode();
        assert_eq!(text, r#"51-["message-back",{"_placeholder":true,"num":0}]"#);
        assert_eq!(attachments, vec![Bytes::from_static(&[1, 2, 3])]);
        assert_eq!(
            sio.on_binary(Bytes::from_static(&[4]), &mut out),
            Err(Violation::UnexpectedAttachment)
        );
    }

    #[test]
    fn binary_before_joining_is_a_violation_and_holds_nothing() {
        let mut sio = SocketIo::new(SocketIoMode::Product, Limits::default());
        let mut out = Vec::new();
        assert_eq!(
            sio.on_text(r#"51-["signal",{"_placeholder":true,"num":0}]"#, &mut out),
            Err(Violation::NotJoined)
        );
        assert!(sio.partial.is_none());
    }

    #[test]
    fn a_binary_event_over_the_cap_is_refused_as_its_attachments_arrive() {
        let mut sio = SocketIo::new(SocketIoMode::Product, Limits::default()).with_event_cap(220);
        sio.join("/", "s");
        let mut out = Vec::new();
        let header = r#"53-7["signal",{"to":"b","data":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]}]"#;
        sio.on_text(header, &mut out).unwrap();
        sio.on_binary(Bytes::from(vec![0; 10]), &mut out).unwrap();
        assert!(out.is_empty());
        // The second attachment crosses the cap: refused at once, not when the last arrives.
        sio.on_binary(Bytes::from(vec![0; 200]), &mut out).unwrap();
        assert!(matches!(out.as_slice(), [Output::TooLarge { id: Some(7) }]));
        assert!(sio.partial.is_none(), "nothing of it is kept");
        out.clear();
        // The third attachment is read and dropped; then the connection goes on.
        sio.on_binary(Bytes::from(vec![0; 100]), &mut out).unwrap();
        assert!(out.is_empty());
        sio.on_text(r#"2["typing",{"to":"b"}]"#, &mut out).unwrap();
        assert!(matches!(out.as_slice(), [Output::Event { .. }]));
        assert_eq!(
            sio.on_binary(Bytes::from_static(b"x"), &mut out),
            Err(Violation::UnexpectedAttachment)
        );
    }

    #[test]
    fn a_binary_header_over_the_cap_discards_every_attachment() {
        let mut sio = SocketIo::new(SocketIoMode::Product, Limits::default()).with_event_cap(10);
        sio.join("/", "s");
        let mut out = Vec::new();
        sio.on_text(r#"52-["signal",{"to":"somebody","data":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}]"#, &mut out)
            .unwrap();
        assert!(matches!(out.as_slice(), [Output::TooLarge { id: None }]));
        sio.on_binary(Bytes::from_static(b"a"), &mut out).unwrap();
        sio.on_binary(Bytes::from_static(b"b"), &mut out).unwrap();
        assert_eq!(
            sio.on_text(
                "51-[\"x\",{\"_placeholder\":true,\"num\":0}]",
                &mut Vec::new()
            )
            .map(|_| ()),
            Ok(())
        );
    }

    fn v4(mode: SocketIoMode) -> SocketIo {
        SocketIo::new(mode, Limits::default()).with_revision(Revision::V4)
    }

    /// Replies as a v4 session writes them.
    fn v4_replies(sio: &SocketIo, out: &[Output]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Output::Reply(p) => sio.for_client(p).encode().0,
                other => panic!("expected a reply, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_v4_client_is_on_the_default_namespace_as_soon_as_the_session_opens() {
        let mut sio = v4(SocketIoMode::Conformance);
        let mut out = Vec::new();
        sio.open(&mut out);
        assert_eq!(v4_replies(&sio, &out), vec!["0".to_string()]);
        assert!(sio.connected());
        // A CONNECT for `/` changes nothing; events flow at once.
        assert_eq!(run(&mut sio, "0"), Ok(vec![]));
        assert_eq!(
            run(&mut sio, r#"2["message",1]"#),
            Ok(vec![r#"2["message-back",1]"#.to_string()])
        );
        // v5 sessions wait for their CONNECT.
        let mut sio = SocketIo::new(SocketIoMode::Conformance, Limits::default());
        sio.open(&mut out);
        assert!(!sio.connected());
    }

    #[test]
    fn v4_product_mode_authenticates_the_implicit_connection() {
        let mut sio = v4(SocketIoMode::Product);
        let mut out = Vec::new();
        sio.open(&mut out);
        assert!(matches!(&out[..], [Output::Connect { nsp, auth: None }] if nsp == "/"));
        assert!(sio.implicit("/"));
        assert!(!sio.implicit("/admin"));
        assert!(!SocketIo::new(SocketIoMode::Product, Limits::default()).implicit("/"));
        // Before it is accepted, nothing but CONNECTs may come.
        assert_eq!(run(&mut sio, r#"2["typing"]"#), Err(Violation::NotJoined));
        // The answer the application writes loses its payload on the way to a v4 client.
        let answer = Packet::connect_ok("/", "sock1");
        assert_eq!(sio.for_client(&answer).encode().0, "0");
        assert_eq!(
            SocketIo::new(SocketIoMode::Product, Limits::default())
                .for_client(&answer)
                .encode()
                .0,
            r#"0{"sid":"sock1"}"#
        );
    }

    #[test]
    fn v4_namespaces_take_a_query_and_are_refused_the_v2_way() {
        let mut sio = v4(SocketIoMode::Conformance);
        let mut out = Vec::new();
        sio.open(&mut out);
        out.clear();
        sio.on_text("0/custom?token=abc&x=1,", &mut out).unwrap();
        assert_eq!(v4_replies(&sio, &out), vec!["0/custom,".to_string()]);
        assert_eq!(
            sio.socket_id("/custom").map(str::len),
            Some(random_id().len())
        );
        assert_eq!(run(&mut sio, "0/custom"), Err(Violation::AlreadyJoined));
        let mut sio = v4(SocketIoMode::Product);
        assert_eq!(
            run(&mut sio, "0/admin?token=abc,"),
            Ok(vec![r#"4/admin,"Invalid namespace""#.to_string()])
        );
    }
}
