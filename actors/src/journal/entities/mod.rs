//! sea-orm entities of the Journal's tables (created by the `migration` crate).
//!
//! Only the Journal touches them; their column types mirror the migrations exactly.

pub mod message;
pub mod presence_log;
pub mod room_membership;
pub mod socket_connection;
pub mod webhook_lease;
pub mod webhook_outbox;
