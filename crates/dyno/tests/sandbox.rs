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
    // SAFETY: geteuid cannot fail.
    assert!(
        unsafe { libc::geteuid() } == 0,
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
