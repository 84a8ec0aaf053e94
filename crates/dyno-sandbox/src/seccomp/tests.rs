use std::collections::BTreeMap;

use super::profile::{Rule, PROFILE};
use super::*;

#[test]
fn every_call_the_kernel_knows_is_decided_by_exactly_one_row() {
    let mut rows_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in PROFILE {
        for call in row.calls {
            rows_of.entry(call).or_default().push(row.why);
        }
    }
    let twice: Vec<_> = rows_of.iter().filter(|(_, rows)| rows.len() > 1).collect();
    assert!(twice.is_empty(), "calls in more than one row: {twice:?}");
    let undecided: Vec<&str> = table()
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !rows_of.contains_key(name))
        .collect();
    assert!(undecided.is_empty(), "calls no row decides: {undecided:?}");
    let unknown: Vec<&&str> = rows_of.keys().filter(|n| number(n).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "rows name calls x86_64 lacks: {unknown:?}"
    );
}

#[test]
fn the_table_agrees_with_libc() {
    for (name, nr) in [
        ("read", libc::SYS_read),
        ("clone", libc::SYS_clone),
        ("clone3", libc::SYS_clone3),
        ("unshare", libc::SYS_unshare),
        ("keyctl", libc::SYS_keyctl),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("personality", libc::SYS_personality),
        ("socket", libc::SYS_socket),
        ("fchmodat2", libc::SYS_fchmodat2),
        ("mseal", libc::SYS_mseal),
        ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
    ] {
        assert_eq!(number(name), Some(nr), "{name}");
        assert_eq!(super::name(nr), Some(name));
    }
    let mut numbers: Vec<i64> = table().iter().map(|(_, nr)| *nr).collect();
    numbers.sort();
    let before = numbers.len();
    numbers.dedup();
    assert_eq!(before, numbers.len(), "a number named twice");
}

#[test]
fn what_the_issue_names_is_denied() {
    let rule_of = |call: &str| {
        PROFILE
            .iter()
            .find(|row| row.calls.contains(&call))
            .map(|row| row.rule)
    };
    for call in [
        "unshare",
        "setns",
        "mount",
        "umount2",
        "fsopen",
        "open_tree",
        "move_mount",
        "fsmount",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "add_key",
        "request_key",
        "keyctl",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "open_by_handle_at",
        "clock_settime",
        "settimeofday",
        "swapon",
        "reboot",
        "acct",
        "quotactl",
        "syslog",
    ] {
        assert_eq!(rule_of(call), Some(Rule::Deny), "{call}");
    }
    assert_eq!(rule_of("clone3"), Some(Rule::Fail(libc::ENOSYS)));
    assert!(matches!(
        rule_of("clone"),
        Some(Rule::ArgClear { arg: 0, .. })
    ));
    assert!(matches!(
        rule_of("socket"),
        Some(Rule::ArgIn { arg: 0, .. })
    ));
    assert!(matches!(
        rule_of("personality"),
        Some(Rule::ArgIn { arg: 0, .. })
    ));
}

#[test]
fn operator_additions_are_checked_by_name() {
    assert!(validate_additions(&["io_uring_setup", "io_uring_enter"]).is_ok());
    let e = validate_additions(&["io_uring_stup"]).unwrap_err();
    assert!(e.to_string().contains("\"io_uring_stup\""), "{e}");
    assert!(matches!(
        validate_additions(&["clone3"]),
        Err(SeccompError::NotAllowable("clone3"))
    ));
}

#[test]
fn the_profile_compiles_within_the_kernels_limits() {
    let filters = compile::<&str>(&[]).unwrap();
    assert!(
        filters.allowlist.len() < 4096,
        "{}",
        filters.allowlist.len()
    );
    assert!(!filters.is_empty());
    // Nothing in the allowlist kills: every deny is a notification.
    assert!(filters
        .allowlist
        .iter()
        .all(|insn| insn.code != 0x06 || insn.k != libc::SECCOMP_RET_KILL_PROCESS));
    let notify = filters
        .allowlist
        .iter()
        .filter(|insn| insn.code == 0x06 && insn.k == libc::SECCOMP_RET_USER_NOTIF)
        .count();
    assert!(notify >= 2, "the arch check and the default deny notify");
    let with = compile(&["keyctl"]).unwrap();
    assert!(with.allowlist.len() > filters.allowlist.len());
}

/// `docs/isolation.md` shows the profile as it is: the table between its markers is rendered
/// from [`profile::PROFILE`]. `DYNO_BLESS=1` rewrites it.
#[test]
fn the_docs_show_the_current_profile() {
    const BEGIN: &str = concat!(
        "<!-- seccomp-profile:begin ",
        "(generated from crates/dyno-sandbox/src/seccomp/profile.rs) -->\n"
    );
    const END: &str = "<!-- seccomp-profile:end -->";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/isolation.md");
    let doc = std::fs::read_to_string(&path).expect("docs/isolation.md");
    let start = doc.find(BEGIN).expect("the begin marker") + BEGIN.len();
    let end = doc.find(END).expect("the end marker");
    let table = super::profile::markdown();
    if doc[start..end] != table {
        if std::env::var_os("DYNO_BLESS").is_some() {
            let new = format!("{}{table}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, new).unwrap();
        } else {
            panic!(
                "docs/isolation.md's seccomp table is out of date: run \
                 `DYNO_BLESS=1 cargo nextest run -p dyno-sandbox the_docs_show` and commit"
            );
        }
    }
}
