//! The per-node SessionRegistry: indexes every live Session by sid and watches them end.
//!
//! Sessions are created on the HTTP worker that accepted them (spreading them over the
//! workers' arbiters) and registered here before the handshake is answered, so a client's next
//! request always finds its session.

use std::collections::HashMap;

use actix::prelude::*;

use crate::session::Session;
use crate::transport::Sid;

/// Register a freshly started session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    /// Its id.
    pub sid: Sid,
    /// Its address.
    pub addr: Addr<Session>,
}

/// A session has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    /// Its id.
    pub sid: Sid,
}

/// Find a session by sid.
#[derive(Message)]
#[rtype(result = "Option<Addr<Session>>")]
pub struct Lookup {
    /// The id the client sent.
    pub sid: Sid,
}

/// How many sessions are live on this node.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountSessions;

/// The per-node registry of sessions (see the module docs).
#[derive(Default)]
pub struct SessionRegistry {
    sessions: HashMap<Sid, Addr<Session>>,
}

impl SessionRegistry {
    /// Start the registry on the current arbiter.
    pub fn start_default() -> Addr<Self> {
        SessionRegistry::create(|ctx| {
            // Sessions deregister with `do_send`; HTTP handlers `send` and wait for room.
            ctx.set_mailbox_capacity(4096);
            SessionRegistry::default()
        })
    }
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;
}

impl Handler<Register> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Register, _ctx: &mut Context<Self>) {
        self.sessions.insert(msg.sid, msg.addr);
    }
}

impl Handler<Unregister> for SessionRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _ctx: &mut Context<Self>) {
        self.sessions.remove(&msg.sid);
    }
}

impl Handler<Lookup> for SessionRegistry {
    type Result = Option<Addr<Session>>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Context<Self>) -> Self::Result {
        self.sessions
            .get(&msg.sid)
            .filter(|addr| addr.connected())
            .cloned()
    }
}

impl Handler<CountSessions> for SessionRegistry {
    type Result = usize;

    fn handle(&mut self, _msg: CountSessions, _ctx: &mut Context<Self>) -> usize {
        self.sessions.len()
    }
}
