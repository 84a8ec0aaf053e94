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
    assert!(
        table().windows(2).all(|w| w[0].0 < w[1].0),
        "the table is sorted by name (number() searches it)"
    );
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

const X86_64: u32 = 0xc000_003e;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;

/// What the profile says for call `nr` with `args`, read straight from the table.
fn intended(nr: i64, args: [u64; 6], additions: &[&str]) -> u32 {
    let name = super::name(nr);
    if name.is_some_and(|n| additions.contains(&n)) {
        return ALLOW;
    }
    let Some(row) = name.and_then(|n| PROFILE.iter().find(|row| row.calls.contains(&n))) else {
        return NOTIFY;
    };
    match row.rule {
        Rule::Allow => ALLOW,
        Rule::ArgIn { arg, values } => {
            let low = args[usize::from(arg)] as u32;
            if values.iter().any(|v| *v as u32 == low) {
                ALLOW
            } else {
                NOTIFY
            }
        }
        Rule::ArgClear { arg, mask } => {
            if args[usize::from(arg)] & mask == 0 {
                ALLOW
            } else {
                NOTIFY
            }
        }
        Rule::Fail(errno) => libc::SECCOMP_RET_ERRNO | errno as u32,
        Rule::Deny => NOTIFY,
    }
}

/// Every call number (and numbers no call has, x32's and past the end), with arguments that
/// pass and fail each condition, gives what the table says: the program is the profile.
#[test]
fn the_program_does_what_the_table_says_for_every_call() {
    for additions in [&[][..], &["keyctl", "io_uring_setup"][..]] {
        let filters = compile(additions).unwrap();
        let program = filters.program();
        assert!(program.len() < 4096, "{}", program.len());
        let mut numbers: Vec<u32> = (0..600).collect();
        numbers.extend([0x4000_0000, 0x4000_0000 + 56, 0x4000_0000 + 272, u32::MAX]);
        let argument_sets = [
            [0u64; 6],
            [libc::AF_INET as u64, 1, 0, 0, 0, 0],
            [libc::AF_PACKET as u64, 3, 0, 0, 0, 0],
            [0x1_0000_0000 | libc::AF_UNIX as u64, 1, 0, 0, 0, 0],
            [0xffff_ffff, 0, 0, 0, 0, 0],
            [0xffff, 0, 0, 0, 0, 0],
            [libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
            [(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0, 0],
            [
                (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_NEWNET) as u64,
                0,
                0,
                0,
                0,
                0,
            ],
            [0x8000_0000_0000_0000 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
        ];
        for nr in numbers {
            for args in argument_sets {
                assert_eq!(
                    bpf::run(program, X86_64, nr, args),
                    intended(i64::from(nr), args, additions),
                    "call {nr} ({:?}) with {args:x?}, additions {additions:?}",
                    super::name(i64::from(nr))
                );
            }
            // A foreign architecture's calls are denied, whatever their number.
            assert_eq!(bpf::run(program, 0x4000_0003, nr, [0; 6]), NOTIFY);
        }
    }
}

#[test]
fn the_tree_is_short_to_walk() {
    let filters = compile::<&str>(&[]).unwrap();
    // Every call is decided within a few dozen instructions (the kernel runs the filter for
    // each call number when it is installed, and for every call with an argument check).
    let longest = (0..500u32)
        .map(|nr| steps(filters.program(), nr))
        .max()
        .unwrap();
    assert!(longest < 40, "{longest} instructions to decide one call");
}

fn steps(program: &[bpf::Insn], nr: u32) -> usize {
    // A copy of `bpf::run` that counts: the tree's depth plus the leaf's checks.
    let mut pc = 0;
    let mut acc = 0;
    let mut n = 0;
    loop {
        let insn = program[pc];
        pc += 1;
        n += 1;
        match insn.code {
            bpf::LD_W_ABS => acc = if insn.k == bpf::DATA_NR { nr } else { X86_64 },
            bpf::RET_K => return n,
            bpf::JMP_JA => pc += insn.k as usize,
            code => {
                let taken = match code {
                    bpf::JMP_JEQ_K => acc == insn.k,
                    bpf::JMP_JGE_K => acc >= insn.k,
                    _ => acc & insn.k != 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
        }
    }
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
