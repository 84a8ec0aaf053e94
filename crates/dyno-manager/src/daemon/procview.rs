//! The dynos' private `/proc` view: the daemon finds or starts LXCFS once, at its start (see
//! `dyno_sandbox::lxcfs`). Where it cannot, dynos start all the same, with the kernel's
//! figures, and the daemon says so once.

use std::path::{Path, PathBuf};

use dyno_sandbox::lxcfs;

/// The LXCFS mount every dyno of this daemon binds its `/proc` files from; `None` (said once,
/// on stderr) when off or unavailable.
pub(crate) async fn open(dir: Option<&Path>) -> Option<PathBuf> {
    let Some(dir) = dir else {
        tracing::warn!(
            "the private /proc view is off (--no-lxcfs): dynos see the host's /proc figures \
             (meminfo, loadavg, stat, uptime, cpuinfo, swaps, diskstats)"
        );
        return None;
    };
    let wanted = dir.to_path_buf();
    let found = tokio::task::spawn_blocking(move || lxcfs::find_or_start(&wanted)).await;
    match found {
        Ok(Ok(found)) => {
            match found.started {
                Some(pid) => tracing::info!(dir = %dir.display(), pid, "started lxcfs"),
                None => tracing::info!(dir = %dir.display(), "using the lxcfs mounted there"),
            }
            Some(found.dir)
        }
        Ok(Err(e)) => {
            tracing::warn!(
                "no private /proc view: {e}. Dynos start, but see the host's /proc figures \
                 (meminfo, loadavg, stat, uptime, cpuinfo, swaps, diskstats). To fix: install \
                 lxcfs (apt-get install lxcfs), make sure /dev/fuse exists, and give \
                 --lxcfs-dir a directory it may mount on (or --no-lxcfs to silence this)"
            );
            None
        }
        Err(e) => {
            tracing::warn!("no private /proc view: {e}");
            None
        }
    }
}
