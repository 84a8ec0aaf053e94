//! The app's git repository in the bench's scratch dir: a copy of the app (`examples/hello`)
//! committed on `main`, and the one file each round changes. Every `git` the bench runs (its
//! own commits and the timed pushes) gets a throwaway HOME and global config, no system config
//! and no prompt, so nothing of the host's git setup (credential helpers, proxies, hooks)
//! takes part or is touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use dyno_net::ns::Netns;

/// The file a round changes: `.profile.d` scripts are sourced at every dyno start (Heroku's
/// rule), so its `GREETING` is what `web.py` answers with, and no line of the app changes.
pub(super) const MARKER_FILE: &str = ".profile.d/bench-greeting.sh";

pub(super) struct Repo {
    /// The work tree (also what `dyno deploy` packs: it leaves `.git` out).
    pub(super) dir: PathBuf,
    /// HOME and GIT_CONFIG_GLOBAL of every git the bench runs.
    home: PathBuf,
    /// The CA the pushes over https trust (`GIT_SSL_CAINFO`).
    ca: PathBuf,
    git: PathBuf,
}

impl Repo {
    /// Copies `app` (its files, not a `.git`) to `scratch/repo` and commits it on `main`
    /// with the marker `first`.
    pub(super) fn create(
        git: &Path,
        app: &Path,
        scratch: &Path,
        ca: &Path,
        first: &str,
    ) -> Result<Repo, String> {
        let dir = scratch.join("repo");
        let home = scratch.join("git-home");
        for d in [&dir, &home] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        copy_tree(app, &dir)?;
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = dyno bench\n\temail = bench@localhost\n\
             [init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
        )
        .map_err(|e| format!("git config: {e}"))?;
        let repo = Repo {
            dir,
            home,
            ca: ca.to_path_buf(),
            git: git.to_path_buf(),
        };
        repo.run(&["init", "-q", "-b", "main"])?;
        repo.set_marker(first)?;
        repo.run(&["add", "-A"])?;
        repo.run(&["commit", "-q", "-m", first])?;
        Ok(repo)
    }

    /// `git ARGS` in the work tree, with the bench's environment; not in any namespace.
    pub(super) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.git);
        command
            .args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_GLOBAL", self.home.join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSL_CAINFO", &self.ca)
            .env("LC_ALL", "C");
        command
    }

    /// `git push URL HEAD:main` from inside `netns` (where the daemon and the anchor listen).
    pub(super) fn push(&self, url: &str, netns: &Netns) -> Result<Command, String> {
        let mut command = self.command(&["push", "--quiet", url, "HEAD:main"]);
        dyno_net::ns::command_in(&mut command, netns, None).map_err(|e| e.to_string())?;
        Ok(command)
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| format!("git {}: {e}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "git {}: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        }
        Ok(())
    }

    /// Writes `marker` as the greeting the app will answer with (uncommitted).
    pub(super) fn set_marker(&self, marker: &str) -> Result<(), String> {
        let path = self.dir.join(MARKER_FILE);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, format!("export GREETING=\"{marker}\"\n"))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes `marker` and commits it: the commit a round pushes (one file changed).
    pub(super) fn commit_marker(&self, marker: &str) -> Result<(), String> {
        self.set_marker(marker)?;
        self.run(&["commit", "-q", "-a", "-m", marker])
    }

    /// A bare repository at `path`, the local anchor's remote.
    pub(super) fn init_bare(&self, path: &Path) -> Result<(), String> {
        let path = path.to_string_lossy();
        self.run(&["init", "-q", "--bare", "-b", "main", &path])
    }

    /// The version of the git the bench runs.
    pub(super) fn version(&self) -> String {
        self.command(&["--version"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

/// Copies the files of `from` into `to` (regular files and directories; no `.git`).
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", src.display()))?;
        if entry.file_name() == ".git" {
            continue;
        } else if kind.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| format!("{}: {e}", dst.display()))?;
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
        }
    }
    Ok(())
}
