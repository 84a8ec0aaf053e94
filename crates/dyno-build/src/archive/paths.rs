//! Names inside an archive, and where a link's target really ends up. Pure except for
//! [`resolve_link`], which reads the tree being unpacked (lstat, readlink) and never writes.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a name in an archive cannot be used as a path under the app's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadName {
    Absolute,
    Parent,
    Nul,
}

impl BadName {
    pub(crate) fn why(self) -> &'static str {
        match self {
            BadName::Absolute => "it is absolute",
            BadName::Parent => "it contains `..`",
            BadName::Nul => "it contains a NUL byte",
        }
    }
}

/// The components of a member's name, relative to the app's directory. Empty and `.`
/// components are dropped (so `./a//b/` is `a/b`, and `.` is the directory itself, `[]`);
/// anything that could climb out (`..` anywhere, a leading `/`) or that no system call can
/// take (NUL) is refused. Names stay bytes: an app's files need not be UTF-8.
pub(crate) fn components(name: &[u8]) -> Result<Vec<&OsStr>, BadName> {
    if name.starts_with(b"/") {
        return Err(BadName::Absolute);
    }
    if name.contains(&0) {
        return Err(BadName::Nul);
    }
    let mut out = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(BadName::Parent),
            _ => out.push(OsStr::from_bytes(part)),
        }
    }
    Ok(out)
}

/// `root` joined with `parts`.
pub(crate) fn under<S: AsRef<OsStr>>(root: &Path, parts: &[S]) -> PathBuf {
    let mut path = root.to_path_buf();
    for part in parts {
        path.push(part.as_ref());
    }
    path
}

/// The kernel gives up on a lookup after this many symlinks (`MAXSYMLINKS`, `ELOOP`).
const MAX_HOPS: u32 = 40;

/// Whether a link in the directory `dir` (components under `root`, all real directories)
/// pointing to `target` stays under `root` when the kernel resolves it, following the links
/// already in the tree. A target that climbs out lexically (`/x`, `../..`) is out, and so is
/// one that climbs out through another link (`d/a -> ..` makes `d/a/..` the parent of
/// `root`). Components that do not exist (yet) are taken lexically: the unpacker checks
/// every link again once the whole tree is there, so a later member cannot change the answer.
/// A chain longer than the kernel follows is harmless (every lookup through it fails with
/// `ELOOP`), so it counts as inside; each link of the chain is checked on its own anyway.
pub(crate) fn link_stays_inside(root: &Path, dir: &[OsString], target: &[u8]) -> bool {
    let mut hops = 0;
    !matches!(
        resolve(root, dir.to_vec(), target, &mut hops),
        Err(Stop::Outside)
    )
}

/// Why [`resolve`] stopped before the end of a target.
enum Stop {
    /// The target climbs out of `root`.
    Outside,
    /// The chain is longer than the kernel follows.
    TooManyHops,
}

/// The components under `root` that `target`, read from a link in the directory `at`,
/// resolves to. Invariant: no component of `at` is a symlink (each one found is replaced by
/// what it resolves to), so `..` is exactly "pop", as it is for the kernel.
fn resolve(
    root: &Path,
    mut at: Vec<OsString>,
    target: &[u8],
    hops: &mut u32,
) -> Result<Vec<OsString>, Stop> {
    if target.starts_with(b"/") || target.is_empty() {
        return Err(Stop::Outside);
    }
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if at.pop().is_none() {
                    return Err(Stop::Outside);
                }
            }
            _ => {
                at.push(OsStr::from_bytes(part).to_os_string());
                let here = under(root, &at);
                // lstat fails (ENOENT, ENOTDIR) while any prefix of `at` is missing or a file:
                // then the component is kept lexically.
                let Ok(meta) = std::fs::symlink_metadata(&here) else {
                    continue;
                };
                if !meta.file_type().is_symlink() {
                    continue;
                }
                *hops += 1;
                if *hops > MAX_HOPS {
                    return Err(Stop::TooManyHops);
                }
                // A link that cannot be read now (it was just seen) would leave a link inside
                // `at` and break the invariant: refuse rather than guess.
                let next = std::fs::read_link(&here).map_err(|_| Stop::Outside)?;
                at.pop();
                at = resolve(root, at, next.as_os_str().as_bytes(), hops)?;
            }
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(raw: &[u8]) -> Result<Vec<String>, BadName> {
        components(raw).map(|v| v.iter().map(|c| c.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn components_normalise_dots_and_slashes() {
        assert_eq!(names(b"./a//b/./c/").unwrap(), ["a", "b", "c"]);
        assert_eq!(names(b".").unwrap(), Vec::<String>::new());
        assert_eq!(names(b"./").unwrap(), Vec::<String>::new());
        assert_eq!(names(b"...").unwrap(), ["..."]);
        assert_eq!(names(b"a\\..\\b").unwrap(), ["a\\..\\b"]);
    }

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(names(b"../x"), Err(BadName::Parent));
        assert_eq!(names(b"a/../../x"), Err(BadName::Parent));
        assert_eq!(names(b"a/.."), Err(BadName::Parent));
        assert_eq!(names(b"/etc/x"), Err(BadName::Absolute));
        assert_eq!(names(b"a\0b"), Err(BadName::Nul));
    }

    #[test]
    fn components_keep_non_utf8_bytes() {
        let parts = components(b"d/\xff\xfe").unwrap();
        assert_eq!(parts[1].as_bytes(), b"\xff\xfe");
    }

    #[test]
    fn lexical_targets_inside_and_out() {
        let root = Path::new("/nonexistent-dyno-build-root");
        let dir = [OsString::from("a"), OsString::from("b")];
        assert!(link_stays_inside(root, &dir, b"c"));
        assert!(link_stays_inside(root, &dir, b"../c"));
        assert!(link_stays_inside(root, &dir, b"../../c"));
        assert!(!link_stays_inside(root, &dir, b"../../../c"));
        assert!(!link_stays_inside(root, &dir, b"/etc"));
        assert!(!link_stays_inside(root, &dir, b""));
        assert!(link_stays_inside(root, &[], b"."));
        assert!(!link_stays_inside(root, &[], b".."));
    }
}
