//! The backend inside a dyno, to measure what the seccomp filter costs a busy web process: the
//! host backend's nginx and config, but in a real sandbox (its own namespaces, the app's uid, a
//! Standard-1X cgroup, the default filter or none) on a lab network, reached by the router the
//! way the daemon's router reaches dynos: from the (lab) host, on a socket with the router's
//! mark, which is the only traffic the dyno firewall lets through to `$PORT`.
//!
//! Two dynos run side by side, one with the filter and one without (`SeccompSpec { off: true
//! }`), both pinned to the backend CPU and idle while the other is measured. Each gets its own
//! embedded router (same config as the host comparison, but with the mark); the same `wrk` load
//! runs against them alternately, on, off, off, on, … so that drift hits both alike.

use std::fs::File;
use std::sync::{Mutex, MutexGuard};

use dyno_net::dyno::Host;
use dyno_net::ipam::{LeaseStore, MemoryStore};
use dyno_net::lab::Lab;
use dyno_net::network::{Network, NetworkConfig};
use dyno_sandbox::cgroup::{Cgroups, DynoCgroup, DynoSize};
use dyno_sandbox::launch;
use dyno_sandbox::spec::{OutputMode, SandboxSpec, SeccompSpec, StateDir};

use super::*;

/// `$PORT` inside the dynos (each has its own network namespace: any port will do).
const DYNO_PORT: u16 = 5000;
const DYNO_APP: &str = "bench-router";

pub(super) struct SeccompRuns {
    pub(super) on: Vec<WrkResult>,
    pub(super) off: Vec<WrkResult>,
    /// The `Denied system call …` lines of the filtered dyno (nginx needing a call the profile
    /// denies would show here), from its start to its stop.
    pub(super) denied: Vec<String>,
    /// `Seccomp:` and `Seccomp_filters:` of /proc/PID/status, per process of each dyno
    /// (filtered dyno first), to show that the filter was there, and only there.
    pub(super) modes: [Vec<(u64, u64)>; 2],
    /// What one system call costs in each dyno (filtered first), in ns: the fastest of
    /// [`PROBE_RUNS`] `dd` runs of [`PROBE_CALLS`] one-byte reads and writes before nginx starts.
    /// Noise only adds time, so the fastest run is the least disturbed.
    pub(super) syscall_ns: [Option<f64>; 2],
}

const PROBE_RUNS: usize = 3;
/// Reads plus writes of one `dd` run.
const PROBE_CALLS: u64 = 1_000_000;

/// The two dynos, their lab and network; everything goes on drop, also after an error.
struct DynoLab {
    dynos: Vec<Dyno>,
    network: Mutex<Network<Box<dyn LeaseStore + Send>>>,
    cgroups: Option<Cgroups>,
    // Dropped last: the lab host holds the dynos' links and the firewall.
    lab: Lab,
}

struct Dyno {
    name: String,
    state: StateDir,
    shim: Option<Child>,
    cgroup: Option<DynoCgroup>,
    addr: SocketAddr,
    output: PathBuf,
}

