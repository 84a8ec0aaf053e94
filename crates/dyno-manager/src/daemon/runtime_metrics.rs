//! Heroku's labs feature `log-runtime-metrics`: for every app that has it on, each running
//! dyno's load average and memory go into the app's log every 20 s, as Heroku writes them:
//!
//! ```text
//! heroku[web.1]: source=web.1 dyno=heroku.7.2f1c… sample#load_avg_1m=0.52 sample#load_avg_5m=0.14 sample#load_avg_15m=0.05
//! heroku[web.1]: source=web.1 dyno=heroku.7.2f1c… sample#memory_total=21.00MB sample#memory_rss=20.12MB sample#memory_cache=0.88MB sample#memory_swap=0.00MB sample#memory_pgpgin=348836pages sample#memory_pgpgout=343403pages sample#memory_quota=512.00MB
//! ```
//!
//! `dyno=heroku.<app id>.<dyno uuid>`: the store's app id and the incarnation's uuid (its
//! hostname), so a restarted `web.1` shows a new one, as on Heroku.
//!
//! Load average is the kernel's, computed over the dyno's tasks only: every few seconds the
//! sampler counts the dyno's threads that are runnable (`R`) or in uninterruptible sleep (`D`)
//! and damps the count exponentially over 1, 5 and 15 minutes. The averages belong to an
//! incarnation (keyed by its network name): a restarted dyno starts again from 0.
//!
//! Memory comes from the dyno's cgroup: `memory_total` is what the quota is measured against
//! (anonymous memory, tmpfs and swap: see `dyno_sandbox::cgroup::MemoryUsage`), `memory_rss`
//! the anonymous memory, `memory_cache` the page cache, `memory_quota` the dyno size's quota.
//! `memory_pgpgin`/`memory_pgpgout` are cgroup v1's page counters; cgroup v2 has none, so
//! there the two fields are left out of the line rather than written as a made-up 0.

use dyno_error::ErrorKind;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dyno_sandbox::cgroup::{Cgroups, MemoryUsage};
use dyno_sandbox::spec::{SandboxSpec, StateDir};
use dyno_state::model::App;

use super::{app_name, Daemon, DaemonError};
use dyno_logs::logs::{LogLine, Source};

/// The one labs feature there is.
pub const LOG_RUNTIME_METRICS: &str = "log-runtime-metrics";

/// Heroku's app feature `preboot` (a general feature: `heroku features`).
pub const PREBOOT: &str = "preboot";

/// App features: name, what it does, and whether it is a general feature (`heroku
/// features`) rather than a labs one (`heroku labs`).
pub const FEATURES: [(&str, &str, bool); 2] = [
    (
        LOG_RUNTIME_METRICS,
        "Every dyno's load average and memory use in the app's log (heroku[web.1]: source=web.1 … \
         sample#load_avg_1m=… sample#memory_rss=…), about every 20 seconds.",
        false,
    ),
    (
        PREBOOT,
        "Provide seamless web dyno deploys: a new release's web dynos take traffic once they \
         are up, then the old ones stop (off: they are stopped first, then started).",
        true,
    ),
];

/// Heroku's period between two samples of a dyno.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);

/// How often the tasks' states are counted for the load average: the kernel's own period.
/// A shorter log interval samples as often as it logs.
const LOAD_SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// The load average's windows, in seconds: 1, 5 and 15 minutes.
const WINDOWS: [f64; 3] = [60.0, 300.0, 900.0];

/// The kernel's load average over one dyno's tasks: exponentially damped counts of runnable
/// and uninterruptible tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

impl LoadAverage {
    /// Takes in one count of active tasks, `elapsed` after the previous one: each average
    /// moves towards `active` by `1 - e^(-elapsed/window)`, as the kernel's does every 5 s
    /// (with the elapsed time in the exponent, a late sample weighs what its wait was worth).
    pub fn update(&mut self, active: u32, elapsed: Duration) {
        let active = f64::from(active);
        let seconds = elapsed.as_secs_f64();
        for (average, window) in [&mut self.one, &mut self.five, &mut self.fifteen]
            .into_iter()
            .zip(WINDOWS)
        {
            let decay = (-seconds / window).exp();
            *average = *average * decay + active * (1.0 - decay);
        }
    }
}

