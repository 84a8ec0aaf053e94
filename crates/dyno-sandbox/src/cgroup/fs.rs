//! Reading and writing cgroup control files, with errors that name the file.
//!
//! Writes never create files: the kernel makes a cgroup's control files, and a write to a file
//! that is missing means the controller is absent, which must surface as an error rather than
//! as a stray regular file (that also keeps the fake trees of the unit tests honest).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupError;

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file that may legitimately be absent (a newer kernel's file, an optional
/// controller's): `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// One `write(2)` of `value`: cgroup files take one value per write.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    file.write_all(value.as_bytes()).map_err(err)
}

pub(crate) fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// `mkdir`; `Ok(false)` when it already exists. An existing directory must be a cgroup: the
/// kernel gives every cgroup a `cgroup.procs`.
pub(crate) fn make_cgroup_dir(path: &Path) -> Result<bool, CgroupError> {
    let created = match std::fs::create_dir(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(source) => {
            return Err(CgroupError::Create {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !path.join("cgroup.procs").is_file() {
        return Err(CgroupError::NotACgroup {
            path: path.to_path_buf(),
        });
    }
    Ok(created)
}

/// The child cgroups of `dir` (directories; control files are regular files). A missing `dir`
/// has none.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut children = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            children.push(entry.path());
        }
    }
    children.sort();
    Ok(children)
}

/// The pids in `dir/cgroup.procs` and in those of every cgroup below it. A cgroup that vanishes
/// while we walk has no processes.
pub(crate) fn procs_recursive(dir: &Path, pids: &mut Vec<u32>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    let Some(text) = read_optional(&procs)? else {
        return Ok(());
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid = line.parse().map_err(|_| CgroupError::Parse {
            path: procs.clone(),
            content: line.to_string(),
            reason: "not a pid".into(),
        })?;
        pids.push(pid);
    }
    for child in child_dirs(dir)? {
        procs_recursive(&child, pids)?;
    }
    Ok(())
}

/// Removes the cgroup `dir` and any cgroups below it, deepest first. The kernel refuses
/// (`EBUSY`) while a process is still exiting, so busy directories are retried until
/// `deadline`. An absent directory is already removed.
pub(crate) fn remove_cgroup_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    for child in child_dirs(dir)? {
        remove_cgroup_tree(&child, deadline)?;
    }
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// A decimal number, or `max` (no limit) as `u64::MAX`.
pub(crate) fn parse_limit(path: &Path, text: &str) -> Result<u64, CgroupError> {
    let value = text.trim();
    if value == "max" {
        return Ok(u64::MAX);
    }
    value.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: value.to_string(),
        reason: "expected a number or \"max\"".into(),
    })
}

/// A "flat keyed" file (`memory.stat`, `memory.events`, v1 `memory.oom_control`): one `key value`
/// per line. Lines whose value is not a number are ignored (none are expected, and a new kernel
/// adding one must not break the readings).
pub(crate) fn parse_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let key = fields.next()?;
            let value = fields.next()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

/// `key` of a flat keyed file that must have it.
pub(crate) fn required_key(
    path: &Path,
    keyed: &HashMap<&str, u64>,
    key: &str,
) -> Result<u64, CgroupError> {
    keyed.get(key).copied().ok_or_else(|| CgroupError::Parse {
        path: path.to_path_buf(),
        content: String::new(),
        reason: format!("no {key:?} line"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse_and_ignore_odd_lines() {
        let keyed = parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\nweird\nx y\n");
        assert_eq!(keyed.get("oom_kill"), Some(&3));
        assert_eq!(keyed.get("under_oom"), Some(&0));
        assert!(!keyed.contains_key("x"));
        assert!(!keyed.contains_key("weird"));
    }

    #[test]
    fn limits_parse_max_and_numbers() {
        let path = Path::new("memory.max");
        assert_eq!(parse_limit(path, "max\n").unwrap(), u64::MAX);
        assert_eq!(parse_limit(path, "268435456\n").unwrap(), 268_435_456);
        let err = parse_limit(path, "lots").unwrap_err().to_string();
        assert!(err.contains("memory.max"), "{err}");
    }
}
