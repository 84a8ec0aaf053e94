//! `dyno bench router`: the dyno router (embedded, one tokio worker pinned to CPU 0) against
//! nginx and HAProxy (each pinned to CPU 0 too), all in front of the same backend, with the same
//! `wrk` load; direct-to-backend as the baseline.
//!
//! Method:
//! - Backend: nginx (`worker_processes 1`) answering `return 200 "ok\n"` on 127.0.0.1, pinned
//!   with `taskset -c 1`, shared by every run. `wrk` also runs on CPU 1.
//! - Proxies, one at a time, each on CPU 0: the dyno router (in-process, `RouterConfig::default()`
//!   with `mark: None`, app `bench` with one backend, `NullSink`), nginx (`proxy_pass` to an
//!   `upstream` with `keepalive 64`, HTTP/1.1, `Connection ""`), HAProxy (`mode http`,
//!   `http-reuse always`, `nbthread 1`). nginx and HAProxy are configured to do the router's
//!   job too: they add the same request headers (X-Forwarded-For/-Proto/-Port, X-Request-Start,
//!   X-Request-Id, Via) and `Via` on responses, so the backend parses the same requests and
//!   every proxy writes the same bytes. Access logs off everywhere; keep-alive request limits
//!   raised everywhere so nobody reconnects every 1000 requests (nginx's default).
//! - Each target gets a short warm-up `wrk` run (pools filled), then the measured run:
//!   `wrk -t<threads> -c<connections> -d<duration> --latency -H 'Host: bench.localhost'`.
//! - `added_p50_us` is the router's p50 minus direct's under that load. Then the added latency
//!   of each hop without queueing: `wrk -t1 -c1` (at most 5 s) against every target
//!   (`added_p50_1conn_us`).
//! - The seccomp filter's cost ([`dyno`]): the same nginx backend in two real dynos on a lab
//!   network, one with the default filter, one without; each behind its own embedded router
//!   (the product's config: marked sockets, which the dyno firewall needs), with the same `wrk`
//!   load alternated on, off, off, on (`--dyno-rounds` pairs). `seccomp_rps_cost_pct` =
//!   (rps without − rps with) / rps without × 100, from the mean rps of each side.
//! - The scale storm ([`storm`], `--scale-storm N`, 100 by default): a real `dyno serve`, the
//!   victim's p99 through its router while N web dynos of another app scale 0→N→0, against
//!   its quiet p99 in the same run (`p99_during_scale_ratio`). `--storm-only` runs just that.
//! - Every process started is stopped by PID (SIGTERM, then SIGKILL) and the temp dir removed,
//!   also on error.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use dyno_router::{Backend, NullSink, RouteTable, Router, RouterConfig};

use dyno_net::ns::Netns;
use dyno_supervisor::lifecycle::parse_duration;

mod dyno;
pub(crate) mod procs;
mod storm;
pub(crate) mod wrk;

use procs::*;
use wrk::*;

