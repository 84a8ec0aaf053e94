//! `dyno bench …`: timing goals as ratios against an anchor measured in the same run, never as
//! pass/fail asserts. The last line of every bench is `key=value` pairs, for scripts.

pub mod cni;
mod isolation;
mod load;
mod net;
mod router;
mod scale;
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
    /// wrk through the dyno router (embedded, one pinned worker) against nginx and HAProxy on
    /// the same CPU, all in front of the same backend; direct-to-backend as the baseline
    Router(router::RouterBench),
    /// A real `dyno serve` driven through its API: ps:scale web=0→N until all up, `ps`
    /// latency and daemon memory with N up, N→0 until nothing is left
    Scale(scale::ScaleBench),
    /// A real `dyno serve` with a victim app and an abuser app: the victim's latency through
    /// the router while the abuser's worker runs each abuse in turn (fork bomb, memory, tmpfs,
    /// sockets, disk, CPU, denied system calls), against the same with the abuser idle
    Isolation(isolation::IsolationBench),
}

pub fn run(command: BenchCommand) -> Result<(), String> {
    crate::require_root("dyno bench")?;
    match command {
        BenchCommand::Net(args) => net::run(args),
        BenchCommand::Start(args) => start::run(args),
        BenchCommand::Router(args) => router::run(args),
        BenchCommand::Scale(args) => scale::run(args),
        BenchCommand::Isolation(args) => isolation::run(args),
    }
}
