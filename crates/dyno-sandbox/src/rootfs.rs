//! The dyno's filesystem view, built as an allowlist inside its own mount namespace: a tmpfs
//! root holding only what the dyno may see, then `pivot_root` into it and the host's tree is
//! detached. Runs as root in the sandbox's first process, before anything of the app runs.
//!
//! ```text
//! /usr /bin /sbin /lib* /etc   host's, read-only, nosuid ("the stack"); merged-/usr symlinks kept
//! /etc/hostname hosts resolv.conf passwd group   the dyno's own, bound over the host's
//! /app    overlay: the app dir (read-only lower) + a tmpfs upper: writes stay in the dyno and
//!         vanish with it (Heroku's ephemeral filesystem)
//! /proc   fresh (the dyno's pid namespace)     /sys  fresh, read-only (the dyno's network)
//! /tmp    private tmpfs                        /dev  tmpfs: null zero full random urandom tty,
//!                                                     pts (own instance), shm, fd links;
//!                                                     console (an attached terminal)
//! ```
//! Nothing else: no `/root`, `/home`, `/run`, `/var`, no state dir, no other app.
//!
//! With LXCFS ([`crate::lxcfs`]), its files are bound over `/proc/meminfo`, `loadavg`, `stat`,
//! `uptime`, `cpuinfo`, `swaps`, `diskstats` and `/sys/devices/system/cpu/online`: the dyno
//! sees its own figures, not the host's. One tmpfs holds all the dyno may write (`/tmp`,
//! `/dev/shm`, the writable layer of `/app`, its `/etc` files), bounded by the dyno's memory
//! quota: a runaway writer gets `ENOSPC` there rather than taking the dyno (or, without a
//! cgroup, the host) to its memory limit. One superblock rather than three: each costs a
//! mount, and the kernel walks every superblock's lists whenever any memory cgroup goes.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::spec::{SandboxSpec, StateDir};
use crate::sys::{io_context, mount, SysResult};

const RO_BIND: libc::c_ulong =
    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// The dyno's tmpfs's bound without a cgroup (no quota to take it from).
pub const DEFAULT_TMPFS_BYTES: u64 = 512 * 1024 * 1024;

/// The bound of the dyno's tmpfs: its memory quota, which is half its kernel limit (2 × quota,
/// see [`crate::cgroup`]), so a full tmpfs leaves the app the other half.
pub fn tmpfs_bytes(spec: &SandboxSpec) -> u64 {
    spec.cgroup
        .as_ref()
        .map(|c| c.quota_bytes())
        .filter(|bytes| *bytes > 0)
        .unwrap_or(DEFAULT_TMPFS_BYTES)
}

/// Builds the dyno's root and enters it; `before_pivot` runs last in the host's tree.
pub fn build(
    spec: &SandboxSpec,
    state: &StateDir,
    before_pivot: impl FnOnce() -> SysResult<()>,
) -> SysResult<()> {
    // Nothing we mount from here on may propagate back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let root = state.root();
    mkdir(&root, 0o755)?;
    mount(
        Some("dyno-root"),
        &root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755,size=64k"),
    )?;
    for dir in &spec.stack {
        stack_dir(&root, dir)?;
    }
    let tmpfs_size = tmpfs_bytes(spec);
    let layer = ephemeral_layer(state, tmpfs_size)?;
    etc_files(state, &layer, &root)?;
    if !spec.binds.iter().any(|b| b.target == "app") {
        app(spec, &layer, &root)?;
    }
    for bind in &spec.binds {
        bind_dir(bind, &root)?;
    }
    let proc = inside(&root, "proc", 0o555)?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    // sysfs shows the network devices of the mounting process's network namespace: the dyno's.
    let sys = inside(&root, "sys", 0o555)?;
    mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
        None,
    )?;
    if let Some(view) = &spec.proc_view {
        proc_view(view, &root);
    }
    from_layer(&layer, "tmp", &inside(&root, "tmp", 0o1777)?)?;
    crate::masks::mask(&root)?;
    dev(&root, &layer, spec.terminal)?;
    before_pivot()?;
    enter(&root)
}

