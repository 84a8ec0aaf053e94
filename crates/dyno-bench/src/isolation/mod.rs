//! `dyno bench isolation`: does one app's abuse reach another app's latency? A real `dyno serve`
//! (as `bench scale` runs it: a throwaway lab namespace for the host's network, state in a temp
//! dir, driven through its API) runs two apps, each dyno Standard-1X:
//!
//! - the **victim**: nginx answering `200 ok` on `$PORT` (one web dyno);
//! - the **abuser**: a web that only listens, and a worker that runs the abuse named by its
//!   `ABUSE` config var (see [`apps`]).
//!
//! The victim's latency is measured through the daemon's router ([`super::load`]: `--connections`
//! keep-alive connections at a steady `--rate` in all, latency from when each request was due).
//! For each abuse in turn: `config:set ABUSE=<kind>` (worker at 0: only the abuser's web rolls),
//! a **quiet** measurement (`--quiet`), then `ps:scale worker=1` and, once it runs, the
//! measurement **under abuse** (`--abuse`), then `worker=0` until the worker is gone (the abuse
//! stops with its dyno; `stop_s` says how long that took, until the dyno's network namespace
//! was gone). Meanwhile the daemon's API is asked for the victim's dynos every 500 ms
//! (`api_ok`: every answer within 2 s, listing the victim's web up).
//!
//! `quiet_p99_ms` pools the quiet measurements; `abuse_p99_ratio_<kind>` = that abuse's p99 /
//! `quiet_p99_ms`. Percentiles are nearest-rank ([`super::stats`]). The daemon (and every dyno
//! with it) is stopped, and its scratch dir and lab removed, also on error.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use dyno_api::ApiClient;
use dyno_net::lab::Lab;
use dyno_supervisor::lifecycle::parse_duration;

use super::load;
use super::scale::{dynos_of, scale_app, spawn_serve, until_app, Daemon};
use super::stats::{summarize, Summary};

pub(super) mod apps;
pub(crate) mod probe;

use probe::WakeupProbe;

#[derive(Args)]
#[command(
    after_help = "The last line is key=value pairs: quiet_p50_ms quiet_p99_ms quiet_errors \
    (the victim's latency through the router with the abuser idle, all quiet phases pooled), then \
    per abuse K (forkbomb memory tmpfs sockets disk cpu denied_syscalls): abuse_p99_ms_K, \
    abuse_p99_ratio_K (abuse_p99_ms_K / quiet_p99_ms), abuse_errors_K (requests that failed or \
    took over 5 s), api_ok_K (1: the daemon's API answered every 500 ms poll within 2 s and \
    listed the victim up), api_max_ms_K, stop_s_K (worker=0 until the abusing dyno's network namespace was gone), \
    anchor_p99_ms_K and anchor_p99_ratio_K (the anchor: how late a thread of the bench, pinned to \
    the reserved CPU and sharing nothing with the abuser, wakes from 1 ms sleeps; the ratio is \
    against anchor_quiet_p99_ms, all quiet phases pooled); and api_ok (all phases). Needs nginx \
    (nginx-light) and python3."
)]
pub struct IsolationBench {
    /// Victim measurement with the abuser idle, before each abuse
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    quiet: Duration,
    /// Victim measurement while an abuse runs (each abuse runs this long, plus start and stop)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    abuse: Duration,
    /// Victim requests per second (all connections together)
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Victim keep-alive connections (1–4)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=4))]
    connections: u64,
    /// Only these abuses (comma-separated), in this order
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
}

pub(super) const VICTIM: &str = "victim";
pub(super) const ABUSER: &str = "abuser";
/// The daemon's router, inside the lab host.
pub(super) const ROUTER: ([u8; 4], u16) = ([127, 0, 0, 1], 8080);

/// One abuse's figures.
struct Phase {
    kind: String,
    quiet_samples: Vec<Duration>,
    quiet_errors: u64,
    quiet: Summary,
    abused: Summary,
    errors: u64,
    /// When the slowest request under abuse was due, from the start of the measurement.
    worst_at: Duration,
    api_ok: bool,
    api_max_ms: f64,
    stop_s: f64,
    /// The anchor's lateness ([`probe`]) during the quiet and the abused measurement.
    probe_quiet_samples: Vec<Duration>,
    probe_abused: Summary,
}

