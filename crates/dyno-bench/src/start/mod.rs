//! `dyno bench start`: how fast a dyno starts, how fast a web dyno is `up`, and what a running
//! dyno costs the daemon in memory, against `bwrap --unshare-all` measured in the same run.
//!
//! Method (host side in a throwaway lab namespace, `dyno_net::lab::Lab`; each dyno gets a
//! Standard-1X cgroup below ours, as with `dyno up`, unless `--no-cgroups`):
//!
//! - **start**: N dynos one after the other (`--pause` between them), each ended and removed
//!   before the next. The clock starts before the start request, made as the daemon makes it
//!   (`Network::begin` with `$PORT` to expose, `Cgroups::planned`, `launch::prepare`, the shim
//!   spawned with its gate, then `Cgroups::create_new` and `Network::complete` while the shim
//!   builds the sandbox, then the gate opened: the shim waits for it before it pivots into the
//!   sandbox and joins the cgroup) and stops when the
//!   first byte of the app's stdout reaches our end of the shim's stdout pipe. The app is the
//!   Procfile command `exec /usr/bin/printf x`: a plain `exec` line, which PID 1 execs itself
//!   where other commands go through `bash -c`; printf writes one byte. Breakdown: `net`
//!   (begun), `cgroup_planned` (its paths, for the spec), `prepare`, `spawn` (until the shim is
//!   exec'd), `sandbox` (shim exec'd → first byte: shim, namespaces, mounts, the gate, cgroup
//!   join, PID 1, printf); `cgroup` (made) and `net_complete` run during `sandbox`. `start_loaded`: the same while N web dynos are up.
//! - **seccomp**: the start phase runs 2N dynos, N with the default system-call filter (the
//!   `start_*` keys, as every dyno starts) and N without (`SeccompSpec { off: true }`: the
//!   `_noseccomp` keys), alternated on, off, off, on, … so that drift hits both alike.
//!   `seccomp_start_cost_pct` = (start p50 − start p50 without) / start p50 without × 100: what
//!   compiling and installing the filter in PID 1 and handing its listener to the shim cost.
//! - **anchor**: N times `bwrap --unshare-all` (host `/usr`, `/etc` read-only, merged-/usr
//!   symlinks as on the host, fresh `/proc` `/dev` `/tmp`, `--die-with-parent`) running
//!   `/usr/bin/printf x` directly, same clock: from before spawning bwrap to the first byte on
//!   our end of its stdout pipe (printf's own startup is in both). bwrap makes a loopback-only
//!   network and no cgroup. `bwrap_bash` runs `/bin/bash -c 'exec /usr/bin/printf x'` instead,
//!   to show what `bash -c` costs. `ratio_vs_bwrap` = start p50 / bwrap p50.
//! - **up**: the real supervisor (`dyno_supervisor`) starts N web dynos one after the
//!   other (a perl listening on `$PORT`); the clock runs from `supervisor::start` until its status
//!   is `up` (inet_diag sees the listener, polled every `--readiness-poll`, by default the
//!   product's). All N stay up together. Each perl prints the wall-clock times of its script's
//!   start and of its listen's return: `app_listen_p50_ms` is the app's own time to listen,
//!   `up_after_listen_*` the time from its listen until the bench saw it `up` (what readiness
//!   adds).
//! - **memory**, with N web dynos up; this process plays the daemon (supervisor tasks, log pumps,
//!   network state). `daemon_rss_per_dyno_kb` = (VmRSS now − VmRSS before the first web dyno)
//!   / N; `memory_per_dyno_kb` = that + `shim_rss_kb_mean` (the shims' mean VmRSS, which counts
//!   the clean pages of the `dyno` binary and libc that every shim maps and shares);
//!   `memory_per_dyno_pss_kb` uses the shims' PSS instead, `shim_anon_kb_mean` is a shim's own.
//!   For context: PID 1's RSS (inside the dyno, not counted) and the host's MemAvailable drop
//!   per dyno (kernel, namespaces, cgroups, perl: everything).
//! - Then every dyno is stopped (`DynoHandle::stop`) and nothing may be left: no `dy*` link once
//!   the kernel is done, no process, no state dir, no cgroup.
//!
//! Percentiles are nearest-rank ([`super::stats`]).