/// The state letter of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line. The command
/// before it sits in parentheses and may itself contain spaces and `)`: the state follows the
/// last `)`.
pub fn stat_state(stat: &str) -> Option<char> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.trim_start().chars().next()
}

/// How many threads of the processes `pids` are runnable (`R`) or in uninterruptible sleep
/// (`D`): what the kernel's load average counts. `proc_root` is `/proc` (a fake tree in
/// tests). A process or thread that ends meanwhile counts as nothing.
pub fn count_active_tasks(proc_root: &Path, pids: &[u32]) -> u32 {
    let mut active = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if matches!(stat_state(&stat), Some('R' | 'D')) {
                active += 1;
            }
        }
    }
    active
}

/// What the memory line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySample {
    pub total_bytes: u64,
    pub rss_bytes: u64,
    pub cache_bytes: u64,
    pub swap_bytes: u64,
    pub pgpgin_pages: Option<u64>,
    pub pgpgout_pages: Option<u64>,
    pub quota_bytes: u64,
}

impl MemorySample {
    /// From a cgroup reading and the dyno size's quota (a reading of a cgroup opened as
    /// "existing" does not know the quota).
    pub fn new(usage: &MemoryUsage, quota_bytes: u64) -> MemorySample {
        MemorySample {
            total_bytes: usage.used_bytes,
            rss_bytes: usage.rss_bytes,
            cache_bytes: usage.cache_bytes,
            swap_bytes: usage.swap_bytes,
            pgpgin_pages: usage.pgpgin_pages,
            pgpgout_pages: usage.pgpgout_pages,
            quota_bytes,
        }
    }
}

/// `heroku.<app id>.<dyno uuid>`: Heroku's name of one run of one dyno.
pub fn dyno_id(app_id: i64, uuid: &str) -> String {
    format!("heroku.{app_id}.{uuid}")
}

/// Heroku writes megabytes (MiB) with two decimals.
fn megabytes(bytes: u64) -> String {
    format!("{:.2}MB", bytes as f64 / (1024.0 * 1024.0))
}

/// `source=web.1 dyno=heroku.… sample#load_avg_1m=0.00 sample#load_avg_5m=0.00 sample#load_avg_15m=0.00`
pub fn load_line(source: &str, dyno_id: &str, load: &LoadAverage) -> String {
    format!(
        "source={source} dyno={dyno_id} sample#load_avg_1m={:.2} sample#load_avg_5m={:.2} \
         sample#load_avg_15m={:.2}",
        load.one, load.five, load.fifteen
    )
}

/// `source=web.1 dyno=heroku.… sample#memory_total=21.00MB … sample#memory_quota=512.00MB`
pub fn memory_line(source: &str, dyno_id: &str, memory: &MemorySample) -> String {
    let mut line = format!(
        "source={source} dyno={dyno_id} sample#memory_total={} sample#memory_rss={} \
         sample#memory_cache={} sample#memory_swap={}",
        megabytes(memory.total_bytes),
        megabytes(memory.rss_bytes),
        megabytes(memory.cache_bytes),
        megabytes(memory.swap_bytes),
    );
    if let Some(pages) = memory.pgpgin_pages {
        line.push_str(&format!(" sample#memory_pgpgin={pages}pages"));
    }
    if let Some(pages) = memory.pgpgout_pages {
        line.push_str(&format!(" sample#memory_pgpgout={pages}pages"));
    }
    line.push_str(&format!(
        " sample#memory_quota={}",
        megabytes(memory.quota_bytes)
    ));
    line
}

/// A running dyno of an app with the feature on.
#[derive(Debug, Clone)]
struct Target {
    app: String,
    app_id: i64,
    /// `web.1`
    dyno: String,
    /// The incarnation's network name: its cgroup and state dir have it too.
    net_name: String,
    quota_bytes: u64,
}

/// One reading of a dyno, taken off the async threads.
struct Reading {
    net_name: String,
    active_tasks: u32,
    memory: Option<MemoryUsage>,
    /// The incarnation's uuid, read once.
    uuid: Option<String>,
}

