//! `dyno bench scale`: a real `dyno serve` (in a throwaway lab namespace, state in a temp dir)
//! driven through its API the way the CLI does: `ps:scale web=0→N` until all N are `up`, the
//! `ps` latency with N dynos, the daemon's memory, and `web=N→0` until every dyno, netns and link
//! is gone. Optionally the daemon's memory with many more (worker) dynos.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use dyno_api::{ApiClient, Dyno, FormationUpdate};
use dyno_net::lab::Lab;
use dyno_net::ns;

use super::stats::summarize;

#[derive(Args)]
#[command(
    after_help = "The last line is key=value pairs: up_s (web=0→N until all up), down_s \
    (web=N→0 until no dyno, netns or link is left), ps_p50_ms ps_p99_ms (GET dynos with N up), \
    daemon_rss_mb (with N up), and daemon_rss_mb_many with --many."
)]
pub struct ScaleBench {
    /// Web dynos to scale to
    #[arg(long, default_value_t = 100)]
    count: u32,
    /// The app to deploy (its `web` answers on $PORT; exits on SIGTERM)
    #[arg(long, default_value = "examples/hello")]
    app_dir: PathBuf,
    /// `ps` requests timed with all dynos up
    #[arg(long, default_value_t = 200)]
    ps_requests: usize,
    /// Also run this many worker dynos (apps of 100 workers each) and report the daemon's RSS
    /// then (e.g. 1000)
    #[arg(long)]
    many: Option<u32>,
    /// The daemon's `--cpu-reserve` (CPUs kept from busy dynos; every dyno boots on the others).
    /// On a small host this is the trade between how fast a scale-up boots and how little it
    /// delays other apps' requests (see `dyno bench router --scale-storm`)
    #[arg(long, default_value_t = 1)]
    cpu_reserve: u32,
}

const APP: &str = "bench";
/// Heroku's limit of dynos per process type.
const PER_APP: u32 = 100;

/// `count` dynos as apps (`bench-0`, `bench-1`, …) of at most [`PER_APP`] each.
fn split_into_apps(count: u32) -> Vec<(String, u32)> {
    let apps = count.div_ceil(PER_APP).max(1);
    (0..apps)
        .map(|i| (format!("{APP}-{i}"), (count - i * PER_APP).min(PER_APP)))
        .collect()
}

