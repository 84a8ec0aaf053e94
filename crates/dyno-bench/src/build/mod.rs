//! `dyno bench build`: how long a deploy takes, from the command to the router serving the new
//! code, by `git push` and by `dyno deploy`, and how much of it is the build. A real `dyno
//! serve` (a throwaway lab namespace for the host's network, state in a temp dir) serves its
//! API on the lab's loopback over TLS (a throwaway CA, see [`anchor::make_pki`]), where `git
//! push` reaches the app's repository with the API token as its password.
//!
//! The app (`examples/hello`) is copied into a git repository of the bench's own ([`repo`]).
//! Each round changes one file, `.profile.d/bench-greeting.sh`, which sets the greeting the
//! app answers with, so the router shows when the new release serves:
//!
//! 1. the change committed; the commit pushed to the two anchors ([`anchor`]: a bare
//!    repository behind `git http-backend` over HTTPS on the lab's loopback, and one at a
//!    path), each push timed to its end;
//! 2. `git push https://…/APP.git HEAD:main` (the system git) and `dyno deploy DIR -a APP` of
//!    the work tree with a greeting of its own, in turns (odd rounds git first, even rounds
//!    deploy first), each timed from the command's start until the router answers with its
//!    greeting ([`round`]: the build's output is followed through the API meanwhile).
//!
//! A warm-up of each (the repository's first push, the first build's cache) comes first and
//! is not counted. Reported per way: median, min and max over the rounds of the time to
//! serving, of the command's own time, of the build's time (its first output line to its
//! last: compile, slug, release and restart) and of its share of the time to serving; the
//! ratios `git push / dyno deploy` and `git push / the https anchor's push`.

mod anchor;
mod repo;
mod report;
mod round;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Args;
use dyno_api::ApiClient;
use dyno_net::lab::Lab;

use crate::isolation::{with_daemon_in, ROUTER};
use crate::load::Target;
use crate::router::wrk::find_tool;
use crate::scale::wait_for_api;

use anchor::{HttpBackend, Pki};
use repo::Repo;
use round::Timeline;

#[derive(Args)]
#[command(
    after_help = "Needs git and python3. The last line is key=value pairs: rounds; for \
    git (git push) and deploy (dyno deploy): WAY_serving_s WAY_serving_min_s \
    WAY_serving_max_s (the command's start until the router answers with the new content), \
    WAY_cmd_s (the command's own time: git push returns when the build has released), \
    WAY_build_s (the build's first output line to its last, followed through the API: \
    compile, slug, release, restart), of which WAY_compile_s (first line to `-----> \
    Launching...`) and WAY_release_s (from there to the last line: the release and the web \
    dyno's restart), and WAY_build_share_pct (build / serving, per round); \
    anchor_https_push_s (the same commit pushed to a bare repository behind git http-backend \
    over HTTPS on loopback: the transport without dyno), anchor_local_push_s (pushed to a \
    path); git_vs_deploy (git serving / deploy serving), git_vs_anchor (git serving / \
    anchor_https_push_s) and git_push_vs_anchor (git push's own time / anchor_https_push_s). \
    Medians of the rounds unless named min or max."
)]
pub struct BuildBench {
    /// Timed rounds of each way (git push, dyno deploy, both anchors)
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The app to deploy: its web answers `GET /` with $GREETING first (as examples/hello)
    #[arg(long, default_value = "examples/hello")]
    app_dir: PathBuf,
}

const APP: &str = "buildbench";
/// The daemon's API (TLS, token) on the lab's loopback.
const API: ([u8; 4], u16) = ([127, 0, 0, 1], 5443);
/// The anchor's `git http-backend` (TLS, the same token) on the lab's loopback.
const ANCHOR: ([u8; 4], u16) = ([127, 0, 0, 1], 5444);

/// What a run measured.
struct Figures {
    git: Vec<Timeline>,
    deploy: Vec<Timeline>,
    anchor_https: Vec<Duration>,
    anchor_local: Vec<Duration>,
    git_version: String,
}

