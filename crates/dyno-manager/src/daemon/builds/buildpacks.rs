//! Which buildpacks a build runs, and getting each into the build's workspace: a directory of
//! this host (`/srv/buildpacks/x` or `file:///…`), one of the installed ones by name
//! (`python`, `heroku/python`), a `.tgz` URL (fetched with curl, unpacked with the same checks
//! as a source archive) or a git URL (`https://…/x.git#ref`, cloned shallow).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dyno_build::driver;

use super::workspace::copy_owned;

/// How long fetching one buildpack may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// An installed buildpack: its name (`python`) and directory.
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub dir: PathBuf,
}

/// Puts the buildpack `url` at `dest` (which must not exist), with its URL noted for the
/// build's lines. Errors are the build's words.
pub fn fetch(
    url: &str,
    dest: &Path,
    installed: &[Installed],
    scratch: &Path,
) -> Result<(), String> {
    let url = url.trim();
    if let Some(found) = installed
        .iter()
        .find(|b| url == b.name || url.strip_prefix("heroku/") == Some(b.name.as_str()))
    {
        copy_dir(&found.dir, dest)?;
    } else if let Some(path) = url
        .strip_prefix("file://")
        .or(url.starts_with('/').then_some(url))
    {
        let dir = Path::new(path);
        if !dir.is_dir() {
            return Err(format!(
                "The buildpack {url} is not a directory on the daemon's host."
            ));
        }
        copy_dir(dir, dest)?;
    } else if url.starts_with("http://") || url.starts_with("https://") || url.starts_with("git://")
    {
        let (location, reference) = match url.split_once('#') {
            Some((l, r)) => (l, Some(r)),
            None => (url, None),
        };
        if location.ends_with(".tgz") || location.ends_with(".tar.gz") {
            fetch_tarball(location, dest, scratch)?;
        } else {
            clone(location, reference, dest)?;
        }
    } else {
        let names: Vec<&str> = installed.iter().map(|b| b.name.as_str()).collect();
        return Err(format!(
            "Could not find the buildpack {url}: give a directory of the daemon's host, a git \
             URL, a .tgz URL, or one of the installed buildpacks ({}).",
            names.join(", ")
        ));
    }
    std::fs::write(dest.join(driver::URL_FILE), url)
        .map_err(|e| format!("The buildpack {url} could not be set up: {e}"))
}

fn copy_dir(src: &Path, dest: &Path) -> Result<(), String> {
    std::fs::create_dir(dest)
        .and_then(|()| copy_owned(src, dest, None))
        .map_err(|e| format!("Could not copy the buildpack {}: {e}", src.display()))
}

/// A shallow clone of `location` (at `reference`); a full one when the server cannot serve a
/// shallow one (git's dumb HTTP).
fn clone(location: &str, reference: Option<&str>, dest: &Path) -> Result<(), String> {
    let shallow = run_fetch(git_clone(location, reference, dest, true), location);
    match shallow {
        Err(e) if e.contains("shallow") => {
            let _ = std::fs::remove_dir_all(dest);
            run_fetch(git_clone(location, reference, dest, false), location)
        }
        other => other,
    }
}

fn git_clone(location: &str, reference: Option<&str>, dest: &Path, shallow: bool) -> Command {
    let mut git = Command::new("git");
    // A server that stalls does not hold the build forever.
    git.args([
        "-c",
        "http.lowSpeedLimit=1000",
        "-c",
        "http.lowSpeedTime=60",
    ]);
    git.args(["clone", "--quiet"]);
    if shallow {
        git.args(["--depth", "1"]);
    }
    if let Some(r) = reference {
        git.args(["--branch", r]);
    }
    git.arg("--").arg(location).arg(dest);
    git.env("GIT_TERMINAL_PROMPT", "0");
    git
}

fn fetch_tarball(location: &str, dest: &Path, scratch: &Path) -> Result<(), String> {
    let file = scratch.join("buildpack.tgz");
    let mut curl = Command::new("curl");
    curl.args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--max-time", &FETCH_TIMEOUT.as_secs().to_string()])
        .arg("--output")
        .arg(&file)
        .arg("--")
        .arg(location);
    run_fetch(curl, location)?;
    std::fs::create_dir(dest).map_err(|e| e.to_string())?;
    let unpacked = dyno_build::archive::unpack(
        &file,
        dest,
        dyno_build::archive::Limits {
            max_entries: 100_000,
            max_bytes: 1 << 30,
        },
    );
    let _ = std::fs::remove_file(&file);
    unpacked.map_err(|e| format!("The buildpack {location}: {e}"))?;
    // A tarball of one top directory (`buildpack-1.2/bin/…`) is that directory.
    let entries: Vec<_> = std::fs::read_dir(dest)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .collect();
    if let [only] = entries.as_slice() {
        if only.path().join("bin").is_dir() && !dest.join("bin").exists() {
            let inner = only.path();
            for entry in std::fs::read_dir(&inner).map_err(|e| e.to_string())? {
                let entry = entry.map_err(|e| e.to_string())?;
                std::fs::rename(entry.path(), dest.join(entry.file_name()))
                    .map_err(|e| e.to_string())?;
            }
            let _ = std::fs::remove_dir(inner);
        }
    }
    Ok(())
}

/// Runs a fetcher (git, curl) to its end or [`FETCH_TIMEOUT`]; its stderr is the error.
fn run_fetch(mut command: Command, location: &str) -> Result<(), String> {
    let what = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("Could not run {what} to fetch the buildpack {location}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "Could not fetch the buildpack {location}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}
