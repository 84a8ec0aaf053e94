//! The default system-call profile of every dyno: one table, read top to bottom.
//!
//! It is an allowlist, like Docker's and podman's default profiles: a call no row allows is
//! denied with `EPERM` and reported to the operator (the daemon's log names the dyno and the
//! call). Every call the kernel knows is named in exactly one row (a unit test holds us to it),
//! so a call is never denied or allowed by accident, and a new kernel's calls stay denied until
//! someone decides. The starting point was Docker's default profile for a container without
//! capabilities; it is stricter where this file says so (io_uring, clock adjustment, socket
//! families, `personality`).
//!
//! Operators add calls per app (`dyno serve --seccomp-allow APP:CALL,…`); an addition allows
//! the call whole, whatever its row says.

/// What the filter does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Allow,
    /// Allowed when argument `arg` (its low 32 bits) is one of `values`; otherwise denied.
    ArgIn {
        arg: u8,
        values: &'static [u64],
    },
    /// Allowed when argument `arg` has none of the bits of `mask`; otherwise denied.
    ArgClear {
        arg: u8,
        mask: u64,
    },
    /// Fails with this errno and is not reported: callers are expected to fall back.
    Fail(i32),
    /// Denied with `EPERM` and reported (what happens to every call no row allows).
    Deny,
}

/// One row: the calls, what happens to them, why, and what Docker's default profile does
/// with them (moby's `profiles/seccomp/default.json`, for a container without added
/// capabilities; podman's `containers/common` profile follows the same list).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub calls: &'static [&'static str],
    pub rule: Rule,
    pub why: &'static str,
    pub docker: &'static str,
}

const fn row(
    calls: &'static [&'static str],
    rule: Rule,
    why: &'static str,
    docker: &'static str,
) -> Row {
    Row {
        calls,
        rule,
        why,
        docker,
    }
}

const SAME: &str = "the same";

/// The namespace flags of `clone(2)`: a dyno makes no namespaces of its own (a user namespace
/// is the door to most kernel privilege escalations of recent years).
pub const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// Socket families a web app uses: local sockets, IPv4, IPv6 and netlink (glibc's
/// `getaddrinfo` and `if_nameindex`, inet_diag for listen-queue stats).
pub const SOCKET_FAMILIES: &[u64] = &[
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
    libc::AF_NETLINK as u64,
];

/// `personality(2)` values Docker allows: Linux, with `UNAME26`, with `ADDR_NO_RANDOMIZE`
/// (setarch -R, used by some debuggers), both, and the query `0xffffffff`.
pub const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

use Rule::{Allow, ArgClear, ArgIn, Deny, Fail};

