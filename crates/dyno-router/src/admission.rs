//! Admission: what the router decides about a request before any dyno sees it, the same for
//! HTTP/1 and HTTP/2. The `Host` picks the app; then the app's state: maintenance (H80), never
//! deployed (H81), no web dyno up (H10 when one crashed; while some are starting the request
//! waits up to `boot_wait` for one, then H20; else H14), too many requests waiting (H11, the
//! ones waiting for a boot included). A request refused before it has an app (bad `Host`, no
//! such app, a bad `Expect`) gets no router log line; every other one gets one, through the
//! [`Ctx`] made here.

use std::sync::Arc;
use std::time::Instant;

use crate::body::{Ctx, InFlight};
use crate::codes::{HerokuCode, RouterError};
use crate::log::RouterLog;
use crate::proxy::Shared;
use crate::routes::{normalize_host, AppRoute};

/// What admission reads of a request; each engine fills it from its own parse.
pub(crate) struct Request<'a> {
    pub(crate) start: Instant,
    /// The `Host` header (or the authority of an absolute URI), as sent.
    pub(crate) host: Option<&'a str>,
    /// An `Expect` other than `100-continue`.
    pub(crate) expect_other: bool,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) request_id: String,
    /// `X-Forwarded-For` as it goes to the dyno (the client's chain plus its address).
    pub(crate) fwd: String,
    pub(crate) protocol: &'static str,
}

/// Admission's verdict.
pub(crate) enum Verdict {
    /// Refused before it had an app: answered, never logged.
    Refused(RouterError),
    /// Refused with an app's H-code: answered and logged through the context.
    Failed(Ctx, RouterError),
    /// On to a dyno of the route.
    Admitted(Ctx, Arc<AppRoute>),
}

impl Shared {
    pub(crate) async fn admit(&self, req: Request<'_>) -> Verdict {
        let Some(host) = req.host.and_then(normalize_host) else {
            return Verdict::Refused(RouterError::BadRequest("Missing or invalid Host header."));
        };
        let Some(route) = self.routes.lookup(&host) else {
            return Verdict::Refused(RouterError::NoSuchApp);
        };
        if req.expect_other {
            return Verdict::Refused(RouterError::ExpectationFailed);
        }
        let (in_flight, waiting) = InFlight::enter(&route.in_flight);
        let mut ctx = Ctx {
            _in_flight: in_flight,
            sink: self.log.clone(),
            logged: false,
            start: req.start,
            app: route.name.clone(),
            pages: route.pages.clone(),
            line: RouterLog {
                code: None,
                method: req.method,
                path: req.path,
                host,
                request_id: req.request_id,
                fwd: req.fwd,
                dyno: None,
                connect_ms: None,
                service_ms: None,
                status: 0,
                bytes: None,
                protocol: req.protocol,
            },
        };
        match self.decide(&route, waiting) {
            Decision::Admit => return Verdict::Admitted(ctx, route),
            Decision::Refuse(code) => return Verdict::Failed(ctx, code.into()),
            Decision::WaitForBoot => {}
        }
        // Only a request that has to wait watches the table: the hot path never subscribes.
        match self.route_with_backends(&ctx.line.host, req.start).await {
            Ok(route) => {
                ctx.pages = route.pages.clone();
                // Already counted in the backlog while it waited: not refused for it now.
                match self.decide(&route, 0) {
                    Decision::Admit => Verdict::Admitted(ctx, route),
                    Decision::Refuse(code) => Verdict::Failed(ctx, code.into()),
                    Decision::WaitForBoot => Verdict::Failed(ctx, HerokuCode::H20.into()),
                }
            }
            Err(code) => Verdict::Failed(ctx, code.into()),
        }
    }

    /// The app's route as the table has it now, once it has an `up` web dyno: at once, or
    /// after waiting for a starting one (until the boot wait from `start` is over: `H20`).
    /// `H14`/`H10` when it has none and none is starting.
    pub(crate) async fn route_with_backends(
        &self,
        host: &str,
        start: Instant,
    ) -> Result<Arc<AppRoute>, HerokuCode> {
        let boot_deadline = tokio::time::Instant::from_std(start) + self.cfg.boot_wait;
        let mut changes = self.routes.changes();
        loop {
            changes.borrow_and_update();
            let route = self.routes.lookup(host).ok_or(HerokuCode::H14)?;
            if !route.backends.is_empty() {
                return Ok(route);
            }
            if route.crashed {
                return Err(HerokuCode::H10);
            }
            if route.starting == 0 {
                return Err(HerokuCode::H14);
            }
            tokio::select! {
                changed = changes.changed() => changed.map_err(|_| HerokuCode::H14)?,
                () = tokio::time::sleep_until(boot_deadline) => return Err(HerokuCode::H20),
            }
        }
    }

    /// What the app's state says about a request; `waiting` counts it and every other request
    /// of the app in flight, those waiting for a dyno to boot included (`H11` bounds both).
    fn decide(&self, route: &AppRoute, waiting: usize) -> Decision {
        let backlog = |dynos: usize| waiting > self.cfg.backlog_per_dyno.saturating_mul(dynos);
        if route.maintenance {
            Decision::Refuse(HerokuCode::H80)
        } else if route.blank {
            Decision::Refuse(HerokuCode::H81)
        } else if route.backends.is_empty() {
            if route.crashed {
                Decision::Refuse(HerokuCode::H10)
            } else if route.starting == 0 {
                Decision::Refuse(HerokuCode::H14)
            } else if backlog(route.starting) {
                Decision::Refuse(HerokuCode::H11)
            } else {
                Decision::WaitForBoot
            }
        } else if backlog(route.backends.len()) {
            Decision::Refuse(HerokuCode::H11)
        } else {
            Decision::Admit
        }
    }
}

/// [`Shared::decide`]'s answer.
enum Decision {
    Admit,
    Refuse(HerokuCode),
    /// No web dyno is up but some are starting: wait for one (`H20` when none comes up).
    WaitForBoot,
}
