//! Attached one-offs (privileged: run as root): Heroku's own `heroku run` against a real
//! `dyno serve`, attaching through the daemon's rendezvous (TLS, its own CA trusted with
//! `NODE_EXTRA_CA_CERTS`), with and without a terminal, and dyno's `dyno run` on the same API.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dyno_net::ns;
use support::heroku::*;
use support::*;

/// A daemon with APP deployed (`examples/hello`).
fn deployed(tag: &str) -> Heroku {
    let h = Heroku::start(tag);
    h.ok(&["apps:create", APP]);
    let dir = repo().join("examples/hello");
    h.up.cli_succeeds(&["deploy", dir.to_str().unwrap(), "-a", APP]);
    h
}

/// What a command did on a terminal (see support/pty_session.py).
struct Session {
    code: i32,
    output: String,
    /// Seconds from the start to each `expect` step met.
    times: Vec<f64>,
}

/// `heroku ARGS…` on a terminal of 120×40 driven by `steps`.
fn on_terminal(h: &Heroku, steps: &[&str], args: &[&str]) -> Session {
    session(h, h.command(args), steps)
}

/// `command` (made to run in the daemon's namespace) on a terminal of 120×40 driven by `steps`.
fn session(h: &Heroku, inner: Command, steps: &[&str]) -> Session {
    let script = repo().join("crates/dyno/tests/support/pty_session.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(["120", "40"])
        .args(steps)
        .arg("--");
    command.arg(inner.get_program()).args(inner.get_args());
    command.env_clear();
    for (key, value) in inner.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    if command.get_envs().all(|(k, _)| k != "PATH") {
        command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    }
    command.env("TERM", "xterm");
    ns::command_in(&mut command, h.up.lab.host.netns(), None).unwrap();
    let out = command.output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pty_session: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let output = report["output"].as_str().unwrap_or_default().to_string();
    let Some(code) = report["code"].as_i64() else {
        panic!(
            "{inner:?} on a terminal: {}\n{output}\n--- daemon:\n{}",
            report["error"],
            h.up.notes()
        );
    };
    let times = report["times"]
        .as_array()
        .map(|t| t.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    Session {
        code: code as i32,
        output,
        times,
    }
}

fn app_log(h: &Heroku) -> String {
    h.up.cli_succeeds(&["logs", "-a", APP, "-n", "1500"]).0
}

#[test]
fn heroku_run_on_a_terminal_types_into_the_dyno_and_ctrl_c_reaches_it() {
    require_root();
    let h = deployed("hrun-tty");
    // `cat` echoes a typed line (the dyno's terminal echoes it too), Ctrl-C ends it.
    let Session { code, output, .. } = on_terminal(
        &h,
        &[
            "expect:up, run.1",
            "send:stty size; tty >/dev/null && echo on-a-tty; exec cat\r",
            "expect:40 120",
            "expect:on-a-tty",
            "send:hello dyno\r",
            "expect:hello dyno",
            "expect:hello dyno",
            "send:\\x03",
        ],
        &["run", "-a", APP, "--", "bash"],
    );
    assert_eq!(code, 0, "{output}");
    poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let log = app_log(&h);
        // 128 + SIGINT: the terminal's Ctrl-C reached the app.
        log.contains("heroku[run.1]: Process exited with status 130")
            .then_some(())
            .ok_or(log)
    });

    // 100,000 lines through the terminal arrive whole and in order.
    let Session { code, output, .. } = on_terminal(
        &h,
        &["expect:100000"],
        &["run", "-a", APP, "--", "seq 1 100000"],
    );
    assert_eq!(code, 0);
    // The dyno's terminal ends lines with \r\n, ours adds a \r of its own.
    let numbers: Vec<&str> = output
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(
        numbers.len(),
        100_000,
        "{}",
        &output[..output.len().min(2000)]
    );
    assert!(numbers
        .iter()
        .enumerate()
        .all(|(i, l)| *l == (i + 1).to_string()));

    // `--exit-code` on a terminal: the one-off's status is the CLI's.
    let Session { code, output, .. } = on_terminal(
        &h,
        &["expect:up, run.3"],
        &["run", "--exit-code", "-a", APP, "--", "echo bye; exit 3"],
    );
    assert_eq!(code, 3, "{output}");
    assert!(output.contains("bye"), "{output}");
}

