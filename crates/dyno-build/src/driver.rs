//! The build driver: the script a build dyno runs (`bash /meta/driver.sh`). It runs Heroku's
//! buildpack API over the directories the daemon binds into the build dyno and leaves in
//! `/meta` what the daemon reads back: [`RAN`] (the buildpacks that ran, one URL a line) and
//! `release-NN.yml` (each one's `bin/release` output, NN its place in the order).
//!
//! With `/meta/explicit` present (the app has buildpacks set, or the build names them), every
//! buildpack runs in order and each must detect; without it, the installed buildpacks are tried
//! in order and the first that detects runs alone.

/// The script's text.
pub const SCRIPT: &str = include_str!("driver.sh");
/// Its file name in the build's meta dir.
pub const SCRIPT_NAME: &str = "driver.sh";
/// The command the build dyno runs.
pub const COMMAND: &str = "bash /meta/driver.sh";
/// A file in a buildpack's directory naming where it came from (for the build's lines).
pub const URL_FILE: &str = ".dyno-buildpack-url";
/// The meta dir's list of the buildpacks that ran.
pub const RAN: &str = "ran";
/// Present in the meta dir: run every buildpack, in order (no detection among them).
pub const EXPLICIT: &str = "explicit";

/// The meta dir's file holding the `bin/release` output of the buildpack in place `dir_name`.
pub fn release_file(dir_name: &str) -> String {
    format!("release-{dir_name}.yml")
}

/// The directory name of the buildpack in place `index` (sorted as the script lists them).
pub fn buildpack_dir_name(index: usize) -> String {
    format!("{index:02}")
}
