//! What a build needs before its build dyno runs, made on the host (blocking): the source
//! unpacked and given to the app's user, the cache copied in, the config vars written as
//! files, the buildpacks put in place, the driver written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dyno_build::driver;

use super::buildpacks;
use super::workspace::{self, Workspace};

/// A build's inputs.
pub(super) struct Preparation {
    /// The workspace's root (mounted).
    pub workspace: PathBuf,
    /// The uploaded archive.
    pub source: PathBuf,
    /// The app's user.
    pub uid: u32,
    /// The app's kept cache.
    pub cache: PathBuf,
    pub config: BTreeMap<String, String>,
    pub installed: Vec<buildpacks::Installed>,
    /// The buildpacks asked for (empty: the source's `.buildpacks`, else detection).
    pub asked: Vec<String>,
}

type Failure = String;

/// The most a source may unpack to (the workspace's tmpfs bounds it too).
const MAX_SOURCE_UNPACKED: u64 = 2 << 30;

/// Everything before the build dyno runs, on the host (blocking): the source unpacked and
/// given to the app's user, the cache copied in, the config vars written, the buildpacks put
/// in place, the driver written.
impl Preparation {
    pub(super) fn run(self) -> Result<(), Failure> {
        let ws = Workspace {
            root: self.workspace.clone(),
        };
        let app_dir = ws.app();
        let limits = dyno_build::archive::Limits {
            max_entries: dyno_build::archive::Limits::DEFAULT_MAX_ENTRIES,
            max_bytes: MAX_SOURCE_UNPACKED,
        };
        let unpacked = dyno_build::archive::unpack(&self.source, &app_dir, limits)
            .map_err(|e| format!(" !     Push rejected: {e}"))?;
        if unpacked.entries == 0 {
            return Err(
                " !     Push rejected: the source is empty (no files to build).".to_string(),
            );
        }
        workspace::chown_tree(&app_dir, self.uid).map_err(|e| format!(" !     {e}"))?;
        if self.cache.is_dir() {
            workspace::copy_owned(&self.cache, &ws.cache(), Some(self.uid))
                .map_err(|e| format!(" !     Could not restore the build cache: {e}"))?;
        }
        for (key, value) in &self.config {
            std::fs::write(ws.env().join(key), value).map_err(|e| format!(" !     {e}"))?;
        }
        // `.buildpacks` (heroku-buildpack-multi's file): the order when none was set.
        let multi = std::fs::read_to_string(app_dir.join(".buildpacks"))
            .map(|text| {
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let explicit = if self.asked.is_empty() {
            multi
        } else {
            self.asked.clone()
        };
        // Without any, every installed one is put in place for detection.
        let urls: Vec<String> = if explicit.is_empty() {
            self.installed.iter().map(|b| b.name.clone()).collect()
        } else {
            std::fs::write(ws.meta().join(driver::EXPLICIT), "")
                .map_err(|e| format!(" !     {e}"))?;
            explicit
        };
        for (i, url) in urls.iter().enumerate() {
            let dest = ws.buildpacks().join(driver::buildpack_dir_name(i));
            buildpacks::fetch(url, &dest, &self.installed, &ws.root)
                .map_err(|e| format!(" !     {e}"))?;
        }
        let meta = ws.meta();
        std::fs::write(meta.join(driver::SCRIPT_NAME), driver::SCRIPT)
            .map_err(|e| format!(" !     {e}"))?;
        Ok(())
    }
}
