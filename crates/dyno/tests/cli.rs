//! The `dyno net` command line end to end, run as an operator would run it (privileged: run as
//! root). The real host's network is never touched: every `dyno` process starts inside a lab
//! host — a fresh network namespace standing in for the host (see `dyno_net::lab`) — with the
//! lab's own run dir and a state dir of the test. Dropping a test's lab removes everything the
//! binary made, even when the test fails.

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dyno_net::lab::Lab;
use dyno_net::names::LINK_PREFIX;
use dyno_net::nft::{Firewall, FirewallConfig, FirewallError};
use dyno_net::ns::{self, Netns};

const DYNO: &str = env!("CARGO_BIN_EXE_dyno");
/// The first address of the default pool, given to the first dyno of a fresh state dir.
const FIRST_IP: &str = "10.213.0.1";
const SECOND_IP: &str = "10.213.0.2";
/// A `dyno` command that has not finished by then is hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The unprivileged user of the "not root" and "help" tests.
const NOBODY: u32 = 65534;

fn require_root() {
    assert!(
        rustix::process::geteuid().as_raw() == 0,
        "this test needs root: run the suite as root (it creates network namespaces and mounts), \
         e.g. sudo -E cargo nextest run -p dyno --test cli"
    );
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A directory of the test, removed with everything in it when the test ends (or fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static DIRS: AtomicU32 = AtomicU32::new(0);
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dyno-cli-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        // Readable by the unprivileged user of some tests, who runs a copy of the binary from here.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        TempDir(path)
    }

    /// A copy of the `dyno` binary that any user can run, wherever the target dir is (a
    /// target dir under a 0700 home is not reachable for uid 65534).
    fn binary_for_anyone(&self) -> PathBuf {
        let copy = self.0.join("dyno");
        std::fs::copy(DYNO, &copy)
            .unwrap_or_else(|e| panic!("copy {DYNO} to {}: {e}", copy.display()));
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", copy.display()));
        copy
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cleanup: remove {}: {e}", self.0.display());
        }
    }
}

