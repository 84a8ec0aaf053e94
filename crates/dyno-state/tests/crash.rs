//! kill -9 of a writer at random moments loses nothing it reported as committed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{check_committed, child_options, TempDir, Writer};
use dyno_state::Store;

/// The writer child (see `common::crash_child_entry`); as a plain test it checks 40 changes.
#[test]
fn crash_child() {
    common::crash_child_entry();
}

#[test]
fn sigkill_at_random_moments_loses_nothing_committed() {
    let tmp = TempDir::new("crash");
    let dir = tmp.join("data");
    let seed = fastrand::u64(..);
    eprintln!("crash test seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut all_lines = Vec::new();
    for round in 0..20 {
        let mut writer = Writer::spawn(&dir, round);
        // Most rounds die in the middle of the write loop; some while opening or migrating.
        if round % 5 != 0 {
            writer.wait_for_commits(1);
        }
        std::thread::sleep(Duration::from_millis(rng.u64(0..80)));
        all_lines.extend(writer.kill());

        let store = Store::open_with(&dir, child_options())
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): reopen failed: {e}"));
        check_committed(&store, &all_lines);
        // Every dyno row holds its lease: the intent record is whole or absent.
        let dynos = store.all_dynos().unwrap();
        assert!(
            dynos.iter().all(|d| d.address.is_some()),
            "a dyno lost its lease"
        );
        let addresses: BTreeSet<_> = dynos.iter().map(|d| d.address).collect();
        assert_eq!(addresses.len(), dynos.len(), "two dynos share an address");
        assert_eq!(store.leases().unwrap().len(), dynos.len());
    }
    let commits = all_lines
        .iter()
        .filter(|l| l.starts_with("committed "))
        .count();
    assert!(
        commits >= 20,
        "the writers committed only {commits} changes in 20 rounds: the test proved little"
    );
    eprintln!("{commits} committed changes survived 20 SIGKILLs");
}
