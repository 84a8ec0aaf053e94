//! Abuse: the attacker exhausts what it can (processes, memory, tmpfs, sockets and ports, logs,
//! CPU) from its worker dyno (no router timeout there). Each attack is bounded by its own loop
//! and by the dyno's limits; while it holds, the victim must answer through the router (50
//! requests, all 200) and the daemon's API must answer (`dyno ps`).

use std::time::Duration;

use crate::record::*;
use crate::rig::*;
use crate::support::rss_kib_of;

/// The whole of one attack, holding included (the snippets bound themselves well below).
const ATTACK_TIMEOUT: Duration = Duration::from_secs(60);
const REQUESTS: usize = 50;

/// What an attack leaves for the verdict: the attacker's run (or why the agent did not answer)
/// and the checks made while it held.
struct Siege {
    run: Result<Run, String>,
    victim: Result<String, String>,
    host: Result<(), String>,
}

impl Siege {
    /// The snippet's value, if it lived to give one.
    fn value(&self) -> Option<serde_json::Value> {
        let run = self.run.as_ref().ok()?;
        run.stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
    }

    /// The victim and the host came through; `attacker` says what the attack achieved.
    fn outcome(&self, bounded: bool, attacker: String) -> Outcome {
        let victim = match &self.victim {
            Ok(_) => format!("victim answered {REQUESTS}/{REQUESTS}"),
            Err(e) => format!("victim failed: {e}"),
        };
        let host = match &self.host {
            Ok(()) => "API answers".to_string(),
            Err(e) => format!("API failed: {e}"),
        };
        Outcome::new(
            bounded && self.victim.is_ok() && self.host.is_ok(),
            format!("{attacker}; {victim}; {host}"),
        )
    }
}

/// Runs `snippet` in the attacker's worker; once it logs `attack-holding` (or after `settle`
/// at most), checks the victim and the host, then lets the attack go (`/tmp/stop`).
fn siege(rig: &Rig, snippet: &str, settle: Duration, extra: impl FnOnce(&Rig)) -> Siege {
    std::thread::scope(|scope| {
        let attack = scope.spawn(|| rig.try_run_worker(snippet, ATTACK_TIMEOUT));
        let _ = rig.wait_attacker_log("attack-holding", settle, || attack.is_finished());
        let victim = rig.victim_answers(REQUESTS);
        let host = rig.host_healthy();
        extra(rig);
        rig.signal_attacker("worker.1", "stop");
        let run = attack
            .join()
            .unwrap_or_else(|_| Err("the attack thread panicked".into()));
        Siege { run, victim, host }
    })
}

/// Python: wait until the test says stop (bounded).
const HOLD_PY: &str = r#"
def hold(seconds=20):
    log("attack-holding")
    deadline = time.time() + seconds
    while time.time() < deadline and not os.path.exists("/tmp/stop"):
        time.sleep(0.1)
"#;

#[test]
fn a_fork_bomb_is_capped_by_the_pids_limit() {
    attack(
        Attack {
            test: "a_fork_bomb_is_capped_by_the_pids_limit",
            category: ABUSE,
            attack: "fork bomb (every child forks too)",
            expect: "fork fails with EAGAIN at the dyno's pids limit (256 tasks); the victim keeps answering, the API too",
            others: "Heroku: 256 processes on Standard-1X; Docker: no pids limit by default; podman: its containers.conf pids_limit",
        },
        |rig| {
            let snippet = format!(
                r#"{HOLD_PY}
start = time.time()
failed = None
while time.time() - start < 15 and failed is None:
    try:
        pid = os.fork()
    except OSError as e:
        failed = name_of(e.errno)
        break
    if pid == 0:
        # A child keeps forking (its children too) until the test says stop.
        while time.time() - start < 25 and not os.path.exists("/tmp/stop"):
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)
        os._exit(0)
tasks = sum(1 for p in os.listdir("/proc") if p.isdigit())
hold()
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
done({{"failed": failed, "tasks": tasks}})
"#
            );
            let siege = siege(rig, &snippet, Duration::from_secs(20), |_| {});
            let v = siege.value().unwrap_or_default();
            let failed = v["failed"].as_str().unwrap_or("never").to_string();
            let tasks = v["tasks"].as_u64().unwrap_or(u64::MAX);
            let bounded = failed == "EAGAIN" && tasks <= 256;
            siege.outcome(bounded, format!("fork failed with {failed} at the limit (≤ 256 tasks: {})", tasks <= 256))
        },
    );
}

