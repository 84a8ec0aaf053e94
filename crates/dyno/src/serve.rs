//! `dyno serve`: the daemon. State in SQLite under the data dir, the API on a unix socket
//! (0600), the router, and every app's dynos.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dyno_manager::daemon::api::DaemonApi;
use dyno_manager::daemon::seccomp::{AppCalls, SeccompAdditions};
use dyno_manager::daemon::uids::UidRange;
use dyno_manager::daemon::{Daemon, DaemonOptions};
use dyno_net::dyno::RunDir;
use dyno_net::ipam::Ipv4Net;
use dyno_net::network::NetworkConfig;
use dyno_router::{FnSink, Router, RouterConfig, RouterLog};
use dyno_supervisor::lifecycle::{parse_duration, Lifecycle};

/// The most threads the daemon's blocking work (store transactions, dyno setup and
/// teardown, readiness sockets) may use at once. A scale-up of 1,000 dynos would otherwise
/// start hundreds, each with a stack and a malloc arena of its own that stay with the daemon
/// (measured with `dyno bench scale --many 1000`); the setup lane runs one at a time anyway.
pub(crate) const BLOCKING_THREADS: usize = 16;

#[derive(Args)]
#[command(
    after_help = "The CLI (dyno apps, apps:create, deploy, ps:scale, logs, …) talks to \
    this daemon over --socket. Stopping the daemon (SIGTERM, Ctrl-C) stops every dyno \
    gracefully; starting it again starts what its state says should run.\n\n\
    With --api-listen, Heroku's CLI drives it too (HEROKU_HOST=https://IP:PORT, \
    HEROKU_API_KEY=the token), and `git push` deploys: `heroku git:remote -a APP` then \
    `git push heroku main` builds the pushed commit and releases it. That remote is https \
    (and Heroku's credential helper answers only there): give --api-tls-cert and \
    --api-tls-key."
)]
pub struct ServeArgs {
    /// State (SQLite, WAL) and slugs
    #[arg(long, default_value = dyno_state::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The API's unix socket (mode 0600: root only)
    #[arg(long, default_value = dyno_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Also serve the API on TCP (needs --api-token-file), and the apps' git repositories:
    /// `git push http(s)://IP:PORT/APP.git main` deploys, the token as the password
    #[arg(long, requires = "api_token_file")]
    api_listen: Option<SocketAddr>,
    /// File holding the bearer token for --api-listen (16+ characters)
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// Serve --api-listen over TLS with this certificate chain (PEM, the server's own
    /// certificate first, naming the address clients use): the API, `git push` and the URLs
    /// the API hands out are then https. Clients trust its CA with GIT_SSL_CAINFO (git) and
    /// NODE_EXTRA_CA_CERTS (Heroku's CLI)
    #[arg(long, value_name = "PEM", requires_all = ["api_listen", "api_tls_key"])]
    api_tls_cert: Option<PathBuf>,
    /// The private key of --api-tls-cert (PEM, unencrypted)
    #[arg(long, value_name = "PEM", requires = "api_tls_cert")]
    api_tls_key: Option<PathBuf>,
    /// Where the router listens: apps are http://<app>.localhost:PORT/
    #[arg(long, default_value = "127.0.0.1:8080")]
    router_listen: SocketAddr,
    /// Also serve HTTPS here: each app's certificates (`heroku certs:add`) chosen by SNI,
    /// HTTP/2 by ALPN. Off unless given
    #[arg(long)]
    router_tls_listen: Option<SocketAddr>,
    /// Default certificate chain (PEM) of --router-tls-listen, for names no app certificate
    /// covers; without it such handshakes fail
    #[arg(long, requires_all = ["router_tls_listen", "router_tls_key"])]
    router_tls_cert: Option<PathBuf>,
    /// The default certificate's private key (PEM)
    #[arg(long, requires = "router_tls_cert")]
    router_tls_key: Option<PathBuf>,
    /// Dynos' runtime state (sandboxes)
    #[arg(long, default_value = "/run/dyno/dynos")]
    state_root: PathBuf,
    /// Where dyno network namespaces are bound (like `ip netns`)
    #[arg(long, default_value = "/run/netns")]
    run_dir: PathBuf,
    /// Dyno address pool
    #[arg(long, default_value_t = Ipv4Net::default())]
    pool: Ipv4Net,
    /// Uids for apps (one per app)
    #[arg(long, default_value = "800000-899999")]
    uid_range: UidRange,
    /// $PORT of every dyno
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// R10 if a web dyno does not listen on $PORT within this
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    boot_timeout: Duration,
    /// SIGTERM to SIGKILL on stop (R12)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    stop_grace: Duration,
    /// The release phase (a Procfile's `release:`) must end within this, or nothing is released
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    release_timeout: Duration,
    /// Let APP's dynos make these system calls too, on top of the default seccomp profile
    /// (which denies e.g. io_uring_setup, keyctl, unshare with EPERM and names each denied call
    /// in the log; docs/isolation.md lists it). Repeat for more apps. An unknown call's name
    /// stops the daemon before it starts anything.
    #[arg(long, value_name = "APP:CALL[,CALL…]")]
    seccomp_allow: Vec<AppCalls>,
    /// Period of the log-runtime-metrics lines (Heroku's 20 s; tests use less)
    #[arg(long, default_value = "20s", value_parser = parse_duration, hide = true)]
    runtime_metrics_interval: Duration,
    #[command(flatten)]
    lxcfs: crate::procview::LxcfsArgs,
    #[command(flatten)]
    cpu: crate::cpu::CpuArgs,
    #[command(flatten)]
    connections: crate::connections::ConnectionArgs,
    #[command(flatten)]
    rendezvous: crate::rendezvous::RendezvousArgs,
    #[command(flatten)]
    build: crate::build_args::BuildArgs,
}

