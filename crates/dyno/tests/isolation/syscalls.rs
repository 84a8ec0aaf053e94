//! Denied syscalls: what the seccomp filter must refuse, called raw (`ctypes` `syscall()`, x86_64
//! numbers) from the attacker's web dyno. Each call uses arguments that an unprivileged process
//! could get through *without* a filter where there are such, so that the test shows the filter
//! and not merely the missing capabilities. Denied means errno EPERM (ENOSYS for `clone3`, so
//! that libc falls back to `clone`), and the process lives on: a filter that kills (SIGSYS)
//! fails the test.

use std::time::Duration;

use crate::record::*;

const T: Duration = Duration::from_secs(20);

/// Runs `call` (Python that sets `r, e` via `sc(...)`), expecting errno `want` (`None`: the
/// call must work) and the process alive after it.
fn syscall_attack(
    test: &'static str,
    attack_text: &'static str,
    call: &str,
    want: Option<&str>,
    others: &'static str,
) {
    let expect: &'static str = match want {
        Some("ENOSYS") => "ENOSYS (libc falls back to clone), the process lives on",
        Some(_) => "EPERM, the process lives on",
        None => "allowed: the call works",
    };
    attack(
        Attack {
            test,
            category: SYSCALLS,
            attack: attack_text,
            expect,
            others,
        },
        |rig| {
            let snippet = format!(
                "import struct\n{call}\ndone({{\"ret\": r, \"errno\": e, \"alive\": True}})\n"
            );
            let run = rig.run_web(&snippet, T);
            if !run.finished() {
                return Outcome::new(
                    false,
                    format!(
                        "the process did not live on: exit {:?} {}",
                        run.exit,
                        run.stderr.lines().last().unwrap_or_default()
                    ),
                );
            }
            let v = run.value();
            let errno = v["errno"].as_str();
            let result = match errno {
                Some(e) => format!("{e}, alive"),
                None => "succeeded, alive".to_string(),
            };
            Outcome::new(errno == want, result)
        },
    );
}

const DOCKER_DENIES: &str =
    "Docker, podman: denied by the default seccomp profile; Heroku: denied (unprivileged LXC)";

macro_rules! denied {
    ($name:ident, $attack:expr, $call:expr) => {
        denied!($name, $attack, $call, DOCKER_DENIES);
    };
    ($name:ident, $attack:expr, $call:expr, $others:expr) => {
        #[test]
        fn $name() {
            syscall_attack(stringify!($name), $attack, $call, Some("EPERM"), $others);
        }
    };
}

denied!(unshare_user_and_mount_namespaces, "unshare(CLONE_NEWUSER|CLONE_NEWNS): become root in a new user namespace",
    "r, e = sc(272, 0x10000000 | 0x20000)",
    "Docker, podman: unshare denied by the default seccomp profile (without CAP_SYS_ADMIN); Heroku: denied");
