//! `webhook_lease`: which node delivers webhooks, until when.

use sea_orm::entity::prelude::*;

/// One lease.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_lease")]
pub struct Model {
    /// The job the lease is for (the Journal uses one, `webhooks`).
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(64))"
    )]
    pub name: String,
    /// The node id holding it.
    #[sea_orm(column_type = "String(StringLen::N(255))")]
    pub holder: String,
    /// When it lapses unless its holder extends it.
    pub expires_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