#[test]
fn heroku_run_without_a_terminal_carries_stdin_output_and_exit_status() {
    require_root();
    let h = deployed("hrun-pipes");

    // --exit-code: the status of the command, also when it `exit`s its shell.
    let (code, out, err) = h.run_with(TOKEN, &["run", "--exit-code", "-a", APP, "--", "exit 3"]);
    assert_eq!(code, 3, "{out}{err}");
    let out = h.ok(&["run", "--exit-code", "-a", APP, "--", "echo out-$DYNO"]);
    contains(&out, "out-run.2");

    // --size: Heroku's sizes, as typed; others refused.
    h.ok(&[
        "run:detached",
        "--size=performance-m",
        "-a",
        APP,
        "--",
        "sleep 30",
    ]);
    contains(&h.ok(&["ps", "-a", APP]), "run.3 (Performance-M): ");
    let (_, refused) = h.fails(&["run", "--size=Huge-9X", "-a", APP, "--", "true"]);
    contains(&refused, "Huge-9X");

    // stdin reaches the dyno, and its end is the dyno's end of input.
    let mut cat = h.command(&["run", "-a", APP, "--", "cat"]);
    let mut cat = cat
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin
        .take()
        .unwrap()
        .write_all(b"typed into the dyno\n")
        .unwrap();
    let done = cat.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "typed into the dyno\n",
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    // 100,000 lines arrive whole and in order.
    let started = Instant::now();
    let out = h
        .command(&["run", "-a", APP, "--", "seq 1 100000"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        100_000,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lines
        .iter()
        .enumerate()
        .all(|(i, l)| *l == (i + 1).to_string()));
    eprintln!("heroku run: 100,000 lines in {took:?}");
}

#[test]
fn a_one_off_ends_when_its_client_leaves() {
    require_root();
    let h = deployed("hrun-leave");
    let mut client = h
        .command(&["run", "-a", APP, "--", "echo attached; sleep 600"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The one-off's first output has come through: the client is attached (it may be up
    // before the client has claimed it).
    let mut first = [0u8; 8];
    std::io::Read::read_exact(client.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(&first, b"attached");
    let one_off_up = || {
        let dynos = h.dyno_json(&["ps", "-a", APP, "--json"]);
        dynos
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "run.1" && d["state"] == "up")
    };
    assert!(one_off_up());
    client.kill().unwrap();
    client.wait().unwrap();
    poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let log = app_log(&h);
        (log.contains("heroku[run.1]: Client connection closed") && !one_off_up())
            .then_some(())
            .ok_or(log)
    });
}

#[test]
fn dyno_run_gives_the_one_offs_output_and_status() {
    require_root();
    let h = deployed("dyno-run");
    let out =
        h.up.cli(&["run", "-a", APP, "--", "sh -c 'echo out; exit 7'"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let out = h.up.cli(&["run", "-a", APP, "--", "seq 1 5000"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 5000);
    assert_eq!(text.lines().last(), Some("5000"));
    // Its stdin is ours.
    let mut cat = Command::new(env!("CARGO_BIN_EXE_dyno"));
    cat.args(["run", "-a", APP, "--", "tr a-z A-Z"])
        .env("DYNO_SOCKET", h.up.api_socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut cat = cat.spawn().unwrap();
    cat.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let done = cat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout), "SHOUT\n");
    // run:detached: the output goes to the log.
    let (out, _) =
        h.up.cli_succeeds(&["run:detached", "-a", APP, "--", "echo to-the-log"]);
    contains(&out, "run.4");
    poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let log = app_log(&h);
        log.contains("app[run.4]: to-the-log")
            .then_some(())
            .ok_or(log)
    });
}

#[test]
fn a_one_off_nobody_attaches_to_is_stopped_with_r13() {
    require_root();
    let h = Heroku::start_with("hrun-r13", &["--attach-window", "2s"]);
    h.ok(&["apps:create", APP]);
    let dir = repo().join("examples/hello");
    h.up.cli_succeeds(&["deploy", dir.to_str().unwrap(), "-a", APP]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = dyno_api::ApiClient::unix(h.up.api_socket());
    let body = dyno_api::DynoCreate {
        command: "sleep 600".into(),
        attach: Some(true),
        ..Default::default()
    };
    let dyno = runtime.block_on(api.run_with(APP, &body)).unwrap();
    let url = dyno.attach_url.unwrap();
    assert!(url.starts_with("rendezvous://127.0.0.1:"), "{url}");
    let secret = url.rsplit('/').next().unwrap().to_string();
    poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let log = app_log(&h);
        let stopped = log.contains(&format!(
            "heroku[{}]: Error R13 (Attach error) -> Failed to attach to process",
            dyno.name
        )) && log.contains(&format!(
            "heroku[{}]: State changed from up to down",
            dyno.name
        ));
        stopped.then_some(()).ok_or(log)
    });
    // Its secret is spent: a late client is told why.
    let late = runtime.block_on(api.attach(&secret, false)).err().unwrap();
    assert!(late.to_string().contains("Run the command again"), "{late}");
}

