//! `--cpu-reserve` of `dyno serve` and `dyno up`: CPUs busy dynos stay off.

use clap::Args;

#[derive(Args)]
#[command(next_help_heading = "CPU placement")]
pub struct CpuArgs {
    /// Keep busy dynos off this many CPUs (the first of the daemon's own), for the router, the
    /// daemon and dynos that use little CPU. Every dyno starts on the other CPUs and may use
    /// all of them while it uses less than half a CPU; its CPU quota is the same either way.
    /// 0: every dyno may run on every CPU (then one busy dyno delays every other dyno's
    /// requests on a small host). Needs the cpuset controller; without it the daemon says so
    /// once and places nothing
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpu_reserve: usize,
}