#[derive(Args)]
#[command(
    after_help = "Needs wrk, nginx (nginx-light) and haproxy. The last line is key=value pairs: \
    direct_rps dyno_rps nginx_rps haproxy_rps direct_p50_ms dyno_p50_ms dyno_p99_ms nginx_p99_ms \
    haproxy_p99_ms ratio_vs_nginx added_p50_us nginx_added_p50_us added_p50_1conn_us \
    nginx_added_p50_1conn_us dyno_rps_seccomp dyno_rps_noseccomp seccomp_rps_cost_pct \
    dyno_p99_ms_seccomp dyno_p99_ms_noseccomp dyno_rps_best_seccomp dyno_rps_best_noseccomp \
    seccomp_rps_cost_best_pct dyno_denied_calls dyno_syscall_ns_seccomp dyno_syscall_ns_noseccomp \
    (and rss_start_kb rss_end_kb \
    rss_drift_pct with --soak; storm_count storm_quiet_p99_ms storm_p99_ms \
    p99_during_scale_ratio storm_errors storm_up_s storm_down_s pair_storm_quiet_p99_ms \
    pair_storm_p99_ms pair_during_scale_ratio anchor_storm_quiet_p99_ms anchor_storm_p99_ms \
    anchor_during_scale_ratio with --scale-storm above 0, \
    the default). added_p50_us: the proxy's p50 minus direct's under the same \
    load; the _1conn_ figures: the same with one connection, one request at a time (no \
    queueing). dyno_*_seccomp / _noseccomp: the router in front of the backend nginx running \
    in a dyno with / without the seccomp filter (mean of --dyno-rounds runs each, alternated); \
    seccomp_rps_cost_pct = (noseccomp - seccomp) / noseccomp x 100; the _best_ figures: the \
    same from the fastest run of each side (other load only takes throughput away); \
    dyno_syscall_ns_*: one read or write in each dyno (dd bs=1 before nginx starts, fastest of \
    3 runs); dyno_denied_calls: \
    'Denied system call' lines of the filtered nginx dyno (0: nginx needs nothing the profile \
    denies)"
)]
pub struct RouterBench {
    /// Measured wrk run per target (e.g. 15s, 500ms, 2m)
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    duration: Duration,
    /// wrk connections
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk threads
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Warm-up wrk run before each measured one (0s: none)
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Measured wrk runs per side (seccomp filter on, off) against nginx in a dyno; 0: skip
    #[arg(long, default_value_t = 3)]
    dyno_rounds: usize,
    /// After the comparison, keep the router under the same load this long, sampling its RSS
    /// every 10 s (e.g. 600s)
    #[arg(long, value_parser = parse_duration)]
    soak: Option<Duration>,
    /// Then the scale storm: a real `dyno serve`, the victim's p99 through its router while
    /// this many web dynos of another app scale 0→N→0, against its quiet p99 (0: skip)
    #[arg(long, default_value_t = 100)]
    scale_storm: u32,
    /// Only the scale storm (no wrk, nginx, HAProxy or seccomp runs)
    #[arg(long)]
    storm_only: bool,
    /// The victim's quiet measurement before the storm
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    storm_quiet: Duration,
    /// The victim's requests per second during the storm's measurements (2 connections)
    #[arg(long, default_value_t = 200.0)]
    storm_rate: f64,
}

const HOST: &str = "bench.localhost";
const PROXY_CPU: usize = 0;
const LOAD_CPU: usize = 1;