pub(super) fn seccomp_phase(
    args: &RouterBench,
    tools: &Tools,
    nginx: &Path,
    dir: &TempDir,
    shim: &Path,
) -> Result<SeccompRuns, String> {
    let app_dir = dir.path().join("dyno-app");
    let state_root = dir.path().join("dyno-state");
    for d in [&app_dir, &state_root] {
        std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // The host backend's config, with every path the dyno can write under its own /tmp (nginx
    // creates its temp dirs at start; the host's /var is not in a dyno).
    let temp_paths = "fastcgi_temp_path /tmp/fastcgi; uwsgi_temp_path /tmp/uwsgi; \
                      scgi_temp_path /tmp/scgi;";
    let location = "location / { return 200 \"ok\\n\"; }";
    let conf = nginx_conf(
        Path::new("/tmp"),
        "backend",
        &DYNO_PORT.to_string(),
        location,
        temp_paths,
    );
    std::fs::write(app_dir.join("nginx.conf"), conf).map_err(|e| format!("nginx.conf: {e}"))?;

    let mut lab = DynoLab::new()?;
    for off in [false, true] {
        lab.start(shim, &app_dir, &state_root, nginx, tools, off)?;
        // One probe at a time: two at once would share the CPUs. A second or so; longer on a
        // busy host.
        let dyno = lab.dynos.last().expect("just started");
        let deadline = Instant::now() + Duration::from_secs(30);
        while dyno.probes_done() < PROBE_RUNS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let netns = lab.lab.host.netns();
    let routers = (lab.dynos.iter())
        // The product's router config: its sockets carry the router's mark.
        .map(|d| EmbeddedRouter::start_in(d.addr, RouterConfig::default(), Some(netns)))
        .collect::<Result<Vec<_>, _>>()?;
    for (router, dyno) in routers.iter().zip(&lab.dynos) {
        let what = format!("the router in front of nginx in dyno {}", dyno.name);
        wait_http(router.addr, &what).map_err(|e| with_log(e, &dyno.output))?;
        if !args.warmup.is_zero() {
            tools.wrk(router.addr, args.warmup.max(Duration::from_secs(1)))?;
        }
    }
    let mut runs = SeccompRuns {
        on: Vec::new(),
        off: Vec::new(),
        denied: Vec::new(),
        modes: [0, 1].map(|i| lab.dynos[i].seccomp_modes()),
        syscall_ns: [0, 1].map(|i| lab.dynos[i].syscall_ns()),
    };
    for i in 0..2 * args.dyno_rounds {
        let off = matches!(i % 4, 1 | 2);
        let r = tools.wrk(routers[usize::from(off)].addr, args.duration)?;
        let filter = if off { "off" } else { "on " };
        println!(
            "dyno-nginx seccomp {filter} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} requests)",
            r.rps, r.p50_ms, r.p99_ms, r.requests
        );
        if off { &mut runs.off } else { &mut runs.on }.push(r);
    }
    drop(routers);
    let filtered_output = lab.dynos[0].output.clone();
    // Stopped first: nginx's way out counts too.
    drop(lab);
    let output = std::fs::read_to_string(&filtered_output).unwrap_or_default();
    runs.denied = (output.lines())
        .filter(|l| l.contains("Denied system call"))
        .map(|l| l.trim().to_owned())
        .collect();
    Ok(runs)
}

impl DynoLab {
    fn new() -> Result<DynoLab, String> {
        let lab = Lab::new("bench-router").map_err(|e| format!("lab: {e}"))?;
        let host = Host::in_netns(lab.host.netns()).map_err(|e| e.to_string())?;
        let config = NetworkConfig {
            run_dir: lab.run_dir.clone(),
            spares: 0,
            ..NetworkConfig::default()
        };
        let store: Box<dyn LeaseStore + Send> = Box::new(MemoryStore);
        let mut network = Network::open(host, &config, store).map_err(|e| e.to_string())?;
        network.install().map_err(|e| e.to_string())?;
        // As `dyno up` does (on v2 this process moves to a leaf of its own cgroup). Without
        // cgroups the dynos still run, unlimited: the filter's cost does not depend on them.
        let cgroups = Cgroups::detect().and_then(|c| c.vacate_own_cgroup().map(|()| c));
        let cgroups = cgroups
            .map_err(|e| eprintln!("bench router: no dyno cgroups ({e}); dynos run without"))
            .ok();
        Ok(DynoLab {
            dynos: Vec::new(),
            network: Mutex::new(network),
            cgroups,
            lab,
        })
    }

    fn network(&self) -> MutexGuard<'_, Network<Box<dyn LeaseStore + Send>>> {
        self.network.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts nginx in a new dyno (pinned to the backend CPU, as the host backend is).
    fn start(
        &mut self,
        exe: &Path,
        app_dir: &Path,
        state_root: &Path,
        nginx: &Path,
        tools: &Tools,
        seccomp_off: bool,
    ) -> Result<(), String> {
        // Unique on the host: the dyno cgroups of every daemon and bench share one parent.
        let name = format!("br{}{}", std::process::id(), u8::from(seccomp_off));
        let net = self.network().up(&name, Some(DYNO_PORT));
        let net = net.map_err(|e| format!("network of dyno {name}: {e}"))?;
        let output = state_root.join(format!("{name}.out"));
        self.dynos.push(Dyno {
            state: StateDir(state_root.join(&name)),
            name: name.clone(),
            shim: None,
            cgroup: None,
            addr: SocketAddr::from((net.ip, DYNO_PORT)),
            output: output.clone(),
        });
        let dyno = self.dynos.last_mut().expect("just pushed");
        if let Some(cgroups) = &self.cgroups {
            let cgroup = cgroups.create(&name, &DynoSize::STANDARD_1X);
            dyno.cgroup = Some(cgroup.map_err(|e| format!("cgroup of dyno {name}: {e}"))?);
        }
        let uid = dyno_manager::daemon::uids::app_uid(DYNO_APP);
        // First the per-call probe (dd: one read and one write per byte, nothing else), then
        // nginx.
        let command = format!(
            "for i in $(seq {PROBE_RUNS}); do dd if=/dev/zero of=/dev/null bs=1 count={}; done; \
             exec {} -c {LOAD_CPU} {} -p /tmp/ -e stderr -c /app/nginx.conf",
            PROBE_CALLS / 2,
            tools.taskset.display(),
            nginx.display()
        );
        let spec = SandboxSpec {
            name: "web.1".into(),
            hostname: dyno_supervisor::uuid_v4(),
            netns: net.netns_path.clone(),
            ip: net.ip,
            app_dir: app_dir.to_owned(),
            stack: SandboxSpec::default_stack(),
            uid,
            gid: uid,
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), "/app".into()),
                ("DYNO".into(), "web.1".into()),
                ("PORT".into(), DYNO_PORT.to_string()),
            ],
            command,
            nameservers: Vec::new(),
            cgroup: dyno.cgroup.clone(),
            output: OutputMode::Inherit,
            seccomp: SeccompSpec {
                off: seccomp_off,
                allow: Vec::new(),
            },
            proc_view: None,
            terminal: false,
            binds: Vec::new(),
            mount_template: None,
            network_gate: false,
        };
        launch::prepare(&dyno.state, &spec).map_err(|e| format!("dyno {name}: {e}"))?;
        let out = File::create(&output).map_err(|e| format!("{}: {e}", output.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let shim = launch::spawn_shim(exe, &dyno.state, out.into(), err.into());
        dyno.shim = Some(shim.map_err(|e| format!("dyno {name}: {e}"))?);
        Ok(())
    }
}

impl Drop for DynoLab {
    fn drop(&mut self) {
        for dyno in std::mem::take(&mut self.dynos) {
            let name = dyno.name.clone();
            dyno.stop();
            if let Err(e) = self.network().down(&name) {
                eprintln!("bench cleanup: network of {name}: {e}");
            }
        }
        if let Some(cgroups) = &self.cgroups {
            let _ = cgroups.remove_dyno_root_if_unused();
        }
    }
}

impl Dyno {
    fn probes_done(&self) -> usize {
        let output = std::fs::read_to_string(&self.output).unwrap_or_default();
        output.matches(" copied, ").count()
    }

    /// From dd's `… bytes (…) copied, 0.512 s, 2.0 MB/s` lines in the dyno's output.
    fn syscall_ns(&self) -> Option<f64> {
        let output = std::fs::read_to_string(&self.output).ok()?;
        let secs = output.lines().filter_map(|l| {
            let after = l.split(" copied, ").nth(1)?;
            after.split(" s").next()?.trim().parse::<f64>().ok()
        });
        let fastest = secs.fold(f64::INFINITY, f64::min);
        fastest
            .is_finite()
            .then(|| fastest * 1e9 / PROBE_CALLS as f64)
    }

    fn seccomp_modes(&self) -> Vec<(u64, u64)> {
        let pids = (self.cgroup.as_ref()).map_or(Vec::new(), |c| c.pids().unwrap_or_default());
        let status = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
        let field = |text: &str, key: &str| {
            let line = text.lines().find_map(|l| l.strip_prefix(key));
            line.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
        };
        (pids.into_iter().filter_map(status))
            .map(|t| (field(&t, "Seccomp:"), field(&t, "Seccomp_filters:")))
            .collect()
    }

    /// As the supervisor stops a dyno: SIGTERM to the shim (which passes it on to every process
    /// of the dyno), a grace period, then SIGKILL to all; then its cgroup and state go.
    fn stop(mut self) {
        if let Some(mut shim) = self.shim.take() {
            if let Ok(pid) = libc::pid_t::try_from(shim.id()) {
                // SAFETY: kill(2) on our own child, not yet reaped (so its pid is not reused).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(shim.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(shim.try_wait(), Ok(None)) {
                eprintln!("bench cleanup: dyno {} ignored SIGTERM; SIGKILL", self.name);
                if let Some(cgroup) = &self.cgroup {
                    let _ = cgroup.kill_all();
                }
                let _ = shim.kill();
            }
            let _ = shim.wait();
        }
        if let Some(cgroup) = self.cgroup.take() {
            crate::start::remove_cgroup(cgroup, &self.name);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.state.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("bench cleanup: {}: {e}", self.state.0.display());
            }
        }
    }
}
