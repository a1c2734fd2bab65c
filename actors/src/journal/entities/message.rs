//! `messages`: durable direct messages; the id is the `message:sync` cursor.

use sea_orm::entity::prelude::*;

/// One stored direct message.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    /// Increasing id, assigned at commit.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Sender (JWT subject).
    #[sea_orm(column_type = "String(StringLen::N(255))")]
    pub from_user: String,
    /// Recipient.
    #[sea_orm(column_type = "String(StringLen::N(255))")]
    pub to_user: String,
    /// Sanitised text.
    #[sea_orm(column_type = "Text")]
    pub body: String,
    /// Commit time.
    pub created_at: DateTimeUtc,
    /// The client's id for the send, unique per sender (a retry finds the first row).
    #[sea_orm(column_type = "String(StringLen::N(255))", nullable)]
    pub client_msg_id: Option<String>,
}

/// No relations: users live in the application's database.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
