//! [`StateError`]: what went wrong, with a stable machine id ([`StateError::id`]) for the API
//! layer and a message that says what to do.

use dyno_error::ErrorKind;
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use crate::validate::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Input broke a rule; nothing was changed.
    #[error("{0}; nothing was changed")]
    Invalid(#[from] ValidationError),
    /// Something named does not exist (`app foo`, `release v9`, `process type worker`).
    #[error("{message}")]
    NotFound { message: String },
    /// The change contradicts the state (app exists, drain added twice, dyno already stopping).
    #[error("{message}")]
    Conflict { message: String },
    /// The data dir's filesystem is read-only: reads work, changes are refused.
    #[error(
        "the data dir {dir} is read-only; remount it read-write and retry; nothing was changed"
    )]
    ReadOnly { dir: PathBuf },
    /// The data dir's filesystem is full: reads work, changes are refused until space is freed.
    #[error("the data dir {dir} is full; free some space on its filesystem (`df -h {dir}` shows it) and retry; nothing was changed")]
    DiskFull { dir: PathBuf },
    /// Another process holds the data dir.
    #[error("the data dir {dir} is in use by another dyno daemon; stop that one, or give this one another data dir")]
    Locked { dir: PathBuf },
    /// SQLite stayed busy past the busy timeout (another process writes the database).
    #[error("the state database in {dir} stayed locked by another process; stop other programs using {dir}/state.db and retry; nothing was changed")]
    Busy { dir: PathBuf },
    /// The address pool has no free address.
    #[error("address pool {pool} is exhausted: all {capacity} addresses are leased; scale down dynos or configure a larger pool")]
    PoolExhausted { pool: String, capacity: u64 },
    /// The database file is damaged.
    #[error("the state database {path} is damaged ({detail}); restore it from a backup")]
    Corrupt { path: PathBuf, detail: String },
    /// The database was written by a newer dyno.
    #[error("the state database {path} has schema version {found}, newer than this dyno knows ({known}); run the newer dyno, or restore a backup")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A file system call failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Any other SQLite failure (a bug, or a problem the message explains).
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StateError {
    /// A stable id for the API layer: `invalid_params`, `not_found`, `conflict`, `read_only`,
    /// `disk_full`, `locked`, `busy`, `pool_exhausted`, `corrupt`, `schema_too_new`, `internal`.
    /// What kind of failure this is, for the daemon and the API (one table there turns it
    /// into the API's id and status).
    pub fn kind(&self) -> ErrorKind {
        match self {
            StateError::Invalid(_) => ErrorKind::InvalidParams,
            StateError::NotFound { .. } => ErrorKind::NotFound,
            StateError::Conflict { .. } => ErrorKind::Conflict,
            StateError::ReadOnly { .. } => ErrorKind::ReadOnly,
            StateError::DiskFull { .. } => ErrorKind::DiskFull,
            StateError::Locked { .. } => ErrorKind::Locked,
            StateError::Busy { .. } => ErrorKind::Busy,
            StateError::PoolExhausted { .. } => ErrorKind::PoolExhausted,
            StateError::Corrupt { .. } => ErrorKind::Corrupt,
            StateError::SchemaTooNew { .. } => ErrorKind::SchemaTooNew,
            StateError::Io { .. } | StateError::Sqlite(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> StateError {
        StateError::NotFound {
            message: message.into(),
        }
    }

    pub(crate) fn conflict(message: impl Into<String>) -> StateError {
        StateError::Conflict {
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> StateError {
        StateError::Io {
            context: context.into(),
            source,
        }
    }

    /// Turns a SQLite error into what it means for the data dir `dir`.
    ///
    /// `SQLITE_READONLY` and `SQLITE_FULL` say it directly. A filesystem turned read-only under
    /// an open database (ext4 `errors=remount-ro`) shows as an I/O error (EROFS on write), and
    /// some out-of-space paths too (ENOSPC growing the shared-memory file): for those the dir
    /// itself is probed.
    pub(crate) fn from_sqlite(e: rusqlite::Error, dir: &Path) -> StateError {
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
            _ => None,
        };
        match code {
            Some(ErrorCode::ReadOnly) => StateError::ReadOnly { dir: dir.into() },
            Some(ErrorCode::DiskFull) => StateError::DiskFull { dir: dir.into() },
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                StateError::Busy { dir: dir.into() }
            }
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
                StateError::Corrupt {
                    path: dir.join(crate::store::DB_FILE),
                    detail: e.to_string(),
                }
            }
            Some(ErrorCode::SystemIoFailure) | Some(ErrorCode::CannotOpen) => {
                match probe_dir(dir) {
                    DirProbe::ReadOnly => StateError::ReadOnly { dir: dir.into() },
                    DirProbe::Full => StateError::DiskFull { dir: dir.into() },
                    DirProbe::Fine => StateError::Sqlite(e),
                }
            }
            _ => StateError::Sqlite(e),
        }
    }
}

pub(crate) enum DirProbe {
    ReadOnly,
    Full,
    Fine,
}

/// Less free space than this counts as full: SQLite needs a few pages for any change.
const FULL_BELOW_BYTES: u64 = 64 * 1024;

/// Why a change must not start at all: the data dir is read-only, or its filesystem has not one
/// free block left. SQLite alone does not always notice: in WAL mode it commits into WAL pages
/// it already holds, on a full disk too, and it writes through the files it holds open even
/// after the data dir was made read-only above them (a read-only bind mount on top). Refusing
/// up front makes every change fail the same way while the condition lasts, and nothing is
/// half-written; the probe costs two system calls per change.
pub(crate) fn refuse_writes(dir: &Path) -> Option<StateError> {
    match probe_dir(dir) {
        DirProbe::ReadOnly => return Some(StateError::ReadOnly { dir: dir.into() }),
        DirProbe::Full | DirProbe::Fine => {}
    }
    match rustix::fs::statvfs(dir) {
        Ok(st) if st.f_bavail == 0 => Some(StateError::DiskFull { dir: dir.into() }),
        _ => None,
    }
}

/// What state the filesystem under `dir` is in. `access(W_OK)` answers EROFS on a read-only
/// mount even for root (who passes every permission check).
pub(crate) fn probe_dir(dir: &Path) -> DirProbe {
    use rustix::fs::{access, statvfs, Access, StatVfsMountFlags};
    if let Err(e) = access(dir, Access::WRITE_OK) {
        if e == rustix::io::Errno::ROFS {
            return DirProbe::ReadOnly;
        }
    }
    if let Ok(st) = statvfs(dir) {
        if st.f_flag.contains(StatVfsMountFlags::RDONLY) {
            return DirProbe::ReadOnly;
        }
        if st.f_bavail.saturating_mul(st.f_frsize) < FULL_BELOW_BYTES {
            return DirProbe::Full;
        }
    }
    DirProbe::Fine
}
