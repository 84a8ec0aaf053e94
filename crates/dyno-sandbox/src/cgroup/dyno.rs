//! One dyno's cgroup ([`DynoCgroup`]): moving processes into it, reading it, signalling and
//! killing its processes, and removing it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{fs, process, v1, v2, CgroupError, DynoCgroup, Hierarchy, MemoryUsage, Version};

/// How long [`DynoCgroup::kill_all`] keeps killing before it gives up.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`DynoCgroup::remove`] waits for killed processes to finish exiting.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Its directories in the hierarchies only LXCFS reads
    /// ([`Cgroups::with_proc_view`](super::Cgroups::with_proc_view)).
    pub fn view_paths(&self) -> Vec<PathBuf> {
        self.view.iter().map(|h| h.dir.clone()).collect()
    }

    /// Moves the calling process into the dyno's cgroup (every hierarchy on v1). Meant for a
    /// freshly forked, single-threaded child before it unshares its cgroup namespace (so that
    /// the dyno's cgroup becomes its root); it starts no threads. Writes `0` ("the writer"),
    /// which also holds in a new pid namespace.
    ///
    /// On v1 it writes to `tasks` (the calling thread, which is the whole process here), not
    /// `cgroup.procs`: the kernel moves a thread that moves itself without write-locking the
    /// global threadgroup rwsem, whose every write waits for an RCU grace period unless the
    /// host boots with `favordynmods`. Through `cgroup.procs`, about one join in a hundred
    /// stalled 10-20 ms on a 2-CPU host; through `tasks`, none did (`dyno bench start`,
    /// `start_sandbox_p99_ms`).
    pub fn join_self(&self) -> Result<(), CgroupError> {
        let file = match self.version {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.procs",
        };
        for dir in self.dirs.iter().chain(&self.view) {
            fs::write(&dir.dir.join(file), "0")?;
        }
        Ok(())
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
    ///
    /// On v1 the memory cgroup is emptied first (`memory.force_empty`): otherwise the page cache
    /// the dyno read stays charged to it, and the removed cgroup lives on as a "dying" one until
    /// those pages are reclaimed. A host that starts and stops thousands of dynos gathers
    /// thousands of them, and every cgroup operation slows down (measured: `dyno bench scale
    /// --count 1000` run after run took 5.2, 7.2, 8.9, 9.8 s to come up, with 1,400 dying).
    /// v2 reparents the charges itself.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        let mut first_error = None;
        if self.version == Version::V1 {
            for dir in &self.dirs {
                let force_empty = dir.dir.join("memory.force_empty");
                if force_empty.exists() {
                    // Best effort: a cgroup that cannot be emptied is still removed.
                    let _ = std::fs::write(&force_empty, "0");
                }
            }
        }
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
