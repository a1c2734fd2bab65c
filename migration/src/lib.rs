//! Switchboard's database migrations, in the sea-orm-cli layout.
//!
//! The tables arrive with the persistence work; the migrator already runs on SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

/// The ordered list of every Switchboard migration.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        Vec::new()
    }
}
