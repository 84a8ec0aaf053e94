//! The bench's podman measurement: `podman run --rm IMAGE true` on a `dyno-cni` network against
//! a `ptp` + `host-local` one, in one world.

use std::path::Path;
use std::time::Duration;

use dyno_net::ns::Netns;

use super::{PodmanError, PodmanWorld};

/// `podman run --rm IMAGE true` timed on each network, in the same order, round by round.
#[derive(Debug, Clone, Default)]
pub struct RunTimings {
    pub dyno: Vec<Duration>,
    pub ptp: Vec<Duration>,
}

/// The bench's podman measurement in one call: a world in `netns` (a lab's host), the busybox
/// image, a `dyno-cni` network (plugin binary `dyno_cni`) and a `ptp` + `host-local` one; one
/// untimed warm-up run on each, then `rounds` rounds alternating between them (so that a drift of
/// the host affects both alike). The world is removed before returning.
pub fn time_dyno_against_ptp(
    netns: &Netns,
    dyno_cni: &Path,
    rounds: usize,
) -> Result<RunTimings, PodmanError> {
    let mut world = PodmanWorld::new(netns, "dynobench-podman")?;
    world.add_plugin("dyno-cni", dyno_cni)?;
    world.write_dyno_network("dyno", "10.216.0.0/24", None)?;
    world.write_ptp_network("ptp", "10.216.1.0/24")?;
    let image = world.import_busybox("dynobox")?;
    world.time_runs("dyno", &image, 1)?;
    world.time_runs("ptp", &image, 1)?;
    let mut timings = RunTimings::default();
    for _ in 0..rounds {
        timings.dyno.extend(world.time_runs("dyno", &image, 1)?);
        timings.ptp.extend(world.time_runs("ptp", &image, 1)?);
    }
    world.cleanup()?;
    Ok(timings)
}
