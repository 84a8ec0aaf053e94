//! `dyno-router`: the Heroku-style HTTP router in front of every web dyno.
//!
//! HTTP/1.x clients (keep-alive, pipelining) are served by the router's own engine (`h1`):
//! one task per client connection parses with httparse, writes the rewritten request to a
//! pooled dyno connection, streams both bodies and logs, with no channel or second task on the
//! way; it is what makes the router faster than nginx in `dyno bench router`. HTTP/2 clients
//! (h2c with prior knowledge, detected by the preface, or ALPN `h2` over TLS, see [`tls`]) go
//! through hyper ([`proxy`]). Dyno connections are HTTP/1.1 keep-alive (idle 90 s) and carry
//! [`ROUTER_MARK`] (`SO_MARK`, set before `connect`), the only traffic the firewall lets reach
//! `$PORT`; idle ones to a dyno that left the table are closed at once.
//!
//! Choices (where Heroku leaves room):
//! - `Via: 1.1 vegur` on requests and responses, like Heroku's router, so apps that look for it
//!   behave the same ([`RouterConfig::via`]).
//! - Unknown host: `404` with "There's nothing here, yet." (Heroku's no-such-app page); no log
//!   line (there is no app to log to). Missing/invalid/duplicate Host, absolute-form targets: `400`.
//! - Request line or header line over 8 KiB, a header name over 1000 bytes, more than 1000
//!   headers, `Content-Length` with `Transfer-Encoding`, conflicting lengths, a transfer coding
//!   that does not end in `chunked`, a malformed chunked body: `400` and close. A whole request
//!   head over 256 KiB: `431`.
//! - Framing headers are never copied: the router writes `Content-Length`/`Transfer-Encoding`
//!   from the framing it parsed, so the dyno and the router cannot disagree on where a body ends.
//! - H-codes: `H10` (app marked crashed, no dyno up), `H11` (in flight > 200 × dynos, or × the
//!   starting dynos while requests wait for one), `H12` (30 s from the end of the upload to the
//!   first response byte), `H13`, `H14` (no web dyno, none starting), `H15` (dyno silent 55 s
//!   mid-response: response cut), `H18` (dyno hung up during the upload or mid-response, or took
//!   none of the upload for 55 s), `H19`, `H20` (no web dyno came up within the 75 s boot wait),
//!   `H21`, `H25` (response head > 512 KiB or
//!   unparsable: 502), `H27` (client left before the response: 499, logged only), `H28` (client
//!   silent 55 s mid-upload: 499, logged only), `H80` (maintenance), `H81` (never deployed),
//!   `H99` (the upstream socket cannot be set up).
//! - Upgrades (WebSockets): the dyno's `101` is passed on and both sides are spliced in the
//!   connection's task; 55 s without data either way closes the tunnel, as on Heroku.
//!
//! - Boot wait: while an app has no `up` web dyno but some are starting, a request waits up to
//!   [`RouterConfig::boot_wait`] (75 s) for one instead of an immediate `H14`, woken by the
//!   table's changes; `H20` when none came up.
//! - HTTPS: one operator certificate ([`TlsSettings`]) or each app's own, chosen by SNI
//!   ([`SniCertificates`], see [`sni`] for the choice and for unknown names: the default
//!   certificate if one is set, else a failed handshake).
//!
//! Feeding the table (supervisor): `routes.set_app(app, &domains)` once per app; on every web
//! dyno state change `routes.set_web_dynos(app, up_web_dynos, starting, crashed)` with the full
//! list of `up` ones (`Backend::new("web.1", SocketAddr::new(ip, port))`), how many are starting
//! and whether they crashed (`set_dynos`/`set_crashed` set one of those alone);
//! `remove_app(app)` on teardown. Writes copy the table; reads never lock.
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

#![forbid(unsafe_code)]
pub(crate) mod admission;
pub mod body;
mod client_limits;
pub mod codes;
pub mod config;
pub(crate) mod h1;
pub mod log;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod sni;
pub mod tls;
pub mod upstream;

pub use codes::{HerokuCode, RouterError};
pub use config::RouterConfig;
pub use log::{ChannelSink, FnSink, LogSink, NullSink, RouterLog};
pub use routes::{Backend, ErrorPages, RouteTable};
pub use server::Router;
pub use sni::{parse_certificate, CertificateError, SniCertificate, SniCertificates};
pub use tls::{TlsAcceptor, TlsError, TlsSettings};
pub use upstream::ROUTER_MARK;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1), for HTTP/1 and
/// HTTP/2 alike; the headers a `Connection` header names go too.
pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];
