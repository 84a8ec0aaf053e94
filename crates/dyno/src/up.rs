//! `dyno up DIR`.

use std::path::PathBuf;

use clap::Args;
use dyno_manager::daemon::uids::UidRange;
use dyno_manager::up::{self, RouterTls, UpOptions};
use dyno_net::dyno::RunDir;
use dyno_net::ipam::Ipv4Net;
use dyno_net::network::NetworkConfig;
use dyno_router::RouterConfig;
use dyno_router::TlsSettings;
use dyno_sandbox::cgroup::{DynoSize, DYNO_SIZES};
use dyno_supervisor::lifecycle::{parse_duration, Cycling, Lifecycle};

#[derive(Args)]
#[command(
    after_help = "Examples:\n  dyno up examples/hello          # then: curl http://hello.localhost:8080/\n  dyno up examples/hello --formation web=2,worker=1\n  dyno up . --app myapp --boot-timeout 90s\n  dyno up examples/hello --tls-cert fullchain.pem --tls-key key.pem\n                                  # also: curl https://hello.localhost:8443/\n\n\
    DIR needs a Procfile (`web: python3 web.py`); DIR/.env holds config vars. Each dyno runs as\n\
    `bash -c COMMAND` in /app (a copy of DIR taken at start, read-only, with a writable layer\n\
    that vanishes on restart),\n\
    as an unprivileged user, with its own network namespace; web dynos get $PORT.\n\n\
    HTTPS: give --tls-cert (the full chain in PEM, the server's own certificate first) and\n\
    --tls-key (its private key in PEM, unencrypted). The router then also listens on --tls-listen,\n\
    offering HTTP/2 and HTTP/1.1 (ALPN); plain HTTP keeps working on --listen. Dynos see\n\
    X-Forwarded-Proto: https. Name <app>.localhost in the certificate: TLS clients do not accept\n\
    *.localhost for it."
)]
pub struct UpArgs {
    /// The app directory (with a Procfile)
    dir: PathBuf,
    /// The app's name (default: the directory's)
    #[arg(long)]
    app: Option<String>,
    /// How many dynos of each process type, e.g. web=2,worker=1 (default: one of each)
    #[arg(long)]
    formation: Option<String>,
    /// $PORT of web dynos
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// Where the router listens: the app is http://<app>.localhost:PORT/
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// TLS certificate for the router: the full chain in PEM, server's own first (with --tls-key)
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key in PEM, unencrypted (with --tls-cert)
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where the router serves HTTPS (HTTP/2, HTTP/1.1) when given --tls-cert and --tls-key
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8443",
        requires = "tls_cert"
    )]
    tls_listen: std::net::SocketAddr,
    /// R10 if a web dyno does not listen on $PORT within this (e.g. 60s, 90s for Java)
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    boot_timeout: std::time::Duration,
    /// Between SIGTERM and SIGKILL when stopping (R12)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    stop_grace: std::time::Duration,
    /// Restart crashed dynos after these waits (the last repeats), e.g. 0s,20m,40m
    #[arg(long, value_delimiter = ',', value_parser = parse_duration)]
    restart_cooloffs: Option<Vec<std::time::Duration>>,
    /// No daily restart of dynos
    #[arg(long, conflicts_with = "cycle")]
    no_cycling: bool,
    /// Restart every dyno this often (Heroku: daily), plus a random part of --cycle-jitter
    #[arg(long, value_parser = parse_duration)]
    cycle: Option<std::time::Duration>,
    /// The random part added to --cycle (Heroku: up to 216 minutes)
    #[arg(long, value_parser = parse_duration, requires = "cycle")]
    cycle_jitter: Option<std::time::Duration>,
    /// Directory the dynos' network namespaces are bound in
    #[arg(long, default_value = "/run/netns")]
    run_dir: PathBuf,
    /// Directory for the dynos' sandbox state (default: /run/dyno/up-<pid>)
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Address pool for dynos
    #[arg(long, default_value_t = Ipv4Net::default())]
    pool: Ipv4Net,
    /// Dyno size: memory quota (R14 above it, R15 at twice it), processes, CPU weight
    #[arg(long, default_value = "standard-1x", value_parser = parse_size)]
    size: DynoSize,
    /// Memory quota in MB instead of the size's (e.g. for tests)
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Unprivileged uids for apps: each app gets one, chosen by its name, from START-END
    #[arg(long, default_value = "800000-899999")]
    uid_range: UidRange,
    /// Let the dynos make these system calls too, on top of the default seccomp profile (which
    /// denies e.g. io_uring_setup, keyctl, unshare with EPERM; docs/isolation.md lists it)
    #[arg(long, value_name = "CALL[,CALL…]", value_delimiter = ',', value_parser = parse_call)]
    seccomp_allow: Vec<String>,
    /// H12 (503) when a dyno has sent no response byte this long after the request came in
    /// (Heroku's router: 30s)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration,
          help_heading = "Router")]
    request_timeout: std::time::Duration,
    /// H15 when a dyno sends nothing this long in the middle of a response, H28 when a client
    /// sends nothing this long in the middle of its request body (Heroku's router: 55s)
    #[arg(long, value_name = "DURATION", default_value = "55s", value_parser = parse_duration,
          help_heading = "Router")]
    idle_timeout: std::time::Duration,
    /// A client must send a request's whole head within this, or it is cut off before any dyno
    /// sees it (slowloris)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration,
          help_heading = "Router")]
    header_timeout: std::time::Duration,
    #[command(flatten)]
    lxcfs: crate::procview::LxcfsArgs,
    #[command(flatten)]
    cpu: crate::cpu::CpuArgs,
    #[command(flatten)]
    connections: crate::connections::ConnectionArgs,
}

