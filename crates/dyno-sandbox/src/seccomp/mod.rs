//! Every dyno's system-call filter: the profile ([`profile::PROFILE`]) compiled to a seccomp
//! BPF program ([`bpf`]: a search tree, see there for why not `seccompiler`'s linear chain),
//! installed by the dyno's PID 1 after `no_new_privs` and before the app is started, so every
//! process of the dyno runs under it.
//!
//! What it returns:
//! - allowed calls: `SECCOMP_RET_ALLOW`;
//! - calls that fail quietly with their own errno (`clone3` → `ENOSYS`): `SECCOMP_RET_ERRNO`;
//! - everything else, calls of a foreign architecture included: a user notification
//!   (`SECCOMP_RET_USER_NOTIF`) to the dyno's shim, which answers `EPERM` and reports the call
//!   ([`notify`]). Denied calls never kill the process. If the shim is gone, the kernel answers
//!   `ENOSYS` on its own: still denied.

pub mod bpf;
pub mod notify;
pub mod profile;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};

use bpf::{Insn, Verdict};
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
    let table = table();
    table
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|at| table[at].1)
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
    program: Vec<Insn>,
}

/// `AUDIT_ARCH_*` of the architecture we run on.
fn audit_arch() -> Result<u32, SeccompError> {
    #[cfg(target_arch = "x86_64")]
    return Ok(0xc000_003e);
    #[cfg(not(target_arch = "x86_64"))]
    return Err(SeccompError::UnsupportedArch);
}

/// Compiles the profile plus `additions` (allowed whole).
pub fn compile<S: AsRef<str>>(additions: &[S]) -> Result<Filters, SeccompError> {
    validate_additions(additions)?;
    let arch = audit_arch()?;
    let mut verdicts: BTreeMap<u32, Verdict> = BTreeMap::new();
    for row in PROFILE {
        for call in row.calls {
            // A call this architecture does not have cannot be made: nothing to decide.
            let Some(nr) = number(call) else { continue };
            let verdict = match row.rule {
                Rule::Allow => Verdict::Return(libc::SECCOMP_RET_ALLOW),
                Rule::ArgIn { arg, values } => Verdict::ArgIn {
                    arg,
                    values: values.iter().map(|v| *v as u32).collect(),
                },
                Rule::ArgClear { arg, mask } => Verdict::ArgClear { arg, mask },
                Rule::Fail(errno) => {
                    Verdict::Return(libc::SECCOMP_RET_ERRNO | (errno as u32 & 0xffff))
                }
                Rule::Deny => continue,
            };
            verdicts.insert(nr as u32, verdict);
        }
    }
    for name in additions {
        let nr = number(name.as_ref()).expect("validated above");
        verdicts.insert(nr as u32, Verdict::Return(libc::SECCOMP_RET_ALLOW));
    }
    let program = bpf::program(arch, &verdicts, libc::SECCOMP_RET_USER_NOTIF);
    if program.len() > 4096 {
        return Err(SeccompError::Compile(format!(
            "{} instructions: more than the kernel's 4096",
            program.len()
        )));
    }
    Ok(Filters { program })
}

impl Filters {
    /// Installs the filter on the calling thread (and so on everything it starts from now
    /// on). Needs `no_new_privs` (or CAP_SYS_ADMIN). Returns the listener for denied calls:
    /// hand it to whoever answers them ([`notify::Denials`]).
    pub fn install(&self) -> Result<OwnedFd, SeccompError> {
        #[repr(C)]
        struct SockFprog {
            len: libc::c_ushort,
            filter: *const Insn,
        }
        let prog = SockFprog {
            // At most 4096, checked in `compile`.
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr(),
        };
        // SAFETY: `prog` points at `self.program` (`Insn` is `struct sock_filter`), which
        // outlives the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const SockFprog,
            )
        };
        if rc < 0 {
            return Err(SeccompError::Install(std::io::Error::last_os_error()));
        }
        // SAFETY: with NEW_LISTENER a successful seccomp(2) returns a new fd that we own.
        Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
    }

    /// The program's instructions.
    pub fn program(&self) -> &[Insn] {
        &self.program
    }
}

#[cfg(test)]
mod tests;
