//! A full and a read-only data dir under a running `dyno serve` (privileged: run as root).
//! The daemon's `--data-dir` is a small tmpfs mounted for the test; a guard stops the daemon
//! and then unmounts it, also when an assertion fails. Changes must be refused with a clear
//! message and the API's error id, nothing committed may change or get lost, the running
//! dynos keep serving, and once the disk has room (or is writable) again, changes work again.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

const SERVE_ARGS: [&str; 4] = ["--boot-timeout", "20s", "--stop-grace", "5s"];

/// Runs `mount`/`umount` with `args`; panics with its stderr when it fails.
fn mount_cmd(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `dyno serve` whose data dir is a tmpfs of its own. Dropping it stops the daemon first (a
/// mount in use cannot go cleanly), then lazily unmounts everything mounted on the data dir.
struct DaemonOnTmpfs {
    up: Option<Up>,
    data_dir: PathBuf,
    /// Mounts stacked on `data_dir`: the tmpfs, and the read-only bind of the second test.
    mounts: usize,
}

impl DaemonOnTmpfs {
    fn start(tag: &str, size: &str) -> DaemonOnTmpfs {
        require_root();
        // The data dir `Up::serve` gives the daemon; mounted before the daemon starts (its
        // cleanup of an earlier run cannot remove a mount point, and leaves it in place).
        let scratch = PathBuf::from(format!("/run/dyno-up-test-{}-{tag}", std::process::id()));
        let data_dir = scratch.join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut guard = DaemonOnTmpfs {
            up: None,
            data_dir,
            mounts: 0,
        };
        let dir = guard.dir();
        mount_cmd(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "dyno-datadir-test",
                &dir,
            ],
        );
        guard.mounts = 1;
        guard.up = Some(Up::serve(tag, &SERVE_ARGS));
        guard
    }

    fn up(&self) -> &Up {
        self.up.as_ref().expect("the daemon runs")
    }

    fn dir(&self) -> String {
        self.data_dir.to_string_lossy().into_owned()
    }

    /// Makes the data dir read-only under the running daemon. A tmpfs (like any filesystem)
    /// refuses `remount,ro` while files on it are open for writing, as the daemon's database
    /// is (EBUSY); what a read-only data dir looks like to the daemon is reproduced with a
    /// read-only bind of the same tmpfs on top: every path under the data dir is read-only.
    fn make_read_only(&mut self) {
        let dir = self.dir();
        mount_cmd("mount", &["--bind", &dir, &dir]);
        self.mounts += 1;
        mount_cmd("mount", &["-o", "remount,bind,ro", &dir]);
    }

    fn make_writable(&self) {
        mount_cmd("mount", &["-o", "remount,bind,rw", &self.dir()]);
    }

    /// The daemon stops cleanly and leaves nothing behind.
    fn stop(&mut self) {
        let up = self.up.as_mut().expect("the daemon runs");
        let status = up.interrupt();
        assert!(status.success(), "{status:?}\n{}", up.notes());
        let uid = up.app_uid("hello");
        up.assert_nothing_left(uid);
    }
}

impl Drop for DaemonOnTmpfs {
    fn drop(&mut self) {
        // The daemon first: it has its database open on the mount.
        drop(self.up.take());
        let dir = self.dir();
        for _ in 0..self.mounts {
            let _ = Command::new("umount").args(["-l", &dir]).status();
        }
        if let Some(scratch) = self.data_dir.parent() {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

/// `dyno ARGS…` against the daemon: (success, stdout, stderr).
fn cli(up: &Up, args: &[&str]) -> (bool, String, String) {
    up.cli_result(args)
}

fn cli_ok(up: &Up, args: &[&str]) -> String {
    up.cli_succeeds(args).0
}

/// The command fails, prints nothing on stdout, and its message contains every one of `words`.
fn cli_refused(up: &Up, args: &[&str], words: &[&str]) -> String {
    let (ok, stdout, stderr) = cli(up, args);
    assert!(!ok, "dyno {args:?} should be refused:\n{stdout}{stderr}");
    assert_eq!(
        stdout, "",
        "dyno {args:?} was refused but printed on stdout"
    );
    for word in words {
        assert!(
            stderr.contains(word),
            "dyno {args:?}: no {word:?} in:\n{stderr}"
        );
    }
    stderr
}

/// The committed state as the API reads it: apps, releases, config, formation.
fn snapshot(up: &Up) -> Vec<String> {
    [
        "/apps",
        "/apps/hello/releases",
        "/apps/hello/config-vars",
        "/apps/hello/formation",
    ]
    .iter()
    .map(|path| {
        let resp = api(up, "GET", path, None);
        assert_eq!(resp.status, 200, "GET {path}");
        String::from_utf8_lossy(&resp.body).into_owned()
    })
    .collect()
}

/// One raw API request (the status and error id matter here, not the CLI's words).
fn api(up: &Up, method: &str, path: &str, body: Option<&str>) -> dyno_api::RawResponse {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = dyno_api::ApiClient::unix(up.api_socket());
    let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
    let content_type = body.map(|_| "application/json");
    let body = bytes::Bytes::from(body.unwrap_or_default().to_string());
    runtime
        .block_on(client.request(method, path, content_type, body))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The API refuses the change with `status` and the error id `id`.
fn api_refused(up: &Up, method: &str, path: &str, body: &str, status: u16, id: &str) {
    let resp = api(up, method, path, Some(body));
    let error: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    assert_eq!(
        (resp.status, error["id"].as_str()),
        (status, Some(id)),
        "{method} {path}: {error}"
    );
}

/// `hello` created and examples/hello deployed (v2), its web.1 serving through the router.
fn deploy_hello(up: &Up) {
    up.wait_api();
    cli_ok(up, &["apps:create", "hello"]);
    cli_ok(up, &["deploy", &hello_dir(), "-a", "hello"]);
    assert_serves(up);
}

fn hello_dir() -> String {
    repo().join("examples/hello").to_string_lossy().into_owned()
}

fn assert_serves(up: &Up) {
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let answer = up.get_via_router("hello.localhost", "/");
        answer
            .contains("Hello from web.1")
            .then_some(())
            .ok_or(format!("not served: {answer}\n{}", up.notes()))
    });
}

/// Every file and directory under the app's slug area, as relative paths.
fn slug_tree(data_dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                walk(base, &path, out);
            }
        }
    }
    let base = data_dir.join(dyno_state::SLUGS_DIR);
    let mut out = Vec::new();
    walk(&base, &base, &mut out);
    out.sort();
    out
}

