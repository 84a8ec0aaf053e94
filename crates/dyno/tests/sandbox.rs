//! The dyno sandbox end to end (privileged: run as root). Each test makes a lab host with
//! `dyno-net` (so the dyno's network namespace is real), a throwaway app dir and state dir, and
//! starts the real shim through the `dyno` binary.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use dyno_net::dyno::Host;
use dyno_net::ipam::MemoryStore;
use dyno_net::lab::Lab;
use dyno_net::network::{Network, NetworkConfig};
use dyno_sandbox::launch;
use dyno_sandbox::spec::{ExitRecord, SandboxSpec, StateDir};

const APP_UID: u32 = 64000;

fn require_root() {
    assert!(
        rustix::process::geteuid().as_raw() == 0,
        "this test needs root (it builds sandboxes): run the suite as root"
    );
}

/// A lab with one dyno network, an app dir and a state dir; everything goes on drop.
struct Bench {
    _network: Network<MemoryStore>,
    net: dyno_net::dyno::DynoNet,
    scratch: PathBuf,
    _lab: Lab,
}

impl Bench {
    fn new(tag: &str) -> Bench {
        require_root();
        let lab = Lab::new(tag).unwrap();
        let host = Host::in_netns(lab.host.netns()).unwrap();
        let config = NetworkConfig {
            run_dir: lab.run_dir.clone(),
            spares: 0,
            ..NetworkConfig::default()
        };
        let mut network = Network::open(host, &config, MemoryStore).unwrap();
        let net = network.up("s1", Some(5000)).unwrap();
        let scratch = PathBuf::from(format!("/run/dyno-sbx-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(scratch.join("app")).unwrap();
        std::fs::write(scratch.join("app/Procfile"), "web: true\n").unwrap();
        Bench {
            _network: network,
            net,
            scratch,
            _lab: lab,
        }
    }

    fn app_dir(&self) -> PathBuf {
        self.scratch.join("app")
    }

    fn spec(&self, command: &str) -> SandboxSpec {
        SandboxSpec {
            name: "web.1".into(),
            hostname: "1b2c3d4e-0000-4000-8000-000000000001".into(),
            netns: self.net.netns_path.clone(),
            ip: self.net.ip,
            app_dir: self.app_dir(),
            stack: SandboxSpec::default_stack(),
            uid: APP_UID,
            gid: APP_UID,
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("HOME".into(), "/app".into()),
                ("PORT".into(), "5000".into()),
                ("DYNO".into(), "web.1".into()),
            ],
            command: command.into(),
            nameservers: vec![],
            cgroup: None,
            output: dyno_sandbox::spec::OutputMode::Inherit,
            seccomp: Default::default(),
            proc_view: None,
            terminal: false,
            binds: Vec::new(),
            mount_template: None,
            network_gate: false,
        }
    }

    /// [`Bench::run`] with `placeholder` in the command replaced by `value`.
    fn run_replacing(
        &self,
        placeholder: &str,
        value: &str,
        command: &str,
    ) -> (Output, Option<ExitRecord>) {
        self.run(&command.replace(placeholder, value))
    }

    /// Runs `command` in a sandbox to the end; returns its output and exit record.
    fn run(&self, command: &str) -> (Output, Option<ExitRecord>) {
        self.run_spec(&self.spec(command))
    }

    /// Runs the dyno `spec` describes to the end.
    fn run_spec(&self, spec: &SandboxSpec) -> (Output, Option<ExitRecord>) {
        let state = StateDir(self.scratch.join(format!("state-{}", rand_suffix())));
        launch::prepare(&state, spec).unwrap();
        let shim = launch::spawn_shim(
            Path::new(env!("CARGO_BIN_EXE_dyno-shim")),
            &state,
            Stdio::piped(),
            Stdio::piped(),
        )
        .unwrap();
        let output = shim.wait_with_output().unwrap();
        (output, launch::exit_record(&state))
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn inside_a_dyno_the_app_sees_only_itself() {
    let bench = Bench::new("inside");
    std::env::set_var("DYNO_TEST_MARKER_HOST", "leak");
    let state_root = bench.scratch.display().to_string();
    let (out, exit) = bench.run_replacing("STATE", &state_root, 
        "echo pid1=$(cat /proc/1/cmdline | tr '\\0' ' ')\n\
         echo procs=$(ls /proc | grep -c '^[0-9]')\n\
         echo ps=$(ps -e -o pid=,comm= | xargs)\n\
         echo hostname=$(hostname)\n\
         echo net=$(ls /sys/class/net | xargs)\n\
         echo tmp=$(ls -A /tmp | wc -l)\n\
         for p in /root /home /run /run/netns /var/lib /work STATE; do test -e $p && echo present=$p; done\n\
         echo uid=$(id -u) user=$(whoami)\n\
         grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status\n\
         env | grep -c DYNO_TEST_MARKER || true\n\
         echo port=$PORT dyno=$DYNO home=$HOME\n\
         echo hi > /app/written && echo app_write=ok\n\
         echo pwd=$(pwd)",
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(exit, Some(ExitRecord::Exited(0)));
    assert!(text.contains("pid1=dyno __init"), "{text}");
    // ps: PID 1 is our init; the rest are the app's shell and what it runs.
    let ps = text.lines().find_map(|l| l.strip_prefix("ps=")).unwrap();
    assert!(ps.starts_with("1 dyno-shim 2 bash "), "{ps}");
    assert!(
        !ps.contains("cargo") && !ps.contains("nextest"),
        "host processes visible: {ps}"
    );
    assert!(
        text.contains("hostname=1b2c3d4e-0000-4000-8000-000000000001"),
        "{text}"
    );
    assert!(text.contains("net=eth0 lo"), "{text}");
    assert!(text.contains("tmp=0"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("present=")), "{text}");
    // init, the app's shell, and the command substitution's ls and grep: nothing of the host.
    let procs: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (3..=6).contains(&procs),
        "{procs} processes visible: {text}"
    );
    assert!(text.contains(&format!("uid={APP_UID} user=dyno")), "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("CapBnd:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.lines().any(|l| l == "0"), "marker leaked: {text}");
    assert!(text.contains("port=5000 dyno=web.1 home=/app"), "{text}");
    assert!(text.contains("app_write=ok"), "{text}");
    assert!(text.contains("pwd=/app"), "{text}");
    assert!(
        !bench.app_dir().join("written").exists(),
        "writes under /app reached the host"
    );
}

#[test]
fn sigterm_to_the_shim_reaches_every_process_of_the_dyno() {
    let bench = Bench::new("sigterm");
    let state = StateDir(bench.scratch.join("state-term"));
    launch::prepare(
        &state,
        &bench.spec("sleep 1000 & setsid sleep 1001 & echo started; wait"),
    )
    .unwrap();
    let mut shim = launch::spawn_shim(
        Path::new(env!("CARGO_BIN_EXE_dyno-shim")),
        &state,
        Stdio::piped(),
        Stdio::piped(),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(shim.id() as libc::pid_t, libc::SIGTERM) };
    let started = std::time::Instant::now();
    let status = shim.wait().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        launch::exit_record(&state),
        Some(ExitRecord::Exited(143)),
        "{status:?}"
    );
}

#[test]
fn the_shim_outlives_its_caller_and_records_the_exit() {
    let bench = Bench::new("orphan");
    let state = StateDir(bench.scratch.join("state-orphan"));
    launch::prepare(&state, &bench.spec("sleep 1; echo finished")).unwrap();
    // The caller starts the shim and dies at once.
    let caller = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} __shim {} > {}/out 2>&1 &",
            env!("CARGO_BIN_EXE_dyno-shim"),
            state.0.display(),
            state.0.display()
        ))
        .status()
        .unwrap();
    assert!(caller.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while launch::exit_record(&state).is_none() {
        assert!(std::time::Instant::now() < deadline, "no exit recorded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(launch::exit_record(&state), Some(ExitRecord::Exited(0)));
    let out = std::fs::read_to_string(state.0.join("out")).unwrap();
    assert_eq!(out.trim(), "finished");
}

#[test]
fn a_sandbox_that_cannot_be_built_says_why() {
    let bench = Bench::new("setupfail");
    let state = StateDir(bench.scratch.join("state-fail"));
    let mut spec = bench.spec("echo never");
    spec.netns = PathBuf::from("/nonexistent/netns");
    launch::prepare(&state, &spec).unwrap();
    let out = launch::spawn_shim(
        Path::new(env!("CARGO_BIN_EXE_dyno-shim")),
        &state,
        Stdio::piped(),
        Stdio::piped(),
    )
    .unwrap()
    .wait_with_output()
    .unwrap();
    assert!(!out.status.success());
    match launch::exit_record(&state) {
        Some(ExitRecord::SetupFailed(reason)) => {
            assert!(reason.contains("/nonexistent/netns"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!stdout(&out).contains("never"));
}

/// Starts `command` in a dyno of `bench` with its gate on, the gate's read end as the shim's
/// stdin; returns its state dir, the shim and the gate's write end.
fn spawn_gated(
    bench: &Bench,
    command: &str,
) -> (StateDir, std::process::Child, std::os::fd::OwnedFd) {
    let state = StateDir(bench.scratch.join(format!("state-gated-{}", rand_suffix())));
    let mut spec = bench.spec(command);
    spec.network_gate = true;
    launch::prepare(&state, &spec).unwrap();
    let (gate_out, gate_in) = dyno_sandbox::sys::pipe().unwrap();
    let shim = launch::shim_command(Path::new(env!("CARGO_BIN_EXE_dyno-shim")), &state)
        .stdin(Stdio::from(gate_out))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (state, shim, gate_in)
}

#[test]
fn behind_the_network_gate_the_app_starts_only_once_the_gate_opens() {
    let bench = Bench::new("gate");
    let command = "echo started; readlink /proc/self/fd/0; read line; echo read=$?";
    let (state, shim, gate) = spawn_gated(&bench, command);
    // The sandbox is built in far less than this; PID 1 must still be waiting at the gate,
    // childless, in the host's tree (its root not yet the dyno's).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let init = std::fs::read_to_string(state.init_pid()).unwrap();
    let children = format!("/proc/{init}/task/{init}/children");
    let children = std::fs::read_to_string(&children).unwrap();
    assert_eq!(children, "", "the app runs before the gate opened");
    let root = std::fs::read_link(format!("/proc/{init}/root")).unwrap();
    assert_eq!(root, Path::new("/"), "pivoted before the gate opened");
    rustix::io::write(&gate, b"1").unwrap();
    let out = shim.wait_with_output().unwrap();
    let text = stdout(&out);
    assert_eq!(
        launch::exit_record(&state),
        Some(ExitRecord::Exited(0)),
        "{text}"
    );
    // The app's stdin is /dev/null, not the gate: its read ends at once.
    assert_eq!(text, "started\n/dev/null\nread=1\n", "{text}");
    drop(gate);
}

#[test]
fn a_gate_closed_unopened_ends_the_dyno_without_running_the_app() {
    let bench = Bench::new("gateshut");
    let (state, shim, gate) = spawn_gated(&bench, "echo never");
    drop(gate);
    let out = shim.wait_with_output().unwrap();
    assert!(!stdout(&out).contains("never"), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(126));
    // Not a failure of the dyno's: a daemon that finds it starts the dyno afresh.
    assert_eq!(launch::exit_record(&state), Some(ExitRecord::Abandoned));
}

#[test]
fn a_gate_with_a_terminal_is_refused() {
    let bench = Bench::new("gateterm");
    let mut spec = bench.spec("true");
    (spec.network_gate, spec.terminal) = (true, true);
    let state = StateDir(bench.scratch.join("state-gateterm"));
    let refused = launch::prepare(&state, &spec).unwrap_err();
    assert!(refused.to_string().contains("terminal"), "{refused}");
}

#[test]
fn writes_under_app_vanish_when_the_dyno_restarts() {
    let bench = Bench::new("ephemeral");
    let (first, _) = bench.run("echo data > /app/scratch && cat /app/scratch");
    assert_eq!(stdout(&first).trim(), "data");
    let (second, _) = bench.run("test -e /app/scratch && echo still-there || echo gone");
    assert_eq!(stdout(&second).trim(), "gone");
    assert!(!bench.app_dir().join("scratch").exists());
}

/// Makes system calls the way an attacker would (ctypes, no libc wrapper in the way) and
/// prints `name errno` for each (0: the call succeeded), then `alive`.
const SYSCALL_PROBE: &str = r#"
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r == 0 and name.startswith("clone"):
        os._exit(0)  # a clone that worked: the child leaves at once
    if r > 0 and name.startswith("clone"):
        os.waitpid(r, 0)
    print(name, 0 if r >= 0 else ctypes.get_errno(), flush=True)
call("unshare_user", 272, 0x10000000)
call("unshare_net", 272, 0x40000000)
call("clone_newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
call("clone_plain", 56, 17, 0, 0, 0, 0)
call("clone3", 435, 0, 0)
call("keyctl", 250, 0, 0, 0, 0, 0)
call("add_key", 248, 0, 0, 0, 0, 0)
call("io_uring_setup", 425, 1, 0)
call("bpf", 321, 0, 0, 0)
call("mount", 165, 0, 0, 0, 0, 0)
call("personality_odd", 135, 0xffff)
call("personality_query", 135, 0xffffffff)
for name, family, kind in [("socket_alg", 38, 5), ("socket_vsock", 40, 1), ("socket_packet", 17, 3),
                           ("socket_inet", 2, 1), ("socket_inet6", 10, 1), ("socket_unix", 1, 1),
                           ("socket_netlink", 16, 3)]:
    try:
        socket.socket(family, kind).close()
        print(name, 0, flush=True)
    except OSError as e:
        print(name, e.errno, flush=True)
print("alive", flush=True)
"#;

fn probe_results(text: &str) -> std::collections::HashMap<String, i32> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(name, errno)| Some((name.to_string(), errno.parse().ok()?)))
        .collect()
}

#[test]
fn the_seccomp_filter_denies_with_eperm_and_the_app_goes_on() {
    let bench = Bench::new("seccomp");
    std::fs::write(bench.app_dir().join("probe.py"), SYSCALL_PROBE).unwrap();
    let (out, exit) = bench.run("python3 /app/probe.py");
    let text = stdout(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exit, Some(ExitRecord::Exited(0)), "{text}\n{stderr}");
    assert!(text.ends_with("alive\n"), "{text}\n{stderr}");
    let got = probe_results(&text);
    for denied in [
        "unshare_user",
        "unshare_net",
        "clone_newuser",
        "keyctl",
        "add_key",
        "io_uring_setup",
        "bpf",
        "mount",
        "personality_odd",
        "socket_alg",
        "socket_vsock",
        "socket_packet",
    ] {
        assert_eq!(got.get(denied), Some(&libc::EPERM), "{denied}: {text}");
    }
    assert_eq!(got.get("clone3"), Some(&libc::ENOSYS), "{text}");
    for allowed in [
        "clone_plain",
        "personality_query",
        "socket_inet",
        "socket_inet6",
        "socket_unix",
        "socket_netlink",
    ] {
        assert_eq!(got.get(allowed), Some(&0), "{allowed}: {text}");
    }
    // The shim names each denied call once (clone3's quiet fallback is not a denial).
    for call in [
        "unshare",
        "keyctl",
        "io_uring_setup",
        "socket",
        "personality",
        "clone",
    ] {
        let line = format!("Denied system call {call} (EPERM)");
        assert_eq!(stderr.matches(&line).count(), 1, "{call}: {stderr}");
    }
    assert!(!stderr.contains("clone3"), "{stderr}");
}

#[test]
fn the_operator_can_allow_a_call_and_benchmarks_can_turn_the_filter_off() {
    let bench = Bench::new("seccompadd");
    std::fs::write(bench.app_dir().join("probe.py"), SYSCALL_PROBE).unwrap();
    let mut spec = bench.spec("python3 /app/probe.py");
    spec.seccomp.allow = vec!["keyctl".into(), "io_uring_setup".into()];
    let (out, _) = bench.run_spec(&spec);
    let got = probe_results(&stdout(&out));
    // Allowed: the kernel itself answers now (bad arguments), not the filter.
    assert_ne!(got.get("keyctl"), Some(&libc::EPERM), "{got:?}");
    assert_ne!(got.get("io_uring_setup"), Some(&libc::EPERM), "{got:?}");
    assert_eq!(got.get("unshare_user"), Some(&libc::EPERM), "{got:?}");

    spec.seccomp.allow.clear();
    spec.seccomp.off = true;
    let (out, _) = bench.run_spec(&spec);
    let got = probe_results(&stdout(&out));
    // Without the filter an unprivileged user namespace is there for the taking: what the
    // filter is for.
    assert_eq!(got.get("unshare_user"), Some(&0), "{got:?}");
    assert_eq!(got.get("clone3"), Some(&libc::EINVAL), "{got:?}");
}

#[test]
fn host_wide_counters_and_kernel_internals_are_hidden() {
    let bench = Bench::new("masks");
    let (out, exit) = bench.run(
        "for f in /proc/locks /proc/vmstat /proc/interrupts /proc/key-users /proc/kcore \
                  /proc/schedstat /proc/softirqs; do \
           test -e $f && echo $f bytes=$(cat $f 2>/dev/null | wc -c); done\n\
         for d in /proc/pressure /sys/firmware; do echo $d entries=$(ls -A $d | wc -l); done\n\
         echo x > /proc/locks 2>/dev/null && echo wrote-locks\n\
         echo meminfo=$(grep -c MemTotal /proc/meminfo) self=$(ls /proc/self/fd | wc -l)",
    );
    let text = stdout(&out);
    assert_eq!(exit, Some(ExitRecord::Exited(0)), "{text}");
    for hidden in [
        "/proc/locks",
        "/proc/vmstat",
        "/proc/interrupts",
        "/proc/key-users",
    ] {
        assert!(
            text.contains(&format!("{hidden} bytes=0")),
            "{hidden}: {text}"
        );
    }
    assert!(text.contains("/proc/pressure entries=0"), "{text}");
    assert!(text.contains("/sys/firmware entries=0"), "{text}");
    assert!(!text.contains("wrote-locks"), "{text}");
    // What apps need is still there.
    assert!(text.contains("meminfo=1"), "{text}");
    // And the host does have them: the test would pass on a kernel without them otherwise.
    assert!(std::fs::read_to_string("/proc/vmstat").unwrap().len() > 100);
    assert!(Path::new("/proc/pressure/cpu").exists());
}

/// An LXCFS of the test's own, in its scratch dir: stopped (by the pid in its pid file) and
/// unmounted however the test ends. Declared after the [`Bench`], so it goes first.
struct TestLxcfs(PathBuf);

impl TestLxcfs {
    fn start(bench: &Bench) -> TestLxcfs {
        let dir = bench.scratch.join("lxcfs");
        let guard = TestLxcfs(dir.clone());
        let found = dyno_sandbox::lxcfs::find_or_start(&dir)
            .unwrap_or_else(|e| panic!("start lxcfs (apt-get install lxcfs): {e}"));
        assert!(found.started.is_some(), "an lxcfs was already at {dir:?}");
        guard
    }
}

impl Drop for TestLxcfs {
    fn drop(&mut self) {
        dyno_sandbox::lxcfs::stop(&self.0).unwrap();
    }
}

/// A dyno cgroup, killed and removed however the test ends.
struct TestCgroup {
    cgroups: dyno_sandbox::cgroup::Cgroups,
    cgroup: dyno_sandbox::cgroup::DynoCgroup,
}

impl TestCgroup {
    fn new(tag: &str, size: &dyno_sandbox::cgroup::DynoSize) -> TestCgroup {
        let cgroups = dyno_sandbox::cgroup::Cgroups::detect()
            .unwrap()
            .with_proc_view();
        let id = format!("sbx{}-{tag}", std::process::id());
        let cgroup = cgroups.create_new(&id, size).unwrap();
        TestCgroup { cgroups, cgroup }
    }

    /// The kernel's memory limit of the dyno, in kB as `/proc/meminfo` counts.
    fn limit_kb(&self) -> u64 {
        self.cgroup.memory_usage().unwrap().limit_bytes / 1024
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.cgroup.kill_all();
        let _ = self.cgroup.remove();
        let _ = self.cgroups.remove_dyno_root_if_unused();
    }
}

/// `key=value` of the line starting with `key=`.
fn field<'t>(text: &'t str, key: &str) -> &'t str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().unwrap().get()
}

const READ_PROC: &str = "echo mem=$(grep MemTotal: /proc/meminfo | awk '{print $2}')\n\
     echo swap=$(grep SwapTotal: /proc/meminfo | awk '{print $2}')\n\
     echo uptime=$(cut -d' ' -f1 /proc/uptime)\n\
     echo cpuinfo=$(grep -c ^processor /proc/cpuinfo)\n\
     echo stat=$(grep -c '^cpu[0-9]' /proc/stat)\n\
     echo online=$(cat /sys/devices/system/cpu/online)\n\
     echo cpu_count=$(python3 -c 'import os; print(os.cpu_count())')\n\
     echo nproc=$(nproc)\n\
     echo swaps=$(tail -n +2 /proc/swaps | wc -l)\n";

#[test]
fn a_dyno_sees_its_own_memory_cpus_uptime_and_load_through_lxcfs() {
    let bench = Bench::new("procview");
    let lxcfs = TestLxcfs::start(&bench);
    let size = dyno_sandbox::cgroup::DynoSize::STANDARD_1X;
    let cgroup = TestCgroup::new("procview", &size);
    let mut spec = bench.spec(&format!(
        "{READ_PROC}\
         cat /proc/loadavg > /dev/null\n\
         ( while :; do :; done ) &\n\
         sleep 11\n\
         echo loadavg=$(cat /proc/loadavg)\n\
         kill $!"
    ));
    spec.cgroup = Some(cgroup.cgroup.clone());
    spec.proc_view = Some(lxcfs.0.clone());
    let (out, _) = bench.run_spec(&spec);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The figures, for whoever reads the test's output (`--no-capture`).
    eprintln!("inside a Standard-1X dyno:\n{text}");
    let host_mem = std::fs::read_to_string("/proc/meminfo").unwrap();
    let host_kb: u64 = host_mem.split_whitespace().nth(1).unwrap().parse().unwrap();
    // MemTotal is the dyno's cgroup limit (twice the 512 MB quota), not the host's memory.
    let mem: u64 = field(&text, "mem").parse().unwrap();
    assert_eq!(mem, cgroup.limit_kb(), "{text}");
    assert_eq!(mem, 1024 * 1024, "{text}");
    assert_ne!(mem, host_kb, "{text}");
    // No swap: the dyno has none (lxcfs -u), whatever the host has.
    assert_eq!(field(&text, "swap"), "0", "{text}");
    assert_eq!(field(&text, "swaps"), "0", "{text}");
    // The dyno's own uptime: its PID 1 started a moment ago.
    let uptime: f64 = field(&text, "uptime").parse().unwrap();
    assert!(uptime < 10.0, "{text}");
    // A Standard-1X dyno has one CPU's quota: it sees one CPU (fewer only on a 0-CPU host).
    let cpus = size.cpus().min(host_cpus() as u32).to_string();
    assert_eq!(field(&text, "cpuinfo"), cpus, "{text}");
    assert_eq!(field(&text, "stat"), cpus, "{text}");
    assert_eq!(field(&text, "cpu_count"), cpus, "{text}");
    let online = if cpus == "1" {
        "0".to_string()
    } else {
        format!("0-{}", size.cpus() - 1)
    };
    assert_eq!(field(&text, "online"), online, "{text}");
    // nproc asks sched_getaffinity, which a CFS quota does not change (see the README).
    assert_eq!(field(&text, "nproc"), host_cpus().to_string(), "{text}");
    // The load of the dyno's own threads: the busy loop runs, and only a handful of threads
    // exist (init, the shell, the loop, sleep), not the host's hundreds.
    let loadavg = field(&text, "loadavg");
    let fields: Vec<&str> = loadavg.split_whitespace().collect();
    let one_minute: f64 = fields[0].parse().unwrap();
    let (running, total) = fields[3].split_once('/').unwrap();
    let (running, total): (u32, u32) = (running.parse().unwrap(), total.parse().unwrap());
    assert!(one_minute > 0.0, "{loadavg}");
    assert!(running >= 1, "{loadavg}");
    assert!((3..=8).contains(&total), "{loadavg}");
    let host_total: u32 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .and_then(|(_, t)| t.parse().ok())
        .unwrap();
    assert!(host_total > total, "{loadavg} vs the host's {host_total}");
}

#[test]
fn a_bigger_dyno_sees_its_bigger_limit() {
    let bench = Bench::new("procview2x");
    let lxcfs = TestLxcfs::start(&bench);
    let size = *dyno_sandbox::cgroup::DynoSize::lookup("standard-2x").unwrap();
    let cgroup = TestCgroup::new("procview2x", &size);
    let mut spec = bench.spec(READ_PROC);
    spec.cgroup = Some(cgroup.cgroup.clone());
    spec.proc_view = Some(lxcfs.0.clone());
    let (out, _) = bench.run_spec(&spec);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(field(&text, "mem"), (2 * 1024 * 1024).to_string(), "{text}");
    assert_eq!(
        field(&text, "cpuinfo"),
        size.cpus().min(host_cpus() as u32).to_string(),
        "{text}"
    );
}

#[test]
fn without_lxcfs_the_dyno_starts_with_the_kernels_figures() {
    let bench = Bench::new("noview");
    let mut spec = bench.spec("echo mem=$(grep MemTotal: /proc/meminfo | awk '{print $2}')");
    // A directory with no lxcfs files: nothing to bind, nothing fails.
    std::fs::create_dir_all(bench.scratch.join("not-lxcfs")).unwrap();
    spec.proc_view = Some(bench.scratch.join("not-lxcfs"));
    let (out, _) = bench.run_spec(&spec);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let host_mem = std::fs::read_to_string("/proc/meminfo").unwrap();
    let host_kb = host_mem.split_whitespace().nth(1).unwrap();
    assert_eq!(field(&text, "mem"), host_kb, "{text}");
}

#[test]
fn tmpfs_writes_past_the_dynos_quota_fail_with_enospc() {
    let bench = Bench::new("tmpfsbound");
    let size = dyno_sandbox::cgroup::DynoSize {
        name: "test-64",
        memory_mb: 64,
        pids: 64,
        cpu_weight: 100,
    };
    let cgroup = TestCgroup::new("tmpfsbound", &size);
    let fill = "for d in /tmp /dev/shm /app; do\n\
         err=$(dd if=/dev/zero of=$d/fill bs=1M count=100 2>&1 >/dev/null | grep -c 'No space left on device')\n\
         echo \"$d enospc=$err bytes=$(stat -c %s $d/fill)\"\n\
         rm -f $d/fill\n\
         done\n\
         echo alive";
    let mut spec = bench.spec(fill);
    spec.cgroup = Some(cgroup.cgroup.clone());
    let (out, _) = bench.run_spec(&spec);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    // The tmpfs behind all three holds the quota (64 MiB) and not a byte more (it also holds
    // the dyno's few /etc files); the dyno lives on.
    let quota = 64 * 1024 * 1024;
    for dir in ["/tmp", "/dev/shm", "/app"] {
        let bytes: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{dir} enospc=1 bytes=")))
            .unwrap_or_else(|| panic!("{dir}: no ENOSPC: {text}"))
            .parse()
            .unwrap();
        assert!(bytes <= quota && bytes > quota - 64 * 1024, "{dir}: {text}");
    }
    assert!(text.contains("alive"), "{text}");
    assert_eq!(cgroup.cgroup.memory_usage().unwrap().oom_kills, 0);

    // Without a cgroup, the fixed bound.
    let (out, _) = bench.run("df -k --output=size /tmp /dev/shm | tail -n +2 | xargs");
    let expected = dyno_sandbox::rootfs::DEFAULT_TMPFS_BYTES / 1024;
    assert_eq!(stdout(&out).trim(), format!("{expected} {expected}"));
}
