//! CPU placement: busy dynos stay off the reserved CPUs.
//!
//! A dyno's CFS quota bounds how much CPU it gets, not *where*: a Standard-1X dyno (one CPU of
//! quota) with two spinning processes keeps both CPUs of a 2-core host busy half of every
//! period, and every other dyno's wake-up (and the router's) then waits for a scheduler tick
//! behind it. So the first CPU(s) of the daemon's own set are kept for the router, the daemon
//! and dynos that use little CPU: a dyno starts on the other CPUs (its cpuset), the daemon lets
//! it onto every CPU once it has shown it uses less than half a CPU, and puts it back once it
//! uses more (`dyno-manager`'s `cpu_placement`). Its quota is unchanged either way.
//!
//! v1: the dyno's cgroup in the cpuset hierarchy (made with the view cgroups, `view.rs`), CPU
//! time from `cpuacct.usage`. v2: `cpuset.cpus` and `cpu.stat`'s `usage_usec` in its one
//! cgroup, with the cpuset controller enabled for `dyno`.

use std::fmt;
use std::time::Duration;

use super::{fs, CgroupError, Cgroups, DynoCgroup, Hierarchy, Version};

/// A set of CPU numbers, as the kernel writes them (`0-3,6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<u32>);

impl CpuList {
    pub fn parse(text: &str) -> Option<CpuList> {
        let mut cpus = Vec::new();
        for part in text.trim().split(',').filter(|p| !p.is_empty()) {
            let (first, last): (u32, u32) = match part.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => {
                    let cpu = part.parse().ok()?;
                    (cpu, cpu)
                }
            };
            if first > last {
                return None;
            }
            cpus.extend(first..=last);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Some(CpuList(cpus))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for CpuList {
    /// Ranges where they are consecutive: `0-3,6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match start == end {
                true => write!(f, "{start}")?,
                false => write!(f, "{start}-{end}")?,
            }
            i += 1;
        }
        Ok(())
    }
}

/// Every CPU the daemon may use, and the ones busy dynos are kept to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuPlacement {
    pub all: CpuList,
    /// `all` without its first `reserve` CPUs.
    pub busy: CpuList,
}

impl CpuPlacement {
    /// `None` when reserving `reserve` CPUs would leave busy dynos none.
    pub fn new(all: CpuList, reserve: usize) -> Option<CpuPlacement> {
        let busy = CpuList(all.0.iter().skip(reserve).copied().collect());
        (reserve > 0 && !busy.is_empty()).then_some(CpuPlacement { all, busy })
    }
}