/// What a finished command did.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_ok(self, what: &str) -> Run {
        assert!(
            self.status.success(),
            "`{what}` failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// `dyno` turns its own errors into exit status 1 and a `dyno: …` line on stderr.
    fn assert_failed(self, what: &str) -> Run {
        assert_eq!(
            self.status.code(),
            Some(1),
            "`{what}` should have failed with status 1:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stdout, "", "`{what}` failed but printed on stdout");
        assert!(
            self.stderr.starts_with("dyno: "),
            "`{what}`: stderr: {}",
            self.stderr
        );
        self
    }
}

/// Runs `command` to its end (killed after [`COMMAND_TIMEOUT`]), collecting its output.
fn run(mut command: Command, what: &str) -> Run {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A cwd every user can enter (the uid 65534 tests).
        .current_dir("/");
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start `{what}`: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{what}` still running after {COMMAND_TIMEOUT:?}: killed");
            }
            Err(e) => panic!("wait for `{what}`: {e}"),
        }
    };
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs `program args` inside `netns` (as root) and returns its stdout; panics on failure.
fn run_in(netns: &Netns, program: &str, args: &[&str]) -> String {
    let mut command = Command::new(program);
    command.args(args);
    ns::command_in(&mut command, netns, None).expect("enter the namespace");
    let what = format!("{program} {}", args.join(" "));
    run(command, &what).assert_ok(&what).stdout
}

/// A lab host, and a state dir for the leases of `dyno net` commands run in it.
struct CliLab {
    lab: Lab,
    state: TempDir,
}

impl CliLab {
    fn new(test: &str) -> CliLab {
        require_root();
        let lab = Lab::new(&format!("cli-{test}")).expect("create the lab host");
        CliLab {
            lab,
            state: TempDir::new(test),
        }
    }

    fn run_dir(&self) -> &Path {
        &self.lab.run_dir.0
    }

    fn netns_path(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("dyno-{name}"))
    }

    /// `dyno ARGS --run-dir … --state-dir …`, run inside the lab host as root.
    fn dyno(&self, args: &[&str]) -> Run {
        self.dyno_as(Path::new(DYNO), None, args)
    }

    /// `dyno ARGS` that must succeed.
    fn dyno_ok(&self, args: &[&str]) -> Run {
        self.dyno(args).assert_ok(&args.join(" "))
    }

    fn dyno_as(&self, binary: &Path, uid: Option<u32>, args: &[&str]) -> Run {
        let mut command = Command::new(binary);
        command
            .args(args)
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--state-dir")
            .arg(&self.state.0)
            // Only what the command says itself, whatever the caller's environment.
            .env_remove("DYNO_LOG");
        ns::command_in(&mut command, self.lab.host.netns(), uid).expect("enter the lab host");
        run(command, &format!("dyno {}", args.join(" ")))
    }

    /// `dyno net ls` as a table of whitespace-separated cells, header first.
    fn ls(&self) -> Vec<Vec<String>> {
        let ls = self.dyno_ok(&["net", "ls"]);
        assert_eq!(ls.stderr, "", "dyno net ls");
        table(&ls.stdout)
    }

    fn ls_row(&self, name: &str, ip: &str, port: &str) -> Vec<String> {
        let path = self.netns_path(name);
        row(&[name, ip, port, path.to_str().expect("UTF-8 run dir")])
    }

    /// The `dyno-*` files in the lab's run dir.
    fn netns_files(&self) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(self.run_dir())
            .expect("read the run dir")
            .map(|e| {
                e.expect("run dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|f| f.starts_with("dyno-"))
            .collect();
        files.sort();
        files
    }

    /// Whether the lab host has the firewall table (`inet dyno`), asked over nf_tables netlink.
    fn firewall_installed(&self) -> bool {
        self.lab
            .host
            .netns()
            .run(|| -> Result<bool, FirewallError> {
                Firewall::open()?.is_installed(&FirewallConfig::default())
            })
            .expect("run in the lab host")
            .expect("ask nf_tables for the dyno table")
    }

    /// The exposed `ip . port` elements of the lab host's firewall.
    fn exposed(&self) -> Vec<(Ipv4Addr, u16)> {
        self.lab
            .host
            .netns()
            .run(|| -> Result<Vec<(Ipv4Addr, u16)>, FirewallError> { Firewall::open()?.exposed() })
            .expect("run in the lab host")
            .expect("read the exposed set")
    }

    /// `nft list tables` in the lab host (a second opinion, from the nftables package).
    fn nft_tables(&self) -> Vec<String> {
        run_in(self.lab.host.netns(), "nft", &["list", "tables"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the lab host has no `dy*` link: the kernel destroys an unbound namespace (and
    /// the veth pair in it) in the background. Fails after 30 s.
    fn wait_for_no_dyno_links(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let links = self
                .lab
                .host
                .links_with_prefix(LINK_PREFIX)
                .expect("list the lab host's links");
            if links.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dyno links still in the lab host after 30 s: {links:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the test: drops the lab (its Drop removes every dyno network left) and the state
    /// dir, then checks that nothing is left of either.
    fn finish(self) {
        let CliLab { lab, state } = self;
        let run_dir = lab.run_dir.0.clone();
        let state_dir = state.0.clone();
        drop(lab);
        drop(state);
        assert_eq!(
            mounts_at_or_under(&run_dir),
            Vec::<String>::new(),
            "mounts left at or under {}",
            run_dir.display()
        );
        assert!(!run_dir.exists(), "{} left behind", run_dir.display());
        assert!(!state_dir.exists(), "{} left behind", state_dir.display());
    }
}

/// Mount points in this process's mount namespace that are `dir` itself or below it.
fn mounts_at_or_under(dir: &Path) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let dir = dir.to_str().expect("UTF-8 path");
    let below = format!("{dir}/");
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&below))
        .map(str::to_owned)
        .collect()
}

/// Mount points strictly below `dir`: in a run dir, the namespace binds (the lab's run dir is
/// itself a tmpfs mount).
fn mounts_under(dir: &Path) -> Vec<String> {
    let mut mounts = mounts_at_or_under(dir);
    mounts.retain(|m| Path::new(m) != dir);
    mounts
}

fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn ls_header() -> Vec<String> {
    row(&["NAME", "ADDRESS", "PORT", "NAMESPACE"])
}

#[test]
fn up_prints_the_dyno_and_ls_lists_it() {
    let t = CliLab::new("up");
    let web1 = t.netns_path("web1");

    let up = t.dyno_ok(&["net", "up", "web1", "--port", "5000"]);
    assert_eq!(
        up.stdout,
        format!(
            "web1  {FIRST_IP}  eth0 in {} (host link dyweb1), port 5000 open to the router\n",
            web1.display()
        )
    );
    assert_eq!(up.stderr, "");
    assert!(
        ns::is_bound(&web1),
        "{} is not a bound namespace",
        web1.display()
    );
    assert_eq!(t.netns_files(), ["dyno-web1"]);
    assert_eq!(mounts_under(t.run_dir()), [web1.to_str().unwrap()]);
    // What `up` printed is what the dyno has, and the router may reach exactly that port.
    let netns = Netns::open(&web1).expect("open the dyno's namespace");
    let addr = run_in(&netns, "ip", &["-o", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet {FIRST_IP}/32")), "{addr}");
    assert_eq!(t.exposed(), [(FIRST_IP.parse().unwrap(), 5000)]);

    // Without --port: the next address, nothing exposed.
    let web2 = t.netns_path("web2");
    let up = t.dyno_ok(&["net", "up", "web2"]);
    assert_eq!(
        up.stdout,
        format!(
            "web2  {SECOND_IP}  eth0 in {} (host link dyweb2)\n",
            web2.display()
        )
    );
    assert_eq!(t.exposed(), [(FIRST_IP.parse().unwrap(), 5000)]);

    assert_eq!(
        t.ls(),
        [
            ls_header(),
            t.ls_row("web1", FIRST_IP, "5000"),
            t.ls_row("web2", SECOND_IP, "-"),
        ]
    );
    t.finish();
}

#[test]
fn up_refuses_a_name_in_use_and_bad_names_and_changes_nothing() {
    let t = CliLab::new("badup");
    t.dyno_ok(&["net", "up", "web1", "--port", "5000"]);
    let before = t.ls();
    assert_eq!(before, [ls_header(), t.ls_row("web1", FIRST_IP, "5000")]);

    let again = t
        .dyno(&["net", "up", "web1", "--port", "5001"])
        .assert_failed("net up web1 (again)");
    assert_eq!(
        again.stderr,
        "dyno: dyno web1 already has a network; choose another name or run \
         `dyno net down web1` first\n"
    );

    let bad = t
        .dyno(&["net", "up", "Bad/Name"])
        .assert_failed("net up Bad/Name");
    assert_eq!(
        bad.stderr,
        "dyno: dyno name \"Bad/Name\" may only contain a-z, 0-9 and '-', and must not start \
         with '-'\n"
    );

    let long = "abcdefghijklmn"; // 14 characters: `dy` + 14 would not fit IFNAMSIZ
    let too_long = t
        .dyno(&["net", "up", long, "--port", "5000"])
        .assert_failed("net up (too long)");
    assert_eq!(
        too_long.stderr,
        format!(
            "dyno: dyno name \"{long}\" is too long: at most 13 characters (the host link \
             `dy<name>` must fit the kernel's 15)\n"
        )
    );

    // Nothing changed: same list, same namespace, same exposed port, no new lease.
    assert_eq!(t.ls(), before);
    assert_eq!(t.netns_files(), ["dyno-web1"]);
    assert_eq!(t.exposed(), [(FIRST_IP.parse().unwrap(), 5000)]);
    t.finish();
}

#[test]
fn down_removes_the_dyno_and_a_second_down_has_nothing_to_do() {
    let mut t = CliLab::new("down");
    t.dyno_ok(&["net", "up", "web1", "--port", "5000"]);
    assert_eq!(t.netns_files(), ["dyno-web1"]);

    let down = t.dyno_ok(&["net", "down", "web1"]);
    assert_eq!(down.stdout, "web1: removed\n");
    assert_eq!(down.stderr, "");
    assert_eq!(t.ls(), [ls_header()]);
    assert_eq!(t.netns_files(), Vec::<String>::new());
    assert_eq!(mounts_under(t.run_dir()), Vec::<String>::new());
    assert_eq!(t.exposed(), []);
    t.wait_for_no_dyno_links();

    let again = t.dyno_ok(&["net", "down", "web1"]);
    assert_eq!(again.stdout, "web1: no such dyno network, nothing to do\n");
    assert_eq!(again.stderr, "");
    assert_eq!(t.ls(), [ls_header()]);
    t.finish();
}

#[test]
fn reset_removes_every_namespace_and_the_firewall_table() {
    let mut t = CliLab::new("reset");
    t.dyno_ok(&["net", "up", "web1", "--port", "5000"]);
    t.dyno_ok(&["net", "up", "web2"]);
    assert_eq!(t.netns_files(), ["dyno-web1", "dyno-web2"]);
    assert!(t.firewall_installed(), "no dyno table after `up`");
    assert!(
        t.nft_tables().iter().any(|l| l == "table inet dyno"),
        "{:?}",
        t.nft_tables()
    );

    let reset = t.dyno_ok(&["net", "reset"]);
    assert_eq!(reset.stderr, "");
    // Unbinding a namespace lets the kernel destroy it (and the veth pair in it) in the
    // background: each host link is either already gone or removed by reset itself.
    let text = reset.stdout.trim_end_matches('\n');
    let links = text
        .strip_prefix("removed 2 namespace(s), ")
        .and_then(|rest| rest.strip_suffix(" link(s), the nf_tables table inet dyno"))
        .unwrap_or_else(|| panic!("unexpected reset report: {:?}", reset.stdout));
    let links: usize = links
        .parse()
        .unwrap_or_else(|_| panic!("unexpected reset report: {:?}", reset.stdout));
    assert!(links <= 2, "{}", reset.stdout);
    assert_eq!(reset.stdout.lines().count(), 1, "{}", reset.stdout);

    assert_eq!(t.netns_files(), Vec::<String>::new());
    assert_eq!(mounts_under(t.run_dir()), Vec::<String>::new());
    assert!(!t.firewall_installed(), "the dyno table survived reset");
    assert!(
        !t.nft_tables().iter().any(|l| l.contains("dyno")),
        "{:?}",
        t.nft_tables()
    );
    t.wait_for_no_dyno_links();
    // `ls` only reads: no dyno, no lease, and the firewall stays removed.
    assert_eq!(t.ls(), [ls_header()]);
    assert!(
        !t.firewall_installed(),
        "`ls` after reset installed the firewall again"
    );
    // Reset removed the leases too: the pool starts over.
    let up = t.dyno_ok(&["net", "up", "web3"]);
    assert!(
        up.stdout.starts_with(&format!("web3  {FIRST_IP}  ")),
        "{}",
        up.stdout
    );
    t.finish();
}

#[test]
fn net_commands_refuse_to_run_without_root() {
    let t = CliLab::new("noroot");
    let binary = t.state.binary_for_anyone();
    let ls = t.dyno_as(&binary, Some(NOBODY), &["net", "ls"]);
    let ls = ls.assert_failed("net ls as uid 65534");
    assert_eq!(
        ls.stderr,
        "dyno: dyno net changes the host's network and needs root (CAP_NET_ADMIN and \
         CAP_SYS_ADMIN): run it with sudo\n"
    );
    assert!(ls.stderr.contains("needs root"));
    // It stopped before doing anything: no firewall, no lease file.
    assert!(
        !t.firewall_installed(),
        "a refused command installed the firewall"
    );
    assert!(!t.state.0.join("leases.json").exists());
    t.finish();
}

/// Help needs neither root nor a lab: as root, it is run as uid 65534 to prove it.
fn help(dir: &TempDir, args: &[&str]) -> String {
    let mut command = Command::new(dir.binary_for_anyone());
    command.args(args).env_remove("DYNO_LOG");
    if is_root() {
        let own = Netns::current().expect("open this process's namespace");
        ns::command_in(&mut command, &own, Some(NOBODY)).expect("prepare the command");
    }
    let what = format!("dyno {}", args.join(" "));
    let out = run(command, &what).assert_ok(&what);
    assert_eq!(out.stderr, "", "{what}");
    out.stdout
}

#[test]
fn help_explains_every_net_command_without_root() {
    let dir = TempDir::new("help");

    let top = help(&dir, &["--help"]);
    assert!(
        top.starts_with(
            "Run Heroku-style apps on a Linux host, every dyno in its own network namespace"
        ),
        "{top}"
    );
    assert!(
        top.contains("Most commands change the host's network and need root"),
        "{top}"
    );
    let command = |name: &str, about: &str| {
        top.lines().any(|l| {
            l.trim_start().starts_with(&format!("{name} ")) && l.trim_end().ends_with(about)
        })
    };
    for (name, about) in [
        (
            "net",
            "Dyno networks: create, remove, list, and clean up after a crash",
        ),
        (
            "serve",
            "The daemon: state, API (for the commands below), router and every app's dynos",
        ),
        (
            "apps:create",
            "Create an app (NAME: 3–30 of a-z, 0-9, '-', starting with a letter)",
        ),
        (
            "ps:scale",
            "Scale process types: `dyno ps:scale web=2 worker=1:Standard-2X -a APP`",
        ),
        (
            "logs",
            "Show recent log lines (Heroku's format), optionally following new ones",
        ),
    ] {
        assert!(
            command(name, about),
            "no {name:?} with {about:?} in:\n{top}"
        );
    }
    assert!(top.contains("Usage: dyno <COMMAND>"), "{top}");

    let net = help(&dir, &["net", "--help"]);
    assert!(net.contains("Usage: dyno net <COMMAND>"), "{net}");
    for line in [
        "up     Create dyno NAME's network",
        "down   Remove dyno NAME's network, its exposed port and its address lease",
        "ls     List dyno networks with their address and exposed port",
        "reset  Remove everything dyno made",
    ] {
        assert!(net.contains(line), "missing {line:?} in:\n{net}");
    }

    let up = help(&dir, &["net", "up", "--help"]);
    for text in [
        "Usage: dyno net up [OPTIONS] <NAME>",
        "1-13 characters of a-z, 0-9 and '-'",
        "--port <PORT>",
        "--run-dir <RUN_DIR>",
        "--state-dir <STATE_DIR>",
        "Example:\n  dyno net up web1 --port 5000\n",
    ] {
        assert!(up.contains(text), "missing {text:?} in:\n{up}");
    }
}
