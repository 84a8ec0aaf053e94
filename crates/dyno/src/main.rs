//! `dyno`: run Heroku-style apps on a Linux host, every dyno in its own network namespace.
//! This binary only parses the command line and wires the crates together.

mod build_args;
mod connections;
mod cpu;
mod git_hook;
mod labs;
mod net;
mod platform;
mod procview;
mod progress;
mod rendezvous;
mod serve;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dyno",
    version,
    about = "Run Heroku-style apps on a Linux host, every dyno in its own network namespace",
    long_about = "Run Heroku-style apps on a Linux host, every dyno in its own network namespace.\n\n\
        Every dyno gets its own network namespace with one interface, eth0 (always ifindex 2), a /32 \
        address from the dyno pool, and a firewall that lets only the router reach its $PORT.\n\n\
        Most commands change the host's network and need root."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Procfile app: every process in its own dyno, logs on stdout, Ctrl-C stops it
    Up(Box<up::UpArgs>),
    /// The daemon: state, API (for the commands below), router and every app's dynos
    Serve(Box<serve::ServeArgs>),
    #[command(flatten)]
    Platform(platform::PlatformCommand),
    /// Dyno networks: create, remove, list, and clean up after a crash
    #[command(subcommand)]
    Net(net::NetCommand),
    /// Benchmarks that print ratios against an anchor measured in the same run
    #[command(subcommand)]
    Bench(dyno_bench::BenchCommand),
    /// (internal) A dyno's shim, whose child is its PID 1; started by dyno itself
    #[command(name = "__shim", hide = true)]
    Shim { state_dir: std::path::PathBuf },
    /// (internal) The hook of the daemon's git repositories: a push to main builds and
    /// deploys the pushed commit; started by git on the daemon's host
    #[command(name = "git-hook", hide = true)]
    GitHook {
        /// The git hook being run (only pre-receive)
        hook: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The shim runs before anything else: single-threaded (its child becomes the dyno's PID 1
    // without an exec), no logging setup.
    match &cli.command {
        Command::Shim { state_dir } => std::process::exit(dyno_sandbox::shim::run(state_dir)),
        // Run by git for a push, as whoever runs the daemon: no root check, no logging setup
        // (everything it prints goes to the pusher).
        Command::GitHook { hook } => return git_hook::run(hook),
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DYNO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Up(args) => up::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Platform(command) => platform::run(command),
        Command::Net(command) => net::run(command),
        Command::Bench(command) => bench(command),
        Command::Shim { .. } | Command::GitHook { .. } => {
            unreachable!("handled above")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("dyno: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `dyno bench …` (the benchmarks live in `dyno-bench`): as root, with this binary's shim.
fn bench(command: dyno_bench::BenchCommand) -> Result<(), String> {
    require_root("dyno bench")?;
    dyno_bench::run(command, &shim_binary()?)
}

/// The binary each dyno runs as its shim and PID 1: the small `dyno-shim` installed next to
/// `dyno`, or `dyno` itself (it understands the same internal commands).
pub fn shim_binary() -> Result<std::path::PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("find the dyno binary: {e}"))?;
    let shim = exe.with_file_name("dyno-shim");
    Ok(if shim.is_file() { shim } else { exe })
}

/// Commands that change the host's network need root; say so before anything half-happens.
pub fn require_root(what: &str) -> Result<(), String> {
    if rustix::process::geteuid().as_raw() != 0 {
        return Err(format!(
            "{what} changes the host's network and needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo"
        ));
    }
    Ok(())
}
