//! `presence_logs`: one row per presence transition (online, away, offline), for analytics.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `presence_logs` and its indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PresenceLogs::Table)
                    .col(big_pk_auto(PresenceLogs::Id))
                    .col(string_len(PresenceLogs::UserId, 255))
                    .col(string_len(PresenceLogs::Status, 20))
                    .col(string_len_null(PresenceLogs::DeviceId, 255))
                    .col(timestamp_with_time_zone(PresenceLogs::Timestamp))
                    .to_owned(),
            )
            .await?;
        // A user's recent transitions.
        manager
            .create_index(
                Index::create()
                    .name("idx_presence_logs_user_timestamp")
                    .table(PresenceLogs::Table)
                    .col(PresenceLogs::UserId)
                    .col((PresenceLogs::Timestamp, IndexOrder::Desc))
                    .to_owned(),
            )
            .await?;
        // The retention sweep ("older than T").
        manager
            .create_index(
                Index::create()
                    .name("idx_presence_logs_timestamp")
                    .table(PresenceLogs::Table)
                    .col(PresenceLogs::Timestamp)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PresenceLogs::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum PresenceLogs {
    Table,
    Id,
    UserId,
    Status,
    DeviceId,
    Timestamp,
}