use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::Args;
use dyno_logs::logs::LogLine;
use dyno_net::dyno::Host;
use dyno_net::ipam::{LeaseStore, MemoryStore};
use dyno_net::lab::Lab;
use dyno_net::names::LINK_PREFIX;
use dyno_net::network::{Network, NetworkConfig};
use dyno_sandbox::cgroup::{Cgroups, DynoCgroup, DynoSize};
use dyno_sandbox::launch;
use dyno_sandbox::spec::{ExitRecord, SandboxSpec, StateDir};
use dyno_sandbox::sys::{self, cstr, mount};
use dyno_supervisor::lifecycle::{parse_duration, Lifecycle};
use dyno_supervisor::{
    self as supervisor, DynoDef, DynoHandle, LinuxHost, Platform, SharedNetwork, State,
};
use tokio::task::JoinHandle;

use super::stats::{summarize, Summary};

mod alive;
mod anchor;
mod fleet;

use anchor::*;
use fleet::*;

/// The tiny program: one byte on stdout.
const TINY: [&str; 2] = ["/usr/bin/printf", "x"];
/// The same as a Procfile command (PID 1 runs it with `bash -c`).
const TINY_COMMAND: &str = "exec /usr/bin/printf x";
/// A web process that listens on `$PORT` quickly and then waits to be stopped. It prints when
/// its script began and when its listen returned (wall clock, the same inside the dyno and out):
/// [`LISTEN_LINE`] and two seconds since the epoch.
const WEB_COMMAND: &str = "exec perl -MIO::Socket::INET -MTime::HiRes=time -e 'BEGIN{$t0=time} \
    $s=IO::Socket::INET->new(LocalPort=>$ENV{PORT},Listen=>8,ReuseAddr=>1) or die \"listen: $!\"; \
    $t1=time; syswrite STDOUT, sprintf(\"listening %.6f %.6f\\n\", $t0, $t1); sleep 3600'";
/// The first word of the web process's line.
const LISTEN_LINE: &str = "listening";
const APP: &str = "bench-start";
/// Starts measured while the N web dynos are up.
const LOADED: usize = 20;

#[derive(Args)]
#[command(
    after_help = "The last line is key=value pairs: start_p50_ms start_p99_ms up_p50_ms \
    app_listen_p50_ms up_after_listen_p50_ms up_after_listen_p99_ms \
    bwrap_p50_ms ratio_vs_bwrap alive shim_rss_kb_mean daemon_rss_per_dyno_kb memory_per_dyno_kb \
    ... start_p50_ms_noseccomp start_p99_ms_noseccomp: the same starts without the seccomp filter \
    (alternated with the filtered ones, N each); seccomp_start_cost_pct: (start_p50_ms - \
    start_p50_ms_noseccomp) / start_p50_ms_noseccomp x 100. Needs bubblewrap (apt-get install \
    bubblewrap) and perl."
)]
pub struct StartBench {
    /// How many dynos (each phase); all N web dynos are up at once for the memory figures
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// $PORT of the web dynos
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// How often the supervisor looks for a listener on $PORT (default: the product's)
    #[arg(long, value_parser = parse_duration)]
    readiness_poll: Option<Duration>,
    /// Namespaces kept ready in the background, as the daemon does (0: each start makes one)
    #[arg(long, default_value_t = 8)]
    spares: usize,
    /// Wait between two measured starts, dyno or bwrap (a daemon rarely starts dynos back to back)
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pause: Duration,
    /// No per-dyno cgroups (by default each dyno gets one, Standard-1X, as `dyno up` does)
    #[arg(long)]
    no_cgroups: bool,
    /// Then start this many idle dynos and measure --count starts again while they run
    /// (`start_alive_p50_ms`, `alive_ratio` = that / start_p50_ms)
    #[arg(long, default_value_t = 0)]
    alive: usize,
    /// Shims copy the host's mount namespace instead of the template the daemon makes (to
    /// measure what the template saves)
    #[arg(long)]
    no_mount_template: bool,
}

