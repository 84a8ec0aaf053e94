//! The anchor: `bwrap --unshare-all` starting the same tiny program, timed the same way.

use super::*;

pub(super) fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = (path.split(':').chain(["/usr/bin", "/usr/local/bin"]))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("bwrap"))
        .find(|p| p.is_file());
    found
}

/// `bwrap --unshare-all` with the host's stack read-only, as on this host's layout.
pub(super) fn bwrap_command(bwrap: &Path, program: &[&str]) -> Command {
    let mut command = Command::new(bwrap);
    command.args(["--unshare-all", "--ro-bind", "/usr", "/usr"]);
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(dir) {
                    command.arg("--symlink").arg(target).arg(dir);
                }
            }
            Ok(m) if m.is_dir() => {
                command.args(["--ro-bind", dir, dir]);
            }
            _ => {}
        }
    }
    command
        .args(["--ro-bind", "/etc", "/etc", "--proc", "/proc"])
        .args([
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--die-with-parent",
            "--",
        ])
        .args(program)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

pub(super) fn bwrap_phase(
    bwrap: &Path,
    program: &[&str],
    count: usize,
    pause: Duration,
) -> Result<Vec<Duration>, String> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        std::thread::sleep(pause);
        let started = Instant::now();
        let mut child = (bwrap_command(bwrap, program).spawn())
            .map_err(|e| format!("start {}: {e}", bwrap.display()))?;
        let (first, err) = first_byte_then_drain(&mut child);
        let status = child.wait().map_err(|e| format!("wait for bwrap: {e}"))?;
        let first = first.map_err(|e| format!("bwrap {program:?}: {e}: {}", err.trim()))?;
        if !status.success() {
            return Err(format!("bwrap {program:?}: {status}: {}", err.trim()));
        }
        times.push(first - started);
    }
    Ok(times)
}

// ---------------------------------------------------------------------------------------------
// up: the real supervisor, N web dynos up at once