denied!(
    setns_into_a_namespace,
    "setns() into a network namespace (the dyno's own /proc/self/ns/net)",
    "fd = os.open('/proc/self/ns/net', os.O_RDONLY)\nr, e = sc(308, fd, 0x40000000)",
    "Docker, podman: setns denied by the default seccomp profile; Heroku: denied"
);
denied!(clone_with_namespace_flags, "clone() with each CLONE_NEW* flag (user, mount, pid, net, uts, ipc, cgroup)",
    r#"
res = []
for flag in [0x10000000, 0x20000, 0x20000000, 0x40000000, 0x04000000, 0x08000000, 0x02000000]:
    r, e = sc(56, flag | 17, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
    res.append(e or "succeeded")
r = -1
e = "EPERM" if set(res) == {"EPERM"} else ",".join(sorted(set(res)))
"#,
    "Docker, podman: clone with namespace flags denied by the default seccomp profile; Heroku: denied");
denied!(
    mount_a_tmpfs,
    "mount(\"none\", \"/tmp\", \"tmpfs\")",
    "r, e = sc(165, b'none', b'/tmp', b'tmpfs', 0, 0)"
);
denied!(
    fsopen_a_filesystem,
    "fsopen(\"tmpfs\") (the new mount API)",
    "r, e = sc(430, b'tmpfs', 0)"
);
denied!(
    open_tree_of_a_directory,
    "open_tree(AT_FDCWD, \"/tmp\", 0) (the new mount API)",
    "r, e = sc(428, -100, b'/tmp', 0)"
);
denied!(
    move_mount_a_tree,
    "move_mount() (the new mount API)",
    "r, e = sc(429, -100, b'/tmp', -100, b'/app', 0)"
);
denied!(bpf_map_create, "bpf(BPF_MAP_CREATE)",
    "attr = ctypes.create_string_buffer(struct.pack('=IIII', 2, 4, 4, 1), 128)\nr, e = sc(321, 0, attr, 128)");
denied!(perf_event_open_on_itself, "perf_event_open() on itself (user space only, allowed by perf_event_paranoid=2)",
    "attr = ctypes.create_string_buffer(struct.pack('=IIQQQQQ', 1, 64, 0, 0, 0, 0, 0x61), 128)\nr, e = sc(298, attr, 0, -1, -1, 0)");
denied!(
    userfaultfd_user_mode,
    "userfaultfd(UFFD_USER_MODE_ONLY)",
    "r, e = sc(323, 1)"
);
denied!(io_uring_setup, "io_uring_setup()", "p = ctypes.create_string_buffer(120)\nr, e = sc(425, 1, p)",
    "Docker: allowed by the moby profile read for docs/isolation.md (commit 00f3d18); Heroku: not documented");
denied!(add_key_to_a_keyring, "add_key(\"user\", …, KEY_SPEC_PROCESS_KEYRING)", "r, e = sc(248, b'user', b'dyno-test', b'x', 1, -2)",
    "Docker, podman: keyring calls denied by the default profile (the keyring is not namespaced); Heroku: denied");
denied!(request_key_from_a_keyring, "request_key(\"user\", …)", "r, e = sc(249, b'user', b'dyno-test-none', 0, 0)",
    "Docker, podman: keyring calls denied by the default profile (the keyring is not namespaced); Heroku: denied");
denied!(keyctl_session_keyring, "keyctl(KEYCTL_GET_KEYRING_ID, session keyring)", "r, e = sc(250, 0, -3, 1)",
    "Docker, podman: keyring calls denied by the default profile (the keyring is not namespaced); Heroku: denied");
denied!(kexec_load, "kexec_load()", "r, e = sc(246, 0, 0, 0, 0)");
denied!(init_module, "init_module()", "r, e = sc(175, 0, 0, b'')");
denied!(finit_module, "finit_module()", "r, e = sc(313, 0, b'', 0)");
denied!(
    delete_module,
    "delete_module()",
    "r, e = sc(176, b'dyno_nosuch', 0)"
);
denied!(open_by_handle_at, "open_by_handle_at() (the Shocker escape)",
    "h = ctypes.create_string_buffer(struct.pack('=Ii', 8, 1) + bytes(8))\nr, e = sc(304, -100, h, 0)");
denied!(clock_settime, "clock_settime(CLOCK_REALTIME, now)",
    "ts = ctypes.create_string_buffer(struct.pack('=qq', int(time.time()), 0))\nr, e = sc(227, 0, ts)");
denied!(settimeofday, "settimeofday(now)",
    "tv = ctypes.create_string_buffer(struct.pack('=qq', int(time.time()), 0))\nr, e = sc(164, tv, 0)");
denied!(adjtimex_setting, "adjtimex() setting ADJ_MAXERROR",
    "t = ctypes.create_string_buffer(208)\nstruct.pack_into('=I', t, 0, 0x4)\nstruct.pack_into('=q', t, 24, 16000000)\nr, e = sc(159, t)",
    "Docker, podman: adjtimex allowed (reading), setting needs CAP_SYS_TIME; Heroku: denied");
denied!(swapon, "swapon()", "r, e = sc(167, b'/tmp/nosuch', 0)");
denied!(
    reboot,
    "reboot(LINUX_REBOOT_CMD_CAD_OFF)",
    "r, e = sc(169, 0xfee1dead, 672274793, 0, 0)"
);
denied!(acct, "acct(NULL)", "r, e = sc(163, 0)");
denied!(
    quotactl_sync,
    "quotactl(Q_SYNC, NULL)",
    "r, e = sc(179, 0x80000100, 0, 0, 0)"
);
denied!(
    syslog_read_all,
    "syslog(SYSLOG_ACTION_READ_ALL) (the host's kernel log)",
    "b = ctypes.create_string_buffer(4096)\nr, e = sc(103, 3, b, 4096)"
);
denied!(personality_query, "personality(0xffff)", "r, e = sc(135, 0xffff)",
    "Docker, podman: personality allowed only for a few values (0, 8, 0x20000, 0x20008, 0xffffffff); Heroku: allowed");
denied!(ptrace_of_pid_1, "ptrace(PTRACE_ATTACH) of the dyno's PID 1", "r, e = sc(101, 16, 1, 0, 0)",
    "Docker, podman: ptrace allowed by the profile (kernel ≥ 4.8), PID 1 is root's: EPERM; Heroku: same");

#[test]
fn clone3_answers_enosys() {
    syscall_attack(
        "clone3_answers_enosys",
        "clone3() (its flags cannot be inspected by seccomp)",
        "r, e = sc(435, 0, 0)",
        Some("ENOSYS"),
        "Docker, podman: ENOSYS from the default profile (glibc falls back to clone); Heroku: unknown",
    );
}

#[test]
fn ptrace_of_its_own_child_works() {
    syscall_attack(
        "ptrace_of_its_own_child_works",
        "ptrace(PTRACE_SEIZE) of its own child (debuggers, profilers)",
        r#"
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
r, e = sc(101, 0x4206, pid, 0, 0)
os.kill(pid, 9)
os.waitpid(pid, 0)
"#,
        None,
        "Docker, podman: allowed (kernel ≥ 4.8); Heroku: allowed",
    );
}

#[test]
fn socket_families_outside_the_allowlist_are_denied() {
    syscall_attack(
        "socket_families_outside_the_allowlist_are_denied",
        "socket() of AF_VSOCK, AF_PACKET, AF_ALG, AF_KEY, AF_BLUETOOTH, AF_TIPC, AF_RDS, AF_CAN, AF_XDP, AF_SMC, AF_LLC, AF_X25, AF_APPLETALK, AF_NFC, AF_QIPCRTR, AF_MCTP",
        r#"
res = {}
for fam, kind, proto in [(40, 1, 0), (17, 3, 0), (38, 5, 0), (15, 3, 2), (31, 3, 1), (30, 4, 0), (21, 5, 0),
                         (29, 3, 1), (44, 3, 0), (43, 1, 0), (26, 2, 0), (9, 5, 0), (5, 2, 0), (39, 2, 0),
                         (42, 2, 0), (45, 2, 0)]:
    r, e = sc(41, fam, kind, proto)
    if r >= 0:
        os.close(r)
    res[fam] = e or "succeeded"
r = -1
e = "EPERM" if set(res.values()) == {"EPERM"} else ", ".join("%d %s" % (f, x) for f, x in sorted(res.items()) if x != "EPERM")
"#,
        Some("EPERM"),
        "Docker, podman: AF_VSOCK and a few others denied; AF_PACKET needs CAP_NET_RAW (Docker grants it); Heroku: unknown",
    );
}

#[test]
fn allowed_socket_families_work() {
    syscall_attack(
        "allowed_socket_families_work",
        "socket() of AF_UNIX, AF_INET, AF_INET6, AF_NETLINK (what apps need)",
        r#"
bad = []
for fam, kind, proto in [(1, 1, 0), (1, 2, 0), (2, 1, 0), (2, 2, 0), (10, 1, 0), (10, 2, 0), (16, 3, 0), (16, 3, 4)]:
    r, e = sc(41, fam, kind, proto)
    if r >= 0:
        os.close(r)
    else:
        bad.append("%d/%d %s" % (fam, kind, e))
r = 0
e = ", ".join(bad) or None
"#,
        None,
        "Docker, podman, Heroku: allowed",
    );
}

#[test]
fn unshare_command_cannot_map_root() {
    const EXPECT: &str =
        "`unshare --user --map-root-user --mount --net` fails: no new namespaces, no root";
    attack(
        Attack {
            test: "unshare_command_cannot_map_root",
            category: SYSCALLS,
            attack: "run `unshare -Urmn id -u` (become root in new namespaces, as an exploit would first)",
            expect: EXPECT,
            others: "Docker, podman: unshare denied by seccomp; Heroku: denied",
        },
        |rig| {
            let snippet = r#"
import subprocess
p = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--net", "id", "-u"], capture_output=True, text=True)
done({"exit": p.returncode, "out": p.stdout.strip(), "err": p.stderr.strip()})
"#;
            let v = rig.run_web(snippet, T).value();
            let pass = v["exit"] != 0 && v["out"] != "0";
            let result = if v["exit"] == 0 { format!("worked: id -u = {}", v["out"]) } else { "refused".to_string() };
            Outcome::new(pass, result)
        },
    );
}

#[test]
fn nsenter_into_pid_1_fails() {
    const EXPECT: &str =
        "`nsenter -t 1 --mount --net` fails (no setns for an unprivileged process)";
    attack(
        Attack {
            test: "nsenter_into_pid_1_fails",
            category: SYSCALLS,
            attack: "run `nsenter -t 1 --mount --net true` (join PID 1's namespaces)",
            expect: EXPECT,
            others: "Docker, podman: setns denied by seccomp; Heroku: denied",
        },
        |rig| {
            let snippet = r#"
import subprocess
p = subprocess.run(["nsenter", "-t", "1", "--mount", "--net", "true"], capture_output=True, text=True)
done({"exit": p.returncode})
"#;
            let v = rig.run_web(snippet, T).value();
            let pass = v["exit"] != 0;
            Outcome::new(
                pass,
                if pass {
                    "refused"
                } else {
                    "joined PID 1's namespaces"
                },
            )
        },
    );
}
