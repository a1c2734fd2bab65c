//! `messages.client_msg_id`: the id a client gives a `message:send`, unique per sender, so a
//! retried send (after an `in_doubt` answer or a lost ack) is stored once and answered with the
//! first one's `messageId`. Null for sends without one; both backends let nulls repeat in a
//! unique index.

use sea_orm_migration::prelude::*;

/// Adds `client_msg_id` and its unique `(from_user, client_msg_id)` index.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(ColumnDef::new(Messages::ClientMsgId).string_len(255).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_from_user_client_msg_id")
                    .table(Messages::Table)
                    .col(Messages::FromUser)
                    .col(Messages::ClientMsgId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_messages_from_user_client_msg_id")
                    .table(Messages::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .drop_column(Messages::ClientMsgId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    FromUser,
    ClientMsgId,
}
