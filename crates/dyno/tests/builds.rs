//! Builds (privileged: run as root): `dyno deploy DIR` packs DIR, uploads it and builds it with
//! Heroku's buildpack API in a build dyno; the release names what was built. A failed build
//! releases nothing, a build that runs forever hits the timeout, one that fills its disk or
//! forks without end is held like a dyno, the cache carries over, `.profile.d` runs at every
//! dyno start, and bad sources are refused with a clear message.

mod support;

use std::path::{Path, PathBuf};

use support::*;

const APP: &str = "built";

fn serve(tag: &str, extra: &[&str]) -> Up {
    let mut args = vec!["--boot-timeout", "20s", "--stop-grace", "2s"];
    args.extend_from_slice(extra);
    let up = Up::serve(tag, &args);
    up.wait_api();
    up.cli_succeeds(&["apps:create", APP]);
    up
}

/// A buildpack in the test's scratch space whose `bin/compile` runs `compile` (bash).
fn buildpack(up: &Up, name: &str, compile: &str, release: &str) -> PathBuf {
    let dir = up.scratch.join("buildpacks").join(name);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    for (script, body) in [
        ("detect", format!("#!/bin/bash\necho {name}\n")),
        ("compile", format!("#!/bin/bash\nset -e\n{compile}\n")),
        (
            "release",
            format!("#!/bin/bash\ncat <<'YAML'\n{release}\nYAML\n"),
        ),
    ] {
        let path = dir.join("bin").join(script);
        std::fs::write(&path, body).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&path).unwrap().permissions(),
            0o755,
        );
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    dir
}

/// Sets a buildpack whose compile runs `compile` as the app's only one, deploys hello with it,
/// and returns the build's lines of the deploy, which must fail.
fn build_fails(up: &Up, name: &str, compile: &str) -> String {
    let bp = buildpack(up, name, compile, "---");
    up.cli_succeeds(&["buildpacks:set", &bp.to_string_lossy(), "-a", APP]);
    let (ok, out, _) = deploy(up, &hello());
    assert!(!ok, "the build with {name} did not fail:\n{out}");
    out
}

/// A `web.py` answering every GET with `body` (a Python expression), after `imports`.
fn web_py(imports: &str, body: &str) -> String {
    format!(
        "import http.server, os\n{imports}\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       body = ({body}).encode()\n\
         \x20       self.send_response(200); self.send_header('Content-Length', str(len(body)))\n\
         \x20       self.end_headers(); self.wfile.write(body)\n\
         http.server.HTTPServer(('', int(os.environ['PORT'])), H).serve_forever()\n"
    )
}

fn releases(up: &Up) -> Vec<serde_json::Value> {
    let (out, _) = up.cli_succeeds(&["releases", "-a", APP, "--json"]);
    serde_json::from_str(&out).unwrap()
}

fn builds(up: &Up) -> Vec<serde_json::Value> {
    let (out, _) = up.cli_succeeds(&["builds", "-a", APP, "--json"]);
    serde_json::from_str(&out).unwrap()
}

fn hello() -> PathBuf {
    repo().join("examples/hello")
}

/// `dyno deploy DIR`: (success, the build's lines and the result, stderr).
fn deploy(up: &Up, dir: &Path) -> (bool, String, String) {
    let (ok, stdout, stderr) = up.cli_result(&["deploy", &dir.to_string_lossy(), "-a", APP]);
    (ok, format!("{stderr}{stdout}"), stderr)
}

#[test]
fn deploy_builds_hello_with_the_procfile_buildpack_and_serves_it() {
    let up = serve("build-hello", &[]);
    let (ok, out, err) = deploy(&up, &hello());
    assert!(ok, "{out}\n{err}\n{}", up.notes());
    for line in [
        "-----> Building on the Heroku-22 stack",
        "-----> Determining which buildpack to use for this app",
        "-----> Procfile app detected",
        "-----> Discovering process types",
        "       Procfile declares types -> web, worker",
        "-----> Launching...",
        "       Released v2",
        "       http://built.localhost:8080/ deployed to dyno",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    let answer = up.get_via_router("built.localhost", "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let list = builds(&up);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"], "succeeded");
    assert_eq!(list[0]["buildpacks"][0]["url"], "procfile");
    assert!(list[0]["release"]["id"].is_string(), "{list:?}");
    let (info, _) = up.cli_succeeds(&["builds:info", "-a", APP]);
    assert!(info.contains("Status:     succeeded"), "{info}");
    // The app's log says that it was built, as Heroku's does; the build dyno's own states
    // are not the app's.
    let (logs, _) = up.cli_succeeds(&["logs", "-a", APP]);
    assert!(
        logs.contains("app[api]: Build started by user dyno@localhost"),
        "{logs}"
    );
    assert!(logs.contains("app[api]: Build succeeded"), "{logs}");
    assert!(!logs.contains("[build.1]"), "{logs}");
    assert!(info.contains("-----> Procfile app detected"), "{info}");
    let current = releases(&up)
        .into_iter()
        .find(|r| r["current"] == true)
        .unwrap();
    assert_eq!(current["version"], 2);
    assert!(
        current["description"]
            .as_str()
            .unwrap()
            .starts_with("Deploy "),
        "{current}"
    );
}

