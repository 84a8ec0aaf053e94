//! Dyno sizes as data: Heroku's dyno types with their memory quota, process/thread limit and a
//! relative CPU weight.

use super::CgroupError;

const MIB: u64 = 1024 * 1024;
/// The CFS period the CPU quota is measured in (the kernel's default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// How many CPUs' worth of time each of Heroku's types may use at most (a CFS quota), by name:
/// Heroku's vCPU counts for the performance types, one CPU per "1x" of CPU share for the
/// shared ones. A size not in this table gets one CPU per 100 of weight (at least one). Kept
/// apart from [`DynoSize`] so that sizes written as struct literals stay valid.
const CPUS: &[(&str, u32)] = &[
    ("Eco", 1),
    ("Basic", 1),
    ("Standard-1X", 1),
    ("Standard-2X", 2),
    ("Performance-M", 2),
    ("Performance-L", 8),
    ("Performance-L-RAM", 4),
    ("Performance-XL", 8),
    ("Performance-2XL", 16),
];

/// How much a dyno may use. The memory *quota* is what Heroku advertises; the kernel limit is
/// twice that (see [`DynoSize::memory_limit_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynoSize {
    /// Heroku's name, `Standard-1X`.
    pub name: &'static str,
    /// The memory quota in MiB (Heroku's "512 MB").
    pub memory_mb: u64,
    /// Processes plus threads (the kernel's pids controller counts tasks, as Heroku's limit does).
    pub pids: u64,
    /// Relative CPU weight on the cgroup v2 scale (1..=10000, 100 is the kernel's default).
    pub cpu_weight: u32,
}

/// Heroku's dyno types (memory and process limits as Heroku documents them). The CPU weights
/// follow Heroku's "CPU share"/"compute" figures loosely (1X = 100, 2X = 200, performance types
/// much more); they only matter relative to each other on a busy machine.
pub const DYNO_SIZES: &[DynoSize] = &[
    DynoSize::new("Eco", 512, 256, 100),
    DynoSize::new("Basic", 512, 256, 100),
    DynoSize::STANDARD_1X,
    DynoSize::new("Standard-2X", 1024, 512, 200),
    DynoSize::new("Performance-M", 2560, 16_384, 1_200),
    DynoSize::new("Performance-L", 14 * 1024, 32_768, 5_000),
    DynoSize::new("Performance-L-RAM", 30 * 1024, 32_768, 5_000),
    DynoSize::new("Performance-XL", 62 * 1024, 32_768, 10_000),
    DynoSize::new("Performance-2XL", 126 * 1024, 32_768, 10_000),
];

impl DynoSize {
    pub const STANDARD_1X: DynoSize = DynoSize::new("Standard-1X", 512, 256, 100);

    pub const fn new(name: &'static str, memory_mb: u64, pids: u64, cpu_weight: u32) -> Self {
        DynoSize {
            name,
            memory_mb,
            pids,
            cpu_weight,
        }
    }

    /// A size of [`DYNO_SIZES`] by name, ignoring case: `standard-1x`.
    pub fn lookup(name: &str) -> Option<&'static DynoSize> {
        DYNO_SIZES
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    pub fn memory_quota_bytes(&self) -> u64 {
        self.memory_mb * MIB
    }

    /// The kernel's hard limit: where Heroku restarts a dyno with R15, twice the quota, or 1.2
    /// times it for the largest sizes (Performance-L-RAM, -XL, -2XL: Dev Center's "Dyno memory
    /// behavior"). A dyno may swap up to it; machines here may have no swap, so the overshoot
    /// is real memory.
    pub fn memory_limit_bytes(&self) -> u64 {
        self.memory_quota_bytes() * self.r15_percent() / 100
    }

    /// The R15 point in percent of the quota.
    pub fn r15_percent(&self) -> u64 {
        match self.name {
            "Performance-L-RAM" | "Performance-XL" | "Performance-2XL" => 120,
            _ => 200,
        }
    }

    /// The v2 weight clamped to the kernel's range.
    pub fn cpu_weight_v2(&self) -> u32 {
        self.cpu_weight.clamp(1, 10_000)
    }

    /// The v1 equivalent: 100 (v2's default) ↦ 1024 (v1's default), within v1's 2..=262144.
    pub fn cpu_shares_v1(&self) -> u64 {
        (u64::from(self.cpu_weight_v2()) * 1024 / 100).clamp(2, 262_144)
    }

    /// The CPUs this size may keep busy at once: its CFS quota is `cpus × CPU_PERIOD_US`.
    /// LXCFS (`--enable-cfs`) shows the dyno this many CPUs (fewer on a smaller host).
    pub fn cpus(&self) -> u32 {
        CPUS.iter()
            .find(|(name, _)| *name == self.name)
            .map(|(_, cpus)| *cpus)
            .unwrap_or_else(|| self.cpu_weight_v2().div_ceil(100))
    }