/// One directory of the stack: a symlink stays a symlink (Debian's `/bin -> usr/bin`), a
/// directory is bound read-only.
fn stack_dir(root: &Path, dir: &Path) -> SysResult<()> {
    let target = root.join(dir.strip_prefix("/").unwrap_or(dir));
    let meta = io_context(|| format!("stat {}", dir.display()), dir.symlink_metadata())?;
    if meta.file_type().is_symlink() {
        let link = io_context(
            || format!("read link {}", dir.display()),
            std::fs::read_link(dir),
        )?;
        return io_context(
            || format!("symlink {}", target.display()),
            symlink(&link, &target),
        );
    }
    mkdir(&target, 0o755)?;
    bind_read_only(dir, &target)
}

/// LXCFS's files over the fresh `/proc` and `/sys`. Whatever cannot be bound (a file this
/// LXCFS lacks, a mount whose LXCFS died) keeps the kernel's figures: the dyno starts anyway,
/// and the daemon has said once whether the view is on.
fn proc_view(view: &Path, root: &Path) {
    if read_only_source(view).is_err() {
        return;
    }
    for file in crate::lxcfs::FILES {
        let source = view.join(file);
        let target = root.join(file);
        if source.metadata().is_ok() && target.metadata().is_ok() {
            let _ = mount(
                Some(&source.to_string_lossy()),
                &target,
                None,
                libc::MS_BIND,
                None,
            );
        }
    }
}

/// Makes `dir` a read-only (nosuid, nodev) bind of itself, in the sandbox's mount namespace
/// only: a file bound from it afterwards is read-only without a remount of its own (a bind
/// copies its source mount's flags), one mount call instead of two.
fn read_only_source(dir: &Path) -> SysResult<()> {
    bind_read_only(dir, dir)
}

fn bind_read_only(source: &Path, target: &Path) -> SysResult<()> {
    let source = source.to_string_lossy();
    mount(
        Some(&source),
        target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    mount(None, target, None, RO_BIND, None)
}

/// A [`crate::spec::Bind`]: the host directory at a top-level name, read-only unless
/// writable, never with setuid files or devices. Names with a slash or `..` are refused: a
/// bind may not cover a part of the stack.
fn bind_dir(bind: &crate::spec::Bind, root: &Path) -> SysResult<()> {
    let name = bind.target.as_str();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return io_context(
            || format!("bind {} at /{name}", bind.source.display()),
            Err(std::io::Error::other(
                "a bind's target must be one top-level name",
            )),
        );
    }
    let target = inside(root, name, 0o755)?;
    if !bind.writable {
        return bind_read_only(&bind.source, &target);
    }
    let source = bind.source.to_string_lossy();
    mount(
        Some(&source),
        &target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    mount(
        None,
        &target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
}

/// The tmpfs behind the dyno's writable files (the `/app` layer and its own `/etc` files),
/// mounted in the sandbox's mount namespace only. What is bound from it into the dyno shows
/// as `dyno-app-layer` in `/proc/self/mountinfo`, with paths inside it: no host path of the
/// state dir or the slugs leaks there.
fn ephemeral_layer(state: &StateDir, size: u64) -> SysResult<PathBuf> {
    let layer = state.ephemeral();
    mkdir(&layer, 0o700)?;
    mount(
        Some("dyno-app-layer"),
        &layer,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&format!("mode=0700,size={size}")),
    )?;
    Ok(layer)
}

/// The dyno's own `/etc/hostname`, `hosts`, `resolv.conf`, `passwd` and `group`: copied into
/// the layer, then bound read-only over the host's.
fn etc_files(state: &StateDir, layer: &Path, root: &Path) -> SysResult<()> {
    let etc = layer.join("etc");
    mkdir(&etc, 0o755)?;
    let mut files = Vec::new();
    for file in ["hostname", "hosts", "resolv.conf", "passwd", "group"] {
        let target = root.join("etc").join(file);
        if !target
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_file())
        {
            continue;
        }
        let copy = etc.join(file);
        io_context(
            || format!("copy {}", state.etc_file(file).display()),
            std::fs::copy(state.etc_file(file), &copy),
        )?;
        io_context(
            || format!("chmod {}", copy.display()),
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)),
        )?;
        files.push((copy, target));
    }
    read_only_source(&etc)?;
    for (copy, target) in files {
        mount(
            Some(&copy.to_string_lossy()),
            &target,
            None,
            libc::MS_BIND,
            None,
        )?;
    }
    Ok(())
}