/// Python: grows `what` 16 MiB at a time up to 2 GiB (twice the limit), printing the MiB so
/// far (kept even when the OOM killer ends it), then holds.
fn fill(what: &str) -> String {
    format!(
        r#"{HOLD_PY}
chunk = b"\1" * (16 << 20)
size, error = 0, None
{what}
print(size >> 20, flush=True)
hold(5)
done({{"mib": size >> 20, "error": error}})
"#
    )
}

/// The verdict of a fill: bounded when it stopped with an error or was killed, at no more than
/// the limit (1024 MiB) plus a little.
fn fill_outcome(siege: Siege) -> Outcome {
    let mib = siege
        .run
        .as_ref()
        .map(|r| {
            r.stdout
                .lines()
                .filter_map(|l| l.trim().parse::<u64>().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    // How it ended, in words that do not depend on which process the OOM killer picked or
    // whether the supervisor saw R15 first (both vary from run to run).
    let how = match siege.value() {
        Some(v) => match v["error"].as_str() {
            Some(e) => format!("stopped by {e}"),
            None => "never stopped".to_string(),
        },
        None => "killed".to_string(),
    };
    let bounded = mib <= 1024 + 64 && how != "never stopped";
    siege.outcome(
        bounded,
        format!("{how} at ≤ the limit: {}", mib <= 1024 + 64),
    )
}

fn tmpfs_bomb(
    test: &'static str,
    dir: &'static str,
    attack_text: &'static str,
    others: &'static str,
) {
    attack(
        Attack {
            test,
            category: ABUSE,
            attack: attack_text,
            expect: "the writes stop at the dyno's memory limit (ENOSPC/ENOMEM, or the dyno is killed: R15), never the host's memory",
            others,
        },
        |rig| {
            let snippet = fill(&format!(
                r#"
try:
    with open("{dir}/fill", "wb") as f:
        while size < (2048 << 20):
            f.write(chunk)
            f.flush()
            size += len(chunk)
            print(size >> 20, flush=True)
except OSError as e:
    error = name_of(e.errno)
try:
    os.unlink("{dir}/fill")
except OSError:
    pass
"#
            ));
            let siege = siege(rig, &snippet, Duration::from_secs(30), |_| {});
            fill_outcome(siege)
        },
    );
}

#[test]
fn a_memory_bomb_stops_at_the_limit() {
    attack(
        Attack {
            test: "a_memory_bomb_stops_at_the_limit",
            category: ABUSE,
            attack: "allocate and touch anonymous memory up to 2 GiB",
            expect: "allocation stops at the dyno's memory limit (MemoryError, or the OOM killer / R15), never the host's memory",
            others: "Heroku: R14 above the quota, R15 and killed at 2×; Docker, podman: no memory limit by default",
        },
        |rig| {
            let snippet = fill(
                r#"
chunks = []
try:
    while size < (2048 << 20):
        chunks.append(bytearray(chunk))
        size += len(chunk)
        print(size >> 20, flush=True)
except MemoryError:
    error = "MemoryError"
chunks = None
"#,
            );
            let siege = siege(rig, &snippet, Duration::from_secs(30), |_| {});
            fill_outcome(siege)
        },
    );
}

#[test]
fn filling_tmp_stops_at_the_limit() {
    tmpfs_bomb(
        "filling_tmp_stops_at_the_limit",
        "/tmp",
        "write 2 GiB into /tmp (a tmpfs: memory)",
        "Docker, podman: /tmp is the container's writable layer on the host's disk (no limit by default); Heroku: ephemeral disk, bounded",
    );
}

#[test]
fn filling_dev_shm_stops_at_the_limit() {
    tmpfs_bomb(
        "filling_dev_shm_stops_at_the_limit",
        "/dev/shm",
        "write 2 GiB into /dev/shm",
        "Docker, podman: /dev/shm is a 64 MB tmpfs by default; Heroku: bounded",
    );
}

#[test]
fn filling_app_stops_at_the_limit() {
    tmpfs_bomb(
        "filling_app_stops_at_the_limit",
        "/app",
        "write 2 GiB into /app (the slug's writable layer)",
        "Docker, podman: the writable layer is on the host's disk, unbounded by default; Heroku: ephemeral filesystem, bounded",
    );
}

#[test]
fn no_writable_place_is_on_the_hosts_disk() {
    attack(
        Attack {
            test: "no_writable_place_is_on_the_hosts_disk",
            category: ABUSE,
            attack: "find every place the dyno can create a file (every mount point and the usual dirs) to fill the host's disk",
            expect: "only /app, /tmp and /dev/shm are writable, all memory-backed (so bounded by the memory limit): no host disk to fill",
            others: "Docker, podman: the writable layer and volumes are on the host's disk (a full disk is shared); Heroku: a bounded ephemeral disk",
        },
        |rig| {
            let snippet = r#"
mounts = {}
for line in read("/proc/self/mountinfo").splitlines():
    fields = line.split(" ")
    mounts[fields[4]] = line.split(" - ")[1].split(" ")[0]
candidates = set(mounts) | {"/", "/var/tmp", "/var/log", "/home", "/root", "/run", "/srv", "/opt", "/usr/local", "/etc"}
writable = {}
for d in sorted(candidates):
    path = os.path.join(d, ".dyno-write-probe")
    try:
        with open(path, "wb") as f:
            f.write(b"x")
        os.unlink(path)
    except OSError:
        continue
    m = max((m for m in mounts if d == m or d.startswith(m.rstrip("/") + "/")), key=len)
    writable[d] = mounts[m]
done(writable)
"#;
            let v = rig.run_worker(snippet, Duration::from_secs(20)).value();
            let writable: Vec<String> = v
                .as_object()
                .unwrap()
                .iter()
                .map(|(d, fs)| format!("{d} ({})", fs.as_str().unwrap_or("?")))
                .collect();
            // /app is an overlay whose writable layer is a tmpfs (see rootfs.rs).
            let pass = v.as_object().unwrap().iter().all(|(d, fs)| {
                fs == "tmpfs" || (d == "/app" && fs == "overlay")
            }) && !v.as_object().unwrap().is_empty();
            Outcome::new(pass, format!("writable: {}", writable.join(", ")))
        },
    );
}

#[test]
fn a_log_flood_does_not_hurt_the_host() {
    attack(
        Attack {
            test: "a_log_flood_does_not_hurt_the_host",
            category: ABUSE,
            attack: "write 200 MB of log lines as fast as possible",
            expect: "the daemon's memory stays bounded (the log buffer is a ring), the victim keeps answering, the API too",
            others: "Heroku: Logplex drops what it cannot keep up with (L10); Docker: json-file logs grow on the host's disk unless max-size is set; podman: k8s-file likewise",
        },
        |rig| {
            let daemon = rig.up.child.as_ref().unwrap().id();
            let before = rss_kib_of(daemon);
            let snippet = format!(
                r#"{HOLD_PY}
line = ("x" * 1000 + "\n").encode()
block = line * 256
sent, start = 0, time.time()
while sent < (200 << 20) and time.time() - start < 15:
    os.write(3, block)
    sent += len(block)
hold(1)
done({{"mib": sent >> 20}})
"#
            );
            let siege = siege(rig, &snippet, Duration::from_secs(30), |_| {});
            let after = rss_kib_of(daemon);
            let grew_mib = after.saturating_sub(before) / 1024;
            let bounded = grew_mib < 100;
            siege.outcome(bounded, format!("the daemon's memory grew by less than 100 MiB: {bounded}"))
        },
    );
}

#[test]
fn sixty_thousand_sockets_leave_others_their_connections() {
    attack(
        Attack {
            test: "sixty_thousand_sockets_leave_others_their_connections",
            category: ABUSE,
            attack: "open 64,000 TCP connections to one internet address:port (every source port 1024–65535, 4 processes): the host's masquerade ports and conntrack table",
            expect: "the victim still connects out to the same address:port, the host's conntrack table is not exhausted; the victim keeps answering, the API too",
            others: "Docker, podman: the same shared masquerade and conntrack table, no per-container limit; Heroku: unknown (per-dyno limits on connections not documented)",
        },
        |rig| {
            let snippet = format!(
                r#"{HOLD_PY}
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
workers, per = 4, 16000
reads = []
for k in range(workers):
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        held, error, start = [], None, time.time()
        for port in range(1024 + k * per, min(65536, 1024 + (k + 1) * per)):
            if time.time() - start > 25 or len(held) >= hard - 64:
                break
            s = socket.socket()
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.settimeout(1)
                s.connect(("198.51.100.10", {SINK_PORT}))
                held.append(s)
            except OSError as e:
                s.close()
                error = name_of(e.errno) if e.errno else "timeout"
        os.write(w, json.dumps({{"held": len(held), "error": error}}).encode())
        os.close(w)
        deadline = time.time() + 40
        while time.time() < deadline and not os.path.exists("/tmp/stop"):
            time.sleep(0.1)
        os._exit(0)
    os.close(w)
    reads.append(r)
results = [json.loads(os.read(r, 4096) or b"{{}}") for r in reads]
hold(40)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
done({{"held": sum(x.get("held", 0) for x in results), "errors": sorted(set(str(x.get("error")) for x in results))}})
"#
            );
            let mut outbound = Err(String::new());
            let mut conntrack = (0u64, 0u64);
            let siege = siege(rig, &snippet, Duration::from_secs(50), |rig| {
                outbound = rig.get("victim.localhost", &format!("/outbound?port={SINK_PORT}"));
                conntrack = rig
                    .up
                    .lab
                    .host
                    .netns()
                    .run(|| {
                        let read = |f: &str| {
                            std::fs::read_to_string(format!("/proc/sys/net/netfilter/{f}"))
                                .ok()
                                .and_then(|s| s.trim().parse().ok())
                                .unwrap_or(0u64)
                        };
                        (read("nf_conntrack_count"), read("nf_conntrack_max"))
                    })
                    .unwrap();
            });
            let v = siege.value().unwrap_or_default();
            let held = v["held"].as_u64().unwrap_or(0);
            let out_ok = matches!(&outbound, Ok((200, body)) if body == "outbound ok");
            let (count, max) = conntrack;
            let not_exhausted = max > 0 && count < max;
            let out_text = match &outbound {
                Ok((_, body)) => body.split(':').next().unwrap_or_default().to_string(),
                Err(e) => e.clone(),
            };
            siege.outcome(
                out_ok && not_exhausted,
                format!(
                    "attacker held 60k+ connections: {}; victim's own connection to the same \
                     address: {out_text}; host conntrack table full: {}",
                    held >= 60_000,
                    !not_exhausted
                ),
            )
        },
    );
}

#[test]
fn a_cpu_spin_leaves_the_victim_its_share() {
    attack(
        Attack {
            test: "a_cpu_spin_leaves_the_victim_its_share",
            category: ABUSE,
            attack: "spin every CPU (2 busy processes per CPU) for 15 s",
            expect: "the victim keeps answering (50 requests, all 200: CPU weights share the machine), the API too",
            others: "Heroku: CPU shares per dyno size; Docker, podman: no CPU limit by default, equal shares",
        },
        |rig| {
            let snippet = format!(
                r#"{HOLD_PY}
n = 2 * os.cpu_count()
for _ in range(n):
    if os.fork() == 0:
        start = time.time()
        while time.time() - start < 15 and not os.path.exists("/tmp/stop"):
            for _ in range(100000):
                pass
        os._exit(0)
time.sleep(1)
hold(15)
for _ in range(n):
    os.wait()
done({{"spinners": n}})
"#
            );
            let siege = siege(rig, &snippet, Duration::from_secs(10), |_| {});
            let spun = siege.value().is_some();
            siege.outcome(spun, format!("spinners ran: {spun}"))
        },
    );
}