#[test]
fn a_failed_compile_releases_nothing_and_the_old_release_keeps_serving() {
    let up = serve("build-fails", &[]);
    let (ok, out, err) = deploy(&up, &hello());
    assert!(ok, "{out}\n{err}");
    let bad = buildpack(&up, "broken", "echo 'compiling... boom'\nexit 3", "---");
    up.cli_succeeds(&["buildpacks:set", &bad.to_string_lossy(), "-a", APP]);
    let before = releases(&up);
    let (ok, out, err) = deploy(&up, &hello());
    assert!(!ok, "{out}");
    assert!(out.contains("compiling... boom"), "{out}");
    assert!(
        out.contains(" !     Push rejected, failed to compile broken app."),
        "{out}"
    );
    assert!(
        err.contains("the build failed; nothing was released"),
        "{err}"
    );
    assert_eq!(releases(&up), before);
    let answer = up.get_via_router("built.localhost", "/");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let list = builds(&up);
    assert_eq!(list.last().unwrap()["status"], "failed");
    let id = list.last().unwrap()["id"].as_str().unwrap().to_string();
    let (info, _) = up.cli_succeeds(&["builds:info", &id, "-a", APP]);
    assert!(info.contains("compiling... boom"), "{info}");
    assert!(info.contains("Status:     failed"), "{info}");
}

#[test]
fn a_build_that_never_ends_hits_the_timeout_and_leaves_no_process() {
    let up = serve("build-timeout", &["--build-timeout", "3s"]);
    let out = build_fails(&up, "forever", "echo started\nsleep 1000 & sleep 1000");
    assert!(out.contains("started"), "{out}");
    assert!(
        out.contains("Timed out compiling the app after 3 seconds: the build was stopped."),
        "{out}"
    );
    assert!(releases(&up).iter().all(|r| r["version"] == 1));
    assert!(
        processes_of(up.app_uid(APP)).is_empty(),
        "the build's processes are still there"
    );
}

#[test]
fn a_build_that_fills_its_disk_or_forks_without_end_is_held() {
    let up = serve(
        "build-held",
        &["--build-disk-mb", "64", "--build-size", "Standard-1X"],
    );
    let out = build_fails(
        &up,
        "filler",
        "dd if=/dev/zero of=$1/big bs=1M count=512 2>&1 || { echo disk full; exit 1; }",
    );
    assert!(out.contains("No space left on device"), "{out}");
    // The host's data dir got none of it: the build's disk was its own tmpfs, now gone.
    let workspaces = up.scratch.join("data/builds/run");
    let left: Vec<_> = std::fs::read_dir(&workspaces)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    let out = build_fails(
        &up,
        "forker",
        "set +e\nfor i in $(seq 1 400); do sleep 20 >/dev/null 2>&1 & done 2>&1 | tail -n 1\n\
         echo \"running: $(jobs -p | wc -l)\"\nexit 1",
    );
    assert!(
        out.contains("Resource temporarily unavailable"),
        "the process limit did not hold:\n{out}"
    );
    assert!(processes_of(up.app_uid(APP)).is_empty());
}