/// Writes `path` until the filesystem is full (ENOSPC).
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let big = vec![0x55u8; 1 << 20];
    loop {
        match f.write(&big) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("fill {}: {e}", path.display()),
        }
    }
    // The last pages, smaller than a chunk.
    let page = [0x55u8; 4096];
    while f.write(&page).is_ok_and(|n| n > 0) {}
}

#[test]
fn a_full_data_dir_refuses_changes_keeps_serving_and_recovers() {
    let mut daemon = DaemonOnTmpfs::start("datadir-full", "16m");
    let up = daemon.up();
    deploy_hello(up);
    let before = snapshot(up);
    let slugs_before = slug_tree(&daemon.data_dir);
    assert!(!slugs_before.is_empty(), "the deploy made no slug");

    let filler = daemon.data_dir.join("filler");
    fill(&filler);

    let full = ["data dir", "is full", "free some space"];
    cli_refused(up, &["config:set", "GREETING=full", "-a", "hello"], &full);
    cli_refused(up, &["apps:create", "other-app"], &full);
    cli_refused(up, &["ps:scale", "web=2", "-a", "hello"], &full);
    cli_refused(up, &["deploy", &hello_dir(), "-a", "hello"], &full);
    // Scripts see 507 Insufficient Storage and the id.
    api_refused(
        up,
        "PATCH",
        "/apps/hello/config-vars",
        r#"{"GREETING":"full"}"#,
        507,
        "disk_full",
    );
    api_refused(
        up,
        "POST",
        "/apps",
        r#"{"name":"other-app"}"#,
        507,
        "disk_full",
    );

    // Nothing changed, the failed deploy left no partial slug, the dyno still serves.
    assert_eq!(snapshot(up), before, "a refused change changed the state");
    assert_eq!(slug_tree(&daemon.data_dir), slugs_before, "a partial slug");
    assert_serves(up);
    let ps = cli_ok(up, &["ps", "-a", "hello"]);
    assert!(ps.contains("web.1: up 20"), "{ps}");

    // Room again: the same change works, and nothing half-written shows up with it.
    std::fs::remove_file(&filler).unwrap();
    let set = cli_ok(up, &["config:set", "GREETING=full", "-a", "hello"]);
    assert!(set.starts_with("done, v3\n"), "{set}");
    let after = snapshot(up);
    assert_eq!(after[0], before[0], "apps");
    assert_eq!(after[3], before[3], "formation");
    assert_eq!(
        after[2], r#"{"GREETING":"full"}"#,
        "config after the refused ones"
    );
    let releases: Vec<dyno_api::Release> = serde_json::from_str(&after[1]).unwrap();
    let versions: Vec<u32> = releases.iter().map(|r| r.version).collect();
    // Without a `Range`, the API lists releases by version, oldest first (as Heroku's).
    assert_eq!(versions, [1, 2, 3], "{}", after[1]);
    assert_eq!(slug_tree(&daemon.data_dir), slugs_before, "slugs");

    daemon.stop();
}