/// What the sampler keeps per incarnation.
struct Tracked {
    load: LoadAverage,
    sampled_at: Instant,
    uuid: String,
}

/// The incarnation's uuid: its hostname, from the sandbox spec in its state dir.
fn read_uuid(state_root: &Path, net_name: &str) -> Option<String> {
    let spec = StateDir(state_root.join(net_name)).spec();
    let text = std::fs::read_to_string(spec).ok()?;
    serde_json::from_str::<SandboxSpec>(&text)
        .ok()
        .map(|s| s.hostname)
}

fn read_all(
    cgroups: &Cgroups,
    state_root: &Path,
    wanted: Vec<(String, bool, bool)>,
) -> Vec<Reading> {
    let proc_root = Path::new("/proc");
    wanted
        .into_iter()
        .filter_map(|(net_name, with_memory, with_uuid)| {
            // A dyno that stopped since the snapshot has no cgroup any more: no reading.
            let cgroup = cgroups.existing(&net_name).ok()?;
            if cgroup.paths().is_empty() {
                return None;
            }
            let pids = cgroup.pids().ok()?;
            let memory = if with_memory {
                cgroup.memory_usage().ok()
            } else {
                None
            };
            let uuid = with_uuid
                .then(|| read_uuid(state_root, &net_name))
                .flatten();
            Some(Reading {
                active_tasks: count_active_tasks(proc_root, &pids),
                net_name,
                memory,
                uuid,
            })
        })
        .collect()
}

/// Starts the sampler: it lives as long as the daemon (it holds it weakly).
pub(super) fn spawn(daemon: &Arc<Daemon>) {
    let interval = daemon
        .options
        .runtime_metrics_interval
        .max(Duration::from_millis(100));
    tokio::spawn(run(Arc::downgrade(daemon), interval));
}

async fn run(daemon: Weak<Daemon>, interval: Duration) {
    let period = interval.min(LOAD_SAMPLE_PERIOD);
    // Ticks per log line pair: 4 with Heroku's 20 s.
    let ticks_per_line = (interval.as_secs_f64() / period.as_secs_f64()).round() as u64;
    let ticks_per_line = ticks_per_line.max(1);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut tick: u64 = 0;
    loop {
        ticker.tick().await;
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        tick += 1;
        let emit = tick.is_multiple_of(ticks_per_line);
        if let Err(e) = daemon.sample_runtime(&mut tracked, emit).await {
            tracing::warn!(error = %e, "runtime metrics: no sample this time");
        }
    }
}

impl Daemon {
    /// `labs:enable log-runtime-metrics` / `labs:disable`: stored; the sampler picks it up on
    /// its next round (no restart needed).
    pub async fn set_runtime_metrics(&self, name: &str, on: bool) -> Result<App, DaemonError> {
        let app = app_name(name)?;
        self.with_store(move |s| s.set_metrics_enabled(&app, on))
            .await
    }

    /// The running dynos (those with a network, so a cgroup) of the apps in `enabled`.
    async fn runtime_targets(&self, enabled: &BTreeMap<String, i64>) -> Vec<Target> {
        let apps = self.apps.lock().await;
        let mut targets = Vec::new();
        for (app, app_id) in enabled {
            let Some(runtime) = apps.get(app) else {
                continue;
            };
            for d in &runtime.dynos {
                let Some(net_name) = d.handle.status.borrow().net_name.clone() else {
                    continue;
                };
                targets.push(Target {
                    app: app.clone(),
                    app_id: *app_id,
                    dyno: d.name.clone(),
                    net_name,
                    quota_bytes: d.size.memory_quota_bytes(),
                });
            }
        }
        targets
    }

