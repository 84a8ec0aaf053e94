//! Host figures: what `free`, `uptime`, `top` and runtimes that size themselves read from
//! /proc must be the dyno's own figures, not the host's (the final behaviour, with lxcfs-style
//! files over /proc; until that lands these fail).

use std::time::Duration;

use crate::record::*;
use crate::rig::*;

const T: Duration = Duration::from_secs(20);
/// Standard-1X: the kernel's hard limit is twice the 512 MB quota (see `DynoSize`).
const LIMIT_KB: u64 = 2 * 512 * 1024;

fn figure(
    test: &'static str,
    attack_text: &'static str,
    expect: &'static str,
    file: &str,
    check: impl FnOnce(&Rig, &str) -> Outcome,
) {
    attack(
        Attack {
            test,
            category: FIGURES,
            attack: attack_text,
            expect,
            others: "Docker, podman: the host's figures (unless lxcfs is mounted over /proc); Heroku: the host's figures (e.g. `free` shows the host's memory)",
        },
        |rig| {
            let snippet = format!("done(read({file:?}))");
            let text = rig.run_web(&snippet, T).value().as_str().unwrap_or_default().to_string();
            check(rig, &text)
        },
    );
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[test]
fn meminfo_shows_the_dynos_memory_limit() {
    figure(
        "meminfo_shows_the_dynos_memory_limit",
        "read MemTotal in /proc/meminfo",
        "MemTotal is the dyno's memory limit (1024 MB for Standard-1X), not the host's",
        "/proc/meminfo",
        |_, text| {
            let total = field(text, "MemTotal:");
            let pass = total == Some(LIMIT_KB);
            let shown = if pass {
                "the dyno's limit".to_string()
            } else if total > Some(LIMIT_KB) {
                "more than the dyno's limit (the host's)".to_string()
            } else {
                format!("{total:?} kB")
            };
            Outcome::new(pass, format!("MemTotal: {shown}"))
        },
    );
}

#[test]
fn loadavg_counts_the_dynos_own_tasks() {
    figure(
        "loadavg_counts_the_dynos_own_tasks",
        "read /proc/loadavg",
        "the task count of /proc/loadavg is the dyno's (a handful), not the host's",
        "/proc/loadavg",
        |_, text| {
            let total: Option<u64> = text
                .split_whitespace()
                .nth(3)
                .and_then(|rt| rt.split('/').nth(1)?.parse().ok());
            let pass = total.is_some_and(|t| t <= 64);
            Outcome::new(
                pass,
                if pass {
                    "the dyno's tasks"
                } else {
                    "the host's tasks"
                },
            )
        },
    );
}

#[test]
fn uptime_is_the_dynos_own() {
    figure(
        "uptime_is_the_dynos_own",
        "read /proc/uptime",
        "/proc/uptime is the time since the dyno started, not the host's boot",
        "/proc/uptime",
        |rig, text| {
            let uptime: Option<f64> = text.split_whitespace().next().and_then(|u| u.parse().ok());
            let bound = rig.started.elapsed().as_secs_f64() + 2.0;
            let pass = uptime.is_some_and(|u| u <= bound);
            Outcome::new(
                pass,
                if pass {
                    "the dyno's age"
                } else {
                    "older than the dyno (the host's)"
                },
            )
        },
    );
}

#[test]
fn cpuinfo_lists_the_dynos_cpus() {
    attack(
        Attack {
            test: "cpuinfo_lists_the_dynos_cpus",
            category: FIGURES,
            attack: "count the processors in /proc/cpuinfo and ask os.cpu_count()",
            expect: "as many CPUs as the dyno's share (its CFS quota: 1 for Standard-1X), not the host's",
            others:
                "Docker, podman: all of the host's CPUs (unless lxcfs); Heroku: the host's CPUs",
        },
        |rig| {
            let snippet = r#"
n = sum(1 for l in read("/proc/cpuinfo").splitlines() if l.startswith("processor"))
done({"cpuinfo": n, "cpu_count": os.cpu_count()})
"#;
            let v = rig.run_web(snippet, T).value();
            let share = u64::from(dyno_sandbox::cgroup::DynoSize::STANDARD_1X.cpus());
            let pass = v["cpuinfo"] == share && v["cpu_count"] == share;
            Outcome::new(
                pass,
                if pass {
                    format!("{share}, its share (the host has {})", host_cpus())
                } else {
                    format!(
                        "cpuinfo {}, os.cpu_count() {} (share {share})",
                        v["cpuinfo"], v["cpu_count"]
                    )
                },
            )
        },
    );
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn stat_shows_the_dynos_own_cpu_time() {
    figure(
        "stat_shows_the_dynos_own_cpu_time",
        "read the cpu line of /proc/stat",
        "the busy time of /proc/stat's cpu line is the dyno's (at most its age × its CPUs), not the host's since boot",
        "/proc/stat",
        |rig, text| {
            let busy: u64 = text
                .lines()
                .find(|l| l.starts_with("cpu "))
                .map(|l| {
                    let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                    // user nice system (idle iowait) irq softirq steal
                    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum()
                })
                .unwrap_or(u64::MAX);
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            // USER_HZ is 100.
            let bound = ((rig.started.elapsed().as_secs_f64() + 2.0) * cpus * 100.0) as u64;
            let pass = busy <= bound;
            Outcome::new(pass, if pass { "the dyno's CPU time" } else { "more than the dyno could have used (the host's)" })
        },
    );
}
