//! What a dyno uses, as v1 and v2 both report it.

/// What a dyno uses. `used_bytes` is what cannot be reclaimed: anonymous memory (`rss`),
/// tmpfs/shared memory (the dyno's ephemeral filesystem lives on tmpfs) and swap; page cache of
/// ordinary files is left out, since the kernel reclaims it before it OOM-kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// rss + shmem + swap (v1 `memory.stat` `total_rss + total_shmem + total_swap`; v2
    /// `memory.stat` `anon + shmem` plus `memory.swap.current`).
    pub used_bytes: u64,
    /// The dyno size's quota (R14 above it).
    pub quota_bytes: u64,
    /// The kernel's hard limit as the cgroup has it now (2 × quota).
    pub limit_bytes: u64,
    /// How many processes the kernel OOM-killed in the dyno so far (v1 `memory.oom_control`,
    /// v2 `memory.events`); R15 when it grows.
    pub oom_kills: u64,
    /// Anonymous memory (Heroku's `memory_rss`).
    pub rss_bytes: u64,
    /// Page cache including tmpfs (Heroku's `memory_cache`).
    pub cache_bytes: u64,
    /// Swapped out (Heroku's `memory_swap`; 0 without swap).
    pub swap_bytes: u64,
    /// Pages charged to the dyno since it started (Heroku's `memory_pgpgin`: v1 `memory.stat`
    /// `total_pgpgin`). `None` on v2, whose `memory.stat` has no such counter.
    pub pgpgin_pages: Option<u64>,
    /// Pages uncharged from the dyno since it started (Heroku's `memory_pgpgout`: v1
    /// `total_pgpgout`). `None` on v2.
    pub pgpgout_pages: Option<u64>,
}

/// One reading of a dyno's memory counters, as v1 and v2 both provide them.
pub(crate) struct MemoryCounters {
    pub rss_bytes: u64,
    pub cache_bytes: u64,
    pub shmem_bytes: u64,
    pub swap_bytes: u64,
    pub limit_bytes: u64,
    pub oom_kills: u64,
    pub pgpgin_pages: Option<u64>,
    pub pgpgout_pages: Option<u64>,
}

impl MemoryUsage {
    /// What counts as "used" is decided here, once for v1 and v2: anonymous memory, tmpfs (the
    /// dyno's writable `/app` layer lives there) and swap — not the page cache, which the kernel
    /// reclaims before it kills.
    pub(crate) fn from_counters(c: MemoryCounters, quota_bytes: u64) -> MemoryUsage {
        MemoryUsage {
            used_bytes: c.rss_bytes + c.shmem_bytes + c.swap_bytes,
            quota_bytes,
            limit_bytes: c.limit_bytes,
            oom_kills: c.oom_kills,
            rss_bytes: c.rss_bytes,
            cache_bytes: c.cache_bytes,
            swap_bytes: c.swap_bytes,
            pgpgin_pages: c.pgpgin_pages,
            pgpgout_pages: c.pgpgout_pages,
        }
    }

    /// R14 territory.
    pub fn over_quota(&self) -> bool {
        self.used_bytes > self.quota_bytes
    }

    /// R15 territory, even before the kernel acts.
    pub fn at_limit(&self) -> bool {
        self.used_bytes >= self.limit_bytes
    }
}