pub fn run(args: RouterBench, shim: &Path) -> Result<(), String> {
    if !(args.storm_rate > 0.0 && args.storm_rate <= 5000.0) {
        return Err("--storm-rate must be above 0 and at most 5000".into());
    }
    let storm = (args.scale_storm > 0).then_some(storm::Storm {
        count: args.scale_storm,
        quiet: args.storm_quiet,
        rate: args.storm_rate,
    });
    if args.storm_only {
        let storm = storm.ok_or("--storm-only needs --scale-storm above 0")?;
        print_pairs(&storm::run(&storm)?);
        return Ok(());
    }
    if args.connections == 0 || args.threads == 0 {
        return Err("--connections and --threads must be at least 1".into());
    }
    if args.connections < args.threads {
        return Err("--connections must be at least --threads (wrk)".into());
    }
    if args.duration < Duration::from_secs(1) {
        return Err("--duration must be at least 1s (wrk)".into());
    }
    let wrk = find_tool("wrk", "wrk")?;
    let nginx = find_tool("nginx", "nginx-light")?;
    let haproxy = find_tool("haproxy", "haproxy")?;
    let taskset = find_tool("taskset", "util-linux")?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Err(format!(
            "needs 2 CPUs (proxies on CPU {PROXY_CPU}, wrk and backend on CPU {LOAD_CPU}); have {cpus}"
        ));
    }

    let dir = TempDir::new()?;
    let tools = Tools {
        wrk,
        taskset,
        threads: args.threads,
        connections: args.connections,
    };

    // Backend: nginx with a fixed body on CPU 1.
    let backend_port = free_port()?;
    let backend_conf = dir.write(
        "backend.conf",
        &nginx_conf(
            dir.path(),
            "backend",
            &format!("127.0.0.1:{backend_port}"),
            "location / { return 200 \"ok\\n\"; }",
            "",
        ),
    )?;
    let backend_nginx = start_nginx(
        &tools,
        &nginx,
        &backend_conf,
        dir.path(),
        LOAD_CPU,
        "backend",
    )?;
    let backend = SocketAddr::from((Ipv4Addr::LOCALHOST, backend_port));
    wait_http(backend, "backend nginx")?;

    // Dyno router, in-process, one worker thread pinned to CPU 0.
    let dyno = EmbeddedRouter::start(backend)?;
    wait_http(dyno.addr, "dyno router")?;

    // nginx proxy on CPU 0.
    let nginx_port = free_port()?;
    let nginx_conf_path = dir.write(
        "proxy.conf",
        &nginx_conf(
            dir.path(),
            "proxy",
            &format!("127.0.0.1:{nginx_port}"),
            // The same job as the dyno router: Heroku's request headers, Via both ways.
            "location / { proxy_pass http://backend; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; proxy_set_header Host $host; \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; \
             proxy_set_header X-Forwarded-Proto $scheme; \
             proxy_set_header X-Forwarded-Port $server_port; \
             proxy_set_header X-Request-Start $msec; \
             proxy_set_header X-Request-Id $request_id; \
             proxy_set_header Via \"1.1 vegur\"; add_header Via \"1.1 vegur\"; }",
            &format!(
                "upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; \
                 keepalive_requests 100000000; keepalive_timeout 90s; }}"
            ),
        ),
    )?;
    let nginx_proxy = start_nginx(
        &tools,
        &nginx,
        &nginx_conf_path,
        dir.path(),
        PROXY_CPU,
        "proxy",
    )?;
    let nginx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, nginx_port));
    wait_http(nginx_addr, "nginx proxy")?;

    // HAProxy on CPU 0.
    let haproxy_port = free_port()?;
    let haproxy_conf = dir.write(
        "haproxy.cfg",
        &format!(
            "global\n  nbthread 1\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  \
             timeout server 60s\n  http-reuse always\n  option http-keep-alive\n\
             frontend fe\n  bind 127.0.0.1:{haproxy_port}\n  default_backend be\n\
             backend be\n  server s1 127.0.0.1:{backend_port}\n  option forwardfor\n  \
             http-request set-header X-Forwarded-Proto http\n  \
             http-request set-header X-Forwarded-Port %[dst_port]\n  \
             http-request set-header X-Request-Start %[date(0,ms)]\n  \
             http-request set-header X-Request-Id %[uuid]\n  \
             http-request add-header Via \"1.1 vegur\"\n  \
             http-response add-header Via \"1.1 vegur\"\n"
        ),
    )?;
    let mut cmd = Command::new(&tools.taskset);
    cmd.arg("-c")
        .arg(PROXY_CPU.to_string())
        .arg(&haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&haproxy_conf);
    let haproxy_proc = Proc::spawn("haproxy", cmd, &dir.path().join("haproxy.out"))?;
    let haproxy_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, haproxy_port));
    wait_http(haproxy_addr, "haproxy").map_err(|e| with_log(e, &dir.path().join("haproxy.out")))?;

    println!(
        "wrk -t{} -c{} -d{:?} --latency -H 'Host: {HOST}' (warm-up {:?}); proxies on CPU {PROXY_CPU}, \
         wrk + backend (nginx return 200) on CPU {LOAD_CPU}",
        args.threads, args.connections, args.duration, args.warmup
    );
    let targets = [
        ("direct", backend),
        ("dyno", dyno.addr),
        ("nginx", nginx_addr),
        ("haproxy", haproxy_addr),
    ];
    let mut results = Vec::new();
    for (name, addr) in targets {
        if !args.warmup.is_zero() {
            tools.wrk(addr, args.warmup.max(Duration::from_secs(1)))?;
        }
        let before = cpu_times()?;
        let r = tools.wrk(addr, args.duration)?;
        let after = cpu_times()?;
        let busy = |cpu: usize| after[cpu].busy_share(&before[cpu]) * 100.0;
        // CPU time on the proxy CPU per request (direct: nothing runs there).
        let us_per_req =
            after[PROXY_CPU].busy_secs(&before[PROXY_CPU]) * 1e6 / r.requests.max(1) as f64;
        println!(
            "{name:<8} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} requests)  \
             CPU{PROXY_CPU} {:>3.0} % busy ({us_per_req:.1} µs/req)  CPU{LOAD_CPU} {:>3.0} % busy",
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.requests,
            busy(PROXY_CPU),
            busy(LOAD_CPU)
        );
        results.push(r);
    }
    // Added latency without queueing: one connection, one request at a time, through each
    // hop. (Under the 64-connection load above, p50 is mostly time spent queued.)
    let single = Tools {
        threads: 1,
        connections: 1,
        ..tools.clone()
    };
    let probe = args.duration.min(Duration::from_secs(5));
    let mut single_p50 = Vec::new();
    for (name, addr) in targets {
        let r = single.wrk(addr, probe)?;
        println!(
            "{name:<8} 1 connection: {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
            r.rps, r.p50_ms, r.p99_ms
        );
        single_p50.push(r.p50_ms);
    }
    // Proxies done; only the router keeps working for the soak.
    drop(haproxy_proc);
    drop(nginx_proxy);
    let seccomp = if args.dyno_rounds > 0 {
        Some(dyno::seccomp_phase(&args, &tools, &nginx, &dir, shim)?)
    } else {
        None
    };

    let [direct, dy, ng, ha] = [&results[0], &results[1], &results[2], &results[3]];
    let mut pairs = vec![
        ("direct_rps", format!("{:.0}", direct.rps)),
        ("dyno_rps", format!("{:.0}", dy.rps)),
        ("nginx_rps", format!("{:.0}", ng.rps)),
        ("haproxy_rps", format!("{:.0}", ha.rps)),
        ("direct_p50_ms", format!("{:.3}", direct.p50_ms)),
        ("dyno_p50_ms", format!("{:.3}", dy.p50_ms)),
        ("dyno_p99_ms", format!("{:.3}", dy.p99_ms)),
        ("nginx_p99_ms", format!("{:.3}", ng.p99_ms)),
        ("haproxy_p99_ms", format!("{:.3}", ha.p99_ms)),
        ("ratio_vs_nginx", format!("{:.3}", dy.rps / ng.rps)),
        (
            "added_p50_us",
            format!("{:.0}", (dy.p50_ms - direct.p50_ms) * 1000.0),
        ),
        (
            "nginx_added_p50_us",
            format!("{:.0}", (ng.p50_ms - direct.p50_ms) * 1000.0),
        ),
        (
            "added_p50_1conn_us",
            format!("{:.0}", (single_p50[1] - single_p50[0]) * 1000.0),
        ),
        (
            "nginx_added_p50_1conn_us",
            format!("{:.0}", (single_p50[2] - single_p50[0]) * 1000.0),
        ),
    ];

    if let Some(runs) = &seccomp {
        let mean = |rs: &[WrkResult], f: fn(&WrkResult) -> f64| {
            rs.iter().map(f).sum::<f64>() / rs.len().max(1) as f64
        };
        let (on, off) = (mean(&runs.on, |r| r.rps), mean(&runs.off, |r| r.rps));
        let cost = (off - on) / off * 100.0;
        // Other load on the host only ever takes throughput away: the best run of each side is
        // the least disturbed one.
        let best = |rs: &[WrkResult]| rs.iter().map(|r| r.rps).fold(0.0, f64::max);
        let (best_on, best_off) = (best(&runs.on), best(&runs.off));
        let best_cost = (best_off - best_on) / best_off * 100.0;
        println!(
            "in a dyno: {on:.0} req/s with the seccomp filter, {off:.0} without ({cost:+.1} %); \
             best runs {best_on:.0} and {best_off:.0} ({best_cost:+.1} %)"
        );
        let [filtered, unfiltered] = &runs.modes;
        println!(
            "  Seccomp mode, filters of each dyno's processes: with {filtered:?}, without {unfiltered:?}"
        );
        if filtered.is_empty() || filtered.iter().any(|m| m.0 != 2) {
            return Err(format!(
                "the filtered dyno's processes are not all filtered: {filtered:?}"
            ));
        }
        if unfiltered.iter().any(|m| m.0 != 0) {
            return Err(format!(
                "the unfiltered dyno's processes are filtered: {unfiltered:?}"
            ));
        }
        for line in &runs.denied {
            println!("  {line}");
        }
        let ns = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}"));
        let [with, without] = runs.syscall_ns.map(ns);
        println!(
            "  one system call (dd, fastest of 3): {with} ns with the filter, {without} ns without"
        );
        pairs.push(("dyno_rps_seccomp", format!("{on:.0}")));
        pairs.push(("dyno_rps_noseccomp", format!("{off:.0}")));
        pairs.push(("seccomp_rps_cost_pct", format!("{cost:.1}")));
        pairs.push(("dyno_rps_best_seccomp", format!("{best_on:.0}")));
        pairs.push(("dyno_rps_best_noseccomp", format!("{best_off:.0}")));
        pairs.push(("seccomp_rps_cost_best_pct", format!("{best_cost:.1}")));
        let p99 = |rs: &[WrkResult]| format!("{:.3}", mean(rs, |r| r.p99_ms));
        pairs.push(("dyno_p99_ms_seccomp", p99(&runs.on)));
        pairs.push(("dyno_p99_ms_noseccomp", p99(&runs.off)));
        pairs.push(("dyno_denied_calls", runs.denied.len().to_string()));
        pairs.push(("dyno_syscall_ns_seccomp", with));
        pairs.push(("dyno_syscall_ns_noseccomp", without));
    }

    if let Some(soak) = args.soak {
        let (start, end) = soak_rss(&tools, dyno.addr, soak, dir.path())?;
        let drift = (end as f64 - start as f64) / start as f64 * 100.0;
        println!("soak {soak:?}: router RSS {start} kB → {end} kB ({drift:+.1} %)");
        pairs.push(("rss_start_kb", start.to_string()));
        pairs.push(("rss_end_kb", end.to_string()));
        pairs.push(("rss_drift_pct", format!("{drift:.1}")));
    }

    drop(dyno);
    drop(backend_nginx);
    if let Some(storm) = storm {
        pairs.extend(storm::run(&storm)?);
    }
    print_pairs(&pairs);
    Ok(())
}