/// The router holds a file per client connection: the soft open-file limit goes up to the hard
/// one (dynos keep the limit the daemon was started with).
pub(crate) fn raise_open_files() {
    match dyno_sandbox::limits::raise_open_files() {
        Ok((before, after)) => tracing::debug!(?before, ?after, "open-file limit raised"),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot raise the open-file limit: the router may run out of files under many \
             connections (raise the hard limit, e.g. LimitNOFILE= in the unit)"
        ),
    }
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    raise_open_files();
    let token = match &args.api_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--api-token-file {}: {e}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let rendezvous = args.rendezvous;
    // The API's certificate is checked before anything starts: a bad one stops here.
    let api_tls = match (&args.api_tls_cert, &args.api_tls_key) {
        (Some(cert), Some(key)) => Some(dyno_api::http1_acceptor(
            dyno_router::TlsSettings::new(cert, key)
                .server_config()
                .map_err(|e| format!("--api-tls-cert/--api-tls-key: {e}"))?,
        )),
        _ => None,
    };
    let api = ApiSetup {
        listen: args.api_listen,
        token,
        tls: api_tls,
    };
    // The default certificate is checked before anything starts: a bad one stops here.
    let tls_default = match (&args.router_tls_cert, &args.router_tls_key) {
        (Some(cert), Some(key)) => Some(
            dyno_router::TlsSettings::new(cert, key)
                .certified_key()
                .map_err(|e| format!("--router-tls-cert/--router-tls-key: {e}"))?,
        ),
        _ => None,
    };
    let tls = args.router_tls_listen.map(|listen| RouterTls {
        listen,
        default: tls_default,
    });
    let options = DaemonOptions {
        data_dir: args.data_dir,
        state_root: args.state_root,
        network: NetworkConfig {
            run_dir: RunDir(args.run_dir),
            pool: args.pool,
            spares: 8,
            ..NetworkConfig::default()
        },
        exe: crate::shim_binary()?,
        lifecycle: Lifecycle {
            boot_timeout: args.boot_timeout,
            stop_grace: args.stop_grace,
            release_timeout: args.release_timeout,
            ..Lifecycle::default()
        },
        uids: args.uid_range,
        port: args.port,
        router_port: args.router_listen.port(),
        web_up: None,
        memory_mb: None,
        runtime_metrics_interval: args.runtime_metrics_interval,
        seccomp: SeccompAdditions::new(args.seccomp_allow),
        lxcfs_dir: args.lxcfs.dir(),
        cpu_reserve: args.cpu.cpu_reserve,
        build: args.build.options()?,
        api_socket: Some(args.socket.clone()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .map_err(|e| format!("start the runtime: {e}"))?;
    let router = RouterSetup {
        listen: args.router_listen,
        tls,
        config: args.connections.apply(RouterConfig::default()),
    };
    runtime.block_on(serve(options, args.socket, router, api, rendezvous))
}

/// The API's TCP listener (`--api-listen`), its token and TLS.
struct ApiSetup {
    listen: Option<SocketAddr>,
    token: Option<String>,
    tls: Option<dyno_api::rendezvous::TlsAcceptor>,
}

impl ApiSetup {
    /// The TCP API's URL, for what the unix socket's answers name (apps' `git_url`); none
    /// when it listens on every address (which one would a client use?).
    fn public_url(&self) -> Option<String> {
        let addr = self.listen.filter(|a| !a.ip().is_unspecified())?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Some(format!("{scheme}://{addr}"))
    }
}

/// The router's listeners and settings.
struct RouterSetup {
    /// Plain HTTP (`--router-listen`).
    listen: SocketAddr,
    /// HTTPS by SNI (`--router-tls-listen`), if asked for.
    tls: Option<RouterTls>,
    config: RouterConfig,
}

/// The router's HTTPS listener (`--router-tls-listen`) and its default certificate.
struct RouterTls {
    listen: SocketAddr,
    default: Option<Arc<dyno_router::sni::CertifiedKey>>,
}

async fn serve(
    options: DaemonOptions,
    socket: PathBuf,
    router: RouterSetup,
    api_setup: ApiSetup,
    rendezvous: crate::rendezvous::RendezvousArgs,
) -> Result<(), String> {
    let api_listen = api_setup.listen;
    let RouterSetup {
        listen: router_listen,
        tls,
        config: router_config,
    } = router;
    let mut shutdown = dyno_manager::up::Shutdown::listen().map_err(|e| format!("signals: {e}"))?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Bind everything before starting dynos: a second daemon fails here, having touched nothing.
    let api = dyno_api::bind_unix(&socket)
        .await
        .map_err(|e| e.to_string())?;
    let router_socket = tokio::net::TcpListener::bind(router_listen)
        .await
        .map_err(|e| format!("router: listen on {router_listen}: {e}"))?;
    let attach_window = rendezvous.attach_window;
    let rendezvous = rendezvous.bind(api_listen, &options.data_dir).await?;
    let tls_listen = tls.as_ref().map(|t| t.listen);
    let tls_socket =
        match &tls {
            Some(t) => Some(tokio::net::TcpListener::bind(t.listen).await.map_err(|e| {
                format!("router: listen on {} (--router-tls-listen): {e}", t.listen)
            })?),
            None => None,
        };
    let daemon = Daemon::open(options).await.map_err(|e| e.to_string())?;
    let sink_daemon = daemon.clone();
    let router = Router::new(
        router_config,
        daemon.routes.clone(),
        FnSink(move |app: &str, line: RouterLog| sink_daemon.router_line(app, line)),
    );
    // One router for both listeners: each request's X-Forwarded-Proto/-Port say which.
    let tls_task = match (tls, tls_socket) {
        (Some(tls), Some(socket)) => {
            daemon.certs.set_default(tls.default);
            let acceptor = daemon.certs.acceptor();
            Some(tokio::spawn(router.clone().serve_tls(socket, acceptor)))
        }
        _ => None,
    };
    let router_task = tokio::spawn(router.serve(router_socket));
    let mut platform = DaemonApi::new(daemon.clone()).with_attach_window(attach_window);
    if let Some(r) = &rendezvous {
        platform = platform.with_rendezvous(r.addr);
    }
    let platform = Arc::new(platform);
    let rendezvous_task = rendezvous.map(|r| {
        eprintln!(
            "dyno serve: `heroku run` attaches at rendezvous://{} (TLS)",
            r.addr
        );
        tokio::spawn(dyno_api::rendezvous::serve(
            r.listener,
            r.tls,
            platform.clone(),
        ))
    });
    let public_url = api_setup.public_url();
    let api_task = tokio::spawn(dyno_api::serve_unix_listener_with(
        api,
        platform.clone(),
        public_url.clone(),
    ));
    let tcp_task = match (api_listen, api_setup.token) {
        (Some(addr), Some(token)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("--api-listen {addr}: {e}"))?;
            Some(match api_setup.tls {
                Some(tls) => tokio::spawn(dyno_api::serve_tls(listener, tls, token, platform)),
                None => tokio::spawn(dyno_api::serve_tcp(listener, token, platform)),
            })
        }
        _ => None,
    };
    eprintln!(
        "dyno serve: API on {}{}, router on http://{router_listen}/{}",
        socket.display(),
        public_url.map_or(String::new(), |u| format!(
            " and {u}/ (git push {u}/APP.git main deploys)"
        )),
        tls_listen.map_or(String::new(), |a| format!(" and https://{a}/"))
    );
    shutdown.wait().await;
    eprintln!("dyno serve: stopping");
    api_task.abort();
    let _ = api_task.await;
    if let Some(t) = tcp_task {
        t.abort();
        let _ = t.await;
    }
    if let Some(t) = rendezvous_task {
        t.abort();
        let _ = t.await;
    }
    daemon.stop().await;
    router_task.abort();
    let _ = router_task.await;
    if let Some(t) = tls_task {
        t.abort();
        let _ = t.await;
    }
    eprintln!("dyno serve: stopped");
    Ok(())
}
