//! `messages`: durable direct messages, read back by `message:sync`.
//!
//! The id is the sync cursor: "messages to or from U with id > X, ascending, limit N" is two
//! index range scans, one on `(to_user, id)` and one on `(from_user, id)`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `messages` and its indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .col(big_pk_auto(Messages::Id))
                    .col(string_len(Messages::FromUser, 255))
                    .col(string_len(Messages::ToUser, 255))
                    .col(text(Messages::Body))
                    .col(timestamp_with_time_zone(Messages::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_to_user_id")
                    .table(Messages::Table)
                    .col(Messages::ToUser)
                    .col(Messages::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_from_user_id")
                    .table(Messages::Table)
                    .col(Messages::FromUser)
                    .col(Messages::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Messages::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    FromUser,
    ToUser,
    Body,
    CreatedAt,
}
