//! Unpacking an uploaded source archive into a build directory.
//!
//! The daemon runs as root and the archive comes from whoever can push to an app, so every
//! member is checked here before anything is created, instead of trusting the `tar` crate's
//! own `unpack`: names must be relative and stay inside (no `..`, no absolute), only files,
//! directories, symlinks and hard links are made, a symlink must resolve inside the tree, a
//! hard link must name a file unpacked before it, and nothing is ever written through a
//! symlink (each parent directory is checked with lstat). Owners, setuid/setgid/sticky bits
//! and extended attributes of the archive are never applied.

mod paths;
mod stream;
#[cfg(test)]
mod tests;
mod unpack;

use std::io;
use std::path::{Path, PathBuf};

use crate::slug_size::human;

/// What an upload may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Members in the archive (files, directories, links, extension headers).
    pub max_entries: u64,
    /// Bytes of file data once unpacked.
    pub max_bytes: u64,
}

impl Limits {
    /// Heroku's sources have no published member limit; 200 000 is far above real apps (a
    /// large Rails app with `node_modules` has some tens of thousands) and bounds the work.
    pub const DEFAULT_MAX_ENTRIES: u64 = 200_000;

    /// The default member limit with `max_bytes` of file data.
    pub fn with_max_bytes(max_bytes: u64) -> Limits {
        Limits {
            max_entries: Limits::DEFAULT_MAX_ENTRIES,
            max_bytes,
        }
    }
}

/// What an unpack made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unpacked {
    /// Files, directories and links created (the top-level `.` and PAX global headers are
    /// not counted).
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Which limit an archive went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// More members than [`Limits::max_entries`].
    Entries { max: u64 },
    /// More file data than [`Limits::max_bytes`].
    Bytes { max: u64 },
    /// One member's headers (long name, PAX records) or the data of a member that has none
    /// (a directory, a link) are over 1 MiB.
    Headers { max: u64 },
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Entries { max } => write!(f, "it has more than {max} files and directories"),
            Exceeded::Bytes { max } => write!(f, "it unpacks to more than {}", human(*max)),
            Exceeded::Headers { max } => {
                write!(f, "a member's headers are larger than {}", human(*max))
            }
        }
    }
}

/// Why an archive was refused. The texts are shown to the user as they are.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "the source is not a tar archive (gzip or plain): {0}; upload `tar czf - .` of the app"
    )]
    NotAnArchive(String),
    #[error(
        "`{path}` in the source archive is {kind}; an app's source may hold only files, \
         directories, symlinks and hard links: leave it out of the archive"
    )]
    Unsupported { path: String, kind: String },
    #[error(
        "`{path}` in the source archive cannot be unpacked: {why}; names must be relative and \
         stay inside the app, as `tar czf - .` writes them from the app's directory"
    )]
    BadPath { path: String, why: &'static str },
    #[error(
        "`{path}` in the source archive links to `{target}`, which is outside the app; make \
         the link relative and pointing inside the app, or leave it out of the archive"
    )]
    Escapes { path: String, target: String },
    #[error(
        "`{path}` in the source archive would be written through the symlink `{link}`; \
         archive the directory itself, not a link to it"
    )]
    ThroughSymlink { path: String, link: String },
    #[error(
        "the hard link `{path}` in the source archive points to `{target}`, which is not a \
         file earlier in the archive; archive the file itself"
    )]
    HardLink { path: String, target: String },
    #[error(
        "`{path}` is in the source archive both as {earlier} and as {later}; create the \
         archive afresh from the app's directory (`tar czf - .`)"
    )]
    Conflict {
        path: String,
        earlier: &'static str,
        later: &'static str,
    },
    #[error(
        "the source archive is too large: {0}; leave out what the build does not need \
         (dependencies the buildpack installs, logs, build output)"
    )]
    TooLarge(Exceeded),
    #[error("could not unpack the source at `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Unpacks the tar archive `archive` (gzip-compressed or plain) into `dest`, an existing empty
/// directory, within `limits`. The files belong to the calling process (the daemon chowns the
/// tree afterwards); their permission bits are the archive's, less group and other write,
/// setuid, setgid and sticky, plus owner write. An archive without members gives zero counts
/// (the caller decides whether that is an error). On error `dest` holds a partial tree,
/// never anything outside it: the caller removes it.
pub fn unpack(archive: &Path, dest: &Path, limits: Limits) -> Result<Unpacked, ArchiveError> {
    let budget = stream::Budget::new();
    let reader = stream::open(archive, budget.clone()).map_err(|source| ArchiveError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    unpack::Unpacker::new(dest, limits, budget).run(reader)
}