/// The daemon process, stopped (SIGTERM, then SIGKILL) and its temp dir removed on drop.
pub(super) struct Daemon {
    pub(super) child: Child,
    pub(super) scratch: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Left bound only by a daemon that had to be killed.
        dyno_sandbox::template::remove_orphans(&self.scratch.join("state"));
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn rss_mb(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("daemon status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .ok_or_else(|| "no VmRSS".to_string())
}

/// `dyno serve` (the `dyno` binary this library runs in) with its host side in `lab`, its data
/// dir, dyno state and API socket (`api.sock`) in `scratch`, and `extra` arguments. No LXCFS: one
/// started here would outlive the benchmark (it is the host's, by design).
pub(super) fn spawn_serve(
    lab: &Lab,
    scratch: &Path,
    extra: &[&str],
    stderr: Stdio,
) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("find dyno: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(scratch.join("data"))
        .arg("--socket")
        .arg(scratch.join("api.sock"))
        .arg("--state-root")
        .arg(scratch.join("state"))
        .arg("--run-dir")
        .arg(&lab.run_dir.0)
        .arg("--no-lxcfs")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    ns::command_in(&mut cmd, lab.host.netns(), None).map_err(|e| e.to_string())?;
    cmd.spawn().map_err(|e| format!("start dyno serve: {e}"))
}

/// Until the daemon's API answers (30 s at most).
pub(super) async fn wait_for_api(api: &ApiClient) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.list_apps().await.is_err() {
        if Instant::now() > deadline {
            return Err("dyno serve did not answer within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub fn run(args: ScaleBench) -> Result<(), String> {
    let app_dir = args
        .app_dir
        .canonicalize()
        .map_err(|e| format!("--app-dir {}: {e}", args.app_dir.display()))?;
    let mut lab = Lab::new("bench-scale").map_err(|e| format!("lab: {e}"))?;
    let scratch = std::env::temp_dir().join(format!("dyno-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let socket = scratch.join("api.sock");
    let reserve = args.cpu_reserve.to_string();
    let child = spawn_serve(
        &lab,
        &scratch,
        &["--cpu-reserve", &reserve],
        Stdio::inherit(),
    )?;
    let daemon = Daemon { child, scratch };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let pid = daemon.child.id();
    let result = runtime.block_on(measure(&args, &socket, &app_dir, pid, &mut lab));
    drop(daemon);
    let pairs = result?;
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
    Ok(())
}

pub(super) async fn scale_app(
    api: &ApiClient,
    app: &str,
    process_type: &str,
    quantity: u32,
) -> Result<(), String> {
    let update = FormationUpdate {
        process_type: process_type.into(),
        quantity: Some(dyno_api::heroku::QuantityChange::To(quantity)),
        size: None,
    };
    api.update_formation(app, vec![update])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

pub(super) async fn dynos_of(api: &ApiClient, app: &str) -> Result<Vec<Dyno>, String> {
    api.dynos(app).await.map_err(|e| e.to_string())
}

/// Polls until `done(dynos of app)` holds (or 120 s pass).
pub(super) async fn until_app(
    api: &ApiClient,
    app: &str,
    what: &str,
    done: impl Fn(&[Dyno]) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = dynos_of(api, app).await?;
        if done(&now) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what}: not within 120 s ({} dynos listed)",
                now.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn measure(
    args: &ScaleBench,
    socket: &Path,
    app_dir: &Path,
    pid: u32,
    lab: &mut Lab,
) -> Result<Vec<(&'static str, String)>, String> {
    let api = ApiClient::unix(socket);
    wait_for_api(&api).await?;
    let n = args.count as usize;
    // At most 100 dynos per process type (Heroku's limit): a bigger count is spread over apps
    // of 100, all scaled at once.
    let apps = split_into_apps(args.count);
    let dir = app_dir.to_string_lossy().into_owned();
    for (app, _) in &apps {
        api.create_app(app).await.map_err(|e| e.to_string())?;
        api.deploy(app, &dir).await.map_err(|e| e.to_string())?;
        scale_app(&api, app, "web", 0).await?;
    }
    for (app, _) in &apps {
        until_app(&api, app, "web=0", |d| d.is_empty()).await?;
    }

    eprintln!("bench scale: web=0 → {n} ({} app(s))", apps.len());
    let t0 = Instant::now();
    for (app, count) in &apps {
        scale_app(&api, app, "web", *count).await?;
    }
    for (app, count) in &apps {
        until_app(&api, app, "all up", |d| {
            d.len() == *count as usize && d.iter().all(|x| x.state == "up")
        })
        .await?;
    }
    let up_s = t0.elapsed().as_secs_f64();
    eprintln!("bench scale: {n} up in {up_s:.3} s");

    // `ps` of one app (of up to 100 dynos) while all N run.
    let (first, first_count) = (&apps[0].0, apps[0].1 as usize);
    let mut samples = Vec::with_capacity(args.ps_requests);
    for _ in 0..args.ps_requests {
        let t = Instant::now();
        let list = dynos_of(&api, first).await?;
        samples.push(t.elapsed());
        if list.len() != first_count {
            return Err(format!("ps listed {} dynos, not {first_count}", list.len()));
        }
    }
    let ps = summarize(&samples);
    let rss = rss_mb(pid)?;

    eprintln!("bench scale: web={n} → 0");
    let t0 = Instant::now();
    for (app, _) in &apps {
        scale_app(&api, app, "web", 0).await?;
    }
    for (app, _) in &apps {
        until_app(&api, app, "all gone", |d| d.is_empty()).await?;
    }
    let gone_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let links = lab
            .host
            .links_with_prefix("dy")
            .map_err(|e| e.to_string())?;
        let netns = lab.run_dir.names().map_err(|e| e.to_string())?.len();
        if links.is_empty() && netns == 0 {
            break;
        }
        if Instant::now() > gone_deadline {
            return Err(format!(
                "after web=0: {} links and {netns} namespaces still there",
                links.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let down_s = t0.elapsed().as_secs_f64();
    eprintln!("bench scale: all gone in {down_s:.3} s");

    let mut pairs = vec![
        ("count", n.to_string()),
        ("up_s", format!("{up_s:.3}")),
        ("down_s", format!("{down_s:.3}")),
        ("ps_p50_ms", format!("{:.3}", ps.p50_ms)),
        ("ps_p99_ms", format!("{:.3}", ps.p99_ms)),
        ("daemon_rss_mb", format!("{rss:.1}")),
    ];
    if let Some(many) = args.many {
        // At most 100 dynos per process type (Heroku's limit): several apps of workers.
        eprintln!("bench scale: {many} worker dynos over apps of 100");
        let t0 = Instant::now();
        let workers: Vec<(String, u32)> = split_into_apps(many)
            .into_iter()
            .map(|(name, count)| (format!("{name}-w"), count))
            .collect();
        for (name, count) in &workers {
            api.create_app(name).await.map_err(|e| e.to_string())?;
            api.deploy(name, &dir).await.map_err(|e| e.to_string())?;
            scale_app(&api, name, "web", 0).await?;
            scale_app(&api, name, "worker", *count).await?;
        }
        for (name, count) in &workers {
            until_app(&api, name, "workers up", |d| {
                d.len() == *count as usize && d.iter().all(|x| x.state == "up")
            })
            .await?;
        }
        eprintln!(
            "bench scale: {many} workers up in {:.3} s",
            t0.elapsed().as_secs_f64()
        );
        pairs.push(("many", many.to_string()));
        pairs.push(("daemon_rss_mb_many", format!("{:.1}", rss_mb(pid)?)));
        for (name, _) in &workers {
            api.destroy_app(name).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(pairs)
}
