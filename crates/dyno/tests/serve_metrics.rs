//! `dyno serve`'s runtime metrics end to end (privileged: run as root): Heroku's labs feature
//! `log-runtime-metrics` (load and memory lines in the app's log, switched with `dyno
//! labs:enable/disable`), and the per-dyno series of `GET /metrics` (listen queue, backlog,
//! restarts). Each test runs its own daemon in its own lab; dropping it stops the daemon, which
//! stops the dynos, also when an assertion fails.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::*;

/// The daemon samples every second instead of Heroku's 20 s.
const SERVE_ARGS: [&str; 6] = [
    "--boot-timeout",
    "20s",
    "--stop-grace",
    "5s",
    "--runtime-metrics-interval",
    "1s",
];

/// `dyno ARGS…` against the test's daemon: (success, stdout, stderr).
fn cli(up: &Up, args: &[&str]) -> (bool, String, String) {
    up.cli_result(args)
}

fn cli_ok(up: &Up, args: &[&str]) -> (String, String) {
    up.cli_succeeds(args)
}

/// A daemon with app `app` created and `dir` deployed; returns once `web.1` is up.
fn serve_app(tag: &str, app: &str, dir: &std::path::Path) -> Up {
    let up = Up::serve(tag, &SERVE_ARGS);
    up.wait_api();
    cli_ok(&up, &["apps:create", app]);
    cli_ok(&up, &["deploy", &dir.to_string_lossy(), "-a", app]);
    wait_up(&up, app, "web.1");
    up
}

/// Waits until `dyno` of `app` is up.
fn wait_up(up: &Up, app: &str, dyno: &str) {
    poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let (json, _) = cli_ok(up, &["ps", "-a", app, "--json"]);
        let list: serde_json::Value = serde_json::from_str(&json).unwrap();
        let up_now = list
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == dyno && d["state"] == "up");
        up_now.then_some(()).ok_or(format!("{dyno} not up: {json}"))
    });
}

/// The app's `heroku[web.1]` runtime-metrics lines so far (without their timestamps).
fn sample_lines(up: &Up, app: &str) -> Vec<String> {
    let (logs, _) = cli_ok(
        up,
        &[
            "logs", "-a", app, "--ps", "web.1", "--source", "heroku", "-n", "1500",
        ],
    );
    messages(&logs)
        .into_iter()
        .filter(|l| l.starts_with("heroku[web.1]: source=web.1 dyno=heroku."))
        .collect()
}

/// `12.34MB` → 12.34.
fn megabytes(value: &str) -> f64 {
    value
        .strip_suffix("MB")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a MB value: {value}"))
}

/// The value of the series line that starts with `series ` (name and labels), if there is one.
fn series_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Whether this host's memory controller is on cgroup v1 (which counts page-ins/outs).
fn memory_cgroup_v1() -> bool {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
}

