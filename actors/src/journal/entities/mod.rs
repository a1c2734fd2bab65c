//! sea-orm entities of the Journal's three tables (created by the `migration` crate).
//!
//! Only the Journal touches them; their column types mirror the migrations exactly.

pub mod message;
pub mod presence_log;
pub mod socket_connection;
