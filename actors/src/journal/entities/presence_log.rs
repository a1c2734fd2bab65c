//! `presence_logs`: one row per presence transition.

use sea_orm::entity::prelude::*;

/// One presence transition.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "presence_logs")]
pub struct Model {
    /// Row id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Whose presence (JWT subject).
    #[sea_orm(column_type = "String(StringLen::N(255))")]
    pub user_id: String,
    /// `online`, `away` or `offline`.
    #[sea_orm(column_type = "String(StringLen::N(20))")]
    pub status: String,
    /// The device that caused it, when one did.
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub device_id: Option<String>,
    /// When it happened.
    pub timestamp: DateTimeUtc,
}

/// No relations: users live in the application's database.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