/// Why busy dynos cannot be kept off reserved CPUs here.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("the host mounts no cgroup v1 {0} hierarchy")]
    NoHierarchy(&'static str),
    #[error("the cpuset controller is not delegated to {} (systemd: Delegate=yes)", .0.display())]
    NotDelegated(std::path::PathBuf),
    #[error(transparent)]
    Read(#[from] CgroupError),
    #[error("{}: not a CPU list: {text:?}", path.display())]
    NotACpuList {
        path: std::path::PathBuf,
        text: String,
    },
    #[error("{} CPU(s) ({all}) leave none for busy dynos after reserving {reserve}", all.len())]
    TooFewCpus { all: CpuList, reserve: usize },
}

impl Cgroups {
    /// From now on, new dyno cgroups start on [`CpuPlacement::busy`]: the first `reserve` of
    /// our CPUs are kept for the router, the daemon and dynos that use little CPU. An error
    /// says why that cannot be (no cpuset controller, too few CPUs); nothing changes then.
    pub fn reserve_cpus(&mut self, reserve: usize) -> Result<(), PlacementError> {
        self.placement = Some(self.cpu_placement_for(reserve)?);
        Ok(())
    }

    /// What [`Cgroups::reserve_cpus`] set up, if it did.
    pub fn cpu_placement(&self) -> Option<&CpuPlacement> {
        self.placement.as_ref()
    }

    fn cpu_placement_for(&self, reserve: usize) -> Result<CpuPlacement, PlacementError> {
        let (own, file) = match self.version {
            Version::V1 => {
                let cpuset = self.view.iter().find(|h| h.has_controller("cpuset"));
                let Some(cpuset) = cpuset else {
                    return Err(PlacementError::NoHierarchy("cpuset"));
                };
                if self.usage_hierarchy_v1().is_none() {
                    return Err(PlacementError::NoHierarchy("cpuacct"));
                }
                (cpuset.dir.clone(), "cpuset.effective_cpus")
            }
            Version::V2 => {
                let dir = &self.own[0].dir;
                let available = fs::read(&dir.join("cgroup.controllers")).unwrap_or_default();
                if !available.split_whitespace().any(|c| c == "cpuset") {
                    return Err(PlacementError::NotDelegated(dir.clone()));
                }
                (dir.clone(), "cpuset.cpus.effective")
            }
        };
        let path = own.join(file);
        let text = fs::read(&path)?;
        let Some(all) = CpuList::parse(&text) else {
            return Err(PlacementError::NotACpuList { path, text });
        };
        CpuPlacement::new(all.clone(), reserve).ok_or(PlacementError::TooFewCpus { all, reserve })
    }

    /// v1: where a dyno's CPU time is counted (`cpuacct`, co-mounted with cpu or apart).
    fn usage_hierarchy_v1(&self) -> Option<&Hierarchy> {
        self.own
            .iter()
            .chain(&self.view)
            .find(|h| h.has_controller("cpuacct"))
    }
}

impl DynoCgroup {
    /// The CPU time the dyno's processes used so far (all of them, ended ones included).
    pub fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        match self.version {
            Version::V1 => {
                let Some(dir) = self.in_hierarchy_with("cpuacct") else {
                    return Err(missing(self, "cpuacct"));
                };
                let path = dir.join("cpuacct.usage");
                let text = fs::read(&path)?;
                let ns = fs::parse_limit(&path, &text)?;
                Ok(Duration::from_nanos(ns))
            }
            Version::V2 => {
                let path = self.dirs[0].dir.join("cpu.stat");
                let text = fs::read(&path)?;
                let usec = fs::required_key(&path, &fs::parse_keyed(&text), "usage_usec")?;
                Ok(Duration::from_micros(usec))
            }
        }
    }

    /// Lets the dyno's processes run on `cpus` only (all of them at once, new ones too).
    pub fn set_cpus(&self, cpus: &CpuList) -> Result<(), CgroupError> {
        fs::write(&self.cpuset_file()?, &cpus.to_string())
    }

    /// The CPUs the dyno's processes may run on now.
    pub fn cpus(&self) -> Result<CpuList, CgroupError> {
        let path = self.cpuset_file()?;
        let text = fs::read(&path)?;
        CpuList::parse(&text).ok_or_else(|| CgroupError::Parse {
            path,
            content: text.trim().to_string(),
            reason: "expected a CPU list such as 0-3,6".into(),
        })
    }

    fn cpuset_file(&self) -> Result<std::path::PathBuf, CgroupError> {
        let dir = match self.version {
            Version::V1 => self
                .in_hierarchy_with("cpuset")
                .ok_or_else(|| missing(self, "cpuset"))?,
            Version::V2 => self.dirs[0].dir.clone(),
        };
        Ok(dir.join("cpuset.cpus"))
    }

    fn in_hierarchy_with(&self, controller: &str) -> Option<std::path::PathBuf> {
        if self.version == Version::V2 {
            return self.dirs.first().map(|h| h.dir.clone());
        }
        self.dirs
            .iter()
            .chain(&self.view)
            .find(|h| h.has_controller(controller))
            .map(|h| h.dir.clone())
    }
}

fn missing(dyno: &DynoCgroup, controller: &str) -> CgroupError {
    CgroupError::NotInHierarchy {
        id: dyno.id.clone(),
        controller: controller.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print_as_the_kernel_writes_them() {
        for (text, cpus, printed) in [
            ("0-1\n", vec![0, 1], "0-1"),
            ("0", vec![0], "0"),
            ("0-3,6,8-9", vec![0, 1, 2, 3, 6, 8, 9], "0-3,6,8-9"),
            ("3,1,2", vec![1, 2, 3], "1-3"),
            ("", vec![], ""),
        ] {
            let list = CpuList::parse(text).unwrap();
            assert_eq!(list.0, cpus, "{text:?}");
            assert_eq!(list.to_string(), printed, "{text:?}");
        }
        for bad in ["a", "1-", "3-1", "1,,x"] {
            assert_eq!(CpuList::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn busy_dynos_get_every_cpu_but_the_reserved_ones() {
        let all = CpuList::parse("0-3").unwrap();
        let placement = CpuPlacement::new(all.clone(), 1).unwrap();
        assert_eq!(placement.busy.to_string(), "1-3");
        assert_eq!(placement.all, all);
        assert_eq!(
            CpuPlacement::new(all.clone(), 2).unwrap().busy.to_string(),
            "2-3"
        );
        // Nothing left for busy dynos, or nothing reserved: no placement.
        assert_eq!(CpuPlacement::new(all.clone(), 4), None);
        assert_eq!(CpuPlacement::new(all, 0), None);
        assert_eq!(CpuPlacement::new(CpuList::parse("0").unwrap(), 1), None);
    }
}