pub fn run(args: BuildBench) -> Result<(), String> {
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let app_dir = args
        .app_dir
        .canonicalize()
        .map_err(|e| format!("--app-dir {}: {e}", args.app_dir.display()))?;
    let git = find_tool("git", "git")?;
    let token = random_token()?;
    let figures = with_daemon_in(
        "build",
        4_200_000,
        &[("/usr/bin/python3", "python3")],
        |scratch| daemon_args(scratch, &token),
        |scratch, lab, runtime| {
            let api = ApiClient::unix(scratch.join("api.sock"));
            runtime.block_on(wait_for_api(&api))?;
            let bench = Bench {
                runtime,
                api: &api,
                lab,
                scratch,
                token: &token,
            };
            bench.measure(args.rounds, &git, &app_dir)
        },
    )?;
    report::print(&args, &figures);
    Ok(())
}

/// The certificate and token the daemon's TCP API serves with, written to `scratch`; its
/// arguments.
fn daemon_args(scratch: &Path, token: &str) -> Result<Vec<String>, String> {
    let pki = anchor::make_pki(&scratch.join("pki"))?;
    let token_file = scratch.join("api-token");
    anchor::write_private(&token_file, token)?;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    Ok(vec![
        "--api-listen".into(),
        SocketAddr::from(API).to_string(),
        "--api-token-file".into(),
        path(&token_file),
        "--api-tls-cert".into(),
        path(&pki.cert),
        "--api-tls-key".into(),
        path(&pki.key),
        // A bounded stop: the old web dyno of each release goes at most this slowly.
        "--stop-grace".into(),
        "5s".into(),
    ])
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> Result<String, String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("random token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A run's daemon and where its pieces are.
struct Bench<'a> {
    runtime: &'a tokio::runtime::Runtime,
    api: &'a ApiClient,
    lab: &'a Lab,
    scratch: &'a Path,
    token: &'a str,
}

/// The two ways of deploying a round.
#[derive(Clone, Copy)]
enum Way {
    Git,
    Deploy,
}

impl Bench<'_> {
    fn measure(&self, rounds: usize, git: &Path, app_dir: &Path) -> Result<Figures, String> {
        self.runtime
            .block_on(self.api.create_app(APP))
            .map_err(|e| format!("apps:create: {e}"))?;
        let pki = Pki::in_dir(&self.scratch.join("pki"));
        let repo = Repo::create(git, app_dir, self.scratch, &pki.ca, &greeting("base", 0))?;
        let logs = self.scratch.join("logs");
        let anchors = self.scratch.join("anchor");
        for dir in [&logs, &anchors] {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let local = anchors.join("local.git");
        repo.init_bare(&local)?;
        repo.init_bare(&anchors.join("https.git"))?;
        let backend = HttpBackend::start(
            self.lab.host.netns(),
            ANCHOR.into(),
            &anchors,
            &pki,
            self.token,
        )?;
        let anchor_url = format!("https://bench:{}@{}/https.git", self.token, backend.addr);
        let local = local.to_string_lossy().into_owned();
        let push_anchors = |tag: &str| -> Result<(Duration, Duration), String> {
            let https = round::timed_command(
                repo.push(&anchor_url, self.lab.host.netns())?,
                &logs.join(format!("anchor-https-{tag}.log")),
            )
            .map_err(|e| format!("anchor push over https: {e}"))?;
            let path = round::timed_command(
                repo.command(&["push", &local, "HEAD:main"]),
                &logs.join(format!("anchor-local-{tag}.log")),
            )
            .map_err(|e| format!("anchor push to a path: {e}"))?;
            Ok((https, path))
        };

        eprintln!("bench build: warm-up (git push, dyno deploy, the anchors), not counted");
        push_anchors("warm-up")?;
        self.deploy(&repo, Way::Git, &greeting("base", 0), "warm-up")?;
        self.deploy(&repo, Way::Deploy, &greeting("deploy", 0), "warm-up")?;

        let mut figures = Figures {
            git: Vec::new(),
            deploy: Vec::new(),
            anchor_https: Vec::new(),
            anchor_local: Vec::new(),
            git_version: repo.version(),
        };
        for r in 1..=rounds {
            let committed = greeting("git", r);
            repo.commit_marker(&committed)?;
            let (https, path) = push_anchors(&r.to_string())?;
            figures.anchor_https.push(https);
            figures.anchor_local.push(path);
            let order = if r % 2 == 1 {
                [Way::Git, Way::Deploy]
            } else {
                [Way::Deploy, Way::Git]
            };
            for way in order {
                let tag = r.to_string();
                match way {
                    Way::Git => figures.git.push(self.deploy(&repo, way, &committed, &tag)?),
                    Way::Deploy => {
                        let own = greeting("deploy", r);
                        figures.deploy.push(self.deploy(&repo, way, &own, &tag)?)
                    }
                }
            }
            let (g, d) = (figures.git[r - 1], figures.deploy[r - 1]);
            eprintln!(
                "bench build: round {r}: git push → serving {:.3} s (push {:.3} s, build {:.3} s); \
                 dyno deploy → serving {:.3} s (build {:.3} s); anchor push https {:.3} s, \
                 path {:.3} s",
                g.serving.as_secs_f64(),
                g.exited.as_secs_f64(),
                g.build().as_secs_f64(),
                d.serving.as_secs_f64(),
                d.build().as_secs_f64(),
                https.as_secs_f64(),
                path.as_secs_f64()
            );
        }
        drop(backend);
        Ok(figures)
    }

    /// One deploy, timed until the router answers with `greeting`. A git round pushes HEAD,
    /// whose commit sets `greeting`; a deploy round packs the work tree with `greeting`
    /// written in (uncommitted: the next push still carries one changed file). `tag` names
    /// the round in its log file and errors.
    fn deploy(&self, repo: &Repo, way: Way, greeting: &str, tag: &str) -> Result<Timeline, String> {
        // A git round's file as its commit has it (a deploy round may have changed it since).
        repo.set_marker(greeting)?;
        let (name, command) = match way {
            Way::Git => {
                let url = format!(
                    "https://bench:{}@{}/{APP}.git",
                    self.token,
                    SocketAddr::from(API)
                );
                ("git", repo.push(&url, self.lab.host.netns())?)
            }
            Way::Deploy => ("deploy", self.deploy_command(&repo.dir)?),
        };
        let host = format!("{APP}.localhost");
        let target = Target {
            netns: self.lab.host.netns(),
            addr: ROUTER.into(),
            host: &host,
            connections: 1,
            rate: 1.0,
        };
        let log = self.scratch.join("logs").join(format!("{name}-{tag}.log"));
        round::timed(
            self.runtime,
            self.api,
            &target,
            APP,
            command,
            &log,
            greeting,
        )
        .map_err(|e| format!("{name} round {tag}: {e}"))
    }

    /// `dyno deploy DIR -a APP` (this binary) against the daemon's socket.
    fn deploy_command(&self, dir: &Path) -> Result<Command, String> {
        let exe = std::env::current_exe().map_err(|e| format!("find dyno: {e}"))?;
        let mut command = Command::new(exe);
        command
            .arg("deploy")
            .arg(dir)
            .arg("-a")
            .arg(APP)
            .env("DYNO_SOCKET", self.scratch.join("api.sock"));
        dyno_net::ns::command_in(&mut command, self.lab.host.netns(), None)
            .map_err(|e| e.to_string())?;
        Ok(command)
    }
}

/// The greeting of a round: bracketed, so that no round's is the start of another's.
fn greeting(way: &str, r: usize) -> String {
    format!("[bench {way} {r}]")
}
