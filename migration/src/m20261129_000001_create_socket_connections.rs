//! `socket_connections`: one row per authenticated socket, closed when it disconnects.
//!
//! `user_id` is the JWT subject: users live in the application's own database, so there is
//! no foreign key.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `socket_connections` and its indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SocketConnections::Table)
                    .col(pk_uuid(SocketConnections::Id))
                    .col(string_len(SocketConnections::UserId, 255))
                    .col(string_len(SocketConnections::SocketId, 100))
                    .col(string_len(SocketConnections::DeviceId, 255))
                    .col(string_len_null(SocketConnections::ServerInstance, 50))
                    .col(string_len(SocketConnections::IpAddress, 45))
                    .col(text_null(SocketConnections::UserAgent))
                    .col(timestamp_with_time_zone(SocketConnections::ConnectedAt))
                    .col(timestamp_with_time_zone_null(
                        SocketConnections::DisconnectedAt,
                    ))
                    .col(string_len_null(SocketConnections::DisconnectReason, 100))
                    .col(integer(SocketConnections::MessagesSent).default(0))
                    .col(integer(SocketConnections::MessagesReceived).default(0))
                    .col(integer_null(SocketConnections::DurationSeconds))
                    .to_owned(),
            )
            .await?;
        // A user's recent connections.
        manager
            .create_index(
                Index::create()
                    .name("idx_socket_connections_user_connected")
                    .table(SocketConnections::Table)
                    .col(SocketConnections::UserId)
                    .col((SocketConnections::ConnectedAt, IndexOrder::Desc))
                    .to_owned(),
            )
            .await?;
        // Closing a row when its socket disconnects.
        manager
            .create_index(
                Index::create()
                    .name("idx_socket_connections_socket")
                    .table(SocketConnections::Table)
                    .col(SocketConnections::SocketId)
                    .to_owned(),
            )
            .await?;
        // A node's rows; `disconnected_at` second also serves the `node_lost` sweep
        // ("rows of node N still open").
        manager
            .create_index(
                Index::create()
                    .name("idx_socket_connections_server_instance")
                    .table(SocketConnections::Table)
                    .col(SocketConnections::ServerInstance)
                    .col(SocketConnections::DisconnectedAt)
                    .to_owned(),
            )
            .await?;
        // The retention sweep ("closed before T").
        manager
            .create_index(
                Index::create()
                    .name("idx_socket_connections_disconnected")
                    .table(SocketConnections::Table)
                    .col(SocketConnections::DisconnectedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its indexes on both backends.
        manager
            .drop_table(Table::drop().table(SocketConnections::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SocketConnections {
    Table,
    Id,
    UserId,
    SocketId,
    DeviceId,
    ServerInstance,
    IpAddress,
    UserAgent,
    ConnectedAt,
    DisconnectedAt,
    DisconnectReason,
    MessagesSent,
    MessagesReceived,
    DurationSeconds,
}
