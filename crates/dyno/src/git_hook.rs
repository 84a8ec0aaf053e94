//! `dyno git-hook pre-receive`: what a `git push` to an app's repository runs on the daemon's
//! host (the daemon's repositories point their `pre-receive` at it). It builds the pushed
//! commit as Heroku does: archives it, uploads the archive and starts a build through the API's
//! unix socket, and relays the build's output, which git shows the pusher as `remote: …` lines
//! while it comes. The push is accepted when the build succeeded (and released), refused
//! otherwise, so the repository's `main` is always what was last deployed.
//!
//! Its environment comes from the daemon, through `git http-backend` and `git receive-pack`:
//! `DYNO_API_SOCKET`, `DYNO_GIT_APP`, and git's own (`GIT_DIR`, the quarantine of the pushed
//! objects, which `git archive` reads).

use std::io::Write;
use std::process::ExitCode;

use dyno_api::ApiClient;

/// The branches a push builds (Heroku's).
const DEPLOY_BRANCHES: [&str; 2] = ["refs/heads/main", "refs/heads/master"];

/// What a push asks for, from the hook's stdin.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Build this commit (pushed to `main` or `master`).
    Build { commit: String },
    /// Refuse the push, saying these lines.
    Refuse(Vec<String>),
}

/// Reads the `OLD NEW REF` lines git gives a pre-receive hook.
pub fn plan(input: &str) -> Plan {
    let updates: Vec<(&str, &str)> = input
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (_old, new, name) = (parts.next()?, parts.next()?, parts.next()?);
            Some((new, name))
        })
        .collect();
    if updates.is_empty() {
        return Plan::Refuse(vec!["!\tPush rejected: git sent no refs to update.".into()]);
    }
    if let Some((_, other)) = updates
        .iter()
        .find(|(_, name)| !DEPLOY_BRANCHES.contains(name))
    {
        let short = other.strip_prefix("refs/heads/").unwrap_or(other);
        return Plan::Refuse(vec![
            "Pushed to branch other than [main, master], skipping build.".into(),
            format!(
                "!\tPush rejected: dyno deploys pushes to main or master only, not {short}. \
                 Deploy it with `git push heroku {short}:main`."
            ),
        ]);
    }
    if updates.len() > 1 {
        return Plan::Refuse(vec![
            "!\tPush rejected: push main or master, not both at once.".into(),
        ]);
    }
    let (new, name) = updates[0];
    let branch = name.trim_start_matches("refs/heads/").to_string();
    if new.bytes().all(|b| b == b'0') {
        return Plan::Refuse(vec![format!(
            "!\tPush rejected, cannot delete {branch} branch"
        )]);
    }
    Plan::Build {
        commit: new.to_string(),
    }
}

/// `dyno git-hook HOOK`: its exit code (0 accepts the push).
pub fn run(hook: &str) -> ExitCode {
    if hook != "pre-receive" {
        eprintln!("dyno git-hook: only pre-receive is a dyno hook, not {hook:?}");
        return ExitCode::FAILURE;
    }
    let mut input = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
        say(&[&format!(
            "!\tPush rejected: cannot read the pushed refs: {e}"
        )]);
        return ExitCode::FAILURE;
    }
    let commit = match plan(&input) {
        Plan::Build { commit } => commit,
        Plan::Refuse(lines) => {
            say(&[""]);
            say(&lines);
            say(&[""]);
            return ExitCode::FAILURE;
        }
    };
    let (Some(socket), Some(app)) = (
        std::env::var_os("DYNO_API_SOCKET"),
        std::env::var("DYNO_GIT_APP").ok(),
    ) else {
        say(&[
            "!\tPush rejected: this hook runs in the repositories of `dyno serve`, which set \
              DYNO_API_SOCKET and DYNO_GIT_APP for it.",
        ]);
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say(&[&format!("!\tPush rejected: cannot start: {e}")]);
            return ExitCode::FAILURE;
        }
    };
    let api = ApiClient::unix(std::path::PathBuf::from(socket));
    match runtime.block_on(deploy(&api, &app, &commit)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(lines) => {
            say(&lines);
            ExitCode::FAILURE
        }
    }
}

/// Prints lines to the pusher (git adds `remote: `), at once.
fn say(lines: &[impl AsRef<str>]) {
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{}", line.as_ref());
    }
    let _ = out.flush();
}

