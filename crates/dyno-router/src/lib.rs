//! `dyno-router`: the Heroku-style HTTP router in front of every web dyno.
//!
//! Clients speak HTTP/1.1 (keep-alive) or h2c with prior knowledge, and over TLS (ALPN `h2` or
//! `http/1.1`) when the operator gives a certificate ([`tls`], [`Router::serve_tls`]); dynos get HTTP/1.1 over a
//! keep-alive pool (idle 90 s) whose sockets carry [`ROUTER_MARK`] (`SO_MARK`, set before
//! `connect`), the only traffic the firewall lets reach `$PORT`.
//!
//! Choices (where Heroku leaves room):
//! - `Via: 1.1 vegur` on requests and responses, like Heroku's router, so apps that look for it
//!   behave the same ([`RouterConfig::via`]).
//! - Unknown host: `404` with "There's nothing here, yet." (Heroku's no-such-app page); no log
//!   line (there is no app to log to). Missing/invalid Host, absolute-form targets: `400`.
//! - Request line or header line over 8 KiB, a header name over 1000 bytes, more than 1000
//!   headers: `400` from the router. A head so large that hyper's buffer
//!   ([`RouterConfig::max_line_bytes`] × 8, ≥ 64 KiB) or header count (1001) overflows first is
//!   refused by hyper itself with `431`.
//! - `Content-Length` with `Transfer-Encoding`: hyper treats the body as chunked, drops the
//!   length and closes the connection after the response (RFC 9112 §6.3), so nothing can be
//!   smuggled; the request itself is forwarded once.
//! - H-codes: `H10` (app marked crashed, no dyno up), `H11` (in flight > 200 × dynos), `H12`,
//!   `H13`, `H14`, `H15` (dyno silent 55 s mid-response: response cut), `H18`, `H19`, `H21`,
//!   `H25` (response head > 512 KiB or unparsable: 502), `H27` (client left before the response:
//!   499, logged only), `H28` (client silent 55 s mid-upload: 499), `H80` (maintenance). `H81` and
//!   `H99` exist as types; `H99` is used when the upstream socket cannot be set up.
//!
//! Feeding the table (supervisor): `routes.set_app(app, &domains)` once per app; on every web
//! dyno state change `routes.set_dynos(app, up_web_dynos)` with the full list of `up` ones
//! (`Backend::new("web.1", SocketAddr::new(ip, port))`); `set_crashed(app, true)` while its web
//! dynos are crashed; `remove_app(app)` on teardown. Writes copy the table; reads never lock.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use dyno_router::{Backend, ChannelSink, RouteTable, Router, RouterConfig};
//! let routes = RouteTable::new();
//! routes.set_app("myapp", &["www.example.com".to_owned()]);
//! routes.set_dynos("myapp", vec![Backend::new("web.1", "10.213.0.2:5000".parse().unwrap())]);
//! let (sink, mut lines) = ChannelSink::new();
//! let router = Router::new(RouterConfig::default(), routes.clone(), sink);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tokio::spawn(router.serve(listener));
//! while let Some((app, line)) = lines.recv().await {
//!     println!("{app} heroku[router]: {line}");
//! }
//! # Ok(()) }
//! ```
pub mod body;
pub mod codes;
pub mod config;
pub(crate) mod h1;
pub mod log;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod tls;
pub mod upstream;

pub use codes::{HerokuCode, RouterError};
pub use config::RouterConfig;
pub use log::{ChannelSink, FnSink, LogSink, NullSink, RouterLog};
pub use routes::{Backend, RouteTable};
pub use server::Router;
pub use tls::{TlsAcceptor, TlsError, TlsSettings};
pub use upstream::ROUTER_MARK;
