//! `dyno-bench`: the benchmarks behind `dyno bench …`, and their anchors, kept out of the
//! product's crates. Each bench measures dyno against an anchor it runs itself, on the same host
//! in the same run:
//!
//! - `net`: dyno network setup and teardown against Debian's CNI `ptp` plugin ([`cni`]);
//! - `cni`: the `dyno-cni` plugin against `ptp` + `host-local`, both called as a runtime calls
//!   a plugin ([`cni`]);
//! - `start`: a dyno's start, a web dyno until `up`, memory per dyno, against `bwrap
//!   --unshare-all`;
//! - `router`: the dyno router under `wrk` against nginx and HAProxy on the same CPU, in front
//!   of the same backend; the seccomp filter's cost and the scale storm;
//! - `scale` and `isolation`: a real `dyno serve` driven through its API (scaling, and one app's
//!   abuse against another app's latency through the router);
//! - `drain`: log lines from one dyno to a syslog drain, and the lines lost;
//! - `build`: `git push` and `dyno deploy` of a changed app until the router serves it, the
//!   build's share of that, against the same push to `git http-backend` without dyno.
//!
//! [`podman`] is a throwaway rootful podman (its own root, a lab network namespace, a private
//! mount namespace) for `dyno-cni`'s end-to-end test and for timing `podman run` on a `dyno-cni`
//! network against a `ptp` one.
//!
//! Timing goals are ratios against the anchor, never pass/fail asserts. The last line of every
//! bench is `key=value` pairs, for scripts. Percentiles are nearest-rank ([`stats`]).
//!
//! The library runs inside the `dyno` binary: the benches that start a real daemon run
//! `std::env::current_exe()` with `serve`, and the binary hands [`run`] the shim its dynos start
//! with.

mod build;
pub mod cni;
mod cni_bench;
mod drain;
mod isolation;
mod load;
mod net;
pub mod podman;
mod router;
mod scale;
mod start;
pub mod stats;

use std::path::Path;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Set up and tear down N dyno networks (host side in a throwaway namespace), then the same
    /// with Debian's CNI ptp plugin as the anchor
    Net(net::NetBench),
    /// ADD for N containers then DEL for all, with the dyno-cni plugin and with Debian's CNI
    /// ptp + host-local as the anchor, each called as a runtime calls it (host side in a
    /// throwaway namespace)
    Cni(cni_bench::CniBench),
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
    /// A real `dyno serve` whose one worker prints N numbered lines to a syslog drain (a
    /// receiver on the lab's loopback): lines received per second, lines lost, and what the
    /// L10 notices said
    Drain(drain::DrainBench),
    /// A real `dyno serve`: `git push` (over HTTPS) and `dyno deploy` of examples/hello with
    /// one file changed, each timed until the router serves the change, the build's share of
    /// that; the same push to a bare repository behind git http-backend as the anchor
    Build(build::BuildBench),
}

/// Runs one bench; it needs root (the caller checks). `shim` is the binary each dyno runs as its
/// shim and PID 1 (`dyno-shim` next to `dyno`, or `dyno` itself), for the benches that start
/// dynos in this process (`start`, and `router`'s seccomp runs).
pub fn run(command: BenchCommand, shim: &Path) -> Result<(), String> {
    match command {
        BenchCommand::Net(args) => net::run(args),
        BenchCommand::Cni(args) => cni_bench::run(args),
        BenchCommand::Start(args) => start::run(args, shim),
        BenchCommand::Router(args) => router::run(args, shim),
        BenchCommand::Scale(args) => scale::run(args),
        BenchCommand::Isolation(args) => isolation::run(args),
        BenchCommand::Drain(args) => drain::run(args),
        BenchCommand::Build(args) => build::run(args),
    }
}
