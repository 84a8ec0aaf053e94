//! Binding the API's unix socket so that nobody but its owner can ever connect.
//!
//! Race choice: the socket must be 0600 before anyone can connect. `umask(0o177)` around `bind`
//! would do it, but the umask is per process: in a multi-threaded daemon every file another
//! thread creates meanwhile would get it too. `bind` then `chmod` leaves a window in which the
//! socket has the default mode. So we bind inside a fresh private directory (0700, so nobody else
//! can reach the socket in it whatever its mode), `chmod` the socket to 0600 there, then
//! `rename(2)` it onto the final path. The rename is atomic: the path names either the old file
//! or our socket, already 0600, and a stale socket file is replaced in the same step.
//!
//! A live socket is never replaced: if a connect to the existing path succeeds and an HTTP
//! answer comes back, another daemon serves it and we refuse to start. (Between that test and the rename a second daemon starting
//! at the very same moment could still lose its socket; a lock file would close that gap.)

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

use super::ServeError;

/// A bound, 0600 API socket. Dropping it removes the socket file, if the path still names it.
#[derive(Debug)]
pub struct UnixApiListener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of our socket file, to never remove a successor's socket.
    id: (u64, u64),
}

impl UnixApiListener {
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixApiListener {
    fn drop(&mut self) {
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Bind the API socket at `path` with mode 0600 (see the module docs for how). A stale socket file
/// (nothing listens) is replaced; a live one is an error. The parent directory must exist.
/// Must run inside a tokio runtime.
pub async fn bind_unix(path: &Path) -> Result<UnixApiListener, ServeError> {
    let io_err = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| ServeError::Io {
            what,
            path: p,
            source,
        }
    };
    check_existing(path).await?;
    let file_name_missing = || io::Error::new(io::ErrorKind::InvalidInput, "no file name");
    path.file_name()
        .ok_or_else(file_name_missing)
        .map_err(io_err("bind", path))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = private_dir(parent).map_err(io_err("create a private directory in", parent))?;
    let tmp = dir.join("s");
    let bound = bind_private(&tmp, path);
    // Empty after a successful rename; on failure, the socket file may still be there.
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_dir(&dir);
    let std_listener = bound?;
    let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
    std_listener
        .set_nonblocking(true)
        .map_err(io_err("configure", path))?;
    let listener = UnixListener::from_std(std_listener).map_err(io_err("register", path))?;
    Ok(UnixApiListener {
        listener,
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    })
}

fn bind_private(tmp: &Path, path: &Path) -> Result<std::os::unix::net::UnixListener, ServeError> {
    let err = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| ServeError::Io {
            what,
            path: p,
            source,
        }
    };
    let listener = std::os::unix::net::UnixListener::bind(tmp).map_err(err("bind", tmp))?;
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o600)).map_err(err("chmod", tmp))?;
    fs::rename(tmp, path).map_err(err("move the socket onto", path))?;
    Ok(listener)
}

/// A new directory in `parent` only we can enter (0700). Short name: socket paths are limited to
/// 107 bytes.
fn private_dir(parent: &Path) -> io::Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!(".dyno-{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            // Left over by a crashed process with our pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            other => return other.map(|()| dir),
        }
    }
}

/// Nothing at `path`, or a stale socket: fine. A socket someone answers on: refuse.
async fn check_existing(path: &Path) -> Result<(), ServeError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServeError::Io {
                what: "inspect",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match tokio::time::timeout(Duration::from_secs(2), UnixStream::connect(path)).await {
        // Accepted: alive if it answers. A socket can outlive its daemon for a moment in a
        // process that inherited it (a child between fork and exec when the daemon was
        // killed): connects are queued there, but nothing ever answers.
        Ok(Ok(stream)) => {
            if answers(stream).await {
                Err(ServeError::AlreadyListening(path.to_path_buf()))
            } else {
                Ok(())
            }
        }
        // So busy its backlog is full: alive.
        Err(_) => Err(ServeError::AlreadyListening(path.to_path_buf())),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Ok(Err(source)) => Err(ServeError::Io {
            what: "test whether a daemon listens on",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether an HTTP server answers on `stream` within 2 s (a daemon answers at once).
async fn answers(mut stream: UnixStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        stream
            .write_all(b"GET /apps HTTP/1.1\r\nHost: dyno\r\nConnection: close\r\n\r\n")
            .await?;
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).await?;
        Ok::<bool, io::Error>(&first == b"HTTP/")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ask).await,
        Ok(Ok(true))
    )
}
