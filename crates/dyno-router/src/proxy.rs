//! HTTP/2 requests (h2c or ALPN `h2`) through the router, on hyper: checks, Heroku headers, the
//! HTTP/1.1 request to the dyno on hyper's client, response streaming, and the router log line.
//! HTTP/1.x clients take the router's own engine (`crate::h1`); both share the dyno choice
//! with retries (`Shared::pick_and_connect`) and the error pages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri, Version};

use crate::admission::{self, Verdict};
pub use crate::body::BoxError;
use crate::body::{ms, ClientBody, Ctx, LoggedBody, ReqState, Upload};
use crate::client_limits::ClientLimits;
use crate::codes::{HerokuCode, RouterError};
use crate::config::RouterConfig;
use crate::log::LogSink;
use crate::routes::{AppRoute, RouteTable};
use crate::upstream::{ConnectError, Conns, Pool, Sender, Upstreams};

/// Body of every response the router sends.
pub type RespBody = BoxBody<Bytes, BoxError>;

/// State shared by all connections of one router.
pub(crate) struct Shared {
    pub(crate) cfg: RouterConfig,
    pub(crate) routes: RouteTable,
    pub(crate) log: Arc<dyn LogSink>,
    pub(crate) pool: Arc<Pool>,
    /// Upstream connections of the HTTP/1.1 engine.
    pub(crate) conns: Arc<Conns>,
    quarantine: Mutex<HashMap<SocketAddr, Instant>>,
    /// Client connections against their bounds.
    pub(crate) clients: Arc<ClientLimits>,
}

/// A connection to a chosen dyno.
struct Upstream {
    addr: SocketAddr,
    sender: Sender,
    /// Taken from the keep-alive pool (may turn out closed: retried once on a fresh one).
    pooled: bool,
}

/// Per client connection facts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) local_port: u16,
    /// `http` or `https`: `X-Forwarded-Proto` and `protocol=` in the log line.
    pub(crate) protocol: &'static str,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id` if it is 20–200 chars of `[A-Za-z0-9+/=-]`, else a new UUID v4.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .map(HeaderValue::as_bytes)
        .filter(|v| crate::h1::head::valid_request_id(v))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// A new request id: a UUID v4, as Heroku's router makes them.
pub(crate) fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), including those named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in crate::HOP_BY_HOP {
        headers.remove(name);
    }
}

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The router's own answer for `err`.
pub(crate) fn error_response(err: &RouterError, request_id: &str) -> Response<RespBody> {
    page_response(err, &Default::default(), request_id)
}

/// The router's own answer for `err`, with the app's own pages.
fn page_response(
    err: &RouterError,
    pages: &crate::routes::ErrorPages,
    request_id: &str,
) -> Response<RespBody> {
    let mut resp = Response::new(full(err.html_for(pages)));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_REQUEST_ID, v);
    }
    resp
}

impl Shared {
    pub(crate) fn new(cfg: RouterConfig, routes: RouteTable, log: Arc<dyn LogSink>) -> Self {
        let pool = Arc::new(Pool::new(
            cfg.pool_idle_timeout,
            cfg.mark,
            cfg.max_response_header_bytes,
        ));
        let conns = Arc::new(Conns::new(cfg.pool_idle_timeout, cfg.mark));
        let clients = Arc::new(ClientLimits::new(
            cfg.max_connections_per_client,
            cfg.max_connections,
        ));
        Self {
            clients,
            cfg,
            routes,
            log,
            pool,
            conns,
            quarantine: Mutex::new(HashMap::new()),
        }
    }

    fn quarantine(&self, addr: SocketAddr) {
        let mut q = self.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        q.retain(|_, until| *until > now);
        q.insert(addr, now + self.cfg.quarantine);
    }

