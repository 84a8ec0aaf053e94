//! Shared by the integration tests: temp dirs that clean up, fixtures, the crash-writer child
//! and a private mount namespace for root tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dyno_state::{
    AppName, ConfigKey, ConfigValue, DrainUrl, NetNames, NewDyno, NewRelease, ProcessType, Release,
    SizeName, Slug, StateError, Store, StoreOptions,
};

/// A directory under the system temp dir, unique to the test and the process, removed on drop
/// (also when the test panics).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("dyno-state-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn app(name: &str) -> AppName {
    name.parse().expect("valid app name in test")
}

pub fn ptype(name: &str) -> ProcessType {
    name.parse().expect("valid process type in test")
}

pub fn kv(k: &str, v: &str) -> (ConfigKey, ConfigValue) {
    (k.parse().unwrap(), v.parse().unwrap())
}

/// A slug path inside the store's slug dir and a digest derived from `tag`.
pub fn slug(store: &Store, tag: &str) -> Slug {
    let digest: String = tag
        .bytes()
        .cycle()
        .take(64)
        .map(|b| char::from_digit(u32::from(b) % 16, 16).unwrap())
        .collect();
    Slug::new(store.slugs_dir().join(tag), &digest).unwrap()
}

pub fn deploy(store: &mut Store, app_name: &AppName, types: &[(&str, &str)], tag: &str) -> Release {
    let release = NewRelease {
        slug: slug(store, tag),
        process_types: types
            .iter()
            .map(|(t, c)| (ptype(t), c.to_string()))
            .collect(),
        description: format!("Deploy {tag}"),
        default_config: Default::default(),
    };
    store.create_release(app_name, release).expect("deploy")
}

/// A dyno to record, with resource names never given before in this test process (named as
/// dyno-net names them).
pub fn new_dyno(app_name: &AppName, t: &str, index: u32, release: u32) -> NewDyno {
    static NAMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let net_name = format!("t{n}");
    NewDyno {
        app: app_name.clone(),
        process_type: t.into(),
        index,
        release_version: release,
        size: SizeName::default(),
        net: NetNames {
            netns: format!("dyno-{net_name}"),
            link: format!("dy{net_name}"),
            net_name,
        },
    }
}

pub fn assert_id<T: std::fmt::Debug>(r: Result<T, StateError>, id: &str) -> StateError {
    match r {
        Ok(v) => panic!("expected error {id}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind().name(), id, "wrong error id for: {e}");
            e
        }
    }
}

pub fn require_root(what: &str) {
    if !rustix::process::geteuid().is_root() {
        panic!(
            "this test needs root ({what}); run the suite as root, e.g. `sudo -E cargo nextest run -p dyno-state`"
        );
    }
}

/// Runs `f` on a thread of its own in a private mount namespace (unshare(CLONE_NEWNS) affects
/// only the calling thread, and everything it spawns). Every mount made there vanishes with
/// the thread, even when `f` panics; nothing reaches the host's mount table.
pub fn in_private_mount_ns<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use rustix::mount::{mount_change, MountPropagationFlags};
    use rustix::thread::{unshare_unsafe, UnshareFlags};
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            // SAFETY: NEWNS only (no FILES): no file descriptor table is unshared.
            unsafe { unshare_unsafe(UnshareFlags::NEWNS) }.expect("unshare(CLONE_NEWNS)");
            mount_change(
                "/",
                MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
            )
            .expect("make / private in the test's mount namespace");
            f()
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

// ---- The crash writer: a child that commits changes in a loop and reports each one. ----

pub const CHILD_DIR_ENV: &str = "DYNO_STATE_CHILD_DIR";
pub const CHILD_ROUND_ENV: &str = "DYNO_STATE_CHILD_ROUND";
pub const MAIN_APP: &str = "crash-main";

pub fn child_options() -> StoreOptions {
    StoreOptions {
        pool: "10.213.0.0/16".parse().unwrap(),
        ..StoreOptions::default()
    }
}

