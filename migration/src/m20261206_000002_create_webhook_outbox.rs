//! `webhook_outbox` and `webhook_lease`: lifecycle webhooks, delivered at least once.
//!
//! Each event is written to `webhook_outbox` in the same transaction as the row it describes;
//! the `id` is the delivery order, and `(status, id)` is the index the deliverer reads ("the
//! oldest pending events"). `webhook_lease` holds one row per delivery job, naming the node
//! that delivers until `expires_at`, so that one node at a time does.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `webhook_outbox` (with its indexes) and `webhook_lease`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookOutbox::Table)
                    .col(big_pk_auto(WebhookOutbox::Id))
                    // A UUID as text: it is also the event's `id` in the JSON receivers see.
                    .col(string_len(WebhookOutbox::EventId, 36))
                    .col(string_len(WebhookOutbox::EventType, 64))
                    .col(text(WebhookOutbox::Payload))
                    .col(timestamp_with_time_zone(WebhookOutbox::CreatedAt))
                    .col(string_len(WebhookOutbox::Status, 16).default("pending"))
                    .col(integer(WebhookOutbox::Attempts).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_outbox_event_id")
                    .table(WebhookOutbox::Table)
                    .col(WebhookOutbox::EventId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The deliverer's read ("pending, oldest first") and the depth count; also the
        // retention sweep of dead rows.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_outbox_status_id")
                    .table(WebhookOutbox::Table)
                    .col(WebhookOutbox::Status)
                    .col(WebhookOutbox::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookLease::Table)
                    .col(string_len(WebhookLease::Name, 64).primary_key())
                    .col(string_len(WebhookLease::Holder, 255))
                    .col(timestamp_with_time_zone(WebhookLease::ExpiresAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookLease::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(WebhookOutbox::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookOutbox {
    Table,
    Id,
    EventId,
    EventType,
    Payload,
    CreatedAt,
    Status,
    Attempts,
}

#[derive(DeriveIden)]
enum WebhookLease {
    Table,
    Name,
    Holder,
    ExpiresAt,
}