/// `/app`: overlay of the app dir under a writable upper layer owned by the app's user. The
/// slug is bound into the layer first and the overlay is given paths relative to it, because
/// the kernel shows an overlay's options, paths included, in `/proc/self/mountinfo`.
fn app(spec: &SandboxSpec, layer: &Path, root: &Path) -> SysResult<()> {
    let lower = layer.join("lower");
    let upper = layer.join("upper");
    let work = layer.join("work");
    mkdir(&lower, 0o755)?;
    mkdir(&upper, 0o755)?;
    mkdir(&work, 0o700)?;
    let slug = spec.app_dir.to_string_lossy();
    mount(
        Some(&slug),
        &lower,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    // The merged root takes the upper directory's owner: the app may write in /app.
    io_context(
        || format!("chown {}", upper.display()),
        std::os::unix::fs::chown(&upper, Some(spec.uid), Some(spec.gid)),
    )?;
    let target = inside(root, "app", 0o755)?;
    io_context(
        || format!("chdir {}", layer.display()),
        std::env::set_current_dir(layer),
    )?;
    mount(
        Some("dyno-app"),
        &target,
        Some("overlay"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("lowerdir=lower,upperdir=upper,workdir=work"),
    )
}

/// A world-writable (sticky) directory of the layer at `target`: nosuid and nodev, as the
/// layer is.
fn from_layer(layer: &Path, name: &str, target: &Path) -> SysResult<()> {
    let dir = layer.join(name);
    mkdir(&dir, 0o1777)?;
    mount(
        Some(&dir.to_string_lossy()),
        target,
        None,
        libc::MS_BIND,
        None,
    )
}

fn dev(root: &Path, layer: &Path, terminal: bool) -> SysResult<()> {
    let dev = inside(root, "dev", 0o755)?;
    mount(
        Some("dyno-dev"),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        io_context(
            || format!("create {}", target.display()),
            std::fs::File::create(&target),
        )?;
        let source = PathBuf::from("/dev").join(name);
        mount(
            Some(&source.to_string_lossy()),
            &target,
            None,
            libc::MS_BIND,
            None,
        )?;
    }
    // An attached one-off's terminal is the host's (the daemon holds its master): shown as
    // `/dev/console`, as container runtimes do, so that `tty` and ttyname(3) name it.
    if terminal {
        let console = dev.join("console");
        io_context(
            || format!("create {}", console.display()),
            std::fs::File::create(&console),
        )?;
        // By its path in this (copied) mount tree: the fd's own mount is the host namespace's,
        // which a bind mount here cannot take.
        let slave = io_context(
            || "find the terminal (stdin)".to_string(),
            std::fs::read_link("/proc/self/fd/0"),
        )?;
        mount(
            Some(&slave.to_string_lossy()),
            &console,
            None,
            libc::MS_BIND,
            None,
        )?;
    }
    let pts = inside(root, "dev/pts", 0o755)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    from_layer(layer, "shm", &inside(root, "dev/shm", 0o1777)?)?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        io_context(|| format!("symlink {}", path.display()), symlink(to, &path))?;
    }
    mount(
        None,
        &dev,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755"),
    )
}

/// `pivot_root` into the new root, then detach the host's tree and freeze the root itself.
fn enter(root: &Path) -> SysResult<()> {
    let old = root.join(".host");
    mkdir(&old, 0o700)?;
    io_context(
        || format!("pivot_root into {}", root.display()),
        rustix::process::pivot_root(root, &old).map_err(Into::into),
    )?;
    io_context(|| "chdir /".to_string(), std::env::set_current_dir("/"))?;
    io_context(
        || "detach the host's tree".to_string(),
        rustix::mount::unmount("/.host", rustix::mount::UnmountFlags::DETACH).map_err(Into::into),
    )?;
    io_context(
        || "remove /.host".to_string(),
        std::fs::remove_dir("/.host"),
    )?;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )
}

/// A directory under the new root (created with `mode`).
fn inside(root: &Path, name: &str, mode: u32) -> SysResult<PathBuf> {
    let path = root.join(name);
    mkdir(&path, mode)?;
    Ok(path)
}

fn mkdir(path: &Path, mode: u32) -> SysResult<()> {
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return io_context(|| format!("mkdir {}", path.display()), Err(e)),
    }
    // Explicit mode: the umask must not decide what the dyno can write.
    io_context(
        || format!("chmod {}", path.display()),
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
    )
}