#[test]
fn a_read_only_data_dir_refuses_changes_serves_reads_and_recovers() {
    let mut daemon = DaemonOnTmpfs::start("datadir-ro", "16m");
    deploy_hello(daemon.up());
    let before = snapshot(daemon.up());
    let slugs_before = slug_tree(&daemon.data_dir);

    daemon.make_read_only();
    let up = daemon.up();
    let read_only = ["data dir", "read-only", "remount it read-write"];
    cli_refused(
        up,
        &["config:set", "GREETING=ro", "-a", "hello"],
        &read_only,
    );
    cli_refused(up, &["apps:create", "other-app"], &read_only);
    cli_refused(up, &["ps:scale", "web=2", "-a", "hello"], &read_only);
    cli_refused(up, &["deploy", &hello_dir(), "-a", "hello"], &read_only);
    api_refused(
        up,
        "PATCH",
        "/apps/hello/config-vars",
        r#"{"GREETING":"ro"}"#,
        503,
        "read_only",
    );

    // Reads work, and show nothing changed; the dyno serves.
    assert_eq!(snapshot(up), before, "a refused change changed the state");
    assert_eq!(cli_ok(up, &["apps"]), "=== Apps\nhello\n");
    assert!(cli_ok(up, &["releases", "-a", "hello"]).contains("v2    Deploy "));
    assert_eq!(
        cli_ok(up, &["config", "-a", "hello"]),
        "=== ⬢ hello Config Vars\n"
    );
    assert!(cli_ok(up, &["ps", "-a", "hello"]).contains("web.1: up 20"));
    assert_eq!(slug_tree(&daemon.data_dir), slugs_before, "a partial slug");
    assert_serves(up);

    // Writable again: changes work again.
    daemon.make_writable();
    let up = daemon.up();
    let set = cli_ok(up, &["config:set", "GREETING=rw", "-a", "hello"]);
    assert!(set.starts_with("done, v3\n"), "{set}");
    cli_ok(up, &["apps:create", "other-app"]);
    assert_eq!(cli_ok(up, &["apps"]), "=== Apps\nhello\nother-app\n");
    cli_ok(up, &["apps:destroy", "other-app", "--confirm", "other-app"]);

    daemon.stop();
}
