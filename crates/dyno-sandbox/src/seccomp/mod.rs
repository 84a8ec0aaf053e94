//! Every dyno's system-call filter: the profile ([`profile::PROFILE`]) compiled to seccomp BPF
//! with `seccompiler` (Firecracker's compiler), installed by the dyno's PID 1 after
//! `no_new_privs` and before the app is started, so every process of the dyno runs under it.
//!
//! Two filters are installed. The kernel runs both and the stricter verdict wins (an errno beats
//! a notification, which beats allow):
//! - the *fallbacks*: calls that fail quietly with their own errno (`clone3` → `ENOSYS`);
//! - the *allowlist*: what the profile allows; everything else goes to the dyno's shim as a
//!   user notification (`SECCOMP_RET_USER_NOTIF`), which answers `EPERM` and reports the call
//!   ([`notify`]). Denied calls never kill the process. If the shim is gone, the kernel answers
//!   `ENOSYS` on its own: still denied.

pub mod notify;
pub mod profile;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use profile::{Rule, PROFILE};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "unknown system call {0:?} in the seccomp additions: use the kernel's name, as in \
         `man 2 syscalls` (e.g. io_uring_setup); docs/isolation.md lists the profile"
    )]
    UnknownCall(String),
    #[error(
        "clone3 cannot be allowed: its flags are out of a filter's reach (libc falls back to \
         clone, which is allowed without namespace flags)"
    )]
    NotAllowable(&'static str),
    #[error("dyno's seccomp profile has no system-call table for this architecture")]
    UnsupportedArch,
    #[error("compile the seccomp profile: {0}")]
    Compile(String),
    #[error("install the seccomp filter: {0}")]
    Install(std::io::Error),
}

/// The system-call table of the architecture we run on: (name, number).
fn table() -> &'static [(&'static str, i64)] {
    #[cfg(target_arch = "x86_64")]
    return x86_64::TABLE;
    #[cfg(not(target_arch = "x86_64"))]
    return &[];
}

/// The number of a call by its kernel name.
pub fn number(name: &str) -> Option<i64> {
    table().iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// The kernel name of call `nr`.
pub fn name(nr: i64) -> Option<&'static str> {
    table()
        .iter()
        .find(|(_, n)| *n == nr)
        .map(|(name, _)| *name)
}

/// Checks the operator's additions: every name must be a call of this architecture, and none
/// may be one whose whole point is to stay out of reach. The daemon calls this at start, so
/// that no dyno starts half-filtered.
pub fn validate_additions<S: AsRef<str>>(additions: &[S]) -> Result<(), SeccompError> {
    if table().is_empty() {
        return Err(SeccompError::UnsupportedArch);
    }
    for name in additions {
        let name = name.as_ref();
        if name == "clone3" {
            return Err(SeccompError::NotAllowable("clone3"));
        }
        if number(name).is_none() {
            return Err(SeccompError::UnknownCall(name.to_string()));
        }
    }
    Ok(())
}

/// A compiled profile, ready to install.
#[derive(Debug, Clone)]
pub struct Filters {
    fallbacks: BpfProgram,
    allowlist: BpfProgram,
}

/// An errno no call returns, standing for "notify the shim" while `seccompiler` (which has no
/// user-notification action) compiles; [`to_notifications`] turns it into the real action.
const NOTIFY_PLACEHOLDER: u32 = 0xfff;

fn target_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SeccompError::UnsupportedArch)
}

fn compile_error(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Compile(e.to_string())
}

