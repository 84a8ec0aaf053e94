//! The scale storm of `dyno bench router`: does scaling other dynos reach the router's latency?
//!
//! A real `dyno serve` (in a throwaway lab namespace, as `bench isolation` runs it) serves two
//! apps: `victim`, nginx answering `200 ok` in one web dyno, and `abuser`, whose web dynos only
//! listen. The victim's latency is measured through the daemon's router at a steady rate
//! ([`crate::load`]): first quiet (`--storm-quiet`), then for as long as the abuser's web
//! scales 0→N (until all N are `up`) and N→0 (until every one of their network namespaces is
//! gone). Every start and stop of those N dynos runs through the same daemon whose router
//! carries the victim's requests: network and sandbox setup, the route table, the firewall's
//! sets, the logs. `p99_during_scale_ratio` = the storm's p99 / the quiet p99.
//!
//! Two anchors, measured at the same time as the victim, say what the machine itself (kernel,
//! hypervisor) adds under the same storm, which no setting of the daemon reaches:
//! - the proxy pair ([`ProxyPair`]): an nginx proxy in front of an nginx backend, plain
//!   processes on loopback in no dyno's cgroup or namespace, loaded exactly like the victim
//!   (`pair_during_scale_ratio`: the same request path shape, router and dyno taken out);
//! - the wake-up probe ([`WakeupProbe`], as in `dyno bench isolation`): a thread of the bench
//!   on the reserved CPU sleeping 1 ms at a time (`anchor_during_scale_ratio`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use dyno_api::ApiClient;
use dyno_net::lab::Lab;

use crate::isolation::probe::WakeupProbe;
use crate::isolation::{self, ABUSER, ROUTER};
use crate::load::{Load, Target};
use crate::scale::{scale_app, until_app};
use crate::stats::summarize;

use super::procs::{free_port, nginx_conf, wait_http, Proc};
use super::wrk::find_tool;

/// The longest a storm may take (both ways) before the bench gives up.
const LONGEST: Duration = Duration::from_secs(300);

pub(super) struct Storm {
    pub(super) count: u32,
    pub(super) quiet: Duration,
    pub(super) rate: f64,
}

/// Runs the storm; its `key=value` pairs for the last line.
pub(super) fn run(storm: &Storm) -> Result<Vec<(&'static str, String)>, String> {
    isolation::with_daemon(
        "storm",
        4_100_000,
        &["--stop-grace", "5s"],
        |scratch, lab, runtime| measure(storm, scratch, lab, runtime),
    )
}

