//! Per-dyno cgroups: memory (quota and a hard limit at twice the quota), pids and CPU weight,
//! on cgroup v1 and v2.
//!
//! Everything happens below the daemon's **own** cgroup, as `/proc/self/cgroup` names it (per
//! hierarchy on v1, where it may differ between controllers): `<own>/dyno/<dyno-id>`. Nothing
//! else is created, and no other cgroup's settings are touched, except that on v2 our own
//! cgroup's `cgroup.subtree_control` must enable the controllers for `dyno` (see `v2.rs`).
//!
//! Memory follows Heroku: a dyno may exceed its quota (R14, Heroku swaps) up to twice the
//! quota, where it is killed (R15). Machines here may have no swap, so the kernel's hard limit
//! is 2 × quota with swap disabled for the dyno; [`DynoCgroup::memory_usage`] gives the
//! supervisor what it needs to log R14 (`used_bytes > quota_bytes`) and R15 (`oom_kills`
//! grew, or `used_bytes` reached `limit_bytes`).
//!
//! Usage: the daemon calls [`Cgroups::detect`] once and [`Cgroups::create`] per dyno, hands the
//! [`DynoCgroup`] (it serialises) to the shim, whose freshly forked child calls
//! [`DynoCgroup::join_self`] before unsharing its cgroup namespace; at the end
//! [`DynoCgroup::kill_all`] and [`DynoCgroup::remove`].

pub(crate) mod detect;
mod error;
mod fs;
mod placement;
mod process;
mod size;
mod usage;
mod v1;
mod v2;
mod view;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use error::CgroupError;
pub use placement::{CpuList, CpuPlacement};
pub use size::{DynoSize, CPU_PERIOD_US, DYNO_SIZES};
pub(crate) use usage::MemoryCounters;
pub use usage::MemoryUsage;

/// The controllers a dyno cgroup uses.
pub(crate) const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The directory below our own cgroup that holds the dyno cgroups.
pub const DYNO_DIR: &str = "dyno";
/// The v2 leaf the daemon moves itself into so that its own cgroup has no processes
/// ([`Cgroups::vacate_own_cgroup`]).
pub const SUPERVISOR_LEAF: &str = "dyno-supervisor";
/// How long [`DynoCgroup::kill_all`] keeps killing before it gives up.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`DynoCgroup::remove`] waits for killed processes to finish exiting.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DYNO_ID_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// One cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hierarchy {
    /// The hierarchy's controllers as `/proc/<pid>/cgroup` lists them (`memory`, `cpu,cpuacct`);
    /// empty for v2.
    pub(crate) controllers: String,
    /// The cgroup's directory.
    pub(crate) dir: PathBuf,
    /// The cgroup's path as `/proc/<pid>/cgroup` shows it to us (in our cgroup namespace).
    pub(crate) proc_path: String,
}

impl Hierarchy {
    pub(crate) fn child(&self, name: &str) -> Hierarchy {
        Hierarchy {
            controllers: self.controllers.clone(),
            dir: self.dir.join(name),
            proc_path: format!("{}/{name}", self.proc_path.trim_end_matches('/')),
        }
    }

    pub(crate) fn has_controller(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// The cgroup hierarchies of this machine and our own place in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    version: Version,
    /// v1: our cgroup in each hierarchy of [`CONTROLLERS`]; v2: exactly one.
    own: Vec<Hierarchy>,
    /// v1: our cgroup in the hierarchies LXCFS also reads (see `view.rs`); empty on v2.
    view: Vec<Hierarchy>,
    /// Whether dyno cgroups are made in [`Cgroups::view`] too ([`Cgroups::with_proc_view`]).
    make_view: bool,
    /// New dynos start on the busy CPUs ([`Cgroups::reserve_cpus`]).
    placement: Option<CpuPlacement>,
}

impl Cgroups {
    /// From `/proc/self/mountinfo` and `/proc/self/cgroup`. v1 when the memory controller is
    /// on a v1 hierarchy (also on "hybrid" systems with an empty v2 mount), else v2.
    pub fn detect() -> Result<Cgroups, CgroupError> {
        Cgroups::detect_at(Path::new("/proc/self"), Path::new("/"))
    }

