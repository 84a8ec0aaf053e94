//! N web dynos alive at once under the real supervisor: up latency, memory, leftovers.

use std::collections::HashMap;
use std::time::SystemTime;

use super::*;

/// The web dynos of the up phase, and what their supervisors share.
pub(super) struct Fleet {
    pub(super) platform: Arc<Platform>,
    pub(super) handles: Vec<DynoHandle>,
    /// The network (and cgroup) names of its dynos, to tell our leftovers from other daemons'.
    pub(super) names: Vec<String>,
    pub(super) logs: JoinHandle<()>,
    pub(super) memory: Memory,
    /// Each dyno's (`web.N`) script start and listen, seconds since the epoch, from its line.
    pub(super) listens: Arc<Mutex<HashMap<String, (f64, f64)>>>,
    /// When each dyno (in order) was seen `up`.
    pub(super) up_at: Vec<SystemTime>,
}

impl Fleet {
    /// Per dyno seen up and whose line arrived: (its script's time to listen, the time from
    /// its listen until it was seen up).
    pub(super) fn listen_times(&self) -> (Vec<Duration>, Vec<Duration>) {
        let listens = self.listens.lock().unwrap_or_else(|p| p.into_inner());
        let since_epoch = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        };
        let (mut own, mut lag) = (Vec::new(), Vec::new());
        for (i, up_at) in self.up_at.iter().enumerate() {
            if let Some((began, listened)) = listens.get(&format!("web.{}", i + 1)) {
                own.push(Duration::from_secs_f64((listened - began).max(0.0)));
                let after = since_epoch(*up_at) - listened;
                lag.push(Duration::from_secs_f64(after.max(0.0)));
            }
        }
        (own, lag)
    }
}

impl Fleet {
    /// Starts `count` web dynos one after the other, each once the previous one is up. The
    /// times until up, or why one did not come up (the dynos started so far are in the fleet,
    /// to be stopped).
    pub(super) async fn start(
        ctx: &Ctx,
        network: &SharedNetwork,
        lifecycle: Lifecycle,
        count: usize,
    ) -> (Fleet, Result<Vec<Duration>, String>) {
        let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel::<LogLine>();
        // The last lines, to explain a failure.
        let recent: Arc<Mutex<Vec<String>>> = Arc::default();
        let listens: Arc<Mutex<HashMap<String, (f64, f64)>>> = Arc::default();
        let logs = tokio::spawn({
            let (recent, listens) = (recent.clone(), listens.clone());
            async move {
                while let Some(line) = log_rx.recv().await {
                    if let Some(times) = parse_listen_line(&line.message) {
                        let mut listens = listens.lock().unwrap_or_else(|p| p.into_inner());
                        listens.insert(line.dyno.clone(), times);
                    }
                    let mut recent = recent.lock().unwrap_or_else(|p| p.into_inner());
                    if recent.len() >= 20 {
                        recent.remove(0);
                    }
                    recent.push(line.to_string());
                }
            }
        });
        let (exe, state_root, cgroups) = (&ctx.exe, &ctx.state_root, &ctx.cgroups);
        let host = LinuxHost::new(
            network.clone(),
            exe.clone(),
            state_root.clone(),
            cgroups.clone(),
        );
        let platform = Platform::new(Arc::new(host), lifecycle, log_tx);
        let mut fleet = Fleet {
            platform: Arc::new(platform),
            handles: Vec::with_capacity(count),
            names: Vec::with_capacity(count),
            logs,
            memory: Memory {
                daemon_before_kb: status_kb(Path::new("/proc/self/status"), "VmRSS:"),
                avail_before_kb: status_kb(Path::new("/proc/meminfo"), "MemAvailable:"),
                ..Memory::default()
            },
            listens,
            up_at: Vec::with_capacity(count),
        };
        let mut up = Vec::with_capacity(count);
        for i in 0..count {
            let def = DynoDef {
                app: APP.into(),
                process: "web".into(),
                index: i as u32 + 1,
                command: WEB_COMMAND.into(),
                env: Vec::new(),
                app_dir: ctx.app_dir.clone(),
                release: 1,
                uid: ctx.uid,
                port: ctx.port,
                restart: false,
                size: DynoSize::STANDARD_1X,
                attachment: None,
                binds: Vec::new(),
            };
            let started = Instant::now();
            let handle = supervisor::start(fleet.platform.clone(), def);
            let mut status = handle.status.clone();
            fleet.handles.push(handle);
            let changed = status.wait_for(|s| s.state != State::Starting);
            let state = match tokio::time::timeout(Duration::from_secs(40), changed).await {
                Ok(Ok(s)) => {
                    fleet.names.extend(s.net_name.clone());
                    s.state
                }
                Ok(Err(_)) => State::Down,
                Err(_) => State::Starting,
            };
            if state != State::Up {
                let recent = recent.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
                let (dyno, state) = (i + 1, state.as_str());
                let why = format!("web.{dyno} is {state}, not up; last log lines:\n{recent}");
                return (fleet, Err(why));
            }
            up.push(started.elapsed());
            fleet.up_at.push(SystemTime::now());
        }
        (fleet, Ok(up))
    }

    /// Stops every dyno at once; returns how long that took.
    pub(super) async fn stop(self) -> (Duration, Vec<String>) {
        let stopping = Instant::now();
        let stops = self.handles.into_iter().map(|h| tokio::spawn(h.stop()));
        for stop in stops.collect::<Vec<_>>() {
            let _ = stop.await;
        }
        let took = stopping.elapsed();
        drop(self.platform);
        // The log pumps hold the platform (and its sender) until the shims' pipes close.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.logs).await;
        (took, self.names)
    }
}

