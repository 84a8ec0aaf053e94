//! A build's workspace: a tmpfs of its own under the data dir (`builds/<id>/`), so that a
//! buildpack that fills its disk fills only that (it gets `ENOSPC`) and the host's disk stays
//! free. It holds the build dir (the slug to be), a copy of the app's cache, the config vars as
//! files, the buildpacks and the driver's meta dir; the build dyno gets them as binds. The
//! daemon copies the slug and the cache out when the build succeeds, then unmounts it.

use std::fs;
use std::io;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dyno_sandbox::spec::Bind;

/// The tmpfs's mount source name (`/proc/mounts` shows it; reconcile finds leftovers by it).
pub const MOUNT_SOURCE: &str = "dyno-build";

/// One build's directories.
pub struct Workspace {
    pub root: PathBuf,
}

impl Workspace {
    /// Mounts a tmpfs of `bytes` at `root` (created) with the build's directories in it, owned
    /// by `uid` where the build writes.
    pub fn create(root: &Path, bytes: u64, uid: u32) -> io::Result<Workspace> {
        fs::create_dir_all(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        let data =
            std::ffi::CString::new(format!("mode=0755,size={bytes}")).map_err(io::Error::other)?;
        rustix::mount::mount(
            MOUNT_SOURCE,
            root,
            "tmpfs",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            Some(data.as_c_str()),
        )?;
        let ws = Workspace {
            root: root.to_path_buf(),
        };
        for (dir, owner) in [
            (ws.app(), Some(uid)),
            (ws.cache(), Some(uid)),
            (ws.env(), None),
            (ws.buildpacks(), None),
            (ws.meta(), Some(uid)),
        ] {
            fs::create_dir(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
            if let Some(uid) = owner {
                chown(&dir, Some(uid), Some(uid))?;
            }
        }
        Ok(ws)
    }

    pub fn app(&self) -> PathBuf {
        self.root.join("app")
    }
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn env(&self) -> PathBuf {
        self.root.join("env")
    }
    pub fn buildpacks(&self) -> PathBuf {
        self.root.join("buildpacks")
    }
    pub fn meta(&self) -> PathBuf {
        self.root.join("meta")
    }

    /// What the build dyno sees: `/app`, `/cache` and `/meta` writable, the rest read-only.
    pub fn binds(&self) -> Vec<Bind> {
        vec![
            Bind::new(self.app(), "app", true),
            Bind::new(self.cache(), "cache", true),
            Bind::new(self.env(), "env", false),
            Bind::new(self.buildpacks(), "buildpacks", false),
            Bind::new(self.meta(), "meta", true),
        ]
    }

    /// ENV_DIR: one file per config var, its value as the content.
    pub fn write_env<'a>(
        &self,
        vars: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> io::Result<()> {
        for (key, value) in vars {
            fs::write(self.env().join(key), value)?;
        }
        Ok(())
    }

    /// Unmounts the tmpfs and removes its mount point (everything in it goes with it).
    pub fn remove(self) -> io::Result<()> {
        remove_at(&self.root)
    }
}

/// Unmounts a workspace at `root` (if mounted) and removes the directory.
pub fn remove_at(root: &Path) -> io::Result<()> {
    match rustix::mount::unmount(root, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies a tree (the cache in and out), owned by `uid` in the copy (`None`: the copier).
/// Special files are skipped; symlinks are copied as links.
pub fn copy_owned(src: &Path, dest: &Path, uid: Option<u32>) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_dir() {
            fs::create_dir(&to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o777))?;
            copy_owned(&from, &to, uid)?;
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o777))?;
        } else {
            continue;
        }
        if let Some(uid) = uid {
            std::os::unix::fs::lchown(&to, Some(uid), Some(uid))?;
        }
    }
    Ok(())
}

/// Gives the tree at `dir` to `uid` (not following links).
pub fn chown_tree(dir: &Path, uid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            chown_tree(&path, uid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))?;
        }
    }
    Ok(())
}
