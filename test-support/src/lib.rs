//! Test fixtures shared by both Rust test tiers: the actor suites (`actors/tests/`) and the
//! black-box tests (`tests/`, the `switchboard-tests` crate). A helper lives here only when both
//! tiers use it; one tier's own helpers stay with that tier.
//!
//! # Layout
//! - [`TestDb`]: a throwaway SQLite file or PostgreSQL database, removed when dropped, and
//!   [`on_both_backends!`], which runs one scenario as `scenario::sqlite` and
//!   `scenario::postgres`; [`postgres_server_url`], [`with_database`] and [`server_address`]
//!   take database URLs apart.
//! - [`TcpProxy`]: a TCP proxy a test cuts and restores, so a service (the database) goes away
//!   and comes back under a running node or actor.
//! - [`ScratchDir`]: a directory removed when dropped.

mod db;
mod proxy;
mod scratch;

pub use db::{Backend, TestDb, postgres_server_url, server_address, with_database};
pub use proxy::TcpProxy;
pub use scratch::ScratchDir;