fn measure(
    storm: &Storm,
    scratch: &Path,
    lab: &Lab,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<(&'static str, String)>, String> {
    let api = ApiClient::unix(scratch.join("api.sock"));
    isolation::apps::write(scratch)?;
    runtime.block_on(isolation::setup(&api, scratch))?;
    let target = Target {
        netns: lab.host.netns(),
        addr: ROUTER.into(),
        host: "victim.localhost",
        connections: 2,
        rate: storm.rate,
    };
    let (warm, ()) = target.run(Duration::from_secs(1), |_| ());
    if warm.latencies.is_empty() {
        return Err(format!(
            "the victim does not answer: {:?}",
            warm.first_error
        ));
    }
    let pair = ProxyPair::start(scratch)?;
    let own_netns = dyno_net::ns::Netns::current().map_err(|e| e.to_string())?;
    let pair_target = Target {
        netns: &own_netns,
        addr: pair.addr,
        host: "anchor",
        connections: 2,
        rate: storm.rate,
    };
    let anchor = WakeupProbe::start()?;
    anchor.reset();
    let (quiet, (pair_quiet, ())) =
        target.run(storm.quiet, |_| pair_target.run(storm.quiet, |_| ()));
    let anchor_quiet = anchor.take();
    let n = storm.count;
    let namespaces = || lab.run_dir.names().map_or(0, |names| names.len());
    let before = namespaces();
    let (stormy, (pair_stormy, timings)) = target.run_during(LONGEST, || {
        pair_target.run_during(LONGEST, || {
            runtime.block_on(async {
                let t0 = Instant::now();
                scale_app(&api, ABUSER, "web", n).await?;
                until_app(&api, ABUSER, "all up", |d| {
                    d.len() == n as usize && d.iter().all(|x| x.state == "up")
                })
                .await?;
                let up_s = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                scale_app(&api, ABUSER, "web", 0).await?;
                until_app(&api, ABUSER, "all gone", |d| d.is_empty()).await?;
                while namespaces() > before {
                    if t0.elapsed() > LONGEST {
                        return Err(format!("web={n}→0: namespaces left after {LONGEST:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok::<_, String>((up_s, t0.elapsed().as_secs_f64()))
            })
        })
    });
    let anchor_stormy = anchor.take();
    drop(anchor);
    let (up_s, down_s) = timings?;
    let mut pairs = report(n, &quiet, &stormy, up_s, down_s);
    pairs.extend(report_pair(&pair_quiet, &pair_stormy));
    pairs.extend(report_anchor(&anchor_quiet, &anchor_stormy));
    Ok(pairs)
}

/// An nginx proxy in front of an nginx backend on loopback: the victim's request path (a
/// proxy, then the app) without the router and without a dyno. Stopped on drop.
struct ProxyPair {
    addr: SocketAddr,
    _backend: Proc,
    _proxy: Proc,
}

impl ProxyPair {
    fn start(scratch: &Path) -> Result<ProxyPair, String> {
        let nginx = find_tool("nginx", "nginx-light")?;
        let dir = scratch.join("pair");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (backend_port, proxy_port) = (free_port()?, free_port()?);
        let backend_conf = nginx_conf(
            &dir,
            "backend",
            &format!("127.0.0.1:{backend_port}"),
            "location / { return 200 \"ok\\n\"; }",
            "",
        );
        let proxy_conf = nginx_conf(
            &dir,
            "proxy",
            &format!("127.0.0.1:{proxy_port}"),
            "location / { proxy_pass http://backend; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; }",
            &format!("upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 16; }}"),
        );
        let start = |name: &str, conf: String| -> Result<Proc, String> {
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut command = std::process::Command::new(&nginx);
            command.arg("-p").arg(&dir).arg("-c").arg(&path);
            command.arg("-e").arg(dir.join(format!("{name}-error.log")));
            Proc::spawn(
                &format!("nginx ({name})"),
                command,
                &dir.join(format!("{name}.out")),
            )
        };
        let backend = start("backend", backend_conf)?;
        let proxy = start("proxy", proxy_conf)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, proxy_port));
        wait_http(addr, "the anchor's nginx proxy")?;
        Ok(ProxyPair {
            addr,
            _backend: backend,
            _proxy: proxy,
        })
    }
}

/// The proxy pair's latency, quiet and during the storm.
fn report_pair(quiet: &Load, stormy: &Load) -> Vec<(&'static str, String)> {
    let (q, s) = (summarize(&quiet.latencies), summarize(&stormy.latencies));
    let ratio = s.p99_ms / q.p99_ms;
    println!(
        "anchor: nginx proxy + nginx backend on loopback, no dyno, the same load: p99 {:.3} ms \
         quiet, {:.3} ms during the storm (x{ratio:.2}), max {:.3} ms, errors {}",
        q.p99_ms,
        s.p99_ms,
        s.max_ms,
        quiet.errors + stormy.errors
    );
    vec![
        ("pair_storm_quiet_p99_ms", format!("{:.3}", q.p99_ms)),
        ("pair_storm_p99_ms", format!("{:.3}", s.p99_ms)),
        ("pair_during_scale_ratio", format!("{ratio:.2}")),
    ]
}

/// The anchor's lateness, quiet and during the storm.
fn report_anchor(quiet: &[Duration], stormy: &[Duration]) -> Vec<(&'static str, String)> {
    let (q, s) = (summarize(quiet), summarize(stormy));
    let ratio = s.p99_ms / q.p99_ms;
    println!(
        "anchor: a thread of the bench sleeping 1 ms on the reserved CPU woke late p99 {:.3} ms \
         quiet, {:.3} ms during the storm (x{ratio:.2}), max {:.3} ms",
        q.p99_ms, s.p99_ms, s.max_ms
    );
    vec![
        ("anchor_storm_quiet_p99_ms", format!("{:.3}", q.p99_ms)),
        ("anchor_storm_p99_ms", format!("{:.3}", s.p99_ms)),
        ("anchor_during_scale_ratio", format!("{ratio:.2}")),
    ]
}

fn report(
    n: u32,
    quiet: &Load,
    stormy: &Load,
    up_s: f64,
    down_s: f64,
) -> Vec<(&'static str, String)> {
    let (q, s) = (summarize(&quiet.latencies), summarize(&stormy.latencies));
    let ratio = s.p99_ms / q.p99_ms;
    println!(
        "scale storm: victim quiet p50 {:.3} p99 {:.3} ms | while {n} web dynos scale 0→{n} \
         ({up_s:.1} s) →0 ({down_s:.1} s): p50 {:.3} p99 {:.3} max {:.3} ms at {:.1} s \
         (x{ratio:.2}), errors {}",
        q.p50_ms,
        q.p99_ms,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        stormy.worst.1.as_secs_f64(),
        quiet.errors + stormy.errors,
    );
    if let Some(e) = stormy.first_error.as_ref().or(quiet.first_error.as_ref()) {
        println!("  the first failed request: {e}");
    }
    vec![
        ("storm_count", n.to_string()),
        ("storm_quiet_p99_ms", format!("{:.3}", q.p99_ms)),
        ("storm_p99_ms", format!("{:.3}", s.p99_ms)),
        ("p99_during_scale_ratio", format!("{ratio:.2}")),
        ("storm_errors", (quiet.errors + stormy.errors).to_string()),
        ("storm_up_s", format!("{up_s:.3}")),
        ("storm_down_s", format!("{down_s:.3}")),
    ]
}