/// Compiles the profile plus `additions` (allowed whole).
pub fn compile<S: AsRef<str>>(additions: &[S]) -> Result<Filters, SeccompError> {
    validate_additions(additions)?;
    let arch = target_arch()?;
    let mut allowed: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut fallbacks: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut fallback_errno = None;
    for row in PROFILE {
        for call in row.calls {
            // A call this architecture does not have cannot be made: nothing to decide.
            let Some(nr) = number(call) else { continue };
            match row.rule {
                Rule::Allow => {
                    allowed.insert(nr, Vec::new());
                }
                Rule::ArgIn { arg, values } => {
                    let rules = values
                        .iter()
                        .map(|value| {
                            condition(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *value)
                                .and_then(|c| SeccompRule::new(vec![c]).map_err(compile_error))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    allowed.insert(nr, rules);
                }
                Rule::ArgClear { arg, mask } => {
                    let clear = condition(
                        arg,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(mask),
                        0,
                    )?;
                    allowed.insert(
                        nr,
                        vec![SeccompRule::new(vec![clear]).map_err(compile_error)?],
                    );
                }
                Rule::Fail(errno) => {
                    // One errno for all fallbacks keeps them one filter; the profile has one.
                    if fallback_errno.is_some_and(|e| e != errno) {
                        return Err(compile_error("the profile's Fail rows need one errno"));
                    }
                    fallback_errno = Some(errno);
                    fallbacks.insert(nr, Vec::new());
                }
                Rule::Deny => {}
            }
        }
    }
    for name in additions {
        let nr = number(name.as_ref()).expect("validated above");
        allowed.insert(nr, Vec::new());
    }
    let allowlist = SeccompFilter::new(
        allowed,
        SeccompAction::Errno(NOTIFY_PLACEHOLDER),
        SeccompAction::Allow,
        arch,
    )
    .map_err(compile_error)?;
    let mut allowlist: BpfProgram = allowlist.try_into().map_err(compile_error)?;
    to_notifications(&mut allowlist);
    let fallbacks = SeccompFilter::new(
        fallbacks,
        SeccompAction::Allow,
        SeccompAction::Errno(fallback_errno.unwrap_or(libc::ENOSYS) as u32),
        arch,
    )
    .map_err(compile_error)?;
    let fallbacks: BpfProgram = fallbacks.try_into().map_err(compile_error)?;
    Ok(Filters {
        fallbacks,
        allowlist,
    })
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, op, value).map_err(compile_error)
}

/// Every "deny" verdict of the allowlist becomes a notification to the shim: the placeholder
/// errno, and the kill `seccompiler` returns for a foreign architecture (a 32-bit `int 0x80`
/// call from a 64-bit process) — denied calls never kill.
fn to_notifications(program: &mut BpfProgram) {
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    for insn in program.iter_mut() {
        if insn.code == RET_K
            && (insn.k == libc::SECCOMP_RET_ERRNO | NOTIFY_PLACEHOLDER
                || insn.k == libc::SECCOMP_RET_KILL_PROCESS)
        {
            insn.k = libc::SECCOMP_RET_USER_NOTIF;
        }
    }
}

impl Filters {
    /// Installs both filters on the calling thread (and so on everything it starts from now
    /// on). Needs `no_new_privs` (or CAP_SYS_ADMIN). Returns the listener for denied calls:
    /// hand it to whoever answers them ([`notify::Denials`]).
    pub fn install(&self) -> Result<OwnedFd, SeccompError> {
        install_program(&self.fallbacks, 0)?;
        let listener = install_program(&self.allowlist, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)?;
        // SAFETY: with NEW_LISTENER a successful seccomp(2) returns a new fd that we own.
        Ok(unsafe { OwnedFd::from_raw_fd(listener) })
    }

    /// Instructions in both programs (the kernel allows 4096 per filter).
    pub fn len(&self) -> usize {
        self.fallbacks.len() + self.allowlist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn install_program(program: &BpfProgram, flags: libc::c_ulong) -> Result<i32, SeccompError> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const seccompiler::sock_filter,
    }
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| compile_error("the filter is longer than the kernel accepts"))?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const SockFprog,
        )
    };
    if rc < 0 {
        return Err(SeccompError::Install(std::io::Error::last_os_error()));
    }
    Ok(rc as i32)
}

#[cfg(test)]
mod tests;