    /// [`Cgroups::detect`] over another tree: `proc_self` holds `mountinfo` and `cgroup`, and
    /// the mount points in `mountinfo` are taken relative to `fs_root`.
    pub fn detect_at(proc_self: &Path, fs_root: &Path) -> Result<Cgroups, CgroupError> {
        let mountinfo_path = proc_self.join("mountinfo");
        let self_cgroup_path = proc_self.join("cgroup");
        let mounts = detect::parse_mountinfo(&fs::read(&mountinfo_path)?);
        let lines = detect::parse_self_cgroup(&self_cgroup_path, &fs::read(&self_cgroup_path)?)?;
        if lines.iter().any(|l| l.has_controller("memory")) {
            let own = v1::detect(&mounts, &lines, fs_root)?;
            return Ok(Cgroups {
                version: Version::V1,
                view: view::detect(&mounts, &lines, fs_root, &own),
                own,
                make_view: false,
                placement: None,
            });
        }
        let no_fs = |reason| CgroupError::NoCgroupFs {
            mountinfo: mountinfo_path.clone(),
            self_cgroup: self_cgroup_path.clone(),
            reason,
        };
        Ok(Cgroups {
            version: Version::V2,
            own: vec![v2::detect(&mounts, &lines, fs_root, no_fs)?],
            view: Vec::new(),
            make_view: false,
            placement: None,
        })
    }

    /// From now on, dyno cgroups are also made in the v1 hierarchies LXCFS reads a dyno's CPU
    /// and disk figures from (cpuacct, cpuset, blkio), so that its `/proc` view is the dyno's.
    /// Nothing changes on v2, where the one hierarchy has it all.
    pub fn with_proc_view(mut self) -> Cgroups {
        self.make_view = true;
        self
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Our own cgroup's directory in each hierarchy used.
    pub fn own_dirs(&self) -> Vec<PathBuf> {
        self.own.iter().map(|h| h.dir.clone()).collect()
    }

    /// The directories holding the dyno cgroups (`<own>/dyno`), whether or not they exist yet.
    pub fn dyno_root_dirs(&self) -> Vec<PathBuf> {
        self.dyno_roots().into_iter().map(|h| h.dir).collect()
    }

    fn dyno_roots(&self) -> Vec<Hierarchy> {
        self.own.iter().map(|h| h.child(DYNO_DIR)).collect()
    }

    /// The view hierarchies new dyno cgroups are made in: all of them for the private `/proc`
    /// view; for CPU placement alone, only cpuset and cpuacct (one mkdir less per start).
    fn view_made(&self) -> Vec<Hierarchy> {
        let placement = self.placement.is_some();
        self.view
            .iter()
            .filter(|h| {
                self.make_view
                    || placement && (h.has_controller("cpuset") || h.has_controller("cpuacct"))
            })
            .cloned()
            .collect()
    }

    fn view_roots(&self) -> Vec<Hierarchy> {
        self.view.iter().map(|h| h.child(DYNO_DIR)).collect()
    }

    /// Where dyno cgroups may be, whether or not this daemon makes view cgroups: an earlier
    /// one may have.
    fn all_roots(&self) -> Vec<Hierarchy> {
        let mut roots = self.dyno_roots();
        roots.extend(self.view_roots());
        roots
    }

    /// [`Cgroups::create`] for a dyno that is new: a cgroup of that name belongs to another
    /// dyno (a name taken twice), which must be neither shared nor later removed by us.
    pub fn create_new(&self, dyno_id: &str, size: &DynoSize) -> Result<DynoCgroup, CgroupError> {
        validate_dyno_id(dyno_id)?;
        if let Some(taken) = self
            .dyno_root_dirs()
            .into_iter()
            .map(|root| root.join(dyno_id))
            .find(|dir| dir.exists())
        {
            return Err(CgroupError::Create {
                path: taken,
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "another dyno's cgroup has this name",
                ),
            });
        }
        self.create(dyno_id, size)
    }

