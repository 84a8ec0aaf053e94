//! `dyno bench …`: timing goals as ratios against an anchor measured in the same run, never as
//! pass/fail asserts. The last line of every bench is `key=value` pairs, for scripts.

pub mod cni;
mod net;
mod start;
pub mod stats;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Set up and tear down N dyno networks (host side in a throwaway namespace), then the same
    /// with Debian's CNI ptp plugin as the anchor
    Net(net::NetBench),
    /// Start N dynos (network + sandbox + exec) and N web dynos until `up` (all alive at once:
    /// memory per dyno), with bwrap --unshare-all as the anchor
    Start(start::StartBench),
}

pub fn run(command: BenchCommand) -> Result<(), String> {
    crate::require_root("dyno bench")?;
    match command {
        BenchCommand::Net(args) => net::run(args),
        BenchCommand::Start(args) => start::run(args),
    }
}
