//! The one place that sorts database errors into [`JournalError`]'s variants.

use std::time::Duration;

use sea_orm::{DbErr, RuntimeErr, sqlx};

use crate::ports::journal::JournalError;

impl JournalError {
    /// A database operation did not finish within `limit`.
    pub(super) fn timed_out(limit: Duration) -> Self {
        JournalError::Unavailable(format!("no answer within {} ms", limit.as_millis()))
    }
}

impl From<DbErr> for JournalError {
    fn from(err: DbErr) -> Self {
        if is_outage(&err) {
            JournalError::Unavailable(err.to_string())
        } else {
            JournalError::Database(err.to_string())
        }
    }
}

/// Whether `err` means "the database is not there right now" rather than "the statement is bad".
fn is_outage(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match &**e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => {
                    let code = db.code().unwrap_or_default();
                    if db
                        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                        .is_some()
                    {
                        transient_sqlstate(&code)
                    } else {
                        transient_sqlite_code(&code)
                    }
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs of an outage or of contention: class 08 connection exception, class 53
/// insufficient resources, 57P0x shutdown or "cannot connect now", 40001 serialization failure,
/// 40P01 deadlock.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
}

/// SQLite (extended) result codes of an outage or of contention; the low byte is the primary
/// code: BUSY, LOCKED, IOERR, FULL, CANTOPEN.
fn transient_sqlite_code(code: &str) -> bool {
    code.parse::<u32>()
        .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14))
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnAcquireErr;

    use super::*;

    #[test]
    fn outages_are_unavailable_and_bad_statements_are_not() {
        let timeout = DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        assert!(JournalError::from(timeout).is_unavailable());
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let reset = DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Io(io).into()));
        assert!(JournalError::from(reset).is_unavailable());
        let bad = DbErr::Query(RuntimeErr::Internal("syntax error".into()));
        assert!(matches!(JournalError::from(bad), JournalError::Database(_)));
    }

    #[test]
    fn transient_codes() {
        for code in ["08006", "57P01", "53300", "40001"] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "22021", "42P01"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
        for code in ["5", "517", "6", "10", "14"] {
            assert!(transient_sqlite_code(code), "{code}");
        }
        for code in ["19", "1", "2067"] {
            assert!(!transient_sqlite_code(code), "{code}");
        }
    }
}
