//! What each actor accepts: its messages, their answers and errors, one file per receiving
//! actor, and [`Port`], the metered handle a sender holds for one message type.
//!
//! Actor modules import ports, never each other: the Presence actor sends
//! [`registry::PresenceChanged`] through a `Port<PresenceChanged>` without knowing the registry's
//! type, and the registry reaches a session through its [`session::SessionPort`]. Only the
//! composition root ([`Node`](crate::node::Node)) names every actor.

pub mod bridge;
pub mod hooks;
pub mod journal;
pub mod presence;
pub mod ratelimiter;
pub mod recovery;
pub mod registry;
pub mod session;

use std::sync::Arc;

use actix::dev::{RecipientRequest, ToEnvelope};
use actix::prelude::*;

use crate::metrics::{Metered, MeteredActor};

/// A metered handle to whichever actor handles `M` (a `Recipient` that also keeps the
/// receiving actor type's mailbox metrics). Cloning it copies a pointer.
pub struct Port<M>
where
    M: Message + Send,
    M::Result: Send,
{
    tx: Arc<Recipient<Metered<M>>>,
    actor: &'static str,
}

impl<M> Clone for Port<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Port {
            tx: self.tx.clone(),
            actor: self.actor,
        }
    }
}

impl<M> Port<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    /// A port to the actor at `addr`.
    pub fn new<A>(addr: &Addr<A>) -> Self
    where
        A: MeteredActor + Handler<Metered<M>>,
        A::Context: ToEnvelope<A, Metered<M>>,
    {
        Port {
            tx: Arc::new(addr.clone().recipient()),
            actor: A::NAME,
        }
    }

    /// Send without waiting for the answer (ignores mailbox capacity, like `Addr::do_send`).
    pub fn do_send(&self, msg: M) {
        self.tx.do_send(Metered::new(self.actor, msg));
    }

    /// Send and wait for the answer.
    pub fn send(&self, msg: M) -> RecipientRequest<Metered<M>> {
        self.tx.send(Metered::new(self.actor, msg))
    }

    /// Send unless the mailbox is full or the actor is gone (the message comes back).
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        self.tx
            .try_send(Metered::new(self.actor, msg))
            .map_err(|err| match err {
                SendError::Full(m) => SendError::Full(m.msg),
                SendError::Closed(m) => SendError::Closed(m.msg),
            })
    }

    /// Whether the actor behind the port still runs.
    pub fn connected(&self) -> bool {
        self.tx.connected()
    }
}
