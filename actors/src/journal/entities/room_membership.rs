//! `room_memberships`: durable room memberships made through the server API.

use sea_orm::entity::prelude::*;

/// One user's membership of one room.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "room_memberships")]
pub struct Model {
    /// The room name.
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(255))"
    )]
    pub room: String,
    /// The member (JWT subject); no foreign key.
    #[sea_orm(
        primary_key,
        auto_increment = false,
        column_type = "String(StringLen::N(255))"
    )]
    pub user_id: String,
    /// When the membership was added.
    pub created_at: DateTimeUtc,
}

/// No relations: users live in the application's database.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
