//! Who the app is: an unprivileged uid/gid, no supplementary groups, no capabilities (not even
//! in the bounding set), and `no_new_privs`, so no setuid binary or file capability can give any
//! back.

use crate::sys::{check, SysResult};

pub fn become_app_user(uid: u32, gid: u32) -> SysResult<()> {
    if uid == 0 || gid == 0 {
        return Err(crate::sys::SysError {
            what: "the app's uid and gid must not be 0".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
    }
    // The bounding set first: dropping from it needs CAP_SETPCAP, which setuid takes away.
    for cap in 0..=63 {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            break; // past the kernel's last capability
        }
        check(
            || format!("drop capability {cap} from the bounding set"),
            rc,
        )?;
    }
    // SAFETY: plain syscalls with integer arguments (and a null list for setgroups).
    unsafe {
        check(
            || "setgroups []".into(),
            libc::setgroups(0, std::ptr::null()),
        )?;
        check(
            || format!("setresgid {gid}"),
            libc::setresgid(gid, gid, gid),
        )?;
        // Leaving uid 0 clears the permitted, effective and ambient capability sets.
        check(
            || format!("setresuid {uid}"),
            libc::setresuid(uid, uid, uid),
        )?;
        check(
            || "no_new_privs".into(),
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
    }
    Ok(())
}