fn parse_call(name: &str) -> Result<String, dyno_manager::daemon::seccomp::AllowError> {
    let mut calls = dyno_manager::daemon::seccomp::parse_calls(name)?;
    Ok(calls.remove(0))
}

fn parse_size(name: &str) -> Result<DynoSize, String> {
    DynoSize::lookup(name).copied().ok_or_else(|| {
        let known: Vec<&str> = DYNO_SIZES.iter().map(|s| s.name).collect();
        format!("unknown dyno size {name:?} (known: {})", known.join(", "))
    })
}

pub fn run(args: UpArgs) -> Result<(), String> {
    crate::require_root("dyno up")?;
    crate::serve::raise_open_files();
    let mut lifecycle = Lifecycle {
        boot_timeout: args.boot_timeout,
        stop_grace: args.stop_grace,
        ..Lifecycle::default()
    };
    if let Some(cooloffs) = args.restart_cooloffs {
        lifecycle.restart_cooloffs = cooloffs;
    }
    if args.no_cycling {
        lifecycle.cycling = None;
    }
    if let Some(period) = args.cycle {
        lifecycle.cycling = Some(Cycling {
            period,
            jitter: args.cycle_jitter.unwrap_or_default(),
        });
    }
    let options = UpOptions {
        dir: args.dir,
        app: args.app,
        formation: args.formation,
        port: args.port,
        network: NetworkConfig {
            run_dir: RunDir(args.run_dir),
            pool: args.pool,
            ..NetworkConfig::default()
        },
        state_root: args
            .state_dir
            .unwrap_or_else(|| PathBuf::from(format!("/run/dyno/up-{}", std::process::id()))),
        lifecycle,
        exe: crate::shim_binary()?,
        uids: args.uid_range,
        seccomp_allow: args.seccomp_allow,
        router_listen: args.listen,
        router_tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(RouterTls {
                settings: TlsSettings::new(cert, key),
                listen: args.tls_listen,
            }),
            (None, None) => None,
            _ => return Err("give both --tls-cert and --tls-key, or neither".into()),
        },
        router: args.connections.apply(RouterConfig {
            request_timeout: args.request_timeout,
            idle_timeout: args.idle_timeout,
            header_read_timeout: args.header_timeout,
            ..RouterConfig::default()
        }),
        size: match args.memory_mb {
            Some(mb) => DynoSize {
                memory_mb: mb,
                ..args.size
            },
            None => args.size,
        },
        lxcfs_dir: args.lxcfs.dir(),
        cpu_reserve: args.cpu.cpu_reserve,
    };
    // Check the app before anything is started: errors name the file and line.
    up::plan(&options).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(crate::serve::BLOCKING_THREADS)
        .enable_all()
        .build()
        .map_err(|e| format!("start the runtime: {e}"))?;
    runtime
        .block_on(up::run(
            options,
            // Buffered: the printer writes what is queued, then flushes once.
            std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
            std::sync::Arc::new(|note| eprintln!("dyno up: {note}")),
        ))
        .map_err(|e| e.to_string())
}