pub fn run(args: IsolationBench) -> Result<(), String> {
    if !(args.rate > 0.0 && args.rate <= 5000.0) {
        return Err("--rate must be above 0 and at most 5000".into());
    }
    let kinds: Vec<String> = if args.kinds.is_empty() {
        apps::KINDS.iter().map(|k| k.to_string()).collect()
    } else {
        args.kinds.clone()
    };
    if let Some(k) = kinds.iter().find(|k| !apps::KINDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown abuse {k:?}: one of {}",
            apps::KINDS.join(", ")
        ));
    }
    if (1..kinds.len()).any(|i| kinds[..i].contains(&kinds[i])) {
        return Err("--kinds: each abuse once (the keys are per abuse)".into());
    }
    let extra = [
        // A bounded stop: an abuse that ignores SIGTERM is killed after this.
        "--stop-grace",
        "5s",
        "--boot-timeout",
        "30s",
    ];
    let result = with_daemon("isolation", 4_000_000, &extra, |scratch, lab, runtime| {
        measure(&args, &kinds, scratch, lab, runtime)
    });
    let phases = result?;
    println!("{}", key_line(&phases));
    Ok(())
}

/// Runs `measure` against a `dyno serve` of its own, for the victim and abuser apps: nginx and
/// python3 checked first, then as [`with_daemon_in`] with `extra` arguments.
pub(crate) fn with_daemon<T>(
    name: &str,
    uid_base: u32,
    extra: &[&str],
    measure: impl FnOnce(&Path, &Lab, &tokio::runtime::Runtime) -> Result<T, String>,
) -> Result<T, String> {
    let tools = [
        ("/usr/sbin/nginx", "nginx-light"),
        ("/usr/bin/python3", "python3"),
    ];
    let extra = || Ok(extra.iter().map(|a| a.to_string()).collect());
    with_daemon_in(name, uid_base, &tools, |_| extra(), measure)
}

