//! Slugs: the immutable copy of a deployed directory, and its digest.
//!
//! A deploy copies the app directory (without `.git`) into the data dir's slug area before the
//! release is recorded, so a crash in between leaves only an unreferenced directory, which
//! reconcile removes. The copy is read-only for the app: dynos see it through their own overlay.

use dyno_error::ErrorKind;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dyno_state::StateError;
use sha2::{Digest, Sha256};

use super::DaemonError;

/// Files a slug never contains.
const SKIPPED: [&str; 1] = [".git"];

/// Copies `src` into a new directory `dest` (which must not exist) and returns the SHA-256 of
/// the tree: every entry's relative path, type, mode and content (or link target), in sorted
/// order, so the same tree always has the same digest. When the copy fails half-way, what it
/// made of `dest` is removed again: a partial slug must never look like one.
pub fn copy_tree(src: &Path, dest: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    fs::create_dir_all(dest.parent().unwrap_or(dest))?;
    fs::create_dir(dest)?;
    if let Err(e) = copy_dir(src, dest, Path::new(""), &mut hasher) {
        let _ = fs::remove_dir_all(dest);
        return Err(e);
    }
    Ok(hex(&hasher.finalize()))
}

/// [`copy_tree`] into the slug store under `data_dir`, its failure in the daemon's words: a
/// full or read-only data dir is the store's `disk_full` / `read_only` (the same message as
/// for any other change refused for that reason), anything else an internal error.
pub fn copy_into_store(src: &Path, dest: &Path, data_dir: &Path) -> Result<String, DaemonError> {
    copy_tree(src, dest).map_err(|e| {
        data_dir_error(
            e,
            data_dir,
            &format!("copy {} into the slug store", src.display()),
        )
    })
}

/// A write to the data dir that failed, in the daemon's words: a full or read-only data dir
/// is the store's `disk_full` / `read_only`, anything else an internal error about `what`.
pub fn data_dir_error(e: io::Error, data_dir: &Path, what: &str) -> DaemonError {
    let dir = data_dir.to_path_buf();
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            StateError::DiskFull { dir }.into()
        }
        io::ErrorKind::ReadOnlyFilesystem => StateError::ReadOnly { dir }.into(),
        _ => DaemonError::new(ErrorKind::Internal, format!("{what}: {e}")),
    }
}

fn copy_dir(src: &Path, dest: &Path, rel: &Path, hasher: &mut Sha256) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let from = entry.path();
        let to = dest.join(&name);
        let rel = rel.join(&name);
        let meta = fs::symlink_metadata(&from)?;
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(meta.mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&from)?;
            hasher.update(b"l");
            hasher.update(target.as_os_str().as_encoded_bytes());
            std::os::unix::fs::symlink(&target, &to)?;
        } else if meta.is_dir() {
            hasher.update(b"d");
            fs::create_dir(&to)?;
            copy_dir(&from, &to, &rel, hasher)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        } else if meta.is_file() {
            hasher.update(b"f");
            copy_file(&from, &to, hasher)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
        // Sockets, fifos and devices have no place in a slug.
        hasher.update([0]);
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path, hasher: &mut Sha256) -> io::Result<()> {
    let mut input = fs::File::open(from)?;
    let mut output = fs::File::create(to)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        io::Write::write_all(&mut output, &buf[..n])?;
    }
    output.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a new slug of `app` goes: `<slugs>/<app>/<random>`.
pub fn new_slug_path(slugs: &Path, app: &str) -> PathBuf {
    slugs.join(app).join(format!("{:016x}", fastrand::u64(..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_same_digest_and_git_is_left_out() {
        let base = std::env::temp_dir().join(format!("dyno-slug-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let src = base.join("app");
        fs::create_dir_all(src.join(".git")).unwrap();
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::write(src.join("Procfile"), "web: python3 web.py\n").unwrap();
        fs::write(src.join("lib/x.py"), "print(1)\n").unwrap();
        fs::write(src.join(".git/HEAD"), "ref\n").unwrap();
        std::os::unix::fs::symlink("lib/x.py", src.join("link")).unwrap();
        let a = copy_tree(&src, &base.join("a")).unwrap();
        let b = copy_tree(&src, &base.join("b")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert!(!base.join("a/.git").exists());
        assert_eq!(
            fs::read_to_string(base.join("a/lib/x.py")).unwrap(),
            "print(1)\n"
        );
        assert_eq!(
            fs::read_link(base.join("a/link")).unwrap(),
            Path::new("lib/x.py")
        );
        fs::write(src.join("lib/x.py"), "print(2)\n").unwrap();
        assert_ne!(copy_tree(&src, &base.join("c")).unwrap(), a);
        assert!(
            copy_tree(&src, &base.join("c")).is_err(),
            "never into an existing slug"
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_failed_copy_leaves_no_partial_slug() {
        let base = std::env::temp_dir().join(format!("dyno-slug-fail-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let src = base.join("app");
        fs::create_dir_all(src.join("a")).unwrap();
        fs::write(src.join("a/ok.txt"), "fine\n").unwrap();
        let dest = base.join("slugs/app/x");
        // A source that is no directory fails after `dest` was made (as root, permissions
        // cannot make a read fail).
        let e = copy_into_store(&src.join("a/ok.txt"), &dest, &base).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal, "{e}");
        assert!(!dest.exists(), "partial slug left");
        assert!(base.join("slugs/app").is_dir());
        fs::remove_dir_all(&base).unwrap();
    }
}