/// What every phase needs. Its work dir (`/run/dyno-bench-start-<pid>/{app,state}`, a tmpfs as
/// `/run` is on real hosts: here `/run` may be the root filesystem, where making and removing a
/// state dir costs milliseconds) and our `dyno` cgroup directories go when it is dropped.
struct Ctx {
    exe: PathBuf,
    work: PathBuf,
    mounted: bool,
    app_dir: PathBuf,
    state_root: PathBuf,
    uid: u32,
    port: u16,
    cgroups: Option<Cgroups>,
    /// The mount namespace template (in the work dir), as the daemon makes it.
    mount_template: Option<PathBuf>,
}

impl Ctx {
    fn new(args: &StartBench, shim: &Path) -> Result<Ctx, String> {
        let cgroups = if args.no_cgroups {
            None
        } else {
            // As `dyno up` does (on v2 this process moves to a leaf of its own cgroup).
            let cgroups = Cgroups::detect().and_then(|c| c.vacate_own_cgroup().map(|()| c));
            Some(cgroups.map_err(|e| format!("cgroups ({e}); --no-cgroups to run without"))?)
        };
        let work = PathBuf::from(format!("/run/dyno-bench-start-{}", std::process::id()));
        let mut ctx = Ctx {
            exe: shim.to_path_buf(),
            app_dir: work.join("app"),
            state_root: work.join("state"),
            work,
            mounted: false,
            uid: dyno_manager::daemon::uids::app_uid(APP),
            port: args.port,
            cgroups,
            mount_template: None,
        };
        let work = &ctx.work;
        std::fs::create_dir_all(work).map_err(|e| format!("create {}: {e}", work.display()))?;
        let flags = libc::MS_NOSUID | libc::MS_NODEV;
        mount(
            Some("dyno-bench"),
            work,
            Some("tmpfs"),
            flags,
            Some("mode=0755,size=64m"),
        )
        .map_err(|e| e.to_string())?;
        ctx.mounted = true;
        for dir in [&ctx.app_dir, &ctx.state_root] {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        std::fs::set_permissions(&ctx.app_dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", ctx.app_dir.display()))?;
        Ok(ctx)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if let Some(template) = &self.mount_template {
            if let Err(e) = dyno_sandbox::template::remove(template) {
                eprintln!("bench cleanup: remove {}: {e}", template.display());
            }
        }
        if self.mounted {
            let path = cstr(&self.work).expect("no NUL in the work dir");
            // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                let e = std::io::Error::last_os_error();
                eprintln!("bench cleanup: unmount {}: {e}", self.work.display());
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.work) {
            eprintln!("bench cleanup: remove {}: {e}", self.work.display());
        }
        if let Some(cgroups) = &self.cgroups {
            let _ = cgroups.remove_dyno_root_if_unused();
        }
    }
}

/// `key=value key=value ...`
macro_rules! key_values {
    ($($key:literal => $value:expr),* $(,)?) => {
        [$(format!("{}={}", $key, $value)),*].join(" ")
    };
}

pub fn run(args: StartBench, shim: &Path) -> Result<(), String> {
    if args.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let bwrap = find_bwrap().ok_or("bubblewrap not found: apt-get install bubblewrap")?;
    if !Path::new("/usr/bin/perl").exists() || !Path::new(TINY[0]).exists() {
        return Err("perl and printf are needed: apt-get install perl-base coreutils".into());
    }
    let mut ctx = Ctx::new(&args, shim)?;
    let lab = Lab::new("bench-start").map_err(|e| format!("lab: {e}"))?;
    if !args.no_mount_template {
        let template = ctx.work.join("mount-template");
        dyno_sandbox::template::create(&template, &lab.run_dir.0)
            .map_err(|e| format!("mount namespace template: {e}"))?;
        ctx.mount_template = Some(template);
    }
    let host = Host::in_netns(lab.host.netns()).map_err(|e| e.to_string())?;
    let config = NetworkConfig {
        run_dir: lab.run_dir.clone(),
        spares: args.spares,
        ..NetworkConfig::default()
    };
    let store: Box<dyn LeaseStore + Send> = Box::new(MemoryStore);
    let mut network = Network::open(host, &config, store).map_err(|e| e.to_string())?;
    network.install().map_err(|e| e.to_string())?;
    let network: SharedNetwork = Arc::new(Mutex::new(network));
    // Let the spares fill, as in a daemon that has been up for a moment.
    std::thread::sleep(Duration::from_millis(20 * args.spares as u64 + 50));

    let (start, noseccomp) = start_phase(&ctx, &network, "bs", args.count, args.pause, true)?;
    wait_for_links_gone(&network);
    let bwrap_direct = bwrap_phase(&bwrap, &TINY, args.count, args.pause)?;
    let bash = ["/bin/bash", "-c", TINY_COMMAND];
    let bwrap_bash = bwrap_phase(&bwrap, &bash, args.count, args.pause)?;
    // The kernel destroys bwrap's namespaces in the background; let it finish first.
    std::thread::sleep(Duration::from_secs(1));
    let busy = (args.alive > 0)
        .then(|| {
            let (idle, started) = alive::Idle::start(&ctx, &network, args.alive);
            started?;
            let (times, _) = start_phase(&ctx, &network, "ba", args.count, args.pause, false)?;
            Ok::<_, String>((idle.len(), times))
        })
        .transpose()?;
    wait_for_links_gone(&network);

    let lifecycle = Lifecycle {
        readiness_poll: (args.readiness_poll).unwrap_or(Lifecycle::default().readiness_poll),
        boot_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(10),
        cycling: None,
        ..Lifecycle::default()
    };
    let poll_ms = lifecycle.readiness_poll.as_secs_f64() * 1e3;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("start the runtime: {e}"))?;
    let (mut fleet, up) = runtime.block_on(Fleet::start(&ctx, &network, lifecycle, args.count));
    let mut memory = std::mem::take(&mut fleet.memory);
    let (mut alive, mut loaded) = (0, Ok(StartTimes::default()));
    if up.is_ok() {
        // Let the apps finish starting (perl's modules) before reading the host's memory.
        std::thread::sleep(Duration::from_millis(500));
        let up = |h: &&DynoHandle| h.status.borrow().state == State::Up;
        alive = fleet.handles.iter().filter(up).count();
        measure(&mut memory);
        let phase = start_phase(
            &ctx,
            &network,
            "bl",
            LOADED.min(args.count),
            args.pause,
            false,
        );
        loaded = phase.map(|(with, _)| with);
    }
    let (app_listen, up_after_listen) = fleet.listen_times();
    let (stop_all, fleet_names) = runtime.block_on(fleet.stop());
    drop(runtime);
    let (up, loaded) = (up?, loaded?);
    let left = leftovers(&ctx, &network, &fleet_names);

    let s = summarize(&start.total);
    let (off, off_sandbox) = (summarize(&noseccomp.total), summarize(&noseccomp.parts[4]));
    let seccomp_cost = (s.p50_ms - off.p50_ms) / off.p50_ms * 100.0;
    let [net, planned, prepare, spawn, sandbox] = start.parts.each_ref().map(|p| summarize(p));
    let [cgroup, net_complete] = start.made.each_ref().map(|p| summarize(p));
    let (l, u) = (summarize(&loaded.total), summarize(&up));
    let [l_net, _, _, _, l_sandbox] = loaded.parts.each_ref().map(|p| summarize(p));
    let (b, bb) = (summarize(&bwrap_direct), summarize(&bwrap_bash));
    let m = &memory;
    let n = args.count as f64;
    let daemon = (m.daemon_alive_kb as f64 - m.daemon_before_kb as f64) / n;
    let host = (m.avail_before_kb as f64 - m.avail_alive_kb as f64) / n;
    let ratio = s.p50_ms / b.p50_ms;
    let stop_ms = stop_all.as_secs_f64() * 1e3;
    print_line("dyno start        ", &s);
    println!(
        "  of which (p50) net {:.3}, cgroup planned {:.3}, prepare {:.3}, spawn shim {:.3}, \
         shim exec'd -> first byte {:.3} ms (p99 {:.3} ms; meanwhile the cgroup is made, {:.3} \
         ms, and the network completed, {:.3} ms)",
        net.p50_ms,
        planned.p50_ms,
        prepare.p50_ms,
        spawn.p50_ms,
        sandbox.p50_ms,
        sandbox.p99_ms,
        cgroup.p50_ms,
        net_complete.p50_ms
    );
    print_line("  without seccomp ", &off);
    println!(
        "  of which (p50) shim exec'd -> first byte {:.3} ms; the filter costs {seccomp_cost:+.1} % \
         of start p50 (runs alternated on, off, off, on)",
        off_sandbox.p50_ms
    );
    print_line(&format!("dyno start, {alive:>3} up"), &l);
    let (l_net, l_sandbox) = (l_net.p50_ms, l_sandbox.p50_ms);
    println!("  of which (p50) net {l_net:.3}, shim exec'd -> first byte {l_sandbox:.3} ms");
    let no_times = StartTimes::default();
    let (idle_alive, alive_times) = busy.as_ref().map_or((0, &no_times), |(n, t)| (*n, t));
    let a = summarize(&alive_times.total);
    let [a_net, _, a_prepare, a_spawn, a_sandbox] =
        alive_times.parts.each_ref().map(|p| summarize(p));
    let [a_cgroup, a_complete] = alive_times.made.each_ref().map(|p| summarize(p));
    if busy.is_some() {
        print_line(&format!("dyno start, {idle_alive} idle"), &a);
        println!(
            "  of which (p50) net {:.3}, prepare {:.3}, spawn shim {:.3}, shim exec'd -> \
             first byte {:.3} ms (meanwhile the cgroup {:.3} ms, the network {:.3} ms)",
            a_net.p50_ms,
            a_prepare.p50_ms,
            a_spawn.p50_ms,
            a_sandbox.p50_ms,
            a_cgroup.p50_ms,
            a_complete.p50_ms
        );
    }
    print_line("bwrap             ", &b);
    print_line("bwrap, bash -c    ", &bb);
    print_line("dyno up           ", &u);
    let (own, lag) = (summarize(&app_listen), summarize(&up_after_listen));
    println!(
        "  the app's own time to listen p50 {:.3} ms (from its script's start, inside the dyno); \
         up after its listen p50 {:.3} ms, p99 {:.3} ms (n={})",
        own.p50_ms,
        lag.p50_ms,
        lag.p99_ms,
        up_after_listen.len()
    );
    println!(
        "  {alive} web dynos up at once; readiness poll {poll_ms:.1} ms; stop all {stop_ms:.0} ms"
    );
    println!(
        "memory per dyno: daemon {daemon:.0} kB + shim {:.0} kB (anon {:.0} kB, pss {:.0} kB); \
         PID 1 {:.0} kB (not counted); host MemAvailable -{host:.0} kB",
        m.shim_rss_kb, m.shim_anon_kb, m.shim_pss_kb, m.init_rss_kb
    );
    let line = key_values! {
        "count" => args.count, "spares" => args.spares, "cgroups" => !args.no_cgroups,
        "pause_ms" => kb(args.pause.as_secs_f64() * 1e3),
        "start_p50_ms" => f3(s.p50_ms), "start_p99_ms" => f3(s.p99_ms),
        "start_mean_ms" => f3(s.mean_ms), "start_max_ms" => f3(s.max_ms),
        "start_net_p50_ms" => f3(net.p50_ms),
        "start_net_complete_p50_ms" => f3(net_complete.p50_ms),
        "start_cgroup_planned_p50_ms" => f3(planned.p50_ms),
        "start_cgroup_p50_ms" => f3(cgroup.p50_ms),
        "start_prepare_p50_ms" => f3(prepare.p50_ms), "start_spawn_p50_ms" => f3(spawn.p50_ms),
        "start_sandbox_p50_ms" => f3(sandbox.p50_ms), "start_sandbox_p99_ms" => f3(sandbox.p99_ms),
        "start_p50_ms_noseccomp" => f3(off.p50_ms), "start_p99_ms_noseccomp" => f3(off.p99_ms),
        "start_sandbox_p50_ms_noseccomp" => f3(off_sandbox.p50_ms),
        "seccomp_start_cost_pct" => format!("{seccomp_cost:.1}"),
        "idle_alive" => idle_alive, "start_alive_p50_ms" => f3(a.p50_ms),
        "start_alive_p99_ms" => f3(a.p99_ms), "start_alive_net_p50_ms" => f3(a_net.p50_ms),
        "start_alive_cgroup_p50_ms" => f3(a_cgroup.p50_ms),
        "start_alive_sandbox_p50_ms" => f3(a_sandbox.p50_ms),
        "alive_ratio" => format!("{:.2}", a.p50_ms / s.p50_ms),
        "mount_template" => !args.no_mount_template,
        "start_loaded_p50_ms" => f3(l.p50_ms), "start_loaded_max_ms" => f3(l.max_ms),
        "start_loaded_net_p50_ms" => f3(l_net), "start_loaded_sandbox_p50_ms" => f3(l_sandbox),
        "up_p50_ms" => f3(u.p50_ms), "up_p99_ms" => f3(u.p99_ms), "up_max_ms" => f3(u.max_ms),
        "app_listen_p50_ms" => f3(own.p50_ms), "up_after_listen_p50_ms" => f3(lag.p50_ms),
        "up_after_listen_p99_ms" => f3(lag.p99_ms),
        "readiness_poll_ms" => format!("{poll_ms:.1}"),
        "bwrap_p50_ms" => f3(b.p50_ms), "bwrap_p99_ms" => f3(b.p99_ms),
        "bwrap_bash_p50_ms" => f3(bb.p50_ms), "ratio_vs_bwrap" => format!("{ratio:.2}"),
        "alive" => alive, "shim_rss_kb_mean" => kb(m.shim_rss_kb),
        "shim_anon_kb_mean" => kb(m.shim_anon_kb), "shim_pss_kb_mean" => kb(m.shim_pss_kb),
        "init_rss_kb_mean" => kb(m.init_rss_kb),
        "daemon_rss_before_kb" => m.daemon_before_kb, "daemon_rss_alive_kb" => m.daemon_alive_kb,
        "daemon_rss_per_dyno_kb" => kb(daemon), "memory_per_dyno_kb" => kb(daemon + m.shim_rss_kb),
        "memory_per_dyno_pss_kb" => kb(daemon + m.shim_pss_kb), "host_mem_per_dyno_kb" => kb(host),
        "stop_all_ms" => kb(stop_ms), "links_left" => left[0], "procs_left" => left[1],
        "state_dirs_left" => left[2], "cgroups_left" => left[3],
    };
    println!("{line}");
    if left.iter().any(|n| *n > 0) {
        return Err(format!(
            "left behind: {} links, {} processes, {} state dirs, {} cgroups",
            left[0], left[1], left[2], left[3]
        ));
    }
    Ok(())
}

fn kb(v: f64) -> String {
    format!("{v:.0}")
}

fn print_line(what: &str, s: &Summary) {
    println!(
        "{what} p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms  max {:.3} ms  (n={})",
        s.p50_ms, s.p99_ms, s.mean_ms, s.max_ms, s.count
    );
}

fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn lock(network: &SharedNetwork) -> MutexGuard<'_, Network<Box<dyn LeaseStore + Send>>> {
    network.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// start: network + cgroup + sandbox + exec, on the lower-level API

#[derive(Default)]
struct StartTimes {
    total: Vec<Duration>,
    /// net, cgroup, prepare, spawn, sandbox (shim exec'd → first byte).
    parts: [Vec<Duration>; 5],
    /// The cgroup made and the network completed, while the sandbox is built (inside
    /// `sandbox`).
    made: [Vec<Duration>; 2],
}

/// `count` starts with the seccomp filter, and with `noseccomp` as many without it, in the
/// order on, off, off, on, … (ABBA): drift over the phase (another build starting, the page
/// cache warming) and whatever one start leaves for the next hit both sides alike.
fn start_phase(
    ctx: &Ctx,
    network: &SharedNetwork,
    prefix: &str,
    count: usize,
    pause: Duration,
    noseccomp: bool,
) -> Result<(StartTimes, StartTimes), String> {
    let (mut with, mut without) = (StartTimes::default(), StartTimes::default());
    let runs = if noseccomp { 2 * count } else { count };
    for i in 0..runs {
        std::thread::sleep(pause);
        let off = noseccomp && matches!(i % 4, 1 | 2);
        let name = format!("{prefix}{i}");
        let mut dyno = OneShot {
            network,
            state: StateDir(ctx.state_root.join(&name)),
            name,
            shim: None,
            cgroup: None,
        };
        let run = dyno.run(ctx, i, off);
        let (total, parts, complete) = run.map_err(|e| format!("start {}: {e}", dyno.name))?;
        let times = if off { &mut without } else { &mut with };
        times.total.push(total);
        for (all, part) in times.made.iter_mut().zip(complete) {
            all.push(part);
        }
        for (all, part) in times.parts.iter_mut().zip(parts) {
            all.push(part);
        }
    }
    Ok((with, without))
}

/// One dyno of a start phase; whatever it made goes when it is dropped.
struct OneShot<'a> {
    network: &'a SharedNetwork,
    name: String,
    state: StateDir,
    shim: Option<Child>,
    cgroup: Option<DynoCgroup>,
}