    /// Creates the dyno's cgroup (in every hierarchy used) and writes its limits. Idempotent:
    /// an existing cgroup gets the limits of `size` (which may resize it).
    pub fn create(&self, dyno_id: &str, size: &DynoSize) -> Result<DynoCgroup, CgroupError> {
        validate_dyno_id(dyno_id)?;
        size.validate()?;
        let mut attempt = 0;
        loop {
            match self.try_create(dyno_id, size) {
                // A concurrent `remove_dyno_root_if_unused` took `dyno` away between our
                // mkdir of it and of the dyno's cgroup: start over.
                Err(CgroupError::Create { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && attempt < 3 =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn try_create(&self, dyno_id: &str, size: &DynoSize) -> Result<DynoCgroup, CgroupError> {
        let roots = match self.version {
            Version::V1 => v1::prepare_dyno_roots(&self.own)?,
            Version::V2 => vec![v2::prepare_dyno_root(
                &self.own[0],
                self.placement.is_some(),
            )?],
        };
        let view_roots = view::prepare_dyno_roots(&self.view_made())?;
        let dyno = DynoCgroup {
            version: self.version,
            id: dyno_id.to_string(),
            quota_bytes: size.memory_quota_bytes(),
            dirs: roots.iter().map(|root| root.child(dyno_id)).collect(),
            view: view_roots.iter().map(|root| root.child(dyno_id)).collect(),
        };
        let mut all_new = true;
        let made = dyno.dirs.iter().chain(&dyno.view).try_for_each(|dir| {
            all_new &= fs::make_cgroup_dir(&dir.dir)?;
            Ok(())
        });
        let applied = made
            .and_then(|()| match self.version {
                Version::V1 => v1::apply_limits(&dyno.dirs, size),
                Version::V2 => v2::apply_limits(&dyno.dirs[0].dir, size),
            })
            .and_then(|()| {
                view_roots
                    .iter()
                    .zip(&dyno.view)
                    .try_for_each(|(root, dir)| view::inherit_cpuset(root, dir))
            })
            .and_then(|()| match &self.placement {
                // Every dyno starts as busy; the daemon lets it onto every CPU once it shows it
                // uses little (see `placement.rs`).
                Some(placement) => dyno.set_cpus(&placement.busy),
                None => Ok(()),
            });
        if let Err(e) = applied {
            // Leave nothing half-made behind, but only what this call made: an existing
            // cgroup may hold a running dyno.
            if all_new {
                let _ = dyno.remove();
            }
            return Err(e);
        }
        Ok(dyno)
    }

    /// A handle on an existing dyno cgroup (an earlier daemon's), to kill its processes and
    /// remove it; no limits are written.
    pub fn existing(&self, dyno_id: &str) -> Result<DynoCgroup, CgroupError> {
        validate_dyno_id(dyno_id)?;
        Ok(DynoCgroup {
            version: self.version,
            id: dyno_id.to_string(),
            quota_bytes: 0,
            dirs: self
                .dyno_roots()
                .iter()
                .map(|root| root.child(dyno_id))
                .filter(|h| h.dir.is_dir())
                .collect(),
            view: self
                .view_roots()
                .iter()
                .map(|root| root.child(dyno_id))
                .filter(|h| h.dir.is_dir())
                .collect(),
        })
    }

    /// The ids of the dyno cgroups that exist below our `dyno` directory.
    pub fn dyno_ids(&self) -> Result<Vec<String>, CgroupError> {
        let mut ids = Vec::new();
        for root in self.all_roots() {
            for child in fs::child_dirs(&root.dir)? {
                if let Some(name) = child.file_name().and_then(|n| n.to_str()) {
                    if validate_dyno_id(name).is_ok() && !ids.iter().any(|id| id == name) {
                        ids.push(name.to_string());
                    }
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// For the daemon's reconcile: removes the dyno cgroups that are empty and not in `keep`.
    /// Ones with processes are left alone (a dyno may outlive a daemon restart). Returns the
    /// ids removed.
    pub fn cleanup_stale(&self, keep: &[&str]) -> Result<Vec<String>, CgroupError> {
        let mut removed = Vec::new();
        for id in self.dyno_ids()? {
            if keep.contains(&id.as_str()) {
                continue;
            }
            let dirs: Vec<Hierarchy> = self.all_roots().iter().map(|r| r.child(&id)).collect();
            let mut pids = Vec::new();
            for dir in &dirs {
                fs::procs_recursive(&dir.dir, &mut pids)?;
            }
            if !pids.is_empty() {
                continue;
            }
            let mut all_gone = true;
            for dir in &dirs {
                match fs::remove_cgroup_tree(&dir.dir, Instant::now()) {
                    Ok(()) => {}
                    // A process joined in the meantime: not stale after all.
                    Err(CgroupError::Remove { source, .. })
                        if source.raw_os_error() == Some(libc::EBUSY) =>
                    {
                        all_gone = false;
                    }
                    Err(e) => return Err(e),
                }
            }
            if all_gone {
                removed.push(id);
            }
        }
        Ok(removed)
    }

    /// Removes our `dyno` directories when no dyno cgroup is left in them. `Ok(false)` when
    /// some are still in use.
    pub fn remove_dyno_root_if_unused(&self) -> Result<bool, CgroupError> {
        let mut all_gone = true;
        for root in self.all_roots() {
            match std::fs::remove_dir(&root.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) => {
                    all_gone = false;
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: root.dir,
                        source,
                    })
                }
            }
        }
        Ok(all_gone)
    }

    /// v2 only: moves the calling process (all its threads) into the leaf
    /// `<own>/dyno-supervisor`, so that our own cgroup has no processes and may enable
    /// controllers for `dyno` (processes started afterwards, such as the shims, are born in the
    /// leaf). Call it early, once; a later [`Cgroups::detect`] still finds the same base. On v1
    /// there is no such rule and nothing to do.
    pub fn vacate_own_cgroup(&self) -> Result<(), CgroupError> {
        if self.version == Version::V1 {
            return Ok(());
        }
        let leaf = self.own[0].child(SUPERVISOR_LEAF);
        fs::make_cgroup_dir(&leaf.dir)?;
        fs::write(&leaf.dir.join("cgroup.procs"), "0")
    }
}

/// Dyno ids name directories: `[a-z0-9.-]`, 1 to 64 characters, and not `.` or `..`.
pub fn validate_dyno_id(id: &str) -> Result<(), CgroupError> {
    let invalid = |reason| {
        Err(CgroupError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return invalid("empty");
    }
    if id.len() > MAX_DYNO_ID_LEN {
        return invalid("longer than 64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return invalid("only lowercase letters, digits, '.' and '-' are allowed");
    }
    if id.starts_with('.') {
        // `.`, `..` and hidden names; a leading dot is never a dyno's name.
        return invalid("must not start with '.'");
    }
    Ok(())
}

/// One dyno's cgroup: a directory per hierarchy on v1, one on v2. It serialises, so the daemon
/// can hand it to the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynoCgroup {
    version: Version,
    id: String,
    quota_bytes: u64,
    dirs: Vec<Hierarchy>,
    /// v1: its cgroups in the hierarchies only LXCFS reads (see `view.rs`); no limits there.
    #[serde(default)]
    view: Vec<Hierarchy>,
}

impl DynoCgroup {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// The dyno's cgroup directories.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|h| h.dir.clone()).collect()
    }

    /// Its directories in the hierarchies only LXCFS reads ([`Cgroups::with_proc_view`]).
    pub fn view_paths(&self) -> Vec<PathBuf> {
        self.view.iter().map(|h| h.dir.clone()).collect()
    }

    /// Moves the calling process into the dyno's cgroup (every hierarchy on v1). Meant for a
    /// freshly forked, single-threaded child before it unshares its cgroup namespace (so that
    /// the dyno's cgroup becomes its root); it starts no threads. Writes `0` ("the writer"),
    /// which also holds in a new pid namespace.
    pub fn join_self(&self) -> Result<(), CgroupError> {
        self.write_procs("0")
    }

    /// Moves process `pid` (all its threads) into the dyno's cgroup.
    pub fn join(&self, pid: u32) -> Result<(), CgroupError> {
        self.write_procs(&pid.to_string())
    }

    fn write_procs(&self, value: &str) -> Result<(), CgroupError> {
        for dir in self.dirs.iter().chain(&self.view) {
            fs::write(&dir.dir.join("cgroup.procs"), value)?;
        }
        Ok(())
    }

    /// Opens the `cgroup.procs` files now, so that a child can join with nothing but `write(2)`
    /// calls: for `pre_exec` of a `Command` spawned by a multi-threaded process, where
    /// allocating after fork is not safe.
    pub fn prepare_join(&self) -> Result<PreparedJoin, CgroupError> {
        let files = self
            .dirs
            .iter()
            .chain(&self.view)
            .map(|dir| {
                let path = dir.dir.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| CgroupError::Write {
                        path,
                        value: "0".into(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(PreparedJoin { files })
    }

    /// The readings for R14/R15.
    pub fn memory_usage(&self) -> Result<MemoryUsage, CgroupError> {
        match self.version {
            Version::V1 => v1::memory_usage(&self.dirs, self.quota_bytes),
            Version::V2 => v2::memory_usage(&self.dirs[0].dir, self.quota_bytes),
        }
    }

    /// Every process in the dyno's cgroup (and in any cgroup below it), in every hierarchy,
    /// sorted. A removed cgroup has none.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            fs::procs_recursive(&dir.dir, &mut pids)?;
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// SIGKILLs every process until none is left: v2 `cgroup.kill` where the kernel has it,
    /// else rounds of SIGKILL to each process (a fork bomb is bounded by `pids.max`, and
    /// killed processes fork no more). Gives up after 5 s with
    /// [`CgroupError::StillPopulated`] (a process stuck in uninterruptible sleep).
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let started = Instant::now();
        let deadline = started + KILL_TIMEOUT;
        if self.version == Version::V2 {
            v2::kill_via_cgroup_kill(&self.dirs[0].dir, deadline)?;
        }
        loop {
            let members = self.members()?;
            let Some((_, dir)) = members.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(CgroupError::StillPopulated {
                    dir: dir.dir.clone(),
                    pids: members.iter().map(|(pid, _)| *pid).collect(),
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            for (pid, dir) in members {
                process::signal_member(pid, dir, libc::SIGKILL)?;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` once to every process of the dyno, as Heroku's stop does with SIGTERM
    /// (then [`DynoCgroup::kill_all`] after the grace period). Returns how many processes were
    /// signalled.
    pub fn signal_all(&self, signal: i32) -> Result<usize, CgroupError> {
        let members = self.members()?;
        for (pid, dir) in &members {
            process::signal_member(*pid, dir, signal)?;
        }
        Ok(members.len())
    }

    /// Every process once, with the hierarchy it was found in (on v1 a process shows up in
    /// each; a second SIGTERM may mean "hurry" to some apps, so it must get only one).
    fn members(&self) -> Result<Vec<(u32, &Hierarchy)>, CgroupError> {
        let mut members: Vec<(u32, &Hierarchy)> = Vec::new();
        let mut seen = HashSet::new();
        for dir in &self.dirs {
            let mut pids = Vec::new();
            fs::procs_recursive(&dir.dir, &mut pids)?;
            for pid in pids {
                if seen.insert(pid) {
                    members.push((pid, dir));
                }
            }
        }
        Ok(members)
    }

    /// Removes the dyno's cgroup directories (and any below them), waiting briefly while
    /// killed processes finish exiting. Already removed is fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        let mut first_error = None;
        for dir in self.dirs.iter().chain(&self.view) {
            if let Err(e) = fs::remove_cgroup_tree(&dir.dir, deadline) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The dyno's `cgroup.procs` files, opened ahead of a fork ([`DynoCgroup::prepare_join`]).
#[derive(Debug)]
pub struct PreparedJoin {
    files: Vec<File>,
}

impl PreparedJoin {
    /// Moves the calling process into the dyno's cgroup. Async-signal-safe: only `write(2)`,
    /// no allocation, so it may run in `pre_exec`.
    pub fn join_current(&self) -> io::Result<()> {
        for file in &self.files {
            // SAFETY: writes one byte from a static buffer to an fd we own.
            let written = unsafe { libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if written < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
