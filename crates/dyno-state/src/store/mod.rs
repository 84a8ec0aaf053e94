//! [`Store`]: the SQLite database in the data dir, opened once by the daemon.

mod apps;
mod builds;
mod certs;
mod drains;
mod dynos;
mod releases;

pub use builds::NewBuild;
pub use releases::{Phase, ReleaseChange};

use std::fs::DirBuilder;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{probe_dir, refuse_writes, DirProbe, StateError};
use crate::schema;
use crate::validate::Quantity;

/// The dyno address pool of a daemon that is told none (as `dyno serve --pool`'s default).
pub const DEFAULT_POOL: Ipv4Net = match Ipv4Net::new(std::net::Ipv4Addr::new(10, 213, 0, 0), 16) {
    Ok(pool) => pool,
    Err(_) => panic!("a /16 is a valid prefix"),
};

/// The database file inside the data dir.
pub const DB_FILE: &str = "state.db";
/// Where slugs live inside the data dir (one directory per slug; the deploy code fills them).
pub const SLUGS_DIR: &str = "slugs";
/// The default data dir of `dyno serve`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/dyno";

/// Settings that are not state: they come from the command line each start.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Dyno addresses come from here (leases outside it, from an earlier pool, stay valid).
    pub pool: Ipv4Net,
    /// The most dynos one process type may be scaled to.
    pub max_quantity: u32,
    /// How long a write waits for a lock held by another connection before `busy`.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            pool: DEFAULT_POOL,
            max_quantity: Quantity::DEFAULT_MAX,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The daemon's state. Every change is one SQLite transaction; a change that fails changes
/// nothing. Not `Sync`: share it behind a mutex (or own it on one thread) and call it from
/// `spawn_blocking`, as each change waits for an fsync.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
    read_only: bool,
    options: StoreOptions,
    /// An exclusive `flock` on the data dir: one daemon per data dir.
    _lock: OwnedFd,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the state in `data_dir` with default options.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Store, StateError> {
        Store::open_with(data_dir, StoreOptions::default())
    }

    /// Opens the state in `data_dir`: creates the dir (mode 0700) if missing, locks it, opens
    /// `state.db` and runs pending migrations.
    ///
    /// On a read-only filesystem the store opens **read-only** (if the database exists and its
    /// schema is current): every read works, every change fails with `read_only`. This lets the
    /// daemon keep serving status while an operator fixes the mount.
    pub fn open_with(
        data_dir: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<Store, StateError> {
        let dir = data_dir.as_ref().to_path_buf();
        match DirBuilder::new().recursive(true).mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc_erofs()) && dir.is_dir() => {}
            Err(e) if e.raw_os_error() == Some(libc_erofs()) => {
                return Err(StateError::ReadOnly { dir })
            }
            Err(e) => {
                return Err(StateError::io(
                    format!("creating data dir {}", dir.display()),
                    e,
                ))
            }
        }
        let lock = lock_dir(&dir)?;
        let read_only = matches!(probe_dir(&dir), DirProbe::ReadOnly);
        let db_path = dir.join(DB_FILE);
        let conn = if read_only {
            open_read_only(&dir, &db_path)?
        } else {
            open_read_write(&dir, &db_path, &options)?
        };
        conn.busy_timeout(options.busy_timeout)
            .map_err(|e| StateError::from_sqlite(e, &dir))?;
        if !read_only {
            match std::fs::create_dir(dir.join(SLUGS_DIR)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(StateError::io(
                        format!("creating {}", dir.join(SLUGS_DIR).display()),
                        e,
                    ))
                }
            }
        }
        Ok(Store {
            conn,
            dir,
            read_only,
            options,
            _lock: lock,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Where deploys put slug directories (`<data dir>/slugs`).
    pub fn slugs_dir(&self) -> PathBuf {
        self.dir.join(SLUGS_DIR)
    }

    /// True when the data dir was read-only at open: every change fails with `read_only`.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// SQLite's `PRAGMA integrity_check` (and `foreign_key_check`): Ok when the file is sound.
    pub fn integrity_check(&self) -> Result<(), StateError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if rows != ["ok"] {
                return Err(StateError::Corrupt {
                    path: self.dir.join(DB_FILE),
                    detail: rows.join("; "),
                });
            }
            let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
            let bad: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?;
            if !bad.is_empty() {
                return Err(StateError::Corrupt {
                    path: self.dir.join(DB_FILE),
                    detail: format!("foreign key violations in {}", bad.join(", ")),
                });
            }
            Ok(())
        })
    }

    /// Every row of every table as JSON, in a stable order: for debugging and for tests that
    /// compare the whole state before and after.
    pub fn dump(&self) -> Result<serde_json::Value, StateError> {
        self.read(|conn| {
            let mut out = serde_json::Map::new();
            for table in [
                "apps",
                "releases",
                "config_vars",
                "formation",
                "dynos",
                "leases",
                "meta",
                "drains",
                "domains",
            ] {
                let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))?;
                let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
                let rows = stmt
                    .query_map([], |r| {
                        let mut row = serde_json::Map::new();
                        for (i, name) in names.iter().enumerate() {
                            let v = match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                                rusqlite::types::ValueRef::Integer(n) => n.into(),
                                rusqlite::types::ValueRef::Real(x) => x.into(),
                                rusqlite::types::ValueRef::Text(t) => {
                                    String::from_utf8_lossy(t).into_owned().into()
                                }
                                rusqlite::types::ValueRef::Blob(b) => b.len().into(),
                            };
                            row.insert(name.clone(), v);
                        }
                        Ok(serde_json::Value::Object(row))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(table.to_string(), rows.into());
            }
            Ok(serde_json::Value::Object(out))
        })
    }

    /// Runs `f` in one IMMEDIATE transaction (the write lock is taken at the start, so two
    /// writers never deadlock on an upgrade) and commits. Any error rolls everything back.
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &StoreOptions) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        if self.read_only {
            return Err(StateError::ReadOnly {
                dir: self.dir.clone(),
            });
        }
        if let Some(refused) = refuse_writes(&self.dir) {
            return Err(refused);
        }
        let dir = &self.dir;
        let remap = |e: StateError| match e {
            StateError::Sqlite(e) => StateError::from_sqlite(e, dir),
            other => other,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StateError::from_sqlite(e, dir))?;
        let out = f(&tx, &self.options).map_err(remap)?;
        tx.commit().map_err(|e| StateError::from_sqlite(e, dir))?;
        Ok(out)
    }

    /// Runs `f` for reading, in one (deferred) transaction so it sees one consistent state.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let dir = &self.dir;
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| StateError::from_sqlite(e, dir))?;
        let out = f(&tx).map_err(|e| match e {
            StateError::Sqlite(e) => StateError::from_sqlite(e, dir),
            other => other,
        })?;
        drop(tx);
        Ok(out)
    }
}

fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}

/// Takes an exclusive, non-blocking `flock` on the data dir itself (works on a read-only
/// filesystem too, and is released by the kernel when the process dies, even by SIGKILL).
fn lock_dir(dir: &Path) -> Result<OwnedFd, StateError> {
    use rustix::fs::{flock, open, FlockOperation, Mode, OFlags};
    let fd = open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| StateError::io(format!("opening data dir {}", dir.display()), e.into()))?;
    // A daemon killed a moment ago may still hold the lock through a child that was between
    // fork and exec when it died (the child's copy of the descriptor goes at its exec): ask
    // again for a short while before calling the dir taken.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(fd),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StateError::Locked { dir: dir.into() })
            }
            Err(e) => {
                return Err(StateError::io(
                    format!("locking data dir {}", dir.display()),
                    e.into(),
                ))
            }
        }
    }
}

/// How long [`lock_dir`] waits for a lock that may be on its way out.
const LOCK_PATIENCE: Duration = Duration::from_secs(1);

fn open_read_write(
    dir: &Path,
    db_path: &Path,
    options: &StoreOptions,
) -> Result<Connection, StateError> {
    let sql = |e| StateError::from_sqlite(e, dir);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(db_path, flags).map_err(sql)?;
    conn.busy_timeout(options.busy_timeout).map_err(sql)?;
    // WAL: a commit is one append to the -wal file; readers never block the writer.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StateError::io(
            format!(
                "{}: SQLite refused WAL mode (got {mode})",
                db_path.display()
            ),
            std::io::Error::other("journal mode"),
        ));
    }
    // synchronous=FULL: each commit fsyncs the WAL before it returns. WAL+NORMAL would already
    // survive kill -9 of the daemon (the committed frames are in the kernel's page cache), but
    // could lose the last commits on power loss or a kernel crash; the state changes at human
    // pace (deploys, scaling, dyno state), so one fsync per change is cheap for the promise
    // "nothing committed is ever lost".
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql)?;
    schema::migrate(&mut conn, db_path).map_err(|e| match e {
        StateError::Sqlite(e) => StateError::from_sqlite(e, dir),
        other => other,
    })?;
    Ok(conn)
}

/// A read-only filesystem: open without write access.
///
/// After a crash the -wal and -shm files are there, and SQLite (3.22+) reads the database with
/// the WAL's committed frames. After a clean stop they are gone (the last connection
/// checkpoints and deletes them) and SQLite cannot create the -shm file on read-only media:
/// then the main file alone holds everything committed, and it is opened `immutable` (no
/// locks, no -shm), which is safe because nothing can change a read-only filesystem.
fn open_read_only(dir: &Path, db_path: &Path) -> Result<Connection, StateError> {
    if !db_path.exists() {
        return Err(StateError::ReadOnly { dir: dir.into() });
    }
    let sql = |e| StateError::from_sqlite(e, dir);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let usable = |conn: Connection| -> Result<Connection, StateError> {
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;
        if !schema::check_current(&conn, db_path).map_err(|e| match e {
            StateError::Sqlite(e) => StateError::from_sqlite(e, dir),
            other => other,
        })? {
            // An older schema cannot be migrated on a read-only filesystem.
            return Err(StateError::ReadOnly { dir: dir.into() });
        }
        Ok(conn)
    };
    let wal = dir.join(format!("{DB_FILE}-wal"));
    let wal_has_frames = std::fs::metadata(&wal)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if wal_has_frames {
        return usable(Connection::open_with_flags(db_path, flags).map_err(sql)?);
    }
    let uri = format!("file:{}?immutable=1", uri_path(db_path));
    usable(Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI).map_err(sql)?)
}

/// A path for a `file:` URI: every byte but unreserved ones and '/' percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_escape_what_a_uri_would_read() {
        assert_eq!(
            uri_path(Path::new("/var/lib/dyno/state.db")),
            "/var/lib/dyno/state.db"
        );
        assert_eq!(uri_path(Path::new("/a b/c?d#e%f")), "/a%20b/c%3Fd%23e%25f");
    }
}