#[test]
fn runtime_metrics_lines_follow_the_labs_switch() {
    let mut up = serve_app("rtmetrics", "metered", &repo().join("examples/hello"));

    let (listed, _) = cli_ok(&up, &["labs", "-a", "metered"]);
    assert!(
        listed.starts_with("=== ⬢ metered Features\n[ ] log-runtime-metrics  "),
        "{listed}"
    );
    // Off: no sample lines, even after a few sampling periods.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sample_lines(&up, "metered"), Vec::<String>::new());

    let (done, progress) = cli_ok(
        &up,
        &["labs:enable", "log-runtime-metrics", "-a", "metered"],
    );
    assert_eq!(
        format!("{progress}{done}"),
        "Enabling log-runtime-metrics for metered... done\n"
    );
    let (json, _) = cli_ok(&up, &["labs", "-a", "metered", "--json"]);
    let features: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(features[0]["name"], "log-runtime-metrics", "{json}");
    assert_eq!(features[0]["enabled"], true, "{json}");
    assert!(
        features[0]["description"]
            .as_str()
            .unwrap()
            .contains("load"),
        "{json}"
    );

    // Both lines, per dyno, from the dyno's cgroup.
    let (load, memory) = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let lines = sample_lines(&up, "metered");
        let load = lines
            .iter()
            .rev()
            .find(|l| l.contains(" sample#load_avg_1m="));
        let memory = lines
            .iter()
            .rev()
            .find(|l| l.contains(" sample#memory_rss="));
        match (load, memory) {
            (Some(l), Some(m)) => Ok((l.clone(), m.clone())),
            _ => Err(format!("no sample lines yet:\n{}", lines.join("\n"))),
        }
    });
    assert_eq!(
        shape(
            &load,
            &[
                "dyno",
                "sample#load_avg_1m",
                "sample#load_avg_5m",
                "sample#load_avg_15m"
            ]
        ),
        "heroku[web.1]: source=web.1 dyno=* sample#load_avg_1m=* sample#load_avg_5m=* \
         sample#load_avg_15m=*"
    );
    for key in [
        "sample#load_avg_1m",
        "sample#load_avg_5m",
        "sample#load_avg_15m",
    ] {
        let v: f64 = value(&load, key).parse().unwrap();
        // An idle web dyno: a handful of tasks at most.
        assert!((0.0..50.0).contains(&v), "{key} in {load}");
    }
    let mut keys = vec![
        "dyno",
        "sample#memory_total",
        "sample#memory_rss",
        "sample#memory_cache",
        "sample#memory_swap",
    ];
    let paging = memory_cgroup_v1();
    if paging {
        keys.extend(["sample#memory_pgpgin", "sample#memory_pgpgout"]);
    }
    keys.push("sample#memory_quota");
    let expected = if paging {
        "heroku[web.1]: source=web.1 dyno=* sample#memory_total=* sample#memory_rss=* \
         sample#memory_cache=* sample#memory_swap=* sample#memory_pgpgin=* \
         sample#memory_pgpgout=* sample#memory_quota=*"
    } else {
        "heroku[web.1]: source=web.1 dyno=* sample#memory_total=* sample#memory_rss=* \
         sample#memory_cache=* sample#memory_swap=* sample#memory_quota=*"
    };
    assert_eq!(shape(&memory, &keys), expected);
    // A Python web server: a few MB of its own memory, within a Standard-1X's 512 MB.
    let rss = megabytes(value(&memory, "sample#memory_rss"));
    assert!((1.0..512.0).contains(&rss), "{memory}");
    assert!(
        megabytes(value(&memory, "sample#memory_total")) >= rss,
        "{memory}"
    );
    assert_eq!(value(&memory, "sample#memory_quota"), "512.00MB");
    if paging {
        let pages = value(&memory, "sample#memory_pgpgin");
        let pages: u64 = pages.strip_suffix("pages").unwrap().parse().unwrap();
        assert!(pages > 0, "{memory}");
    }
    // dyno=heroku.<app id>.<the dyno's uuid>: the uuid is the dyno's hostname.
    let answer = up.get_via_router("metered.localhost", "/");
    let hostname = answer
        .lines()
        .find_map(|l| l.strip_prefix("hostname: "))
        .unwrap_or_else(|| panic!("no hostname in {answer}"));
    let dyno = value(&memory, "dyno");
    let (app_id, uuid) = dyno
        .strip_prefix("heroku.")
        .and_then(|rest| rest.split_once('.'))
        .unwrap_or_else(|| panic!("dyno= is not heroku.<app id>.<uuid>: {dyno}"));
    assert!(app_id.parse::<u64>().is_ok(), "{dyno}");
    assert_eq!(uuid, hostname.trim(), "{dyno}");
    assert_eq!(value(&load, "dyno"), dyno);

    // A dyno kept busy: its 1-minute load average rises above 0 within seconds (one
    // runnable task, sampled every second: 1 - e^(-1/60) ≈ 0.02 after the first second).
    cli_ok(
        &up,
        &[
            "run",
            "-a",
            "metered",
            "--",
            "timeout 4 sh -c 'while :; do :; done' || true",
        ],
    );
    let (logs, _) = cli_ok(
        &up,
        &[
            "logs", "-a", "metered", "--ps", "run.1", "--source", "heroku", "-n", "1500",
        ],
    );
    let busiest = messages(&logs)
        .iter()
        .filter(|l| l.starts_with("heroku[run.1]: source=run.1 dyno=heroku."))
        .filter(|l| l.contains(" sample#load_avg_1m="))
        .map(|l| value(l, "sample#load_avg_1m"))
        .map(|v| v.parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    assert!(busiest > 0.0 && busiest < 1.0, "{logs}");

    let (done, progress) = cli_ok(
        &up,
        &["labs:disable", "log-runtime-metrics", "-a", "metered"],
    );
    assert_eq!(
        format!("{progress}{done}"),
        "Disabling log-runtime-metrics for metered... done\n"
    );
    // A round already under way may still log; after that, nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    let after_disable = sample_lines(&up, "metered").len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sample_lines(&up, "metered").len(), after_disable);

    // An unknown feature: refused, and the known ones are named.
    let (ok, _, stderr) = cli(&up, &["labs:enable", "no-such-feature", "-a", "metered"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("no-such-feature") && stderr.contains("log-runtime-metrics"),
        "{stderr}"
    );

    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    let uid = up.app_uid("metered");
    up.assert_nothing_left(uid);
}

/// A web process that listens on $PORT with a backlog of 16 and never accepts; a worker that
/// crashes a second after it starts.
const NEVER_ACCEPTS: &str = r#"import os, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(os.environ["PORT"])))
s.listen(16)
print("listening, accepting nothing", flush=True)
while True:
    time.sleep(3600)
"#;

#[test]
fn listen_queue_and_restarts_are_in_metrics() {
    let app = app_dir(
        "listenq",
        "web: python3 web.py\nworker: sleep 1; echo crashing; exit 1\n",
    );
    std::fs::write(app.join("web.py"), NEVER_ACCEPTS).unwrap();
    let mut up = serve_app("listenq", "queued", &app);

    let queue = "dyno_listen_queue{app=\"queued\",dyno=\"web.1\"}";
    let backlog = "dyno_listen_backlog{app=\"queued\",dyno=\"web.1\"}";
    let before = up.metrics();
    assert_eq!(series_value(&before, queue), Some(0.0), "{before}");
    assert_eq!(series_value(&before, backlog), Some(16.0), "{before}");
    assert!(
        before.contains("# TYPE dyno_listen_queue gauge\n")
            && before.contains("# TYPE dyno_restarts_total counter\n"),
        "{before}"
    );

    // Requests through the router: it connects to the dyno, the kernel completes each
    // handshake, and the connections wait in the accept queue (the router waits for an answer
    // that never comes; the clients stay open meanwhile).
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let mut stream = up.connect_router();
            write!(
                stream,
                "GET /{i} HTTP/1.1\r\nHost: queued.localhost\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            stream
        })
        .collect();
    let queued = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let now = up.metrics();
        match series_value(&now, queue) {
            Some(n) if n >= 3.0 => Ok(n),
            _ => Err(format!("the queue did not fill:\n{now}")),
        }
    });
    assert_eq!(queued, 3.0);

    // The worker crashes; its first restart is immediate (Heroku's cool-off), and counted.
    cli_ok(&up, &["ps:scale", "worker=1", "-a", "queued"]);
    let started = Instant::now();
    let worker = "dyno_restarts_total{app=\"queued\",dyno=\"worker.1\"}";
    let restarts = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let now = up.metrics();
        match series_value(&now, worker) {
            Some(n) if n >= 1.0 => Ok(n),
            _ => Err(format!(
                "no restart of worker.1 after {:?}:\n{now}",
                started.elapsed()
            )),
        }
    });
    assert!(restarts >= 1.0);
    let now = up.metrics();
    assert_eq!(
        series_value(&now, "dyno_restarts_total{app=\"queued\",dyno=\"web.1\"}"),
        Some(0.0),
        "{now}"
    );
    // Only web dynos have a listener on $PORT.
    assert!(
        !now.contains("dyno_listen_queue{app=\"queued\",dyno=\"worker.1\"}"),
        "{now}"
    );

    drop(clients);
    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    let uid = up.app_uid("queued");
    up.assert_nothing_left(uid);
}
