//! Parsing `/proc/self/mountinfo` and `/proc/self/cgroup`, and locating our own cgroup's
//! directory in a mounted hierarchy.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// One line of `/proc/self/mountinfo`, the fields we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The directory of the filesystem shown at the mount point (`/` unless a sub-tree of the
    /// hierarchy was bind-mounted, as container runtimes without cgroup namespaces do).
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// For v1 hierarchies these include the controller names (`rw,cpu,cpuacct`).
    pub super_options: Vec<String>,
}

impl Mount {
    pub fn has_option(&self, option: &str) -> bool {
        self.super_options.iter().any(|o| o == option)
    }
}

/// Every well-formed line; others (none are expected) are skipped, since a mount we cannot read
/// is not one we can use anyway.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`: six fixed
/// fields, optional fields up to `-`, then type, source and super options.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|f| *f == "-")?;
    if separator < 6 || fields.len() < separator + 4 {
        return None;
    }
    Some(Mount {
        root: unescape(fields[3]),
        mount_point: PathBuf::from(unescape(fields[4])),
        fstype: fields[separator + 1].to_string(),
        super_options: fields[separator + 3]
            .split(',')
            .map(str::to_string)
            .collect(),
    })
}

/// The kernel writes space, tab, newline and backslash in paths as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                // Three octal digits can exceed a byte (\777); such a field is not an escape.
                match u8::try_from(value) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 4;
                    }
                    Err(_) => {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`: `4:memory:/process_api/abc`, `0::/user.slice` (v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupLine {
    pub hierarchy_id: String,
    /// Comma-separated controllers of a v1 hierarchy (`cpu,cpuacct`, `name=systemd`); empty for
    /// the v2 hierarchy.
    pub controllers: String,
    pub path: String,
}

impl CgroupLine {
    pub fn is_unified(&self) -> bool {
        self.hierarchy_id == "0" && self.controllers.is_empty()
    }

    pub fn has_controller(&self, controller: &str) -> bool {
        !self.is_unified() && self.controllers.split(',').any(|c| c == controller)
    }
}

pub(crate) fn parse_self_cgroup(path: &Path, text: &str) -> Result<Vec<CgroupLine>, CgroupError> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            // The path may itself contain ':', so split only twice.
            let mut fields = line.splitn(3, ':');
            match (fields.next(), fields.next(), fields.next()) {
                (Some(id), Some(controllers), Some(cgroup_path))
                    if cgroup_path.starts_with('/') =>
                {
                    Ok(CgroupLine {
                        hierarchy_id: id.to_string(),
                        controllers: controllers.to_string(),
                        path: cgroup_path.to_string(),
                    })
                }
                _ => Err(CgroupError::Parse {
                    path: path.to_path_buf(),
                    content: line.to_string(),
                    reason: "expected hierarchy-id:controllers:/path".into(),
                }),
            }
        })
        .collect()
}

/// Where our cgroup `own_path` lives on disk under `mount`, with the mount point re-rooted under
/// `fs_root` (`/` in production, a temp dir in tests). `None` when the mount shows a part of the
/// hierarchy that does not contain our cgroup.
pub(crate) fn dir_in_mount(mount: &Mount, own_path: &str, fs_root: &Path) -> Option<PathBuf> {
    let relative = path_below(&mount.root, own_path)?;
    let mut dir = reroot(fs_root, &mount.mount_point);
    for component in relative.split('/').filter(|c| !c.is_empty()) {
        // The kernel never writes these, and following them would leave our own sub-tree.
        if component == "." || component == ".." {
            return None;
        }
        dir.push(component);
    }
    Some(dir)
}

/// `path` relative to `root` when it is `root` or below it (component-wise: `/a` does not
/// contain `/ab`).
fn path_below<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/'))
    } else {
        None
    }
}

pub(crate) fn reroot(fs_root: &Path, absolute: &Path) -> PathBuf {
    fs_root.join(absolute.strip_prefix("/").unwrap_or(absolute))
}

/// The first mount of `fstype` (satisfying `wanted`) that shows our cgroup, with our directory
/// in it. `Err` carries the mounts that matched but do not show our cgroup, for the message.
pub(crate) fn find_own_dir<'m>(
    mounts: &'m [Mount],
    fstype: &str,
    wanted: impl Fn(&Mount) -> bool,
    own_path: &str,
    fs_root: &Path,
) -> Result<(&'m Mount, PathBuf), Vec<&'m Mount>> {
    let candidates: Vec<&Mount> = mounts
        .iter()
        .filter(|m| m.fstype == fstype && wanted(m))
        .collect();
    candidates
        .iter()
        .find_map(|m| dir_in_mount(m, own_path, fs_root).map(|dir| (*m, dir)))
        .ok_or(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_with_and_without_optional_fields() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 master:2 - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 /docker/a\\040b /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
garbage line
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            mounts[1].mount_point,
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(mounts[1].fstype, "cgroup");
        assert!(mounts[1].has_option("cpu") && mounts[1].has_option("cpuacct"));
        assert!(!mounts[1].has_option("cpuset"));
        assert_eq!(mounts[2].root, "/docker/a b");
        assert_eq!(mounts[2].fstype, "cgroup2");
    }

    #[test]
    fn unescape_leaves_non_escapes_alone() {
        assert_eq!(unescape(r"a\040b\134c"), r"a b\c");
        assert_eq!(unescape(r"a\9x\04"), r"a\9x\04");
        assert_eq!(unescape(r"\777"), r"\777");
    }

    #[test]
    fn self_cgroup_lines() {
        let path = Path::new("/proc/self/cgroup");
        let lines = parse_self_cgroup(
            path,
            "9:name=systemd:/\n2:cpu,cpuacct:/a:b\n4:memory:/process_api/x\n0::/\n",
        )
        .unwrap();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].has_controller("cpu"));
        assert!(lines[1].has_controller("cpuacct"));
        assert!(!lines[1].has_controller("cpuset"));
        assert_eq!(lines[1].path, "/a:b");
        assert!(lines[3].is_unified());
        assert!(!lines[3].has_controller(""));
        let err = parse_self_cgroup(path, "nonsense\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/self/cgroup"), "{err}");
    }

    #[test]
    fn own_dir_respects_the_mount_root() {
        let mount = |root: &str| Mount {
            root: root.into(),
            mount_point: "/sys/fs/cgroup/memory".into(),
            fstype: "cgroup".into(),
            super_options: vec!["rw".into(), "memory".into()],
        };
        let fs_root = Path::new("/");
        assert_eq!(
            dir_in_mount(&mount("/"), "/process_api/x", fs_root).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/x")
        );
        assert_eq!(
            dir_in_mount(&mount("/docker/abc"), "/docker/abc", fs_root).unwrap(),
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            dir_in_mount(
                &mount("/docker/abc"),
                "/docker/abc/sub",
                Path::new("/tmp/t")
            )
            .unwrap(),
            Path::new("/tmp/t/sys/fs/cgroup/memory/sub")
        );
        assert_eq!(
            dir_in_mount(&mount("/docker/abc"), "/docker/abcd", fs_root),
            None
        );
        assert_eq!(dir_in_mount(&mount("/docker"), "/other", fs_root), None);
        assert_eq!(dir_in_mount(&mount("/"), "/a/../b", fs_root), None);
    }
}