    /// One round: count every dyno's active tasks into its load average and, when `emit`,
    /// log the two lines per dyno.
    async fn sample_runtime(
        &self,
        tracked: &mut HashMap<String, Tracked>,
        emit: bool,
    ) -> Result<(), DaemonError> {
        let Some(cgroups) = self.machine.cgroups().cloned() else {
            // No cgroups for us: nothing to measure a dyno by.
            return Ok(());
        };
        let enabled: BTreeMap<String, i64> = self
            .list_apps()
            .await?
            .into_iter()
            .filter(|a| a.metrics_enabled)
            .map(|a| (a.name, a.id))
            .collect();
        let targets = if enabled.is_empty() {
            Vec::new()
        } else {
            self.runtime_targets(&enabled).await
        };
        let by_net: HashMap<&str, &Target> =
            targets.iter().map(|t| (t.net_name.as_str(), t)).collect();
        // Incarnations gone (stopped, restarted, or the feature turned off) are forgotten.
        tracked.retain(|net_name, _| by_net.contains_key(net_name.as_str()));
        if targets.is_empty() {
            return Ok(());
        }
        let wanted: Vec<(String, bool, bool)> = targets
            .iter()
            .map(|t| {
                let known = tracked.contains_key(&t.net_name);
                (t.net_name.clone(), emit, !known)
            })
            .collect();
        let state_root: PathBuf = self.options.state_root.clone();
        let readings = tokio::task::spawn_blocking(move || read_all(&cgroups, &state_root, wanted))
            .await
            .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?;
        let now = Instant::now();
        for reading in readings {
            let Some(target) = by_net.get(reading.net_name.as_str()) else {
                continue;
            };
            let entry = tracked
                .entry(reading.net_name.clone())
                .or_insert_with(|| Tracked {
                    load: LoadAverage::default(),
                    sampled_at: now,
                    // Without a spec (not written yet), the network name still tells
                    // incarnations apart.
                    uuid: reading
                        .uuid
                        .clone()
                        .unwrap_or_else(|| target.net_name.clone()),
                });
            let elapsed = now.duration_since(entry.sampled_at);
            entry.load.update(reading.active_tasks, elapsed);
            entry.sampled_at = now;
            let (true, Some(usage)) = (emit, reading.memory) else {
                continue;
            };
            let id = dyno_id(target.app_id, &entry.uuid);
            let memory = MemorySample::new(&usage, target.quota_bytes);
            for message in [
                load_line(&target.dyno, &id, &entry.load),
                memory_line(&target.dyno, &id, &memory),
            ] {
                self.hub.append(
                    &target.app,
                    LogLine::now(Source::Heroku, target.dyno.clone(), message),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn load_average_damps_like_the_kernel() {
        let mut load = LoadAverage::default();
        // One busy task for 5 s: the 1-minute average moves by 1 - e^(-5/60).
        load.update(1, Duration::from_secs(5));
        assert!(close(load.one, 1.0 - (-5.0f64 / 60.0).exp()), "{load:?}");
        assert!(close(load.five, 1.0 - (-5.0f64 / 300.0).exp()), "{load:?}");
        assert!(
            close(load.fifteen, 1.0 - (-5.0f64 / 900.0).exp()),
            "{load:?}"
        );
        assert!(load.one > load.five && load.five > load.fifteen);
        // Two busy tasks for long enough: every average reaches 2.
        for _ in 0..10_000 {
            load.update(2, Duration::from_secs(5));
        }
        assert!(close(load.one, 2.0) && close(load.fifteen, 2.0), "{load:?}");
        // Idle for one minute: the 1-minute average falls to 2/e, the others less.
        for _ in 0..12 {
            load.update(0, Duration::from_secs(5));
        }
        assert!(close(load.one, 2.0 / std::f64::consts::E), "{load:?}");
        assert!(load.five > load.one && load.fifteen > load.five);
        // Samples of different lengths weigh by their time: one 10 s step is two 5 s steps.
        let (mut a, mut b) = (LoadAverage::default(), LoadAverage::default());
        a.update(3, Duration::from_secs(10));
        b.update(3, Duration::from_secs(5));
        b.update(3, Duration::from_secs(5));
        assert!(close(a.one, b.one) && close(a.fifteen, b.fifteen));
        // No time passed: no change.
        let before = a;
        a.update(100, Duration::ZERO);
        assert_eq!(a, before);
    }

    #[test]
    fn stat_state_follows_the_last_parenthesis() {
        assert_eq!(stat_state("42 (python3) R 1 42 42 0 -1"), Some('R'));
        assert_eq!(stat_state("7 (a) b) D 1 2"), Some('D'));
        assert_eq!(stat_state("9 (sleep 10) S 1"), Some('S'));
        assert_eq!(stat_state("garbage"), None);
        assert_eq!(stat_state("1 (x)"), None);
    }

    /// A fake `/proc`: process → its threads' stat lines.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(tag: &str, processes: &[(u32, &[(u32, &str)])]) -> FakeProc {
            let root = std::env::temp_dir()
                .join(format!("dyno-runtime-metrics-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for (pid, threads) in processes {
                for (tid, stat) in *threads {
                    let dir = root.join(format!("{pid}/task/{tid}"));
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(dir.join("stat"), stat).unwrap();
                }
            }
            FakeProc(root)
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn active_tasks_are_running_and_uninterruptible_threads() {
        let proc = FakeProc::new(
            "count",
            &[
                (
                    10,
                    &[
                        (10, "10 (java) S 1"),
                        (11, "11 (java) R 1"),
                        (12, "12 (GC (thread)) R 1"),
                    ],
                ),
                (20, &[(20, "20 (python3) D 1")]),
                (30, &[(30, "30 (sh) Z 1")]),
            ],
        );
        // 40 has ended: it counts as nothing.
        assert_eq!(count_active_tasks(&proc.0, &[10, 20, 30, 40]), 3);
        assert_eq!(count_active_tasks(&proc.0, &[30]), 0);
        assert_eq!(count_active_tasks(&proc.0, &[]), 0);
    }

    #[test]
    fn lines_have_herokus_format() {
        let id = dyno_id(2808254, "d97d0ea7-cf3d-411b-b453-d2943a50b456");
        assert_eq!(id, "heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456");
        let load = LoadAverage {
            one: 2.456,
            five: 1.06,
            fifteen: 0.994,
        };
        assert_eq!(
            load_line("web.1", &id, &load),
            "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 \
             sample#load_avg_1m=2.46 sample#load_avg_5m=1.06 sample#load_avg_15m=0.99"
        );
        let v1 = MemorySample {
            total_bytes: 21 * MIB,
            rss_bytes: 20 * MIB + MIB / 4,
            cache_bytes: 0,
            swap_bytes: 0,
            pgpgin_pages: Some(348836),
            pgpgout_pages: Some(343403),
            quota_bytes: 512 * MIB,
        };
        assert_eq!(
            memory_line("web.1", &id, &v1),
            "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456 \
             sample#memory_total=21.00MB sample#memory_rss=20.25MB sample#memory_cache=0.00MB \
             sample#memory_swap=0.00MB sample#memory_pgpgin=348836pages \
             sample#memory_pgpgout=343403pages sample#memory_quota=512.00MB"
        );
        // cgroup v2 has no page counters: the fields are left out.
        let v2 = MemorySample {
            pgpgin_pages: None,
            pgpgout_pages: None,
            ..v1
        };
        let line = memory_line("worker.2", "heroku.1.x", &v2);
        assert!(!line.contains("pgpg"), "{line}");
        assert!(
            line.starts_with("source=worker.2 dyno=heroku.1.x sample#memory_total=21.00MB ")
                && line.ends_with(" sample#memory_swap=0.00MB sample#memory_quota=512.00MB"),
            "{line}"
        );
    }

    #[test]
    fn samples_come_from_the_cgroup_reading_and_the_quota() {
        let usage = MemoryUsage {
            used_bytes: 30 * MIB,
            quota_bytes: 0,
            limit_bytes: 1024 * MIB,
            oom_kills: 0,
            rss_bytes: 25 * MIB,
            cache_bytes: 7 * MIB,
            swap_bytes: MIB,
            pgpgin_pages: Some(5),
            pgpgout_pages: Some(3),
        };
        let m = MemorySample::new(&usage, 512 * MIB);
        assert_eq!(
            (m.total_bytes, m.rss_bytes, m.cache_bytes, m.swap_bytes),
            (30 * MIB, 25 * MIB, 7 * MIB, MIB)
        );
        assert_eq!((m.pgpgin_pages, m.quota_bytes), (Some(5), 512 * MIB));
    }
}
