//! `dyno-error`: what kind of failure an operation met. One enum that every layer shares — the
//! state store classifies its errors with it, the daemon carries it, and the API turns it into
//! its stable error id and HTTP status in one table (`dyno_api::ApiError::from_kind`) — so that
//! a kind can never be misspelt on its way up (it used to travel as a string).

#![forbid(unsafe_code)]

use std::fmt;

/// Why an operation failed, as far as its caller must tell cases apart. The message that goes
/// with it says what to do; the kind says what class of answer it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A value is not allowed (a bad app name, a quantity out of range, a NUL byte…).
    InvalidParams,
    /// No such app, release, dyno or drain.
    NotFound,
    /// The request conflicts with the state (a name already taken, no release to run…).
    Conflict,
    /// Another daemon holds the state store.
    Locked,
    /// The state store cannot be written (read-only file system).
    ReadOnly,
    /// The state store's disk is full.
    DiskFull,
    /// The Procfile's `release` command failed; nothing was released.
    ReleaseFailed,
    /// The state store stayed busy too long.
    Busy,
    /// No address of the dyno pool is free.
    PoolExhausted,
    /// The state store is damaged.
    Corrupt,
    /// The state store was written by a newer dyno.
    SchemaTooNew,
    /// A bug or an unexpected failure.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables and their tests.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidParams,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Locked,
        ErrorKind::ReadOnly,
        ErrorKind::DiskFull,
        ErrorKind::ReleaseFailed,
        ErrorKind::Busy,
        ErrorKind::PoolExhausted,
        ErrorKind::Corrupt,
        ErrorKind::SchemaTooNew,
        ErrorKind::Internal,
    ];

    /// A short name for logs (`pool_exhausted`). Not the API's error id: several kinds share
    /// one of those.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidParams => "invalid_params",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Locked => "locked",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::DiskFull => "disk_full",
            ErrorKind::ReleaseFailed => "release_failed",
            ErrorKind::Busy => "busy",
            ErrorKind::PoolExhausted => "pool_exhausted",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::SchemaTooNew => "schema_too_new",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_name() {
        let mut names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }
}
