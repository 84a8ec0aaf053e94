//! The open-file limit: the daemon raises its own soft limit to the hard one at start (its
//! router holds a file per client connection, and a shell's usual 1,024 lets one client shut
//! it), while dynos keep the soft limit the daemon was started with, as before.

use std::sync::OnceLock;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The soft limit the process had before [`raise_open_files`], for the dynos it starts.
static STARTED_WITH: OnceLock<Rlimit> = OnceLock::new();

/// Raises this process's soft open-file limit to its hard limit; returns (before, after). Once
/// per process: later calls change nothing.
pub fn raise_open_files() -> rustix::io::Result<(Option<u64>, Option<u64>)> {
    let before = getrlimit(Resource::Nofile);
    let _ = STARTED_WITH.set(before);
    let raised = Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok((before.current, raised.current))
}

/// Where a shim finds the soft open-file limit to give its dyno (see [`shim_env`]).
pub const SHIM_NOFILE_ENV: &str = "DYNO_SHIM_NOFILE";

/// The variable that tells a shim the soft open-file limit this process started with; `None`
/// when [`raise_open_files`] was never called or changed nothing. Passed in the environment
/// rather than set between fork and exec: a `pre_exec` step makes the spawn a full `fork(2)`
/// of the daemon, whose page-table copy and copy-on-write faults stall the router's threads
/// at every dyno start.
pub fn shim_env() -> Option<(&'static str, String)> {
    let soft = STARTED_WITH.get()?.current?;
    (getrlimit(Resource::Nofile).current != Some(soft)).then(|| (SHIM_NOFILE_ENV, soft.to_string()))
}

/// In the shim: lowers its soft open-file limit to the one [`shim_env`] passed (the hard limit
/// stays). Nothing without the variable; a value that is not a number is ignored.
pub fn restore_open_files_from_env() -> std::io::Result<()> {
    let Some(soft) = std::env::var(SHIM_NOFILE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let hard = getrlimit(Resource::Nofile).maximum;
    let limit = Rlimit {
        current: Some(hard.map_or(soft, |h| soft.min(h))),
        maximum: hard,
    };
    setrlimit(Resource::Nofile, limit).map_err(Into::into)
}
