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

/// Gives the calling process the soft open-file limit this process started with (the hard
/// limit stays). Nothing when [`raise_open_files`] was never called. Only a `setrlimit(2)`, no
/// allocation: it may run in `pre_exec`.
pub fn restore_open_files_for_child() -> std::io::Result<()> {
    match STARTED_WITH.get() {
        Some(limit) => setrlimit(Resource::Nofile, *limit).map_err(Into::into),
        None => Ok(()),
    }
}
