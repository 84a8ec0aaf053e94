//! `dyno serve`'s flags for builds (`git push`, `dyno deploy`, the builds API).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use dyno_manager::daemon::builds::{BuildOptions, Installed};
use dyno_supervisor::lifecycle::parse_duration;

#[derive(Args, Clone)]
pub struct BuildArgs {
    /// A build that runs longer is stopped and fails, releasing nothing (Heroku: 15 minutes)
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    build_timeout: Duration,
    /// Room for a build (source, cache, buildpacks and the slug to be, on a tmpfs of its own:
    /// a buildpack that fills it gets ENOSPC, the host's disk stays free)
    #[arg(long, default_value_t = 2048, value_name = "MB")]
    build_disk_mb: u64,
    /// The build dyno's size (its memory, processes and CPU share), a Heroku size name
    #[arg(long, default_value = "Performance-M")]
    build_size: String,
    /// Largest slug, compressed (Heroku: 500 MB)
    #[arg(long, default_value_t = 500, value_name = "MB")]
    max_slug_mb: u64,
    /// A buildpack directory apps without buildpacks set are tried against (its name is the
    /// directory's); repeat for more. They come before the shipped `python` and `procfile`.
    #[arg(long = "buildpack", value_name = "DIR")]
    buildpacks: Vec<PathBuf>,
}

impl BuildArgs {
    pub fn options(&self) -> Result<BuildOptions, String> {
        if dyno_sandbox::cgroup::DynoSize::lookup(&self.build_size).is_none() {
            return Err(format!(
                "--build-size {}: not a dyno size; use one of Heroku's (Standard-1X, \
                 Standard-2X, Performance-M, Performance-L, …)",
                self.build_size
            ));
        }
        let mut installed = Vec::new();
        for dir in &self.buildpacks {
            if !dir.join("bin").join("detect").is_file() {
                return Err(format!(
                    "--buildpack {}: not a buildpack (it has no bin/detect)",
                    dir.display()
                ));
            }
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string());
            installed.push(Installed {
                name,
                dir: dir.clone(),
            });
        }
        Ok(BuildOptions {
            timeout: self.build_timeout,
            size: self.build_size.clone(),
            disk_bytes: self.build_disk_mb << 20,
            max_slug_bytes: self.max_slug_mb * 1000 * 1000,
            installed,
        })
    }
}
