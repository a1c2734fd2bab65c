//! Switchboard's database migrations, in the sea-orm-cli layout.
//!
//! # Layout
//! One `mYYYYMMDD_HHMMSS_name.rs` file per migration, each with a working `down`. The same
//! migrations run on SQLite and PostgreSQL: they use only portable column types (on SQLite a
//! `timestamptz` column is text in RFC 3339 form, a UUID a blob), no foreign keys, and no
//! backend-specific defaults.
//!
//! | table | written by | read by |
//! |---|---|---|
//! | `socket_connections` | the Journal, one row per authenticated socket | operators (debugging, audit) |
//! | `presence_logs` | the Journal, one row per presence transition | analytics |
//! | `messages` | the Journal, one row per durable direct message (unique per sender's `client_msg_id`) | `message:sync`, retried sends |
//! | `room_memberships` | the Journal, for the server API's durable memberships | connects, `/api/v1/rooms/{room}/members` |
//! | `webhook_outbox` | the Journal, one row per lifecycle event, in its row's transaction | the webhook deliverer |
//! | `webhook_lease` | the webhook deliverer (through the Journal): who delivers, until when | the webhook deliverer |

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_create_socket_connections;
mod m20261129_000002_create_presence_logs;
mod m20261129_000003_create_messages;
mod m20261206_000001_create_room_memberships;
mod m20261206_000002_create_webhook_outbox;
mod m20261210_000001_add_message_client_ids;

/// The ordered list of every Switchboard migration.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_create_socket_connections::Migration),
            Box::new(m20261129_000002_create_presence_logs::Migration),
            Box::new(m20261129_000003_create_messages::Migration),
            Box::new(m20261206_000001_create_room_memberships::Migration),
            Box::new(m20261206_000002_create_webhook_outbox::Migration),
            Box::new(m20261210_000001_add_message_client_ids::Migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_orm::Database;

    use super::*;

    const TABLES: [&str; 6] = [
        "socket_connections",
        "presence_logs",
        "messages",
        "room_memberships",
        "webhook_outbox",
        "webhook_lease",
    ];

    #[tokio::test]
    async fn migrations_go_up_down_and_up_again_on_sqlite() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let manager = SchemaManager::new(&db);
        for table in TABLES {
            assert!(manager.has_table(table).await.unwrap(), "{table}");
        }
        Migrator::down(&db, None).await.unwrap();
        for table in TABLES {
            assert!(!manager.has_table(table).await.unwrap(), "{table}");
        }
        Migrator::up(&db, None).await.unwrap();
        assert_eq!(
            Migrator::get_pending_migrations(&db).await.unwrap().len(),
            0
        );
    }
}