#[test]
fn the_cache_carries_over_and_profile_d_runs_at_every_dyno_start() {
    let up = serve("build-cache", &[]);
    let counter = buildpack(
        &up,
        "counter",
        "n=$(cat $2/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > $2/count\n\
         echo \"       build number $n\"\n\
         mkdir -p $1/.profile.d\n\
         echo 'export GREETING=hello-from-profile-d' > $1/.profile.d/greet.sh",
        "---\nconfig_vars:\n  BUILT_BY: counter\n  KEEP: theirs\n\
         default_process_types:\n  web: exec python3 web.py",
    );
    up.cli_succeeds(&["buildpacks:set", &counter.to_string_lossy(), "-a", APP]);
    up.cli_succeeds(&["config:set", "KEEP=mine", "-a", APP]);
    let app = app_dir("build-cache", "");
    std::fs::remove_file(app.join("Procfile")).unwrap();
    std::fs::write(
        app.join("web.py"),
        web_py("", "os.environ.get('GREETING', 'none')"),
    )
    .unwrap();
    let (ok, out, err) = deploy(&up, &app);
    assert!(ok, "{out}\n{err}\n{}", up.notes());
    assert!(out.contains("build number 1"), "{out}");
    assert!(out.contains("Default types for buildpack -> web"), "{out}");
    // The buildpack's config vars where the app has none of that name.
    let (config, _) = up.cli_succeeds(&["config", "-a", APP, "--json"]);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["BUILT_BY"], "counter", "{config}");
    assert_eq!(config["KEEP"], "mine", "{config}");
    let (ok, out, err) = deploy(&up, &app);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("build number 2"), "{out}");
    let answer = up.get_via_router("built.localhost", "/");
    assert!(answer.ends_with("hello-from-profile-d"), "{answer}");
    up.cli_succeeds(&["builds:cache:purge", "-a", APP]);
    let (ok, out, _) = deploy(&up, &app);
    assert!(ok);
    assert!(
        out.contains("build number 1"),
        "the purge kept the cache:\n{out}"
    );
}

#[test]
fn a_python_app_is_built_into_a_virtualenv_by_the_shipped_buildpack() {
    let up = serve("build-python", &[]);
    // Offline: the requirement is a package of the app itself, and pip looks at no index.
    up.cli_succeeds(&["config:set", "PIP_NO_INDEX=1", "-a", APP]);
    let app = app_dir("build-python", "web: python -m web\n");
    std::fs::write(app.join("requirements.txt"), "./localpkg\n").unwrap();
    std::fs::create_dir_all(app.join("localpkg/greeter")).unwrap();
    std::fs::write(
        app.join("localpkg/setup.py"),
        "from setuptools import setup\nsetup(name='greeter', version='1.0', packages=['greeter'])\n",
    )
    .unwrap();
    std::fs::write(
        app.join("localpkg/greeter/__init__.py"),
        "GREETING = 'hello from a virtualenv'\n",
    )
    .unwrap();
    std::fs::write(
        app.join("web.py"),
        web_py("import sys, greeter", "greeter.GREETING + ' ' + sys.prefix"),
    )
    .unwrap();
    let (ok, out, err) = deploy(&up, &app);
    assert!(ok, "{out}\n{err}\n{}", up.notes());
    assert!(out.contains("-----> Python app detected"), "{out}");
    assert!(out.contains("Successfully installed greeter"), "{out}");
    // `python` is the virtualenv's, put on PATH by the buildpack's .profile.d script.
    let answer = up.get_via_router("built.localhost", "/");
    assert!(
        answer.ends_with("hello from a virtualenv /app/.heroku/venv"),
        "{answer}"
    );
    // The second build reuses the cached virtualenv.
    let (ok, out, _) = deploy(&up, &app);
    assert!(ok, "{out}");
    assert!(out.contains("Requirements unchanged"), "{out}");
}

#[test]
fn a_slug_over_the_limit_and_a_second_build_at_once_are_refused() {
    let up = serve("build-limits", &["--max-slug-mb", "1"]);
    let out = build_fails(
        &up,
        "big",
        "head -c 3000000 /dev/urandom > $1/noise.bin\nsleep ${SLEEP:-0}",
    );
    assert!(
        out.contains(" !     Compiled slug size: ") && out.contains("is too large (max is 1M)."),
        "{out}"
    );
    assert!(releases(&up).iter().all(|r| r["version"] == 1));

    // While one build runs, a second one of the app is refused, naming the first.
    up.cli_succeeds(&["config:set", "SLEEP=5", "-a", APP]);
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["deploy", &hello().to_string_lossy(), "-a", APP])
        .env("DYNO_SOCKET", up.api_socket())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = poll_until(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(50),
        || {
            builds(&up)
                .into_iter()
                .find(|b| b["status"] == "pending")
                .ok_or_else(|| "no build is running".to_string())
        },
    );
    let (ok, _, err) = deploy(&up, &hello());
    assert!(!ok);
    assert!(
        err.contains("a build of built is running already")
            && err.contains(running["id"].as_str().unwrap()),
        "{err}"
    );
    let _ = first.wait();
}