/// The last line: `key=value` pairs.
fn print_pairs(pairs: &[(&str, String)]) {
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
}

/// Router under wrk load for `soak`; RSS (this process: the router is in it) every 10 s.
/// Returns the first sample (10 s in, pools and buffers warm) and the last.
fn soak_rss(
    tools: &Tools,
    addr: SocketAddr,
    soak: Duration,
    dir: &Path,
) -> Result<(u64, u64), String> {
    let soak = soak.max(Duration::from_secs(20));
    let out = dir.join("wrk-soak.out");
    let mut proc = Proc::spawn("wrk (soak)", tools.wrk_command(addr, soak), &out)?;
    let started = Instant::now();
    let mut samples = Vec::new();
    println!("soak: RSS of the router every 10 s for {soak:?}");
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let rss = self_rss_kb()?;
        samples.push(rss);
        println!("  t={:>4}s rss={rss} kB", started.elapsed().as_secs());
        if proc.try_exited() || started.elapsed() + Duration::from_secs(10) > soak {
            break;
        }
    }
    let status = proc.wait(soak + Duration::from_secs(10));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    if let Some(r) = parse_wrk(&text) {
        println!(
            "soak load: {:.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
            r.rps, r.p50_ms, r.p99_ms
        );
    } else {
        return Err(format!("wrk (soak) failed ({status}):\n{text}"));
    }
    match (samples.first(), samples.last()) {
        (Some(&a), Some(&b)) => Ok((a, b)),
        _ => Err("soak: no RSS samples".into()),
    }
}

/// Per-CPU jiffies from `/proc/stat`: (busy, total).
#[derive(Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn busy_share(&self, before: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(before.busy) as f64 / total as f64
    }

    fn busy_secs(&self, before: &CpuTimes) -> f64 {
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.busy.saturating_sub(before.busy) as f64 / hz
    }
}

fn cpu_times() -> Result<Vec<CpuTimes>, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let cpus: Vec<CpuTimes> = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal …
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            let total: u64 = v.iter().take(8).sum();
            CpuTimes {
                busy: total.saturating_sub(idle),
                total,
            }
        })
        .collect();
    if cpus.get(PROXY_CPU).is_none() || cpus.get(LOAD_CPU).is_none() {
        return Err("/proc/stat: not enough CPUs listed".into());
    }
    Ok(cpus)
}

fn self_rss_kb() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}
