//! Admission: what the router decides about a request before any dyno sees it, the same for
//! HTTP/1 and HTTP/2. The `Host` picks the app; then the app's state: maintenance (H80), never
//! deployed (H81), no web dyno up (H10 when one crashed, else H14), too many requests waiting
//! (H11). A request refused before it has an app (bad `Host`, no such app, a bad `Expect`)
//! gets no router log line; every other one gets one, through the [`Ctx`] made here.

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
    pub(crate) fn admit(&self, req: Request<'_>) -> Verdict {
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
        let ctx = Ctx {
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
        let refused = if route.maintenance {
            Some(HerokuCode::H80)
        } else if route.blank {
            Some(HerokuCode::H81)
        } else if route.backends.is_empty() {
            Some(match route.crashed {
                true => HerokuCode::H10,
                false => HerokuCode::H14,
            })
        } else if waiting
            > self
                .cfg
                .backlog_per_dyno
                .saturating_mul(route.backends.len())
        {
            Some(HerokuCode::H11)
        } else {
            None
        };
        match refused {
            Some(code) => Verdict::Failed(ctx, code.into()),
            None => Verdict::Admitted(ctx, route),
        }
    }
}
