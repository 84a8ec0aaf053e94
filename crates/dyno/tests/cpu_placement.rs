//! Busy dynos stay off the reserved CPU (privileged: run as root; needs 2 CPUs or more). A
//! real `dyno serve` runs an app whose worker spins and whose web dyno idles: the worker ends
//! up on every CPU but the first (`cpuset.cpus`), the web dyno on every CPU; a busy dyno that turns quiet is let back onto every CPU.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::*;

/// The cgroup directory of `pid` in the hierarchy holding `controller` (v1), or its one
/// cgroup (v2).
fn cgroup_dir(pid: u32, controller: &str) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == controller) {
            return PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}"));
        }
        if controllers.is_empty() && !text.contains(":memory:") {
            return PathBuf::from(format!("/sys/fs/cgroup{path}"));
        }
    }
    panic!("process {pid} is in no cgroup with {controller}:\n{text}");
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The CPUs this test may use, as the kernel lists them.
fn own_cpus() -> String {
    let cpuset = cgroup_dir(std::process::id(), "cpuset");
    let v1 = cpuset.join("cpuset.effective_cpus");
    match v1.exists() {
        true => read(v1),
        false => read(cpuset.join("cpuset.cpus.effective")),
    }
}

/// The app's process whose command line contains `marker`.
fn process_with(up: &Up, app: &str, marker: &str) -> u32 {
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        processes_of(up.app_uid(app))
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(marker))
                    .unwrap_or(false)
            })
            .ok_or(format!("no process of {app} runs {marker:?}"))
    })
}

/// `cpuset.cpus` of the dyno that `pid` belongs to.
fn placement_of(pid: u32) -> String {
    read(cgroup_dir(pid, "cpuset").join("cpuset.cpus"))
}

#[test]
fn a_busy_dyno_stays_off_the_reserved_cpu_and_a_quiet_one_may_use_every_cpu() {
    require_root();
    let all = own_cpus();
    let (first, rest) = match all.split_once('-') {
        Some((a, b)) => (a.parse::<u32>().unwrap(), b.to_string()),
        None => panic!("this test needs 2 CPUs or more in one range; this machine has {all}"),
    };
    // Every CPU but the first (`0-1` → `1`, `0-3` → `1-3`).
    let busy = match rest.parse::<u32>().unwrap() == first + 1 {
        true => rest,
        false => format!("{}-{rest}", first + 1),
    };
    let up = Up::serve(
        "cpu-placement",
        &["--boot-timeout", "20s", "--stop-grace", "2s"],
    );
    up.wait_api();
    // The worker spins until a file appears in its /tmp, then sleeps.
    let app = app_dir(
        "cpu-placement",
        "web: exec python3 -m http.server $PORT\nworker: exec python3 spin.py\n",
    );
    std::fs::write(
        app.join("spin.py"),
        "import os, time\nwhile not os.path.exists('/tmp/quiet'):\n    pass\nwhile True:\n    time.sleep(1)\n",
    )
    .unwrap();
    up.cli_succeeds(&["apps:create", "placed"]);
    up.cli_succeeds(&["deploy", &app.to_string_lossy(), "-a", "placed"]);
    up.cli_succeeds(&["ps:scale", "worker=1", "-a", "placed"]);
    let web = process_with(&up, "placed", "http.server");
    let worker = process_with(&up, "placed", "spin.py");

    poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let placed = (placement_of(web), placement_of(worker));
        let wanted = (all.clone(), busy.clone());
        (placed == wanted)
            .then_some(())
            .ok_or(format!("(web, worker) placed {placed:?}, not {wanted:?}"))
    });

    // Quiet now: the worker may use every CPU again.
    let tmp = PathBuf::from(format!("/proc/{worker}/root/tmp/quiet"));
    std::fs::write(&tmp, "").unwrap();
    poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let placed = placement_of(worker);
        (placed == all)
            .then_some(())
            .ok_or(format!("the quiet worker is placed {placed:?}"))
    });
}
