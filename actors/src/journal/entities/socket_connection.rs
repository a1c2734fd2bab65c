//! `socket_connections`: one row per authenticated socket, closed when it disconnects.

use sea_orm::entity::prelude::*;

/// One socket's connection record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "socket_connections")]
pub struct Model {
    /// Random (v4) id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The JWT subject; no foreign key.
    #[sea_orm(column_type = "String(StringLen::N(255))")]
    pub user_id: String,
    /// The Socket.IO socket id.
    #[sea_orm(column_type = "String(StringLen::N(100))")]
    pub socket_id: String,
    /// The client's device id.
    #[sea_orm(column_type = "String(StringLen::N(255))")]
    pub device_id: String,
    /// The node that held the socket.
    #[sea_orm(column_type = "String(StringLen::N(50))", nullable)]
    pub server_instance: Option<String>,
    /// The peer address.
    #[sea_orm(column_type = "String(StringLen::N(45))")]
    pub ip_address: String,
    /// The client's `User-Agent`.
    #[sea_orm(column_type = "Text", nullable)]
    pub user_agent: Option<String>,
    /// When the socket authenticated.
    pub connected_at: DateTimeUtc,
    /// When it went away; `NULL` while it is open.
    pub disconnected_at: Option<DateTimeUtc>,
    /// Why it went away (a `CloseReason` name, or `node_lost`).
    #[sea_orm(column_type = "String(StringLen::N(100))", nullable)]
    pub disconnect_reason: Option<String>,
    /// Events the server sent to the socket.
    pub messages_sent: i32,
    /// Events the socket sent.
    pub messages_received: i32,
    /// Whole seconds between connect and disconnect.
    pub duration_seconds: Option<i32>,
}

/// No relations: users live in the application's database.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