impl OneShot<'_> {
    /// `seccomp_off`: the dyno runs without its system-call filter (what the filter's cost is
    /// measured against).
    fn run(
        &mut self,
        ctx: &Ctx,
        i: usize,
        seccomp_off: bool,
    ) -> Result<(Duration, [Duration; 5], [Duration; 2]), String> {
        let (marks, complete) = self.spawn(ctx, i, seccomp_off, TINY_COMMAND, true)?;
        let shim = self.shim.as_mut().expect("spawned");
        let (first, err) = first_byte_then_drain(shim);
        let _ = shim.wait();
        self.shim = None;
        let t_first = first.map_err(|e| format!("{e}; the shim said: {}", err.trim()))?;
        match launch::exit_record(&self.state) {
            Some(ExitRecord::Exited(0)) => {}
            other => return Err(format!("the app ended with {other:?}: {}", err.trim())),
        }
        let mut steps = [Duration::ZERO; 5];
        let parts: Vec<Instant> = marks.into_iter().chain([t_first]).collect();
        for (step, pair) in steps.iter_mut().zip(parts.windows(2)) {
            *step = pair[1] - pair[0];
        }
        Ok((t_first - marks[0], steps, complete))
    }

    /// Starts the dyno with `command` as the daemon does, its shim in `self.shim` (its stdout
    /// and stderr piped to us, or nowhere): the network begun, cgroup, spec, shim, then the
    /// network completed while the shim builds the sandbox, and the gate opened. The times
    /// before each step (start, net, cgroup, prepare, spawn) and how long the completion took.
    fn spawn(
        &mut self,
        ctx: &Ctx,
        i: usize,
        seccomp_off: bool,
        command: &str,
        piped: bool,
    ) -> Result<([Instant; 5], [Duration; 2]), String> {
        let started = Instant::now();
        let net = lock(self.network).begin(&self.name, None, Some(ctx.port));
        let net = net.map_err(|e| e.to_string())?;
        let t_net = Instant::now();
        if let Some(cgroups) = &ctx.cgroups {
            let cgroup = cgroups.planned(&self.name, &DynoSize::STANDARD_1X);
            self.cgroup = Some(cgroup.map_err(|e| e.to_string())?);
        }
        let t_cgroup = Instant::now();
        let spec = SandboxSpec {
            name: format!("web.{}", i + 1),
            hostname: supervisor::uuid_v4(),
            netns: net.netns_path().to_path_buf(),
            ip: net.ip(),
            app_dir: ctx.app_dir.clone(),
            stack: SandboxSpec::default_stack(),
            uid: ctx.uid,
            gid: ctx.uid,
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), "/app".into()),
                ("DYNO".into(), format!("web.{}", i + 1)),
                ("PORT".into(), ctx.port.to_string()),
            ],
            command: command.into(),
            nameservers: Vec::new(),
            cgroup: self.cgroup.clone(),
            output: dyno_sandbox::spec::OutputMode::Inherit,
            seccomp: dyno_sandbox::spec::SeccompSpec {
                off: seccomp_off,
                allow: Vec::new(),
            },
            proc_view: None,
            terminal: false,
            binds: Vec::new(),
            mount_template: ctx.mount_template.clone(),
            network_gate: true,
        };
        launch::prepare(&self.state, &spec).map_err(|e| e.to_string())?;
        let t_prepare = Instant::now();
        let output = || if piped { Stdio::piped() } else { Stdio::null() };
        let (gate_out, gate_in) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let mut shim = launch::shim_command(&ctx.exe, &self.state);
        shim.stdin(Stdio::from(gate_out))
            .stdout(output())
            .stderr(output());
        let shim = shim.spawn().map_err(|e| format!("start the shim: {e}"))?;
        let t_spawn = Instant::now();
        self.shim = Some(shim);
        if let Some(cgroups) = &ctx.cgroups {
            let made = cgroups.create_new(&self.name, &DynoSize::STANDARD_1X);
            made.map_err(|e| e.to_string())?;
        }
        let t_cgroup_made = Instant::now();
        let net = lock(self.network)
            .complete(net)
            .map_err(|e| e.to_string())?;
        let made = [t_cgroup_made - t_spawn, t_cgroup_made.elapsed()];
        drop(net);
        rustix::io::write(&gate_in, b"1").map_err(|e| format!("open the gate: {e}"))?;
        Ok(([started, t_net, t_cgroup, t_prepare, t_spawn], made))
    }
}