/// Runs `measure` against a `dyno serve` of its own: `tools` (path, Debian package) checked
/// first, the daemon's host side in a fresh lab, its state in a scratch dir, uids from
/// `uid_base` (the default range is every daemon's on this host) and the arguments `prepare`
/// gives, once it has written what they name (certificates, a token) into the scratch dir. On
/// error the daemon's last log lines are shown; the daemon, its dynos, the scratch dir and the
/// lab are removed in any case.
pub(crate) fn with_daemon_in<T>(
    name: &str,
    uid_base: u32,
    tools: &[(&str, &str)],
    prepare: impl FnOnce(&Path) -> Result<Vec<String>, String>,
    measure: impl FnOnce(&Path, &Lab, &tokio::runtime::Runtime) -> Result<T, String>,
) -> Result<T, String> {
    for (tool, package) in tools {
        if !Path::new(tool).exists() {
            return Err(format!("{tool} not found: apt-get install {package}"));
        }
    }
    let lab = Lab::new(&format!("bench-{name}")).map_err(|e| format!("lab: {e}"))?;
    let scratch = std::env::temp_dir().join(format!("dyno-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let daemon_log = scratch.join("daemon.log");
    let started = prepare(&scratch).and_then(|extra| {
        let log = std::fs::File::create(&daemon_log).map_err(|e| format!("daemon log: {e}"))?;
        let uids = uid_base + 10 * std::process::id();
        let uid_range = format!("{uids}-{}", uids + 9);
        let mut args = vec!["--uid-range", uid_range.as_str()];
        args.extend(extra.iter().map(String::as_str));
        spawn_serve(&lab, &scratch, &args, Stdio::from(log))
    });
    // Nothing started: only the scratch dir (and the lab, on return) to remove.
    let child = match started {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    let daemon = Daemon { child, scratch };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let result = measure(&daemon.scratch, &lab, &runtime);
    if result.is_err() {
        let text = std::fs::read_to_string(&daemon_log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        eprintln!("the daemon's last lines:");
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
    }
    drop(daemon);
    drop(lab);
    result
}

fn measure(
    args: &IsolationBench,
    kinds: &[String],
    scratch: &Path,
    lab: &Lab,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<Phase>, String> {
    let api = ApiClient::unix(scratch.join("api.sock"));
    apps::write(scratch)?;
    runtime.block_on(setup(&api, scratch))?;
    let target = load::Target {
        netns: lab.host.netns(),
        addr: ROUTER.into(),
        host: "victim.localhost",
        connections: args.connections as usize,
        rate: args.rate,
    };
    // Connections warm, caches filled; not counted.
    let (warm, ()) = target.run(Duration::from_secs(1), |_| ());
    if warm.latencies.is_empty() {
        return Err(format!(
            "the victim does not answer: {:?}",
            warm.first_error
        ));
    }
    println!(
        "victim: {} connections, {} requests/s through the router; quiet {:?}, abuse {:?}",
        args.connections, args.rate, args.quiet, args.abuse
    );
    let probe = WakeupProbe::start()?;
    match probe.cpu {
        Some(cpu) => println!("anchor: a thread of the bench on CPU {cpu} sleeps 1 ms at a time"),
        None => println!("anchor: a thread of the bench (not pinned) sleeps 1 ms at a time"),
    }
    let mut phases = Vec::new();
    for kind in kinds {
        let phase = abuse(&api, runtime, &target, &probe, &lab.run_dir, args, kind)?;
        println!(
            "{:<16} quiet p50 {:>7.3} p99 {:>7.3} ms | abused p50 {:>8.3} p99 {:>8.3} max {:>8.3} ms \
             at {:.1} s (x{:.2}) errors {} | api {} max {:.0} ms | stop {:.1} s | \
             anchor late p99 {:.3} -> {:.3} ms (x{:.2})",
            phase.kind,
            phase.quiet.p50_ms,
            phase.quiet.p99_ms,
            phase.abused.p50_ms,
            phase.abused.p99_ms,
            phase.abused.max_ms,
            phase.worst_at.as_secs_f64(),
            phase.abused.p99_ms / phase.quiet.p99_ms,
            phase.errors,
            if phase.api_ok { "ok" } else { "NOT ok" },
            phase.api_max_ms,
            phase.stop_s,
            summarize(&phase.probe_quiet_samples).p99_ms,
            phase.probe_abused.p99_ms,
            phase.probe_abused.p99_ms / summarize(&phase.probe_quiet_samples).p99_ms,
        );
        phases.push(phase);
    }
    Ok(phases)
}

/// Both apps created, deployed, the victim's web up, the abuser's worker at 0.
pub(super) async fn setup(api: &ApiClient, scratch: &Path) -> Result<(), String> {
    crate::scale::wait_for_api(api).await?;
    for app in [VICTIM, ABUSER] {
        api.create_app(app).await.map_err(|e| e.to_string())?;
        let dir = scratch.join(app).to_string_lossy().into_owned();
        (api.deploy(app, &dir).await).map_err(|e| format!("deploy {app}: {e}"))?;
    }
    scale_app(api, ABUSER, "worker", 0).await?;
    for app in [VICTIM, ABUSER] {
        until_app(api, app, "web up", |d| {
            d.iter().any(|x| x.process_type == "web" && x.state == "up")
        })
        .await?;
    }
    Ok(())
}

fn abuse(
    api: &ApiClient,
    runtime: &tokio::runtime::Runtime,
    target: &load::Target,
    probe: &WakeupProbe,
    run_dir: &dyno_net::dyno::RunDir,
    args: &IsolationBench,
    kind: &str,
) -> Result<Phase, String> {
    // Dyno network namespaces bound in the lab: one goes only once the dyno's processes are
    // gone and the daemon has torn it down (the API stops listing a dyno as its stop begins).
    let namespaces = || run_dir.names().map_or(0, |names| names.len());
    let config = std::collections::BTreeMap::from([("ABUSE".to_string(), Some(kind.to_string()))]);
    let set = runtime.block_on(api.update_config(ABUSER, &config));
    set.map_err(|e| format!("config:set ABUSE={kind}: {e}"))?;
    // The abuser's web rolls to the new release (preboot); let that settle before measuring.
    runtime.block_on(settled(api))?;
    probe.reset();
    let (quiet, ()) = target.run(args.quiet, |_| ());
    let probe_quiet_samples = probe.take();
    if quiet.errors > 0 {
        eprintln!(
            "{kind}: {} quiet requests failed: {:?}",
            quiet.errors, quiet.first_error
        );
    }
    let before = namespaces();
    runtime.block_on(scale_app(api, ABUSER, "worker", 1))?;
    runtime.block_on(until_app(api, ABUSER, "worker running", |d| {
        d.iter()
            .any(|x| x.process_type == "worker" && x.state == "up")
    }))?;
    probe.reset();
    let (abused, (api_ok, api_max_ms)) = target.run(args.abuse, |end| poll_api(api, runtime, end));
    let probe_abused = summarize(&probe.take());
    let said = runtime.block_on(worker_lines(api));
    let stopping = Instant::now();
    runtime.block_on(scale_app(api, ABUSER, "worker", 0))?;
    runtime.block_on(until_app(api, ABUSER, "worker gone", |d| {
        !d.iter().any(|x| x.process_type == "worker")
    }))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while namespaces() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if namespaces() > before {
        return Err(format!(
            "{kind}: the abuser's worker still has its network after 60 s"
        ));
    }
    let stop_s = stopping.elapsed().as_secs_f64();
    for line in said {
        println!("  {line}");
    }
    if abused.errors > 0 {
        println!(
            "  {} victim requests failed; the first: {:?}",
            abused.errors, abused.first_error
        );
    }
    Ok(Phase {
        kind: kind.to_owned(),
        quiet: summarize(&quiet.latencies),
        quiet_samples: quiet.latencies,
        quiet_errors: quiet.errors,
        abused: summarize(&abused.latencies),
        errors: abused.errors,
        worst_at: abused.worst.1,
        api_ok,
        api_max_ms,
        stop_s,
        probe_quiet_samples,
        probe_abused,
    })
}

/// Until the abuser runs one web dyno, up, and no worker (120 s at most).
async fn settled(api: &ApiClient) -> Result<(), String> {
    until_app(api, ABUSER, "abuser settled", |d| {
        d.len() == 1 && d[0].process_type == "web" && d[0].state == "up"
    })
    .await?;
    until_app(api, VICTIM, "victim up", |d| {
        d.iter().any(|x| x.process_type == "web" && x.state == "up")
    })
    .await
}

/// The daemon's API, every 500 ms until `end`: (every answer within 2 s and listing the
/// victim's web up, the slowest answer in ms).
fn poll_api(api: &ApiClient, runtime: &tokio::runtime::Runtime, end: Instant) -> (bool, f64) {
    let (mut ok, mut slowest) = (true, 0.0f64);
    while Instant::now() < end {
        let asked = Instant::now();
        let answer = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), dynos_of(api, VICTIM)).await
        });
        slowest = slowest.max(asked.elapsed().as_secs_f64() * 1e3);
        let up =
            |d: &[dyno_api::Dyno]| d.iter().any(|x| x.process_type == "web" && x.state == "up");
        ok &= matches!(&answer, Ok(Ok(d)) if up(d));
        std::thread::sleep(Duration::from_millis(500).saturating_sub(asked.elapsed()));
    }
    (ok, slowest)
}

/// The abuser worker's last log lines (what the abuse says it reached, and the platform's
/// lines about it: R14, exits, restarts).
async fn worker_lines(api: &ApiClient) -> Vec<String> {
    let query = dyno_api::LogQuery {
        n: Some(300),
        ps: None,
        source: None,
        tail: false,
    };
    let read = tokio::time::timeout(Duration::from_secs(5), api.logs(ABUSER, &query));
    let Ok(Ok(all)) = read.await else {
        return vec!["(no logs within 5 s)".into()];
    };
    let mut lines: Vec<String> = all.into_iter().filter(|l| l.contains("[worker.")).collect();
    let first = lines.len().saturating_sub(6);
    lines.split_off(first)
}

fn key_line(phases: &[Phase]) -> String {
    let pooled: Vec<Duration> = phases
        .iter()
        .flat_map(|p| p.quiet_samples.clone())
        .collect();
    let quiet = summarize(&pooled);
    let quiet_errors: u64 = phases.iter().map(|p| p.quiet_errors).sum();
    let probe_pooled: Vec<Duration> = phases
        .iter()
        .flat_map(|p| p.probe_quiet_samples.clone())
        .collect();
    let probe_quiet = summarize(&probe_pooled);
    let mut pairs = vec![
        ("quiet_p50_ms".to_string(), format!("{:.3}", quiet.p50_ms)),
        ("quiet_p99_ms".to_string(), format!("{:.3}", quiet.p99_ms)),
        ("quiet_errors".to_string(), quiet_errors.to_string()),
        (
            "anchor_quiet_p99_ms".to_string(),
            format!("{:.3}", probe_quiet.p99_ms),
        ),
    ];
    for p in phases {
        let k = &p.kind;
        let ratio = p.abused.p99_ms / quiet.p99_ms;
        pairs.extend([
            (
                format!("abuse_p99_ms_{k}"),
                format!("{:.3}", p.abused.p99_ms),
            ),
            (format!("abuse_p99_ratio_{k}"), format!("{ratio:.2}")),
            (format!("abuse_errors_{k}"), p.errors.to_string()),
            (format!("api_ok_{k}"), u8::from(p.api_ok).to_string()),
            (format!("api_max_ms_{k}"), format!("{:.0}", p.api_max_ms)),
            (format!("stop_s_{k}"), format!("{:.1}", p.stop_s)),
            (
                format!("anchor_p99_ms_{k}"),
                format!("{:.3}", p.probe_abused.p99_ms),
            ),
            (
                format!("anchor_p99_ratio_{k}"),
                format!("{:.2}", p.probe_abused.p99_ms / probe_quiet.p99_ms),
            ),
        ]);
    }
    let api_ok = phases.iter().all(|p| p.api_ok);
    pairs.push(("api_ok".into(), u8::from(api_ok).to_string()));
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    line.join(" ")
}
