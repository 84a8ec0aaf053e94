//! The apps' git repositories, which `git push` reaches through the API (see
//! [`dyno_api::server::git`]): `DATA_DIR/git/<app uuid>.git`, bare, made on first use. Keyed by
//! the app's uuid, so `apps:rename` keeps an app's repository; removed with the app.
//!
//! Every repository runs one shared hook, `DATA_DIR/git/hooks/pre-receive`, which hands the
//! push to `dyno git-hook pre-receive` (the daemon's own binary): it archives the pushed
//! commit, uploads it and builds it through the API's unix socket, and relays the build's
//! output to the pusher. The repositories' config does not name the hooks: the CGI's
//! environment does (`core.hooksPath` through `GIT_CONFIG_*`), with what the hook needs to
//! find the daemon.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use dyno_api::server::git::GitRepository;
use dyno_error::ErrorKind;

use super::{Daemon, DaemonError};

/// The repositories' directory under the data dir.
pub const GIT_DIR: &str = "git";
/// The shared hooks' directory under [`GIT_DIR`] (`hooks` is never an app's `<uuid>.git`).
pub(super) const HOOKS_DIR: &str = "hooks";
/// The one hook. `DYNO_EXE` is in the CGI's environment, and so in the hook's.
const PRE_RECEIVE: &str = "#!/bin/sh\n\
    # dyno: a push to an app's repository builds it (see `dyno git-hook --help`).\n\
    exec \"$DYNO_EXE\" git-hook pre-receive\n";

impl Daemon {
    /// The app's repository (made on first use) and the environment its pushes run with.
    pub async fn git_repository(&self, name: &str) -> Result<GitRepository, DaemonError> {
        let app = self.app(name).await?;
        let Some(socket) = self.options.api_socket.clone() else {
            return Err(DaemonError::new(
                ErrorKind::Conflict,
                "This daemon serves no API socket, which pushes build through: push to a \
                 `dyno serve` daemon.",
            ));
        };
        let exe = std::env::current_exe().map_err(|e| {
            DaemonError::new(ErrorKind::Internal, format!("find the dyno binary: {e}"))
        })?;
        let root = self.options.data_dir.join(GIT_DIR);
        let repo = repo_name(&app.uuid);
        tokio::task::spawn_blocking({
            let (root, repo) = (root.clone(), repo.clone());
            move || prepare(&root, &repo)
        })
        .await
        .map_err(|e| DaemonError::new(ErrorKind::Internal, e.to_string()))?
        .map_err(|e| {
            DaemonError::new(
                ErrorKind::Internal,
                format!("prepare the git repository of {name}: {e}"),
            )
        })?;
        let hooks = root.join(HOOKS_DIR);
        let env = [
            ("GIT_CONFIG_COUNT", "1".to_string()),
            ("GIT_CONFIG_KEY_0", "core.hooksPath".to_string()),
            ("GIT_CONFIG_VALUE_0", hooks.display().to_string()),
            ("DYNO_EXE", exe.display().to_string()),
            ("DYNO_API_SOCKET", socket.display().to_string()),
            ("DYNO_GIT_APP", app.name.clone()),
        ];
        Ok(GitRepository {
            project_root: root,
            repo,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        })
    }

    /// The repository of the app with `uuid`: removed with the app (call off the runtime).
    pub(super) fn remove_git_repository(data_dir: &Path, uuid: &str) {
        let dir = data_dir.join(GIT_DIR).join(repo_name(uuid));
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!("cannot remove {}: {e}", dir.display())
            }
            _ => {}
        }
    }
}

/// A name next to `path` for making it aside: its own per call, in this process and others.
fn aside(path: &Path) -> std::path::PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".new-{name}-{}-{seq}", std::process::id()))
}

fn repo_name(uuid: &str) -> String {
    format!("{uuid}.git")
}