/// The mounts whose mount point is under `dir` (a build's workspace is one while it runs).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&dir)))
        // The daemon's mount namespace template (beside its state root) is not a build's.
        .filter(|l| !l.contains(".mount-template."))
        .map(str::to_string)
        .collect()
}

/// The `nth` build under way, in the background, of a buildpack that sleeps; returns once it
/// runs and has printed its first line.
fn start_sleeping_build(up: &Up, nth: usize) -> std::process::Child {
    let bp = buildpack(up, "sleeper", "echo sleeping\nsleep 1000", "---");
    up.cli_succeeds(&["buildpacks:set", &bp.to_string_lossy(), "-a", APP]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["deploy", &hello().to_string_lossy(), "-a", APP])
        .env("DYNO_SOCKET", up.api_socket())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    poll_until(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(50),
        || {
            // Running, and its first line out (the daemon writes the output through to a
            // file as it comes).
            let printed = std::fs::read_dir(up.scratch.join("data/builds/output"))
                .map(|dir| {
                    dir.flatten()
                        .filter(|f| {
                            std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("sleeping"))
                        })
                        .count()
                        >= nth
                })
                .unwrap_or(false);
            (printed
                && !processes_of(up.app_uid(APP)).is_empty()
                && !mounts_under(&up.scratch).is_empty())
            .then_some(())
            .ok_or_else(|| "the build did not start".to_string())
        },
    );
    child
}

#[test]
fn a_daemon_that_stops_or_dies_during_a_build_fails_it_and_leaves_nothing() {
    let mut up = serve("build-interrupted", &[]);
    // Stopped: the build stops with it.
    let mut client = start_sleeping_build(&up, 1);
    up.interrupt();
    let _ = client.wait();
    assert!(processes_of(up.app_uid(APP)).is_empty());
    assert!(
        mounts_under(&up.scratch).is_empty(),
        "{:?}",
        mounts_under(&up.scratch)
    );
    up.restart_serve(&["--boot-timeout", "20s", "--stop-grace", "2s"]);
    up.wait_api();
    let list = builds(&up);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "failed");
    let (info, _) = up.cli_succeeds(&["builds:info", "-a", APP]);
    assert!(info.contains("The dyno daemon is stopping"), "{info}");

    // Killed: the next daemon fails the build, stops its dyno and removes its workspace.
    let mut client = start_sleeping_build(&up, 2);
    // What nothing refers to goes too: an upload (slots live in the daemon's memory), the
    // cache and repository of an app that is gone.
    let data = up.scratch.join("data");
    let orphans = [
        data.join("builds/sources/0123abcd.tar"),
        data.join("builds/cache/00000000-0000-4000-8000-000000000000/pip"),
        data.join("git/00000000-0000-4000-8000-000000000000.git/HEAD"),
        data.join("builds/output/00000000-0000-4000-8000-000000000000.log"),
    ];
    for file in &orphans {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, "left behind").unwrap();
    }
    up.kill_and_restart_serve(&["--boot-timeout", "20s", "--stop-grace", "2s"]);
    up.wait_api();
    let _ = client.wait();
    poll_until(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(100),
        || {
            (processes_of(up.app_uid(APP)).is_empty() && mounts_under(&up.scratch).is_empty())
                .then_some(())
                .ok_or_else(|| "the killed daemon's build is still there".to_string())
        },
    );
    let list = builds(&up);
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["status"], "failed");
    let (info, _) = up.cli_succeeds(&["builds:info", "-a", APP]);
    assert!(info.contains("sleeping"), "{info}");
    for file in &orphans {
        assert!(!file.exists(), "{} was left", file.display());
    }
    assert!(
        info.contains("the dyno daemon stopped while it ran"),
        "{info}"
    );
}

#[test]
fn destroying_an_app_stops_its_build_and_leaves_nothing() {
    let up = serve("build-destroyed", &[]);
    let mut client = start_sleeping_build(&up, 1);
    let started = std::time::Instant::now();
    up.cli_succeeds(&["apps:destroy", APP, "--confirm", APP]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the build held the destroy for {:?}",
        started.elapsed()
    );
    let _ = client.wait();
    assert!(processes_of(up.app_uid(APP)).is_empty());
    assert!(
        mounts_under(&up.scratch).is_empty(),
        "{:?}",
        mounts_under(&up.scratch)
    );
    let outputs: Vec<_> = std::fs::read_dir(up.scratch.join("data/builds/output"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(outputs.is_empty(), "{outputs:?}");
    // The name is free again, with nothing of the old app's builds.
    up.cli_succeeds(&["apps:create", APP]);
    assert!(builds(&up).is_empty());
}
