//! The mount namespace template dynos are copied from (`dyno_sandbox::template`; privileged:
//! run as root). The template must hold none of the network namespace binds, neither those made
//! before it nor after, keep the host's other mounts, and a dyno started from it must run.
//! Its mount table is read with the real `nsenter`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dyno_net::dyno::Host;
use dyno_net::ipam::MemoryStore;
use dyno_net::lab::Lab;
use dyno_net::network::{Network, NetworkConfig};
use dyno_sandbox::launch;
use dyno_sandbox::spec::{ExitRecord, SandboxSpec, StateDir};
use dyno_sandbox::template;

fn require_root() {
    assert!(
        rustix::process::geteuid().as_raw() == 0,
        "this test needs root (it makes mount namespaces): run the suite as root"
    );
}

/// A scratch dir under /run; whatever is mounted below it and the dir itself go on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(format!("/run/dyno-tpl-test-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for point in dyno_sandbox::sys::mount_points_below(&mountinfo, &self.0) {
            let _ = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The mount points of the namespace bound at `template`, as `nsenter` shows them.
fn template_mounts(template: &Path) -> Vec<String> {
    let out = Command::new("nsenter")
        .arg(format!("--mount={}", template.display()))
        .args(["cat", "/proc/self/mountinfo"])
        .output()
        .expect("run nsenter (util-linux)");
    assert!(
        out.status.success(),
        "nsenter into the template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
        .collect()
}

fn bind_file(source: &str, at: &Path) {
    std::fs::write(at, "").unwrap();
    rustix::mount::mount_bind(source, at).unwrap();
}

fn is_mount_point(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    dyno_sandbox::sys::mount_points_below(&mountinfo, path).contains(&path.to_path_buf())
}

#[test]
fn a_run_dir_of_its_own_is_left_out_and_a_dyno_started_from_the_template_runs() {
    require_root();
    let scratch = Scratch::new("lab");
    let lab = Lab::new("tpl").unwrap();
    let host = Host::in_netns(lab.host.netns()).unwrap();
    let config = NetworkConfig {
        run_dir: lab.run_dir.clone(),
        spares: 0,
        ..NetworkConfig::default()
    };
    let mut network = Network::open(host, &config, MemoryStore).unwrap();
    let before = network.up("t1", Some(5000)).unwrap();
    let at = scratch.0.join("mount-template");
    template::create(&at, &lab.run_dir.0).unwrap();
    let after = network.up("t2", Some(5000)).unwrap();

    let mounts = template_mounts(&at);
    let run_dir = lab.run_dir.0.display().to_string();
    let leaked: Vec<&String> = mounts.iter().filter(|m| m.starts_with(&run_dir)).collect();
    assert!(
        leaked.is_empty(),
        "the template holds run dir mounts: {leaked:?}"
    );
    assert!(mounts.iter().any(|m| m == "/"), "{mounts:?}");
    assert!(mounts.iter().any(|m| m == "/proc"), "{mounts:?}");
    // The host's side still has both binds.
    assert!(is_mount_point(&before.netns_path) && is_mount_point(&after.netns_path));

    // A dyno made from it, in the network made after the template.
    let app = scratch.0.join("app");
    std::fs::create_dir_all(&app).unwrap();
    let spec = SandboxSpec {
        name: "web.1".into(),
        hostname: "1b2c3d4e-0000-4000-8000-000000000002".into(),
        netns: after.netns_path.clone(),
        ip: after.ip,
        app_dir: app,
        stack: SandboxSpec::default_stack(),
        uid: 64000,
        gid: 64000,
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        command: "cat /proc/1/cmdline | tr '\\0' ' '; ip -o link show eth0 | cut -d' ' -f2".into(),
        nameservers: vec![],
        cgroup: None,
        output: dyno_sandbox::spec::OutputMode::Inherit,
        seccomp: Default::default(),
        proc_view: None,
        terminal: false,
        binds: Vec::new(),
        mount_template: Some(at.clone()),
        network_gate: false,
    };
    let text = run_to_the_end(&spec, &scratch.0.join("state"));
    assert!(text.starts_with("dyno __init"), "PID 1: {text}");
    assert!(text.contains("eth0"), "the dyno's network: {text}");

    template::remove(&at).unwrap();
    assert!(!at.exists() && !is_mount_point(&at));
    // A dyno whose template went while it started (its daemon killed, the next one removed
    // it) copies the host's namespace instead.
    let text = run_to_the_end(&spec, &scratch.0.join("state-after"));
    assert!(text.contains("eth0"), "without the template: {text}");
}

/// Runs the dyno `spec` describes until it ends; it must exit 0. Its stdout.
fn run_to_the_end(spec: &SandboxSpec, state: &Path) -> String {
    let state = StateDir(state.to_path_buf());
    launch::prepare(&state, spec).unwrap();
    let shim = launch::spawn_shim(
        Path::new(env!("CARGO_BIN_EXE_dyno-shim")),
        &state,
        Stdio::piped(),
        Stdio::piped(),
    )
    .unwrap();
    let out = shim.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let why = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        launch::exit_record(&state),
        Some(ExitRecord::Exited(0)),
        "{text}{why}"
    );
    text
}

#[test]
fn a_run_dir_on_a_bigger_mount_is_left_out_and_the_mounts_beside_it_are_kept() {
    require_root();
    let scratch = Scratch::new("plain");
    let (run_dir, beside) = (scratch.0.join("net"), scratch.0.join("beside"));
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::create_dir_all(&beside).unwrap();
    rustix::mount::mount(
        "dyno-tpl-test",
        &beside,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=4k",
    )
    .unwrap();
    bind_file("/dev/null", &run_dir.join("dyno-before"));
    let at = scratch.0.join("mount-template");
    template::create(&at, &run_dir).unwrap();
    bind_file("/dev/null", &run_dir.join("dyno-after"));

    let mounts = template_mounts(&at);
    let run_dir_text = run_dir.display().to_string();
    let leaked: Vec<&String> = mounts
        .iter()
        .filter(|m| m.starts_with(&run_dir_text))
        .collect();
    assert!(
        leaked.is_empty(),
        "the template holds run dir mounts: {leaked:?}"
    );
    let beside = beside.display().to_string();
    assert!(mounts.contains(&beside), "{beside} is gone: {mounts:?}");
    // Made again over a leftover: the old one goes.
    template::create(&at, &run_dir).unwrap();
    let count = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" nsfs ") && l.contains(&*at.to_string_lossy()))
        .count();
    assert_eq!(count, 1, "one template bound at {}", at.display());
    template::remove(&at).unwrap();
    template::remove(&at).unwrap();
}
