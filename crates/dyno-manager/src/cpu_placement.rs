//! Keeps busy dynos off the reserved CPUs (see `dyno_sandbox::cgroup::placement` for why).
//!
//! Every dyno starts on the busy CPUs, and boots there ([`BOOT`]). A thread of its own (cgroup
//! files are blocking I/O, kept off the async workers) reads each dyno's CPU time every
//! [`INTERVAL`]: a dyno that used less than half a CPU over the interval may run on every CPU,
//! one that used more goes back to the busy ones. The cost is one small file read per dyno per interval.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dyno_sandbox::cgroup::{Cgroups, CpuList, DynoCgroup};

/// How often dynos are looked at: a dyno that turns busy is back on the busy CPUs within
/// about this long.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// A dyno is busy when it used at least this share of one CPU over an interval.
const BUSY_SHARE: f64 = 0.5;

/// A new dyno stays on the busy CPUs at least this long, however little CPU it gets: booting
/// is when most apps burn CPU, and while many dynos start at once (a scale-up, a deploy) each
/// gets only a sliver of the busy CPUs, which would look light.
pub const BOOT: Duration = Duration::from_secs(3);

/// Where a dyno may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Every CPU.
    Anywhere,
    /// The busy CPUs only (where every dyno starts).
    Busy,
}

/// Where a dyno belongs after using `used` CPU time over `elapsed`.
pub fn place_for(used: Duration, elapsed: Duration) -> Place {
    if elapsed.is_zero() || used.as_secs_f64() >= BUSY_SHARE * elapsed.as_secs_f64() {
        Place::Busy
    } else {
        Place::Anywhere
    }
}

struct Seen {
    dyno: DynoCgroup,
    usage: Duration,
    at: Instant,
    place: Place,
    /// When this daemon first saw it.
    since: Instant,
}

/// The running placement thread; stopped (and joined) on drop.
pub struct CpuPlacer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CpuPlacer {
    /// Starts placing the dynos of `cgroups`, which must have a placement
    /// ([`Cgroups::reserve_cpus`]); `None` otherwise.
    pub fn start(cgroups: Cgroups) -> Option<CpuPlacer> {
        let placement = cgroups.cpu_placement()?.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dyno-cpu-place".into())
            .spawn(move || {
                let mut seen = BTreeMap::new();
                while !stopped.load(Ordering::Relaxed) {
                    place_all(&cgroups, &placement.all, &placement.busy, &mut seen);
                    std::thread::park_timeout(INTERVAL);
                }
            })
            .ok()?;
        Some(CpuPlacer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for CpuPlacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// One round over every dyno cgroup. A dyno seen for the first time is only looked at: where it
/// runs (it started on the busy CPUs, or an earlier daemon left it anywhere) and its CPU time so
/// far; the next round decides.
fn place_all(cgroups: &Cgroups, all: &CpuList, busy: &CpuList, seen: &mut BTreeMap<String, Seen>) {
    let Ok(ids) = cgroups.dyno_ids() else {
        return;
    };
    seen.retain(|id, _| ids.contains(id));
    for id in ids {
        let Some(last) = seen.get_mut(&id) else {
            let Ok(dyno) = cgroups.existing(&id) else {
                continue;
            };
            let (Ok(usage), Ok(cpus)) = (dyno.cpu_usage(), dyno.cpus()) else {
                continue;
            };
            let at = Instant::now();
            // Where it is now (a new dyno starts on the busy CPUs); the next round decides.
            let place = match &cpus == busy {
                true => Place::Busy,
                false => Place::Anywhere,
            };
            seen.insert(
                id,
                Seen {
                    dyno,
                    usage,
                    at,
                    place,
                    since: at,
                },
            );
            continue;
        };
        let Ok(usage) = last.dyno.cpu_usage() else {
            continue;
        };
        let now = Instant::now();
        let place = place_for(usage.saturating_sub(last.usage), now - last.at);
        last.usage = usage;
        last.at = now;
        let booting = last.place == Place::Busy && now - last.since < BOOT;
        if place == last.place || booting {
            continue;
        }
        let cpus = match place {
            Place::Anywhere => all,
            Place::Busy => busy,
        };
        match last.dyno.set_cpus(cpus) {
            Ok(()) => {
                tracing::debug!(dyno = %id, cpus = %cpus, "placed");
                last.place = place;
            }
            // Gone meanwhile (stopped): the next round forgets it.
            Err(e) => tracing::debug!(dyno = %id, error = %e, "not placed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_cpu_or_more_is_busy() {
        let ms = Duration::from_millis;
        assert_eq!(place_for(ms(0), ms(250)), Place::Anywhere);
        assert_eq!(place_for(ms(124), ms(250)), Place::Anywhere);
        assert_eq!(place_for(ms(125), ms(250)), Place::Busy);
        // Two CPUs' worth in one interval.
        assert_eq!(place_for(ms(500), ms(250)), Place::Busy);
        // No time passed: nothing to judge by, it stays where it starts.
        assert_eq!(place_for(ms(0), ms(0)), Place::Busy);
    }
}