/// Commits changes into `dir` in a loop, printing `committed <kind> <id...>` to `out` after each
/// commit returned, until `limit` changes (None: until killed).
pub fn write_loop(dir: &Path, round: &str, limit: Option<usize>, out: &mut dyn Write) {
    let mut store = Store::open_with(dir, child_options()).expect("child: open store");
    let main = app(MAIN_APP);
    match store.create_app(&main) {
        Ok(_) => {}
        Err(e) if e.kind().name() == "conflict" => {}
        Err(e) => panic!("child: create main app: {e}"),
    }
    if store
        .current_release(&main)
        .unwrap()
        .process_types
        .is_empty()
    {
        deploy(
            &mut store,
            &main,
            &[("web", "./web"), ("worker", "./worker")],
            "base",
        );
    }
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut i = 0usize;
    while limit.is_none_or(|l| i < l) {
        let line = match i % 4 {
            0 => {
                let name = format!("r{round}-{i}");
                store.create_app(&app(&name)).expect("child: create app");
                format!("app {name}")
            }
            1 => {
                let key = format!("K_{round}_{i}");
                let r = store
                    .config_set(&main, &[kv(&key, &format!("value {i}"))])
                    .expect("child: config set");
                format!("config {key} {}", r.version)
            }
            2 => {
                let release = store.current_release(&main).unwrap().version;
                let d = store
                    .insert_dyno(&new_dyno(&main, "web", i as u32 + 1, release))
                    .expect("child: insert dyno");
                format!("dyno {} {}", d.id, d.address.unwrap())
            }
            _ => {
                let url: DrainUrl = format!("syslog://r{round}-{i}.example.com:514")
                    .parse()
                    .unwrap();
                let d = store.add_drain(&main, &url).expect("child: add drain");
                format!("drain {}", d.token)
            }
        };
        writeln!(out, "committed {line}").unwrap();
        out.flush().unwrap();
        i += 1;
    }
}

/// Checks that every change reported as committed is in the store. Returns how many there were.
pub fn check_committed(store: &Store, lines: &[String]) -> usize {
    store
        .integrity_check()
        .expect("integrity_check after crash");
    let main = app(MAIN_APP);
    let mut n = 0;
    for line in lines {
        let Some(rest) = line.strip_prefix("committed ") else {
            continue;
        };
        let parts: Vec<&str> = rest.split(' ').collect();
        match parts.as_slice() {
            ["app", name] => {
                store
                    .app(&app(name))
                    .unwrap_or_else(|e| panic!("committed app {name} lost: {e}"));
            }
            ["config", key, version] => {
                let v: u32 = version.parse().unwrap();
                let release = store
                    .release(&main, v)
                    .unwrap_or_else(|e| panic!("committed release v{v} lost: {e}"));
                assert!(release.config.contains_key(*key), "v{v} lacks {key}");
                assert!(
                    store.config(&main).unwrap().contains_key(*key),
                    "config var {key} lost"
                );
            }
            ["dyno", id, ip] => {
                let d = store
                    .dyno(id.parse().unwrap())
                    .unwrap_or_else(|e| panic!("committed dyno {id} lost: {e}"));
                assert_eq!(d.address.unwrap().to_string(), *ip, "dyno {id} address");
            }
            ["drain", token] => {
                assert!(
                    store
                        .drains(&main)
                        .unwrap()
                        .iter()
                        .any(|d| d.token == *token),
                    "committed drain {token} lost"
                );
            }
            other => panic!("unexpected line {other:?}"),
        }
        n += 1;
    }
    n
}

/// The child's side: a `#[test]` named `crash_child` calls this. Spawned by a parent (the env
/// var set), it writes until killed; run as a plain test, it writes 40 changes and checks them.
pub fn crash_child_entry() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let round = std::env::var(CHILD_ROUND_ENV).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        write_loop(Path::new(&dir), &round, None, &mut out);
        return;
    }
    let tmp = TempDir::new("child-plain");
    let mut buf = Vec::new();
    write_loop(tmp.path(), "plain", Some(40), &mut buf);
    let lines: Vec<String> = String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(check_committed(&store, &lines), 40);
}

/// A running writer child and the lines it has printed so far.
pub struct Writer {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Writer {
    /// Starts this test binary's `crash_child` test as a writer into `dir`.
    pub fn spawn(dir: &Path, round: usize) -> Writer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR_ENV, dir)
            .env(CHILD_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the writer child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Writer {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits until the child reported `n` commits (or fails after 30 s).
    pub fn wait_for_commits(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.commits() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "the writer child reported {} commits, not {n}, within 30 s",
                    self.commits()
                ),
            }
        }
    }

    pub fn commits(&self) -> usize {
        self.seen
            .iter()
            .filter(|l| l.starts_with("committed "))
            .count()
    }

    /// SIGKILLs the child, reaps it, and returns every complete line it printed.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL the writer");
        self.child.wait().expect("reap the writer");
        // The reader thread ends at EOF; collect what it still holds.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
