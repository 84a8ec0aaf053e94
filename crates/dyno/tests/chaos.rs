//! Crash safety of `dyno serve` (privileged: run as root): `ps:scale web=0↔20` while the daemon
//! is killed with SIGKILL at a random moment and started again, round after round. After every
//! restart the formation is what was asked (or, when the kill came before the change was
//! committed, what it was), exactly that many web dynos run (the ones that ran before the kill
//! adopted, not restarted), and there is no orphan namespace, link, state dir, process, dyno row
//! or address lease. Rounds: `DYNO_CHAOS_ROUNDS` (default 100).

mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

const WEB: &str = "web: exec perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(\
    LocalPort=>$ENV{PORT},Listen=>8,ReuseAddr=>1) or die \"listen: $!\"; sleep 3600'\n";
const ARGS: [&str; 4] = ["--boot-timeout", "20s", "--stop-grace", "2s"];

/// The web quantity the daemon's store holds.
fn web_quantity(up: &Up) -> u32 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = dyno_api::ApiClient::unix(up.api_socket());
    let formation: Vec<dyno_api::Formation> =
        runtime.block_on(api.get("/apps/chaos/formation")).unwrap();
    formation
        .iter()
        .find(|f| f.process_type == "web")
        .map_or(0, |f| f.quantity)
}

/// (dynos listed, dynos up)
fn dynos(up: &Up) -> (usize, usize) {
    let out = up.cli(&["ps", "-a", "chaos", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    let up_count = list.iter().filter(|d| d["state"] == "up").count();
    (list.len(), up_count)
}

/// perl processes (the web dynos' apps) of `uid`.
fn perls_of(uid: u32) -> usize {
    processes_of(uid)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "perl")
        })
        .count()
}

/// (dyno rows, address leases) in the daemon's store, read beside it (WAL: readers never
/// block its writer).
fn recorded(up: &Up) -> (usize, usize) {
    let db = rusqlite::Connection::open_with_flags(
        up.scratch.join("data/state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let count = |table: &str| -> usize {
        db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap() as usize
    };
    (count("dynos"), count("leases"))
}

/// How many dynos the daemon said it adopted at start.
fn adopted(notes: &str) -> usize {
    notes
        .split("took over from an earlier daemon: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn scaling_while_the_daemon_is_killed_at_random_leaves_the_formation_and_no_orphans() {
    let rounds: usize = std::env::var("DYNO_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let app = app_dir("chaos", WEB);
    let mut up = Up::serve("chaos", &ARGS);
    up.wait_api();
    assert!(up.cli(&["apps:create", "chaos"]).status.success());
    let deploy = up.cli(&["deploy", &app.to_string_lossy(), "-a", "chaos"]);
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    let uid = up.app_uid("chaos");
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut expected = 1u32;
    let mut rounds_with_adoption = 0;
    let started = Instant::now();
    for round in 0..rounds {
        let target: u32 = if round % 2 == 0 { 20 } else { 0 };
        let socket = up.api_socket();
        let scaling = std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_dyno"))
                .args(["ps:scale", &format!("web={target}"), "-a", "chaos"])
                .env("DYNO_SOCKET", socket)
                .output()
                .unwrap()
        });
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 400));
        up.kill_and_restart_serve(&ARGS);
        let scaled = scaling.join().unwrap();
        up.wait_api();

        let quantity = web_quantity(&up);
        if scaled.status.success() {
            assert_eq!(quantity, target, "round {round}: the scale succeeded");
        } else {
            assert!(
                quantity == target || quantity == expected,
                "round {round}: web={quantity}, asked {target}, was {expected}"
            );
        }
        expected = quantity;
        let n = expected as usize;
        poll_until(Duration::from_secs(60), Duration::from_millis(20), || {
            let (listed, up_now) = dynos(&up);
            (listed == n && up_now == n).then_some(()).ok_or(format!(
                "round {round}: {listed} listed, {up_now} up, want {n}"
            ))
        });
        poll_until(Duration::from_secs(30), Duration::from_millis(20), || {
            let links = up.lab.host.links_with_prefix("dy").unwrap().len();
            let netns = up.lab.run_dir.names().unwrap().len();
            let state_dirs = std::fs::read_dir(up.scratch.join("state")).unwrap().count();
            let perls = perls_of(uid);
            let (rows, leases) = recorded(&up);
            (links == n && netns == n && state_dirs == n && perls == n && rows == n && leases == n)
                .then_some(())
                .ok_or_else(|| {
                    let logs = up.cli(&["logs", "-a", "chaos", "-n", "300"]);
                    format!(
                        "round {round}: {links} links, {netns} namespaces, {state_dirs} state \
                         dirs, {perls} app processes, {rows} dyno rows, {leases} leases for {n} \
                         dynos\n{}\n{}",
                        up.notes(),
                        String::from_utf8_lossy(&logs.stdout)
                    )
                })
        });
        // Every dyno found was adopted or ended cleanly: none failed to start or to be taken
        // over (a failed adoption would leave its processes behind).
        let logs = up.cli(&["logs", "-a", "chaos", "-n", "1500"]);
        let logs = String::from_utf8_lossy(&logs.stdout);
        assert!(
            !logs.contains("Error starting dyno"),
            "round {round}:\n{logs}"
        );
        if adopted(&up.notes()) > 0 {
            rounds_with_adoption += 1;
        }
    }
    eprintln!(
        "{rounds} rounds in {:?}, {rounds_with_adoption} restarts adopted running dynos",
        started.elapsed()
    );
    // Half the rounds scale up to 20 and are killed within 400 ms: some kills must find dynos
    // running, which the next daemon adopts rather than restarts.
    if rounds >= 10 {
        assert!(rounds_with_adoption > 0, "no restart adopted a dyno");
    }
    let status = up.interrupt();
    assert!(status.success(), "{status:?}\n{}", up.notes());
    up.assert_nothing_left(uid);
}
