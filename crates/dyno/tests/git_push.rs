//! `git push` deploys (privileged: run as root), as on Heroku: a daemon whose API is served over
//! TLS (a test CA), Heroku's CLI setting up the remote and its credential helper
//! (`heroku git:remote -a APP`), and the system's `git` pushing `examples/hello` to it. The
//! push builds and releases the commit and shows the build's lines as `remote: …`; the app
//! answers through the router; pushing again changes nothing; a changed file rolls the dynos.
//! Another branch, a wrong token, an unknown app, a push with no files and an app no buildpack
//! detects are refused in Heroku's words, and release nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dyno_net::ns;
use support::heroku::*;
use support::*;

/// A work tree in the CLI's home (removed with it).
fn work_tree(h: &Heroku, name: &str) -> PathBuf {
    let dir = h.home.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `examples/hello` in a new repository with one commit on `main`.
fn hello_repo(h: &Heroku, name: &str) -> PathBuf {
    let dir = work_tree(h, name);
    for file in ["Procfile", "web.py", "README.md"] {
        std::fs::copy(repo().join("examples/hello").join(file), dir.join(file)).unwrap();
    }
    git_ok(h, &dir, &["init", "--quiet", "--initial-branch=main"]);
    git_ok(h, &dir, &["add", "."]);
    git_ok(h, &dir, &["commit", "--quiet", "-m", "hello"]);
    dir
}

/// A buildpack that takes its time (8 s), then fails the build.
fn slow_buildpack(h: &Heroku) -> PathBuf {
    let dir = h.up.scratch.join("buildpacks/slow");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    for (script, body) in [
        ("detect", "echo slow"),
        ("compile", "echo 'taking my time'; sleep 8; exit 1"),
        ("release", "echo '---'"),
    ] {
        let path = dir.join("bin").join(script);
        std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    dir
}

/// `git ARGS` in `dir`, in the daemon's namespace, as a user of Heroku's CLI would run it: the
/// CLI's home (its global git config holds the credential helper `heroku git:remote` set),
/// the CLI on PATH for that helper, `HEROKU_API_KEY`, and the test CA for https.
fn git(h: &Heroku, dir: &Path, token: &str, args: &[&str]) -> Command {
    let path = format!(
        "{}:{}",
        h.bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("git");
    c.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &h.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSL_CAINFO", h.tls_ca())
        .env("GIT_AUTHOR_NAME", "Tester")
        .env("GIT_AUTHOR_EMAIL", "tester@example.com")
        .env("GIT_COMMITTER_NAME", "Tester")
        .env("GIT_COMMITTER_EMAIL", "tester@example.com")
        .env("HEROKU_HOST", &h.api_url)
        .env("HEROKU_API_KEY", token)
        .env("DISABLE_TELEMETRY", "true")
        .env("HEROKU_SKIP_NEW_VERSION_CHECK", "true")
        .env("NO_COLOR", "1");
    ns::command_in(&mut c, h.up.lab.host.netns(), None).unwrap();
    c
}

/// (success, stdout and stderr together).
fn run(mut c: Command) -> (bool, String) {
    let out = c.output().expect("run git (apt-get install git)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn git_ok(h: &Heroku, dir: &Path, args: &[&str]) -> String {
    let (ok, out) = run(git(h, dir, TOKEN, args));
    assert!(ok, "git {args:?}:\n{out}\n--- daemon:\n{}", h.up.notes());
    out
}

fn push(h: &Heroku, dir: &Path, args: &[&str]) -> (bool, String) {
    push_with(h, dir, TOKEN, args)
}

fn push_with(h: &Heroku, dir: &Path, token: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["push"];
    all.extend_from_slice(args);
    run(git(h, dir, token, &all))
}

/// The release with the highest version.
fn newest(listed: &[serde_json::Value]) -> &serde_json::Value {
    listed
        .iter()
        .max_by_key(|r| r["version"].as_u64())
        .expect("a release")
}

/// The app's releases (`heroku releases --json`: newest first).
fn releases(h: &Heroku, app: &str) -> Vec<serde_json::Value> {
    let out = h.ok(&["releases", "-a", app, "--json"]);
    let start = out.find('[').unwrap_or(0);
    serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `heroku git:remote -a APP` in `dir`: the remote `heroku` and the credential helper.
fn add_remote(h: &Heroku, dir: &Path, app: &str) {
    let mut c = h.command(&["git:remote", "-a", app]);
    c.current_dir(dir);
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "heroku git:remote:\n{text}");
    contains(
        &text,
        &format!("set git remote heroku to https://127.0.0.1:{API_PORT}/{app}.git"),
    );
}

/// The web dyno's answer through the router, once it says `expected` (a rolled dyno may take
/// a moment to come up).
fn wait_serves(h: &Heroku, app: &str, expected: &str) -> String {
    poll_until(Duration::from_secs(40), Duration::from_millis(250), || {
        let answer = h.up.get_via_router(&format!("{app}.localhost"), "/");
        (answer.starts_with("HTTP/1.1 200") && answer.contains(expected))
            .then_some(answer.clone())
            .ok_or(answer)
    })
}

#[test]
fn git_push_builds_releases_and_rolls_the_dynos() {
    let h = Heroku::start_tls("git-push");
    // Created with dyno's CLI: it prints the git URL the daemon serves.
    let (created, _) = h.up.cli_succeeds(&["apps:create", APP]);
    contains(
        &created,
        &format!("http://{APP}.localhost:8080/ | https://127.0.0.1:{API_PORT}/{APP}.git"),
    );
    let info = h.ok(&["apps:info", "-a", APP, "--json"]);
    contains(
        &info,
        &format!("\"git_url\": \"https://127.0.0.1:{API_PORT}/{APP}.git\""),
    );
    let dir = hello_repo(&h, "hello");
    add_remote(&h, &dir, APP);

    let (ok, out) = push(&h, &dir, &["heroku", "main"]);
    assert!(ok, "{out}\n--- daemon:\n{}", h.up.notes());
    for line in [
        "remote: Compressing source files... done.",
        "remote: Building source:",
        "remote: -----> Procfile app detected",
        "remote: -----> Launching...",
        "remote:        Released v2",
        &format!("remote:        http://{APP}.localhost:8080/ deployed to dyno"),
        "remote: Verifying deploy... done.",
    ] {
        assert!(
            out.lines().any(|l| l.trim_end() == line),
            "no {line:?} in:\n{out}"
        );
    }
    contains(&out, " * [new branch]      main -> main");
    wait_serves(&h, APP, "Hello from web.1");
    let sha = git_ok(&h, &dir, &["rev-parse", "HEAD"]).trim().to_string();
    let listed = releases(&h, APP);
    assert_eq!(newest(&listed)["version"], 2, "{listed:?}");
    contains(
        newest(&listed)["description"].as_str().unwrap(),
        &format!("Deploy {}", &sha[..7]),
    );

    // Heroku's CLI reads the log over the TLS API too (its log session's URL is https).
    let logs = h.ok(&["logs", "-a", APP, "-n", "50"]);
    contains(&logs, "app[api]: Build succeeded");

    // Again: nothing to build.
    let (ok, out) = push(&h, &dir, &["heroku", "main"]);
    assert!(ok, "{out}");
    contains(&out, "Everything up-to-date");
    assert_eq!(releases(&h, APP).len(), listed.len());

    // A changed file: a new release, and the dynos serve it.
    let web = std::fs::read_to_string(dir.join("web.py")).unwrap();
    std::fs::write(
        dir.join("web.py"),
        web.replace(r#"get("GREETING", "Hello")"#, r#"get("GREETING", "Howdy")"#),
    )
    .unwrap();
    git_ok(&h, &dir, &["commit", "--quiet", "-am", "howdy"]);
    let (ok, out) = push(&h, &dir, &["heroku", "main"]);
    assert!(ok, "{out}\n--- daemon:\n{}", h.up.notes());
    contains(&out, "remote:        Released v3");
    wait_serves(&h, APP, "Howdy from web.1");
    let sha = git_ok(&h, &dir, &["rev-parse", "HEAD"]).trim().to_string();
    let listed = releases(&h, APP);
    assert_eq!(newest(&listed)["version"], 3);
    contains(
        newest(&listed)["description"].as_str().unwrap(),
        &format!("Deploy {}", &sha[..7]),
    );

    // Another branch: refused in Heroku's words; so is deleting main.
    let (ok, out) = push(&h, &dir, &["heroku", "main:feature"]);
    assert!(!ok, "{out}");
    contains(
        &out,
        "remote: Pushed to branch other than [main, master], skipping build.",
    );
    contains(
        &out,
        "! [remote rejected] main -> feature (pre-receive hook declined)",
    );
    let (ok, out) = push(&h, &dir, &["heroku", ":main"]);
    assert!(!ok, "{out}");
    contains(&out, "remote: !\tPush rejected, cannot delete main branch");

    // A wrong API key: git's credential helper hands it over, and the daemon refuses it.
    let (ok, out) = push_with(&h, &dir, "not-the-token-at-all", &["heroku", "main"]);
    assert!(!ok, "{out}");
    contains(
        &out,
        "remote: !\tDo not authenticate with username and password using git.",
    );
    contains(
        &out,
        &format!("fatal: Authentication failed for 'https://127.0.0.1:{API_PORT}/{APP}.git/'"),
    );
    // An app that does not exist.
    let (ok, out) = push(
        &h,
        &dir,
        &[
            &format!("https://127.0.0.1:{API_PORT}/no-such-app.git"),
            "main",
        ],
    );
    assert!(!ok, "{out}");
    contains(&out, "remote: !\tNo such app as no-such-app.");
    contains(
        &out,
        &format!("fatal: repository 'https://127.0.0.1:{API_PORT}/no-such-app.git/' not found"),
    );
    assert_eq!(
        releases(&h, APP),
        listed,
        "the refused pushes released nothing"
    );
    wait_serves(&h, APP, "Howdy from web.1");

    // A renamed app keeps its repository, under its new name.
    h.ok(&["apps:rename", "renamed-app", "-a", APP]);
    let renamed = format!("https://127.0.0.1:{API_PORT}/renamed-app.git");
    let (ok, out) = push(&h, &dir, &[&renamed, "main"]);
    assert!(ok, "{out}");
    contains(&out, "Everything up-to-date");

    // The repository goes with its app.
    let repos = h.up.scratch.join("data/git");
    let count = || {
        std::fs::read_dir(&repos)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".git")
            })
            .count()
    };
    assert_eq!(count(), 1);
    h.ok(&[
        "apps:destroy",
        "-a",
        "renamed-app",
        "--confirm",
        "renamed-app",
    ]);
    assert_eq!(count(), 0);
}

#[test]
fn pushes_with_nothing_to_run_release_nothing() {
    let h = Heroku::start_tls("git-push-empty");
    h.up.cli_succeeds(&["apps:create", APP]);

    // No commit at all: git has nothing to push.
    let empty = work_tree(&h, "empty");
    git_ok(&h, &empty, &["init", "--quiet", "--initial-branch=main"]);
    add_remote(&h, &empty, APP);
    let (ok, out) = push(&h, &empty, &["heroku", "main"]);
    assert!(!ok, "{out}");
    contains(&out, "src refspec main does not match any");

    // A commit with no files: the build refuses it.
    git_ok(
        &h,
        &empty,
        &["commit", "--quiet", "--allow-empty", "-m", "nothing"],
    );
    let (ok, out) = push(&h, &empty, &["heroku", "main"]);
    assert!(!ok, "{out}");
    contains(&out, "remote:  !     Push rejected");
    contains(&out, &format!("remote: !\tPush rejected to {APP}."));
    contains(
        &out,
        "! [remote rejected] main -> main (pre-receive hook declined)",
    );

    // No Procfile, and no buildpack that knows the app.
    let bare = work_tree(&h, "no-procfile");
    std::fs::write(bare.join("README.md"), "just words\n").unwrap();
    git_ok(&h, &bare, &["init", "--quiet", "--initial-branch=main"]);
    git_ok(&h, &bare, &["add", "."]);
    git_ok(&h, &bare, &["commit", "--quiet", "-m", "words"]);
    add_remote(&h, &bare, APP);
    let (ok, out) = push(&h, &bare, &["heroku", "main"]);
    assert!(!ok, "{out}");
    contains(&out, "remote: Building source:");
    contains(
        &out,
        "! [remote rejected] main -> main (pre-receive hook declined)",
    );

    // While another build of the app runs, a push is refused with the daemon's reason.
    let slow = slow_buildpack(&h);
    h.up.cli_succeeds(&["buildpacks:set", &slow.to_string_lossy(), "-a", APP]);
    let other = std::thread::spawn({
        let (socket, hello) = (h.up.api_socket(), repo().join("examples/hello"));
        move || {
            Command::new(env!("CARGO_BIN_EXE_dyno"))
                .args(["deploy", &hello.to_string_lossy(), "-a", APP])
                .env("DYNO_SOCKET", socket)
                .output()
                .unwrap()
        }
    });
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let (out, _) = h.up.cli_succeeds(&["builds", "-a", APP, "--json"]);
        out.contains("\"pending\"").then_some(()).ok_or(out)
    });
    let hello = hello_repo(&h, "hello");
    add_remote(&h, &hello, APP);
    let (ok, out) = push(&h, &hello, &["heroku", "main"]);
    assert!(!ok, "{out}");
    contains(
        &out,
        &format!("remote:  !     a build of {APP} is running already"),
    );
    contains(
        &out,
        "! [remote rejected] main -> main (pre-receive hook declined)",
    );
    let deployed = other.join().unwrap();
    assert!(
        !deployed.status.success(),
        "the slow buildpack fails its build"
    );

    let listed = releases(&h, APP);
    assert_eq!(listed.len(), 1, "only the app's first release: {listed:?}");
    // The refused pushes left the repository without main.
    let (ok, out) = run(git(&h, &bare, TOKEN, &["ls-remote", "heroku"]));
    assert!(ok, "{out}");
    assert!(!out.contains("refs/heads/main"), "{out}");
}
