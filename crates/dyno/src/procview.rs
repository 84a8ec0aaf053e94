//! `--lxcfs-dir` / `--no-lxcfs` of `dyno serve` and `dyno up`: the dynos' private `/proc`.

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
#[command(next_help_heading = "Private /proc view")]
pub struct LxcfsArgs {
    /// Where LXCFS is mounted for the dynos' own /proc figures (meminfo, loadavg, stat, uptime,
    /// cpuinfo, swaps, diskstats): an lxcfs already mounted there is used, else one is started
    /// (in its own session, pid in PATH.pid, output in PATH.log) and left running for the next
    /// daemon. Without lxcfs (not installed, no /dev/fuse), dynos see the host's figures and
    /// the daemon says so once
    #[arg(long, value_name = "PATH", default_value = dyno_sandbox::lxcfs::DEFAULT_DIR)]
    lxcfs_dir: PathBuf,
    /// No private /proc view: dynos see the host's /proc figures
    #[arg(long, conflicts_with = "lxcfs_dir")]
    no_lxcfs: bool,
}

impl LxcfsArgs {
    pub fn dir(&self) -> Option<PathBuf> {
        (!self.no_lxcfs).then(|| self.lxcfs_dir.clone())
    }
}