#[rustfmt::skip]
pub const PROFILE: &[Row] = &[
    // ---- allowed: what ordinary programs do -------------------------------------------------
    row(
        &[
            "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "preadv2",
            "pwritev", "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range",
            "lseek", "pipe", "pipe2", "dup", "dup2", "dup3", "fcntl", "flock", "fsync",
            "fdatasync", "sync", "syncfs", "sync_file_range", "truncate", "ftruncate", "fallocate",
            "fadvise64", "readahead", "sendfile", "splice", "tee", "vmsplice", "copy_file_range",
            "cachestat",
        ],
        Allow,
        "files: reading and writing",
        SAME,
    ),
    row(
        &[
            "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access",
            "faccessat", "faccessat2", "getcwd", "chdir", "fchdir", "getdents", "getdents64",
            "readlink", "readlinkat", "mkdir", "mkdirat", "rmdir", "rename", "renameat",
            "renameat2", "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "mknod",
            "mknodat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
            "fchownat", "umask", "utime", "utimes", "utimensat", "futimesat", "name_to_handle_at",
        ],
        Allow,
        "files: names, metadata, permissions (the kernel's own checks apply: no capabilities)",
        SAME,
    ),
    row(
        &[
            "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "listxattr", "llistxattr",
            "flistxattr", "listxattrat", "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
            "removexattr", "lremovexattr", "fremovexattr", "removexattrat", "file_getattr",
            "file_setattr",
        ],
        Allow,
        "files: extended attributes",
        "allowed (the newer *xattrat calls are not in its list yet)",
    ),
    row(
        &[
            "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
            "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd",
            "signalfd4", "timerfd_create", "timerfd_settime", "timerfd_gettime", "inotify_init",
            "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark", "pause",
            "nanosleep", "clock_nanosleep", "futex", "futex_waitv", "futex_wake", "futex_wait",
            "futex_requeue", "restart_syscall",
        ],
        Allow,
        "waiting: event loops, timers, futexes",
        SAME,
    ),
    row(
        &[
            "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        ],
        Allow,
        "legacy asynchronous I/O (databases use it; unlike io_uring it is a small interface)",
        SAME,
    ),
    row(
        &[
            "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock",
            "mlock2", "mlockall", "munlock", "munlockall", "membarrier", "memfd_create",
            "memfd_secret", "remap_file_pages", "pkey_alloc", "pkey_free", "pkey_mprotect",
            "map_shadow_stack", "mseal",
        ],
        Allow,
        "memory (bounded by the dyno's cgroup and RLIMIT_MEMLOCK)",
        SAME,
    ),
    row(
        &[
            "execve", "execveat", "fork", "vfork", "exit", "exit_group", "wait4", "waitid", "kill",
            "tkill", "tgkill", "pidfd_open", "pidfd_send_signal", "process_mrelease", "getpid",
            "getppid", "gettid", "getpgid", "getpgrp", "getsid", "setpgid", "setsid",
            "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "arch_prctl",
            "modify_ldt", "set_thread_area", "get_thread_area", "prctl", "seccomp",
            "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        ],
        Allow,
        "processes and threads (only the dyno's own: its pid namespace holds nothing else)",
        SAME,
    ),
    row(
        &[
            "capget", "capset", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid",
            "getresgid", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
            "setgroups", "setfsuid", "setfsgid",
        ],
        Allow,
        "identity (without capabilities a process can only shuffle the ids it has)",
        SAME,
    ),
    row(
        &[
            "getpriority", "setpriority", "sched_yield", "sched_getaffinity", "sched_setaffinity",
            "sched_getattr", "sched_setattr", "sched_getparam", "sched_setparam",
            "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
            "sched_get_priority_min", "sched_rr_get_interval", "getcpu", "ioprio_get",
            "ioprio_set", "getrlimit", "setrlimit", "prlimit64", "getrusage",
        ],
        Allow,
        "scheduling and limits (raising a hard limit or a real-time priority needs a capability)",
        SAME,
    ),
    row(
        &[
            "rt_sigaction", "rt_sigprocmask", "rt_sigpending", "rt_sigsuspend", "rt_sigreturn",
            "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack",
        ],
        Allow,
        "signals",
        SAME,
    ),
    row(
        &[
            "clock_gettime", "clock_getres", "gettimeofday", "time", "times", "alarm", "getitimer",
            "setitimer", "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun",
            "timer_delete", "uname", "sysinfo", "getrandom",
        ],
        Allow,
        "clocks (reading only), timers, system information",
        SAME,
    ),
    row(
        &[
            "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname",
            "getpeername", "getsockopt", "setsockopt", "sendto", "sendmsg", "sendmmsg", "recvfrom",
            "recvmsg", "recvmmsg", "shutdown",
        ],
        Allow,
        "sockets (the dyno's own network namespace and firewall decide what they reach)",
        SAME,
    ),
    row(
        &[
            "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl",
            "shmget", "shmat", "shmdt", "shmctl", "mq_open", "mq_unlink", "mq_timedsend",
            "mq_timedreceive", "mq_notify", "mq_getsetattr",
        ],
        Allow,
        "System V and POSIX IPC (the dyno's own IPC namespace)",
        SAME,
    ),
    row(
        &["ioctl"],
        Allow,
        "device and socket controls (a dyno's /dev holds only null, zero, random, tty, pts)",
        SAME,
    ),
    row(
        &["ptrace", "process_vm_readv", "process_vm_writev"],
        Allow,
        "debuggers and profilers on the dyno's own processes: the pid namespace holds no other, \
         and PID 1 is not dumpable",
        "allowed on kernels from 4.8 (the same)",
    ),
    // ---- allowed with conditions ------------------------------------------------------------
    row(
        &["clone"],
        ArgClear {
            arg: 0,
            mask: NAMESPACE_FLAGS,
        },
        "new processes and threads, without namespace flags",
        "the same mask",
    ),
    row(
        &["clone3"],
        Fail(libc::ENOSYS),
        "its flags sit in memory a filter cannot read: ENOSYS makes libc fall back to clone",
        "ENOSYS (the same)",
    ),
    row(
        &["socket"],
        ArgIn {
            arg: 0,
            values: SOCKET_FAMILIES,
        },
        "AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK only (no packet, vsock, alg, key, …)",
        "every family but AF_VSOCK: stricter here",
    ),
    row(
        &["personality"],
        ArgIn {
            arg: 0,
            values: PERSONALITIES,
        },
        "the standard execution domains only",
        "the same five values",
    ),
    // ---- denied (EPERM, reported) -----------------------------------------------------------
    row(
        &["unshare", "setns"],
        Deny,
        "no new namespaces: a user namespace is root's kernel surface for an unprivileged user",
        "only with CAP_SYS_ADMIN (so denied)",
    ),
    row(
        &[
            "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
            "move_mount", "open_tree", "open_tree_attr", "mount_setattr", "statmount", "listmount",
        ],
        Deny,
        "the mount family, old and new API",
        "only with CAP_SYS_ADMIN (so denied)",
    ),
    row(
        &[
            "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "fanotify_init",
        ],
        Deny,
        "kernel interfaces behind many privilege escalations",
        "only with CAP_BPF, CAP_PERFMON or CAP_SYS_ADMIN; userfaultfd not at all",
    ),
    row(
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        Deny,
        "io_uring: a second system-call interface seccomp cannot see into (Google and Docker's \
         newer profiles turn it off)",
        "allowed in the profile read (moby commit 00f3d18): stricter here",
    ),
    row(
        &["add_key", "request_key", "keyctl"],
        Deny,
        "the kernel keyring is not namespaced",
        "denied (not in its list)",
    ),
    row(
        &[
            "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
            "create_module", "query_module", "get_kernel_syms", "reboot", "swapon", "swapoff",
            "acct", "quotactl", "quotactl_fd", "syslog", "sethostname", "setdomainname", "vhangup",
            "iopl", "ioperm",
        ],
        Deny,
        "the host's business: kernel, modules, power, swap, accounting, quotas, kernel log",
        "only with the matching capability (so denied)",
    ),
    row(
        &["clock_settime", "settimeofday", "adjtimex", "clock_adjtime"],
        Deny,
        "setting or adjusting the clock",
        "settimeofday, clock_settime only with CAP_SYS_TIME; adjtimex and clock_adjtime \
         allowed: stricter here",
    ),
    row(
        &["open_by_handle_at"],
        Deny,
        "opens files by handle, past the mount namespace (the 'shocker' escape)",
        "only with CAP_DAC_READ_SEARCH (so denied)",
    ),
    row(
        &["kcmp", "pidfd_getfd", "process_madvise"],
        Deny,
        "reach into other processes beyond ptrace's rules",
        "only with CAP_SYS_PTRACE (so denied)",
    ),
    row(
        &[
            "mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node", "migrate_pages",
            "move_pages",
        ],
        Deny,
        "NUMA placement (Docker allows it only with CAP_SYS_NICE)",
        "only with CAP_SYS_NICE (so denied)",
    ),
    row(
        &["lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"],
        Deny,
        "security-module attributes",
        "denied (not in its list)",
    ),
    row(
        &[
            "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl", "afs_syscall", "tuxcall",
            "security", "vserver", "getpmsg", "putpmsg", "epoll_ctl_old", "epoll_wait_old",
            "uretprobe", "uprobe",
        ],
        Deny,
        "obsolete, unimplemented or kernel-internal",
        "denied (not in its list)",
    ),
];

/// The profile as a Markdown table (for `docs/isolation.md`, which a test keeps current).
pub fn markdown() -> String {
    let mut out =
        String::from("| calls | in a dyno | why | Docker's default profile |\n|---|---|---|---|\n");
    for row in PROFILE {
        let calls: Vec<String> = row.calls.iter().map(|c| format!("`{c}`")).collect();
        let verdict = match row.rule {
            Allow => "allowed".to_string(),
            ArgIn { arg, values } if values == SOCKET_FAMILIES => {
                format!(
                    "allowed when argument {arg} is AF_UNIX, AF_INET, AF_INET6 or AF_NETLINK; \
                     else EPERM"
                )
            }
            ArgIn { arg, values } => {
                let values: Vec<String> = values.iter().map(|v| format!("{v:#x}")).collect();
                format!(
                    "allowed when argument {arg} is one of {}; else EPERM",
                    values.join(", ")
                )
            }
            ArgClear { arg, mask } => {
                format!(
                    "allowed when argument {arg} has none of the namespace flags ({mask:#x}); \
                     else EPERM"
                )
            }
            Fail(errno) => format!("fails with {}", errno_name(errno)),
            Deny => "EPERM, reported".to_string(),
        };
        let docker = if row.docker == SAME {
            "the same"
        } else {
            row.docker
        };
        out.push_str(&format!(
            "| {} | {verdict} | {} | {docker} |\n",
            calls.join(" "),
            row.why
        ));
    }
    out
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::ENOSYS => "ENOSYS",
        libc::EPERM => "EPERM",
        _ => "an errno",
    }
}
