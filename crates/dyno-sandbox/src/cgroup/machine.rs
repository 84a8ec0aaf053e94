//! The machine's cgroups ([`Cgroups`]): detecting them, where the dyno cgroups live, creating
//! a dyno's, and finding and removing those an earlier daemon left.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{
    detect, fs, v1, v2, validate_dyno_id, view, CgroupError, Cgroups, DynoCgroup, DynoSize,
    Hierarchy, Version, DYNO_DIR, SUPERVISOR_LEAF,
};

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

    /// The handle [`Cgroups::create_new`] will return for this dyno, before anything is made:
    /// for a sandbox that starts while its cgroup is made, and joins it once told it exists
    /// (see `SandboxSpec::network_gate`).
    pub fn planned(&self, dyno_id: &str, size: &DynoSize) -> Result<DynoCgroup, CgroupError> {
        validate_dyno_id(dyno_id)?;
        size.validate()?;
        let view_roots: Vec<Hierarchy> =
            self.view_made().iter().map(|h| h.child(DYNO_DIR)).collect();
        Ok(DynoCgroup {
            version: self.version,
            id: dyno_id.to_string(),
            quota_bytes: size.memory_quota_bytes(),
            dirs: self
                .dyno_roots()
                .iter()
                .map(|root| root.child(dyno_id))
                .collect(),
            view: view_roots.iter().map(|root| root.child(dyno_id)).collect(),
        })
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