impl Drop for OneShot<'_> {
    fn drop(&mut self) {
        if let Some(mut shim) = self.shim.take() {
            let _ = shim.kill();
            let _ = shim.wait();
        }
        if let Some(cgroup) = self.cgroup.take() {
            remove_cgroup(cgroup, &self.name);
        }
        if let Err(e) = lock(self.network).down(&self.name) {
            eprintln!("bench cleanup: network of {}: {e}", self.name);
        }
        let _ = std::fs::remove_dir_all(&self.state.0);
    }
}

/// When the first byte of the child's stdout arrived; then reads both pipes to their end
/// (returns stderr, to explain failures).
fn first_byte_then_drain(child: &mut Child) -> (std::io::Result<Instant>, String) {
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut byte = [0u8; 1];
    let first = loop {
        match out.read(&mut byte) {
            Ok(0) => break Err(std::io::Error::new(ErrorKind::UnexpectedEof, "no output")),
            Ok(_) => break Ok(Instant::now()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    let _ = out.read_to_end(&mut Vec::new());
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    (first, err)
}

// ---------------------------------------------------------------------------------------------
// anchor: bwrap --unshare-all

/// Kills whatever a benchmark dyno left in its cgroup and removes the cgroup (saying why not).
pub(super) fn remove_cgroup(cgroup: DynoCgroup, name: &str) {
    let _ = cgroup.kill_all();
    if let Err(e) = cgroup.remove() {
        eprintln!("bench cleanup: cgroup of {name}: {e}");
    }
}
