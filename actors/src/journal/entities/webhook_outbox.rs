//! `webhook_outbox`: lifecycle events waiting for delivery, written in the same transaction as
//! the row each describes.

use sea_orm::entity::prelude::*;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_outbox")]
pub struct Model {
    /// Increasing id: the delivery order.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The event's `id` (a UUID as text), which receivers deduplicate by.
    #[sea_orm(column_type = "String(StringLen::N(36))", unique)]
    pub event_id: String,
    /// The event's `type`, e.g. `socket.connected`.
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub event_type: String,
    /// The whole event as JSON text (`{"id", "type", "at", …fields}`).
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    /// When the row was written (close to its commit; the settle window counts from here).
    pub created_at: DateTimeUtc,
    /// `pending` (to deliver) or `dead` (given up on, kept for inspection until retention).
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub status: String,
    /// Failed delivery attempts so far.
    pub attempts: i32,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