/// The web process's `listening BEGAN LISTENED` line.
fn parse_listen_line(message: &str) -> Option<(f64, f64)> {
    let mut words = message.split_whitespace();
    if words.next()? != LISTEN_LINE {
        return None;
    }
    let began = words.next()?.parse().ok()?;
    let listened = words.next()?.parse().ok()?;
    Some((began, listened))
}

#[derive(Default)]
pub(super) struct Memory {
    pub(super) daemon_before_kb: u64,
    pub(super) daemon_alive_kb: u64,
    pub(super) avail_before_kb: u64,
    pub(super) avail_alive_kb: u64,
    pub(super) shim_rss_kb: f64,
    pub(super) shim_anon_kb: f64,
    pub(super) shim_pss_kb: f64,
    pub(super) init_rss_kb: f64,
}

/// The daemon's RSS now, its shims' (our children) and their PID 1s' (the shims' children).
pub(super) fn measure(memory: &mut Memory) {
    memory.daemon_alive_kb = status_kb(Path::new("/proc/self/status"), "VmRSS:");
    memory.avail_alive_kb = status_kb(Path::new("/proc/meminfo"), "MemAvailable:");
    let processes = processes();
    let me = std::process::id();
    let children = |parents: &[u32]| -> Vec<u32> {
        let children = processes.iter().filter(|p| parents.contains(&p.ppid));
        children.map(|p| p.pid).collect()
    };
    let shims = children(&[me]);
    let inits = children(&shims);
    let mean = |pids: &[u32], file: &str, key: &str| {
        let sum: u64 = (pids.iter())
            .map(|pid| status_kb(Path::new(&format!("/proc/{pid}/{file}")), key))
            .sum();
        sum as f64 / pids.len().max(1) as f64
    };
    memory.shim_rss_kb = mean(&shims, "status", "VmRSS:");
    memory.shim_anon_kb = mean(&shims, "status", "RssAnon:");
    memory.shim_pss_kb = mean(&shims, "smaps_rollup", "Pss:");
    memory.init_rss_kb = mean(&inits, "status", "VmRSS:");
}

// ---------------------------------------------------------------------------------------------
// /proc and leftovers

/// The first number after `key` in a /proc file (`VmRSS:  1234 kB`), 0 if absent.
pub(super) fn status_kb(path: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = text.lines().find_map(|l| l.strip_prefix(key));
    let value = line.and_then(|l| l.split_whitespace().next()?.parse().ok());
    value.unwrap_or(0)
}

pub(super) struct Process {
    pub(super) pid: u32,
    pub(super) ppid: u32,
    pub(super) uid: u64,
    pub(super) cmdline: String,
}

pub(super) fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    pids.filter_map(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')')? + 1..];
        let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
        let uid = status_kb(Path::new(&format!("/proc/{pid}/status")), "Uid:");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        Some(Process {
            pid,
            ppid,
            uid,
            cmdline,
        })
    })
    .collect()
}

/// What is left once every dyno was stopped: processes (waited for up to 10 s), links (up to
/// 2 minutes: the kernel destroys namespaces in the background), networks, state dirs, cgroups:
/// `[links and networks, processes, state dirs, cgroups]`. Only our cgroups count: the dyno
/// cgroups of every daemon and test on the host share one parent. `fleet`: the up phase's names.
pub(super) fn leftovers(ctx: &Ctx, network: &SharedNetwork, fleet: &[String]) -> [usize; 4] {
    let me = std::process::id();
    let state = ctx.state_root.to_string_lossy().into_owned();
    let ours = |p: &Process| {
        p.pid != me && (p.ppid == me || p.uid == u64::from(ctx.uid) || p.cmdline.contains(&state))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut procs = processes().iter().filter(|p| ours(p)).count();
    while procs > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        procs = processes().iter().filter(|p| ours(p)).count();
    }
    let links = wait_for_links_gone(network);
    let networks = lock(network).list().map(|l| l.len()).unwrap_or(0);
    let state_dirs = std::fs::read_dir(&ctx.state_root).map_or(0, |d| d.count());
    // The start phases' names: their prefix and a number.
    let numbered = |id: &str, prefix: &str| {
        id.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let ours = |id: &String| fleet.contains(id) || numbered(id, "bs") || numbered(id, "bl");
    let count_ours = |ids: Vec<String>| ids.iter().filter(|id| ours(id)).count();
    let cgroups = (ctx.cgroups.as_ref()).map_or(0, |c| c.dyno_ids().map_or(0, count_ours));
    [links + networks, procs, state_dirs, cgroups]
}

/// Waits (up to 2 minutes) for the kernel to destroy the dynos' links; returns how many remain.
pub(super) fn wait_for_links_gone(network: &SharedNetwork) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let links = lock(network).host().links_with_prefix(LINK_PREFIX);
        let left = links.map_or(usize::MAX, |l| l.len());
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listen_line;

    #[test]
    fn the_web_process_line_is_read_and_nothing_else() {
        let line = "listening 1765100000.123456 1765100000.140001";
        let (began, listened) = parse_listen_line(line).expect("a listen line");
        assert!((listened - began - 0.016545).abs() < 1e-6);
        assert_eq!(parse_listen_line("listen: Address in use"), None);
        assert_eq!(parse_listen_line("listening soon"), None);
    }
}