/// Time from the command to the remote shell's prompt: `heroku run bash` (API over TCP, TLS
/// rendezvous) against `dyno run -- bash` (API and attach over the unix socket), alternated in
/// one run. Printed (`--no-capture`), not asserted: a figure for the issue's closing note.
#[test]
fn heroku_run_and_dyno_run_reach_a_prompt_on_a_terminal() {
    require_root();
    let h = deployed("hrun-prompt");
    let prompt = ["expect::~$ ", "send:exit\\r"];
    let (mut heroku, mut dyno) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let s = on_terminal(&h, &prompt, &["run", "-a", APP, "--", "bash"]);
        assert_eq!(s.code, 0, "{}", s.output);
        heroku.push(s.times[0]);
        let mut ours = Command::new(env!("CARGO_BIN_EXE_dyno"));
        ours.args(["run", "-a", APP, "--", "bash"])
            .env("DYNO_SOCKET", h.up.api_socket());
        let s = session(&h, ours, &prompt);
        assert_eq!(s.code, 0, "{}", s.output);
        dyno.push(s.times[0]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (heroku, dyno) = (median(&mut heroku), median(&mut dyno));
    eprintln!(
        "time to the prompt (median of 3): heroku run {heroku:.3} s, dyno run {dyno:.3} s, \
         ratio {:.2}",
        heroku / dyno
    );
}

#[test]
fn a_restarted_daemon_does_not_keep_an_attached_one_off() {
    require_root();
    let mut h = deployed("hrun-restart");
    // Pipes, and a command that ignores SIGHUP: it outlives the daemon's death, so the next
    // daemon finds it running and must end it (its client cannot come back).
    let mut client = h
        .command(&["run", "--no-tty", "-a", APP, "--", "trap '' HUP; sleep 600"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uid = h.up.app_uid(APP);
    let sleeping = || {
        processes_of(uid).into_iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x00600"))
        })
    };
    poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        sleeping()
            .then_some(())
            .ok_or("the one-off's sleep never ran".to_string())
    });
    h.up.kill_and_restart_serve(&["--stop-grace", "3s"]);
    h.up.wait_api();
    poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let dynos = h.dyno_json(&["ps", "-a", APP, "--json"]);
        let gone = !sleeping() && !dynos.to_string().contains("run.1");
        gone.then_some(())
            .ok_or(format!("run.1 still there: {dynos}"))
    });
    let _ = client.kill();
    let _ = client.wait();
}