/// The repositories' root (0700: pushes go through the API, never around it) with the shared
/// hook, and `repo` in it: a new one is made aside and renamed into place, so a push that
/// comes at the same time never sees half a repository.
fn prepare(root: &Path, repo: &str) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root.join(HOOKS_DIR))?;
    write_hook(&root.join(HOOKS_DIR).join("pre-receive"))?;
    let dir = root.join(repo);
    if dir.join("HEAD").exists() {
        return Ok(());
    }
    let tmp = aside(&dir);
    let made = init_bare(&tmp).and_then(|()| match std::fs::rename(&tmp, &dir) {
        // Another request made it first: theirs is as good.
        Err(e) if dir.join("HEAD").exists() => {
            tracing::debug!("{} appeared meanwhile ({e})", dir.display());
            Ok(())
        }
        other => other,
    });
    let _ = std::fs::remove_dir_all(&tmp);
    made
}

/// `git init --bare` with Heroku's settings: pushes over HTTP, force pushes allowed, `main`
/// the default branch.
fn init_bare(dir: &Path) -> io::Result<()> {
    git(
        &["init", "--bare", "--quiet", "--initial-branch=main"],
        Some(dir),
    )?;
    for (key, value) in [
        ("http.receivepack", "true"),
        ("receive.denyNonFastForwards", "false"),
        // Nothing is rewritten behind the daemon's back: no gc racing a push.
        ("gc.auto", "0"),
    ] {
        git(
            &[
                "--git-dir",
                &dir.display().to_string(),
                "config",
                key,
                value,
            ],
            None,
        )?;
    }
    Ok(())
}

fn git(args: &[&str], last: Option<&Path>) -> io::Result<()> {
    let mut cmd = Command::new("git");
    cmd.args(args);
    if let Some(last) = last {
        cmd.arg(last);
    }
    let out = cmd
        .env_remove("GIT_DIR")
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("run git (is git installed?): {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The hook, rewritten only when it differs (a daemon of another version wrote it), through
/// a new file renamed over the old: a push never runs half a script.
fn write_hook(path: &Path) -> io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|s| s == PRE_RECEIVE) {
        return Ok(());
    }
    let tmp = aside(path);
    std::fs::write(&tmp, PRE_RECEIVE)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, key: &str) -> String {
        let out = Command::new("git")
            .args(["--git-dir", &dir.display().to_string(), "config", key])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn repositories_are_made_once_with_the_shared_hook() {
        struct Gone(std::path::PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let data = std::env::temp_dir().join(format!("dyno-git-prepare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let _gone = Gone(data.clone());
        let root = data.join(GIT_DIR);
        // Several requests at once for a repository that is not there yet.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || prepare(&root, &repo_name("abc")))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let repo = root.join("abc.git");
        assert_eq!(config(&repo, "core.bare"), "true");
        assert_eq!(config(&repo, "http.receivepack"), "true");
        assert_eq!(config(&repo, "receive.denyNonFastForwards"), "false");
        assert_eq!(
            std::fs::read_to_string(repo.join("HEAD")).unwrap(),
            "ref: refs/heads/main\n"
        );
        // Nothing left aside.
        let names: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["abc.git", "hooks"]);
        let hook = root.join("hooks/pre-receive");
        assert_eq!(std::fs::read_to_string(&hook).unwrap(), PRE_RECEIVE);
        let mode = std::fs::metadata(&hook).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let mode = std::fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // An old hook is replaced; a repository is kept as it is.
        std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::write(repo.join("description"), "mine").unwrap();
        prepare(&root, &repo_name("abc")).unwrap();
        assert_eq!(std::fs::read_to_string(&hook).unwrap(), PRE_RECEIVE);
        assert_eq!(
            std::fs::read_to_string(repo.join("description")).unwrap(),
            "mine"
        );
        // Gone with its app; a second removal is no error.
        Daemon::remove_git_repository(&data, "abc");
        assert!(!repo.exists());
        Daemon::remove_git_repository(&data, "abc");
    }
}