    /// The CFS quota per [`CPU_PERIOD_US`], in microseconds.
    pub fn cpu_quota_us(&self) -> u64 {
        u64::from(self.cpus()) * CPU_PERIOD_US
    }

    pub(crate) fn validate(&self) -> Result<(), CgroupError> {
        let invalid = |reason| {
            Err(CgroupError::InvalidSize {
                name: self.name.to_string(),
                reason,
            })
        };
        if self.memory_mb == 0 {
            return invalid("memory_mb must be positive");
        }
        if self.memory_mb > u64::MAX / 2 / MIB {
            return invalid("memory_mb is too large");
        }
        if self.pids == 0 {
            return invalid("pids must be positive (a dyno needs at least its PID 1)");
        }
        if !(1..=10_000).contains(&self.cpu_weight) {
            return invalid("cpu_weight must be within 1..=10000");
        }
        Ok(())
    }
}

impl Default for DynoSize {
    fn default() -> Self {
        DynoSize::STANDARD_1X
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(
            DynoSize::lookup("standard-1x"),
            Some(&DynoSize::STANDARD_1X)
        );
        assert_eq!(
            DynoSize::lookup("STANDARD-2X").map(|s| s.memory_mb),
            Some(1024)
        );
        assert_eq!(
            DynoSize::lookup("performance-m").map(|s| s.memory_mb),
            Some(2560)
        );
        assert_eq!(DynoSize::lookup("standard-3x"), None);
        assert_eq!(DynoSize::lookup(""), None);
    }

    #[test]
    fn standard_1x_is_the_default() {
        let size = DynoSize::default();
        assert_eq!(size.name, "Standard-1X");
        assert_eq!(size.memory_mb, 512);
        assert_eq!(size.pids, 256);
        assert_eq!(size.cpu_weight, 100);
        assert_eq!(size.memory_quota_bytes(), 512 * MIB);
        assert_eq!(size.memory_limit_bytes(), 1024 * MIB);
        assert_eq!(size.cpu_shares_v1(), 1024);
    }

    #[test]
    fn the_largest_sizes_stop_at_1_2_times_their_quota() {
        let limit_gib = |name: &str| DynoSize::lookup(name).unwrap().memory_limit_bytes() / MIB;
        assert_eq!(limit_gib("Standard-2X"), 2048);
        assert_eq!(limit_gib("Performance-L"), 28 * 1024);
        assert_eq!(limit_gib("Performance-L-RAM"), 30 * 1024 * 12 / 10);
        assert_eq!(limit_gib("Performance-XL"), 62 * 1024 * 12 / 10);
        assert_eq!(limit_gib("Performance-2XL"), 126 * 1024 * 12 / 10);
    }

    #[test]
    fn names_are_unique_and_sizes_valid() {
        for (i, size) in DYNO_SIZES.iter().enumerate() {
            size.validate().unwrap();
            assert!(
                DYNO_SIZES[..i]
                    .iter()
                    .all(|s| !s.name.eq_ignore_ascii_case(size.name)),
                "{} twice",
                size.name
            );
        }
    }

    #[test]
    fn cpu_conversions_clamp() {
        let with_weight = |cpu_weight| DynoSize {
            cpu_weight,
            ..DynoSize::STANDARD_1X
        };
        assert_eq!(with_weight(200).cpu_shares_v1(), 2048);
        assert_eq!(with_weight(1).cpu_shares_v1(), 10);
        assert_eq!(with_weight(10_000).cpu_shares_v1(), 102_400);
        assert_eq!(with_weight(0).cpu_weight_v2(), 1);
        assert_eq!(with_weight(50_000).cpu_weight_v2(), 10_000);
    }

    #[test]
    fn every_heroku_type_has_a_cpu_count_and_others_follow_their_weight() {
        for size in DYNO_SIZES {
            assert!(
                CPUS.iter().any(|(name, _)| *name == size.name),
                "{} has no CPU count",
                size.name
            );
        }
        assert_eq!(DynoSize::STANDARD_1X.cpus(), 1);
        assert_eq!(DynoSize::STANDARD_1X.cpu_quota_us(), 100_000);
        assert_eq!(DynoSize::lookup("performance-l").unwrap().cpus(), 8);
        let custom = |cpu_weight| DynoSize {
            name: "custom",
            cpu_weight,
            ..DynoSize::STANDARD_1X
        };
        assert_eq!(custom(50).cpus(), 1);
        assert_eq!(custom(250).cpus(), 3);
    }

    #[test]
    fn invalid_sizes_are_refused() {
        let base = DynoSize::STANDARD_1X;
        for size in [
            DynoSize {
                memory_mb: 0,
                ..base
            },
            DynoSize { pids: 0, ..base },
            DynoSize {
                cpu_weight: 0,
                ..base
            },
            DynoSize {
                cpu_weight: 10_001,
                ..base
            },
            DynoSize {
                memory_mb: u64::MAX,
                ..base
            },
        ] {
            let err = size.validate().unwrap_err().to_string();
            assert!(err.contains("Standard-1X"), "{err}");
        }
    }
}
