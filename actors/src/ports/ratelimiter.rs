//! What the RateLimiter accepts: one hit of a per-user, cluster-wide limit.

use std::time::Duration;

use actix::prelude::*;

use crate::ids::UserId;
use crate::store::StoreError;

/// Count one `message:send` of `user`: `Ok(Err(retry_after))` when over the limit or the
/// daily byte quota, `Err` when the store cannot answer.
#[derive(Message)]
#[rtype(result = "Result<Result<(), Duration>, StoreError>")]
pub struct CheckMessage {
    /// The sender.
    pub user: UserId,
    /// The text's size, counted against the user's daily byte quota.
    pub bytes: u64,
}
