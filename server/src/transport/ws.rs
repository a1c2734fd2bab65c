//! The websocket transport: a thin actix-web-actors actor that moves frames between a client's
//! websocket and its Session.
//!
//! It owns no session state. The Session bounds what it hands over (`try_send` against this
//! actor's small mailbox), because a client that stops reading freezes this actor (it is only
//! polled when the HTTP dispatcher can write).

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web_actors::ws::{self, CloseCode, CloseReason, ProtocolError};
use bytes::{Bytes, BytesMut};
use switchboard_actors::metrics::MeteredAddr;
use switchboard_actors::session::Session;
use switchboard_actors::transport::{
    AttachWebSocket, Outgoing, WsClosed, WsInbound, WsOut, WsOutbound, next_transport_id,
};
use switchboard_protocol::engineio::Packet;
use tracing::debug;

/// One client websocket (see the module docs).
pub struct WsTransport {
    id: u64,
    session: MeteredAddr<Session>,
    upgrade: bool,
    max_payload: usize,
    mailbox: usize,
    /// A fragmented message being reassembled: (is text, bytes so far).
    fragments: Option<(bool, BytesMut)>,
    /// Whether the websocket ended in error (reported to the session).
    error: bool,
}

impl WsTransport {
    /// A transport for `session`; `upgrade` when it upgrades a polling session.
    pub fn new(
        session: MeteredAddr<Session>,
        upgrade: bool,
        max_payload: usize,
        mailbox: usize,
    ) -> Self {
        WsTransport {
            id: next_transport_id(),
            session,
            upgrade,
            max_payload,
            mailbox,
            fragments: None,
            error: false,
        }
    }

    fn fail(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode, why: &str) {
        debug!(why, "closing websocket");
        self.error = true;
        ctx.close(Some(CloseReason {
            code,
            description: Some(why.to_string()),
        }));
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        match Packet::decode_text(text) {
            Ok(packet) => self.session.do_send(WsInbound {
                id: self.id,
                packet,
            }),
            Err(_) => self.fail(ctx, CloseCode::Protocol, "invalid engine.io packet"),
        }
    }

    fn on_binary(&mut self, data: Bytes) {
        self.session.do_send(WsInbound {
            id: self.id,
            packet: Packet::from_binary(data),
        });
    }

    fn on_fragment(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (first, text, chunk, last) = match item {
            Item::FirstText(b) => (true, true, b, false),
            Item::FirstBinary(b) => (true, false, b, false),
            Item::Continue(b) => (false, false, b, false),
            Item::Last(b) => (false, false, b, true),
        };
        if first {
            if self.fragments.is_some() {
                return self.fail(
                    ctx,
                    CloseCode::Protocol,
                    "new message inside a fragmented one",
                );
            }
            self.fragments = Some((text, BytesMut::new()));
        }
        let Some((is_text, buf)) = self.fragments.as_mut() else {
            return self.fail(
                ctx,
                CloseCode::Protocol,
                "continuation without a first frame",
            );
        };
        if buf.len() + chunk.len() > self.max_payload {
            self.fragments = None;
            return self.fail(ctx, CloseCode::Size, "message too big");
        }
        buf.extend_from_slice(&chunk);
        if !last {
            return;
        }
        let is_text = *is_text;
        let Some((_, buf)) = self.fragments.take() else {
            return;
        };
        let data = buf.freeze();
        if is_text {
            match std::str::from_utf8(&data) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.fail(ctx, CloseCode::Invalid, "invalid utf-8"),
            }
        } else {
            self.on_binary(data);
        }
    }
}

impl Actor for WsTransport {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        switchboard_actors::metrics::actor_started("ws_transport");
        // Bounded so that the Session's `try_send` fails fast for a client that stops reading.
        ctx.set_mailbox_capacity(self.mailbox);
        self.session.do_send(AttachWebSocket {
            id: self.id,
            out: WsOut::new(ctx.address().recipient()),
            upgrade: self.upgrade,
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        switchboard_actors::metrics::actor_stopped("ws_transport");
        self.session.do_send(WsClosed {
            id: self.id,
            error: self.error,
        });
    }
}

impl Handler<WsOutbound> for WsTransport {
    type Result = ();

    fn handle(&mut self, msg: WsOutbound, ctx: &mut Self::Context) {
        match msg {
            WsOutbound::Frame(Outgoing::Text(text)) => ctx.text(text),
            WsOutbound::Frame(Outgoing::Binary(data)) => ctx.binary(data),
            WsOutbound::Close { code, reason } => {
                ctx.close(Some(CloseReason {
                    code: CloseCode::from(code),
                    description: Some(reason.to_string()),
                }));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ProtocolError>> for WsTransport {
    fn handle(&mut self, msg: Result<ws::Message, ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Text(text)) => {
                if self.fragments.is_some() {
                    return self.fail(
                        ctx,
                        CloseCode::Protocol,
                        "text frame inside a fragmented message",
                    );
                }
                self.on_text(&text, ctx)
            }
            Ok(ws::Message::Binary(data)) => {
                if self.fragments.is_some() {
                    return self.fail(
                        ctx,
                        CloseCode::Protocol,
                        "binary frame inside a fragmented message",
                    );
                }
                self.on_binary(data)
            }
            Ok(ws::Message::Continuation(item)) => self.on_fragment(item, ctx),
            Ok(ws::Message::Ping(data)) => ctx.pong(&data),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => self.fail(ctx, CloseCode::Size, "message too big"),
            Err(ProtocolError::Io(err))
                if err.to_string().to_ascii_lowercase().contains("utf-8") =>
            {
                self.fail(ctx, CloseCode::Invalid, "invalid utf-8")
            }
            Err(err) => {
                let why = err.to_string();
                self.fail(ctx, CloseCode::Protocol, &why)
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The TCP stream ended without a Close frame.
        ctx.stop();
    }
}

impl switchboard_actors::metrics::MeteredActor for WsTransport {
    const NAME: &'static str = "ws_transport";
}

switchboard_actors::metered!(WsTransport: WsOutbound);
