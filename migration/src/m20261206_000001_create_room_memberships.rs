//! `room_memberships`: durable room memberships made through the server API, one row per
//! (room, user), applied to every socket the user has or opens later.
//!
//! The primary key `(room, user_id)` answers "members of a room" (sorted by user) and makes
//! adding a membership idempotent; the `(user_id, room)` index answers "rooms of a user" when a
//! socket connects.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `room_memberships` and its index.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RoomMemberships::Table)
                    .col(string_len(RoomMemberships::Room, 255))
                    .col(string_len(RoomMemberships::UserId, 255))
                    .col(timestamp_with_time_zone(RoomMemberships::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(RoomMemberships::Room)
                            .col(RoomMemberships::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        // A user's rooms (at connect).
        manager
            .create_index(
                Index::create()
                    .name("idx_room_memberships_user_room")
                    .table(RoomMemberships::Table)
                    .col(RoomMemberships::UserId)
                    .col(RoomMemberships::Room)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RoomMemberships::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum RoomMemberships {
    Table,
    Room,
    UserId,
    CreatedAt,
}