/// Prints the start of a line (its end comes when the work it names is done).
fn say_partial(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// ` !     MESSAGE`: how Heroku's builds say what failed.
fn failed(message: &str) -> Vec<String> {
    message.lines().map(|l| format!(" !     {l}")).collect()
}

/// Archive, upload, build, relay; `Err` holds what to say when the push is refused.
async fn deploy(api: &ApiClient, app: &str, commit: &str) -> Result<(), Vec<String>> {
    say_partial("Compressing source files... ");
    let archive = archive(commit).await.map_err(|e| failed(&e))?;
    say(&["done."]);
    let api_failed = |e: dyno_api::ClientError| match e.api() {
        Some(e) => failed(&e.message),
        None => failed(&e.to_string()),
    };
    let build = api
        .build_archive(app, archive.into(), Some(commit))
        .await
        .map_err(api_failed)?;
    say(&["Building source:", ""]);
    let streamed = api.stream_build_output(&build.output_stream_url, say).await;
    if let Err(e) = streamed {
        say(&failed(&format!("The build's output broke off ({e}).")));
    }
    let status = api
        .settled_build(app, &build.id)
        .await
        .map_err(api_failed)?
        .status;
    // The build's output ends with its blank line; Heroku's verdict follows at once.
    match status.as_str() {
        "succeeded" => {
            say(&["Verifying deploy... done."]);
            Ok(())
        }
        _ => Err(vec![
            "Verifying deploy...".into(),
            String::new(),
            format!("!\tPush rejected to {app}."),
            String::new(),
        ]),
    }
}

/// `git archive --format=tar.gz COMMIT` of the repository the hook runs in.
async fn archive(commit: &str) -> Result<Vec<u8>, String> {
    let out = tokio::process::Command::new("git")
        .args(["archive", "--format=tar.gz", commit])
        .output()
        .await
        .map_err(|e| format!("Cannot run git archive: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git archive {commit} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "1111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn main_and_master_build() {
        for branch in ["main", "master"] {
            assert_eq!(
                plan(&format!("{ZERO} {NEW} refs/heads/{branch}\n")),
                Plan::Build { commit: NEW.into() }
            );
        }
        assert_eq!(
            plan(&format!("{OLD} {NEW} refs/heads/main")),
            Plan::Build { commit: NEW.into() }
        );
    }

    #[test]
    fn other_refs_are_refused_in_herokus_words() {
        for other in ["refs/heads/feature", "refs/tags/v1", "refs/heads/mainly"] {
            let Plan::Refuse(lines) = plan(&format!("{OLD} {NEW} {other}\n")) else {
                panic!("{other} should be refused");
            };
            assert_eq!(
                lines[0],
                "Pushed to branch other than [main, master], skipping build."
            );
            assert!(lines[1].starts_with("!\tPush rejected"), "{lines:?}");
        }
        // With main in the same push, too: nothing of it is taken.
        let both = format!("{OLD} {NEW} refs/heads/main\n{OLD} {NEW} refs/heads/feature\n");
        assert!(matches!(plan(&both), Plan::Refuse(_)));
        let both = format!("{OLD} {NEW} refs/heads/main\n{OLD} {NEW} refs/heads/master\n");
        assert_eq!(
            plan(&both),
            Plan::Refuse(vec![
                "!\tPush rejected: push main or master, not both at once.".into()
            ])
        );
    }

    #[test]
    fn deleting_main_is_refused() {
        assert_eq!(
            plan(&format!("{OLD} {ZERO} refs/heads/main\n")),
            Plan::Refuse(vec!["!\tPush rejected, cannot delete main branch".into()])
        );
        // SHA-256 repositories' ids are longer.
        let zero256 = "0".repeat(64);
        assert!(matches!(
            plan(&format!("{OLD} {zero256} refs/heads/master\n")),
            Plan::Refuse(_)
        ));
    }

    #[test]
    fn nothing_or_garbage_is_refused() {
        assert!(matches!(plan(""), Plan::Refuse(_)));
        assert!(matches!(plan("just one\n"), Plan::Refuse(_)));
    }

    #[test]
    fn failures_read_as_herokus() {
        assert_eq!(
            failed("An app's build is running.\nWait for it."),
            [" !     An app's build is running.", " !     Wait for it."]
        );
    }
}