    /// Answer with the router's own error page, logging it to the app if it has a code.
    fn fail(&self, ctx: &mut Ctx, err: RouterError) -> Response<RespBody> {
        let resp = page_response(&err, &ctx.pages, &ctx.line.request_id);
        ctx.set_error(&err);
        ctx.emit();
        resp
    }

    /// Check the request line and headers against the router's limits.
    fn check_limits(&self, req: &Request<Incoming>) -> Result<(), RouterError> {
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len + req.method().as_str().len() + 10 > self.cfg.max_line_bytes {
            return Err(RouterError::BadRequest("Request line too long."));
        }
        if req.headers().len() > self.cfg.max_headers {
            return Err(RouterError::BadRequest("Too many headers."));
        }
        for (name, value) in req.headers() {
            if name.as_str().len() > self.cfg.max_header_name_bytes {
                return Err(RouterError::BadRequest("Header name too long."));
            }
            if name.as_str().len() + 2 + value.len() > self.cfg.max_line_bytes {
                return Err(RouterError::BadRequest("Header line too long."));
            }
        }
        Ok(())
    }

    /// Handle one client request. Never fails: errors become the router's pages.
    pub(crate) async fn handle(
        self: Arc<Self>,
        conn: ConnInfo,
        req: Request<Incoming>,
    ) -> Result<Response<RespBody>, std::convert::Infallible> {
        let start = Instant::now();
        let rid = request_id(req.headers());
        if let Err(e) = self.check_limits(&req) {
            return Ok(error_response(&e, &rid));
        }
        let raw_host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .map(str::to_owned);
        let fwd = forwarded_for(req.headers(), conn.peer);
        let verdict = self
            .admit(admission::Request {
                start,
                host: raw_host.as_deref(),
                expect_other: req
                    .headers()
                    .get(header::EXPECT)
                    .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"100-continue")),
                method: req.method().as_str().to_owned(),
                path: req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned(),
                request_id: rid.clone(),
                fwd: fwd.clone(),
                protocol: conn.protocol,
            })
            .await;
        let (mut ctx, route) = match verdict {
            Verdict::Refused(e) => return Ok(error_response(&e, &rid)),
            Verdict::Failed(mut ctx, e) => return Ok(self.fail(&mut ctx, e)),
            Verdict::Admitted(ctx, route) => (ctx, route),
        };

        let (req, body_state) =
            match self.upstream_request(req, raw_host.as_deref(), &fwd, &rid, conn) {
                Ok(r) => r,
                Err(e) => return Ok(self.fail(&mut ctx, e)),
            };
        let picked = self.pick_and_connect(&route, &mut ctx, &self.pool).await;
        let up = match picked {
            Ok((addr, sender, pooled)) => Upstream {
                addr,
                sender,
                pooled,
            },
            Err(e) => return Ok(self.fail(&mut ctx, e)),
        };
        Ok(self.send(ctx, up, req, body_state).await)
    }

    /// Rewrite the client's request for the dyno: origin-form URI, HTTP/1.1, Heroku headers.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        raw_host: Option<&str>,
        fwd: &str,
        rid: &str,
        conn: ConnInfo,
    ) -> Result<(Request<ClientBody>, Arc<Upload>), RouterError> {
        let (mut parts, body) = req.into_parts();
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = pq
            .parse::<Uri>()
            .map_err(|_| RouterError::BadRequest("Invalid request target."))?;
        parts.version = Version::HTTP_11;
        let h = &mut parts.headers;
        strip_hop_by_hop(h);
        // The router answers `Expect: 100-continue` itself (hyper sends 100 when the body is read).
        h.remove(header::EXPECT);
        if !h.contains_key(header::HOST) {
            let host = raw_host.ok_or(RouterError::BadRequest("Missing Host header."))?;
            let v = HeaderValue::from_str(host)
                .map_err(|_| RouterError::BadRequest("Invalid Host."))?;
            h.insert(header::HOST, v);
        }
        let bad = |_| RouterError::Heroku(HerokuCode::H99);
        h.insert(X_FORWARDED_FOR, HeaderValue::from_str(fwd).map_err(bad)?);
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.protocol));
        h.insert(X_FORWARDED_PORT, HeaderValue::from(conn.local_port));
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms);
        h.insert(X_REQUEST_START, HeaderValue::from(now_ms));
        h.insert(X_REQUEST_ID, HeaderValue::from_str(rid).map_err(bad)?);
        h.append(header::VIA, HeaderValue::from_static(self.cfg.via));
        let (body, state) = ClientBody::new(body, self.cfg.idle_timeout);
        Ok((Request::from_parts(parts, body), state))
    }

    /// Indices of the app's `up` dynos in the order to try them: random, quarantined ones last.
    fn connect_order(&self, route: &AppRoute) -> Vec<usize> {
        let mut order: Vec<usize> = (0..route.backends.len()).collect();
        if order.len() > 1 {
            fastrand::shuffle(&mut order);
            // Quarantined dynos go last (stable sort keeps the random order otherwise).
            let q = self.quarantine.lock().unwrap_or_else(|p| p.into_inner());
            if !q.is_empty() {
                let now = Instant::now();
                order.sort_by_key(|&i| {
                    q.get(&route.backends[i].addr)
                        .is_some_and(|until| *until > now)
                });
            }
        }
        order
    }

    /// Choose a dyno at random and get a connection to it: `checkout` from a pool, or
    /// a new connection with retries on other dynos (up to `connect_tries` within `connect_timeout`).
    /// Returns the dyno's address, the connection and whether it came from the pool.
    ///
    /// A dyno that refused and has left the table meanwhile (stopped for a restart) sends the
    /// choice back to the table as it is now: its other dynos, or the boot wait for the ones
    /// starting — so a request that was routed just before a restart is not lost to `H21`.
    pub(crate) async fn pick_and_connect<U: Upstreams>(
        &self,
        route: &Arc<AppRoute>,
        ctx: &mut Ctx,
        upstreams: &U,
    ) -> Result<(SocketAddr, U::Conn, bool), RouterError> {
        let mut route = route.clone();
        let mut order = self.connect_order(&route);
        // The budget starts now: a request that waited for a dyno to boot still gets it whole.
        let deadline = Instant::now() + self.cfg.connect_timeout;
        let mut last = HerokuCode::H21;
        let tries = self.cfg.connect_tries.max(1);
        let mut next = 0;
        for _ in 0..tries {
            if order.is_empty() {
                break;
            }
            let b = &route.backends[order[next % order.len()]];
            next += 1;
            if ctx.line.dyno.as_deref() != Some(b.dyno.as_str()) {
                ctx.line.dyno = Some(b.dyno.clone());
            }
            if let Some(s) = upstreams.checkout(b.addr) {
                ctx.line.connect_ms = Some(0);
                return Ok((b.addr, s, true));
            }
            let t0 = Instant::now();
            let budget = deadline.saturating_duration_since(t0);
            if budget.is_zero() {
                last = HerokuCode::H19;
                break;
            }
            let res = upstreams.connect(b.addr, budget).await;
            ctx.line.connect_ms = Some(ms(t0.elapsed()));
            match res {
                Ok(s) => return Ok((b.addr, s, false)),
                Err(ConnectError::Timeout) => {
                    last = HerokuCode::H19;
                    break;
                }
                Err(ConnectError::Socket(e)) => {
                    tracing::error!(error = %e, "cannot set up upstream socket (SO_MARK needs CAP_NET_ADMIN)");
                    return Err(HerokuCode::H99.into());
                }
                Err(e) => {
                    tracing::debug!(error = %e, dyno = %b.dyno, addr = %b.addr, "connect failed, trying another dyno");
                    self.quarantine(b.addr);
                    upstreams.forget(b.addr);
                    last = HerokuCode::H21;
                    if !self.routes.routes_to(b.addr) {
                        route = self.route_with_backends(&ctx.line.host, ctx.start).await?;
                        order = self.connect_order(&route);
                        next = 0;
                    }
                }
            }
        }
        Err(last.into())
    }

    /// Send to the dyno, wait for the first byte (`H12`), stream the response back.
    async fn send(
        self: Arc<Self>,
        mut ctx: Ctx,
        up: Upstream,
        mut req: Request<ClientBody>,
        upload: Arc<Upload>,
    ) -> Response<RespBody> {
        let Upstream {
            addr,
            mut sender,
            mut pooled,
        } = up;
        // `H12` counts from the end of the upload (see `Upload::dyno_timeout`); the clock
        // runs across a retry on a fresh connection, as the upload is the same.
        let dyno_timeout = upload.dyno_timeout(self.cfg.request_timeout, self.cfg.idle_timeout);
        tokio::pin!(dyno_timeout);
        let resp = loop {
            let fut = sender.try_send_request(req);
            let sent = tokio::select! {
                sent = fut => sent,
                code = &mut dyno_timeout => return self.fail(&mut ctx, code.into()),
            };
            match sent {
                Ok(resp) => break resp,
                Err(mut e) => {
                    // A pooled connection the dyno had closed: the request was not sent, so
                    // try once more on a fresh connection to the same dyno.
                    match (pooled, e.take_message()) {
                        (true, Some(back)) => {
                            req = back;
                            pooled = false;
                            let budget = self.cfg.connect_timeout;
                            match self.pool.connect(addr, budget).await {
                                Ok(s) => sender = s,
                                Err(ConnectError::Timeout) => {
                                    return self.fail(&mut ctx, HerokuCode::H19.into())
                                }
                                Err(_) => return self.fail(&mut ctx, HerokuCode::H21.into()),
                            }
                        }
                        _ => {
                            let err = e.error();
                            let code = match upload.state() {
                                ReqState::ClientIdle => HerokuCode::H28,
                                ReqState::ClientGone => HerokuCode::H27,
                                _ if err.is_parse_too_large() || err.is_parse() => HerokuCode::H25,
                                // The dyno hung up while the request body was still coming.
                                ReqState::Streaming => HerokuCode::H18,
                                ReqState::Done => HerokuCode::H13,
                            };
                            tracing::debug!(error = %err, %addr, "upstream request failed");
                            return self.fail(&mut ctx, code.into());
                        }
                    }
                }
            }
        };
        // hyper's buffer limit is soft (one large read can overshoot it): check the head size.
        let head_bytes: usize = resp
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if head_bytes > self.cfg.max_response_header_bytes {
            return self.fail(&mut ctx, HerokuCode::H25.into());
        }
        if resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
            // HTTP/2 clients cannot switch protocols this way.
            return self.fail(&mut ctx, HerokuCode::H25.into());
        }
        let (mut parts, body) = resp.into_parts();
        // The client speaks to the router, not to the dyno: an HTTP/1.0 app still answers it in
        // the router's HTTP/1.1 (hyper adapts it for HTTP/1.0 clients and ignores it for h2).
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        // Heroku's router marks responses too (`Via: 1.1 vegur`).
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static(self.cfg.via));
        ctx.line.status = parts.status.as_u16();
        let body = LoggedBody {
            inner: body,
            bytes: 0,
            ctx: Some(ctx),
            idle_timeout: self.cfg.idle_timeout,
            idle: None,
            upstream: Some((self.pool.clone(), addr, sender)),
        };
        Response::from_parts(parts, body.boxed())
    }
}

/// `X-Forwarded-For`: the client's chain with the peer's address appended.
fn forwarded_for(headers: &HeaderMap, peer: SocketAddr) -> String {
    let ip = peer.ip().to_canonical().to_string();
    let prior: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if prior.is_empty() {
        ip
    } else {
        format!("{}, {ip}", prior.join(", "))
    }
}
