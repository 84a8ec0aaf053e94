//! The daemon's Prometheus metrics (`GET /metrics` on the API): dynos by state, and the
//! router's requests by status and H-code with a service-time histogram, fed from the router's
//! log lines (every request is one); per dyno, its restarts and, for web dynos, the accept
//! queue of its listener on `$PORT` (inet_diag inside the dyno's network namespace).

use crate::lock;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use dyno_net::diag::SockDiag;
use dyno_net::names::DynoName;
use dyno_net::ns::Netns;
use dyno_router::RouterLog;

use super::Daemon;

/// Upper bounds (seconds) of the service-time histogram's buckets.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Latency {
    /// Requests at or under each bound (cumulative, as Prometheus wants).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// One app's router counters.
#[derive(Default)]
struct AppCounters {
    /// (status, code) → requests
    requests: BTreeMap<(u16, &'static str), u64>,
    latency: Latency,
}

/// Router counters per app. One lock, and no allocation per request once an app is known:
/// every request through the router passes here.
#[derive(Default)]
pub struct RouterMetrics {
    apps: Mutex<BTreeMap<String, AppCounters>>,
}

/// `"` and `\` escaped, newlines dropped: a Prometheus label value.
fn label(v: &str) -> String {
    v.chars()
        .filter(|c| *c != '\n')
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

impl RouterMetrics {
    /// One request, from its log line.
    pub fn observe(&self, app: &str, line: &RouterLog) {
        let code = line.code.map_or("", |c| c.code());
        let mut apps = lock(&self.apps);
        let counters = match apps.get_mut(app) {
            Some(c) => c,
            None => apps.entry(app.to_string()).or_default(),
        };
        *counters.requests.entry((line.status, code)).or_default() += 1;
        if let Some(ms) = line.service_ms {
            let seconds = ms as f64 / 1000.0;
            let l = &mut counters.latency;
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    l.buckets[i] += 1;
                }
            }
            l.count += 1;
            l.sum_seconds += seconds;
        }
    }

    /// Forget an app (destroyed).
    pub fn remove_app(&self, app: &str) {
        lock(&self.apps).remove(app);
    }

    /// The router's series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP dyno_router_requests_total Requests through the router, by app, status and H-code.\n");
        out.push_str("# TYPE dyno_router_requests_total counter\n");
        let apps = lock(&self.apps);
        for (app, counters) in apps.iter() {
            let app = label(app);
            for ((status, code), n) in &counters.requests {
                let _ = writeln!(
                    out,
                    "dyno_router_requests_total{{app=\"{app}\",status=\"{status}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP dyno_router_service_seconds Time from the request to the end of the response, less the connect time.\n");
        out.push_str("# TYPE dyno_router_service_seconds histogram\n");
        for (app, counters) in apps.iter().filter(|(_, c)| c.latency.count > 0) {
            let app = label(app);
            let l = &counters.latency;
            for (bound, n) in BUCKETS.iter().zip(l.buckets) {
                let _ = writeln!(
                    out,
                    "dyno_router_service_seconds_bucket{{app=\"{app}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "dyno_router_service_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {}",
                l.count
            );
            let _ = writeln!(
                out,
                "dyno_router_service_seconds_sum{{app=\"{app}\"}} {}",
                l.sum_seconds
            );
            let _ = writeln!(
                out,
                "dyno_router_service_seconds_count{{app=\"{app}\"}} {}",
                l.count
            );
        }
    }
}

/// Dynos by app and state, in the Prometheus text format.
pub fn render_dynos(out: &mut String, counts: &BTreeMap<(String, String), usize>) {
    out.push_str("# HELP dyno_dynos Dynos by app and state.\n# TYPE dyno_dynos gauge\n");
    for ((app, state), n) in counts {
        let _ = writeln!(
            out,
            "dyno_dynos{{app=\"{}\",state=\"{state}\"}} {n}",
            label(app)
        );
    }
}

/// One dyno's own series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynoSeries {
    pub app: String,
    /// `web.1`
    pub dyno: String,
    pub restarts: u32,
    /// The accept queue on `$PORT`; `None` when nothing listens there (yet) or the namespace
    /// could not be read.
    pub listen: Option<ListenQueue>,
}

/// A listener's accept queue (summed over its addresses, e.g. `0.0.0.0` and `::`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenQueue {
    /// Connections the kernel completed that the app has not accepted yet.
    pub queued: u32,
    /// The `listen()` backlog (capped by `net.core.somaxconn`).
    pub backlog: u32,
}

/// The accept queue on `port` in the network namespace bound at `netns_path`: `Ok(None)` when
/// nothing listens there. Blocking (it enters the namespace on the namespace thread).
pub fn listen_queue(netns_path: &Path, port: u16) -> Result<Option<ListenQueue>, String> {
    let netns = Netns::open(netns_path).map_err(|e| e.to_string())?;
    let mut diag = SockDiag::open_in(&netns).map_err(|e| e.to_string())?;
    let listeners = diag.listeners_on(port).map_err(|e| e.to_string())?;
    Ok((!listeners.is_empty()).then(|| ListenQueue {
        queued: listeners.iter().map(|l| l.queued).sum(),
        backlog: listeners.iter().map(|l| l.backlog).sum(),
    }))
}

/// Per-dyno series in the Prometheus text format.
pub fn render_dyno_series(out: &mut String, series: &[DynoSeries]) {
    per_dyno(
        out,
        "dyno_restarts_total",
        "counter",
        "Restarts of a dyno after it crashed.",
        series,
        |s| Some(u64::from(s.restarts)),
    );
    per_dyno(
        out,
        "dyno_listen_queue",
        "gauge",
        "Connections waiting in the accept queue of a web dyno's listener on $PORT.",
        series,
        |s| s.listen.map(|q| u64::from(q.queued)),
    );
    per_dyno(
        out,
        "dyno_listen_backlog",
        "gauge",
        "The listen backlog of a web dyno's listener on $PORT.",
        series,
        |s| s.listen.map(|q| u64::from(q.backlog)),
    );
}

/// One metric with a line per dyno that has a value.
fn per_dyno(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    series: &[DynoSeries],
    value: impl Fn(&DynoSeries) -> Option<u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for s in series {
        if let Some(v) = value(s) {
            let _ = writeln!(
                out,
                "{name}{{app=\"{}\",dyno=\"{}\"}} {v}",
                label(&s.app),
                label(&s.dyno)
            );
        }
    }
}

/// What [`Daemon::dyno_series`] takes from one running dyno.
struct Incarnation {
    app: String,
    dyno: String,
    restarts: u32,
    /// Web dynos only: the network to look for the listener in.
    web_net: Option<String>,
}

impl Daemon {
    /// Every running dyno's series. The listen queues are read off the async threads; a dyno
    /// whose namespace cannot be read (it is just stopping) is shown without them. During a
    /// preboot, two incarnations share a name: their queues add up (both are being routed
    /// to), the restarts are the newer one's.
    pub(super) async fn dyno_series(&self) -> Vec<DynoSeries> {
        let mut incarnations = Vec::new();
        for (app, runtime) in self.apps.lock().await.iter() {
            for d in &runtime.dynos {
                if d.handle.is_finished() {
                    continue;
                }
                let status = d.handle.status.borrow();
                incarnations.push(Incarnation {
                    app: app.clone(),
                    dyno: d.name.clone(),
                    restarts: status.restarts,
                    web_net: (d.process == "web")
                        .then(|| status.net_name.clone())
                        .flatten(),
                });
            }
        }
        let run_dir = self.options.network.run_dir.clone();
        let port = self.options.port;
        let read = tokio::task::spawn_blocking(move || {
            incarnations
                .into_iter()
                .map(|i| {
                    let queue = i.web_net.as_deref().and_then(|net| {
                        let name = DynoName::new(net).ok()?;
                        match listen_queue(&run_dir.netns_path(&name), port) {
                            Ok(queue) => queue,
                            Err(e) => {
                                tracing::debug!(dyno = %i.dyno, error = %e, "no listen queue");
                                None
                            }
                        }
                    });
                    (i, queue)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading the listen queues failed");
                return Vec::new();
            }
        };
        let mut series: BTreeMap<(String, String), DynoSeries> = BTreeMap::new();
        for (i, queue) in read {
            let entry = series
                .entry((i.app.clone(), i.dyno.clone()))
                .or_insert_with(|| DynoSeries {
                    app: i.app,
                    dyno: i.dyno,
                    restarts: 0,
                    listen: None,
                });
            // Dynos are listed oldest first: the last one seen is the newest.
            entry.restarts = i.restarts;
            if let Some(q) = queue {
                let sum = entry.listen.get_or_insert_with(ListenQueue::default);
                sum.queued = sum.queued.saturating_add(q.queued);
                sum.backlog = sum.backlog.saturating_add(q.backlog);
            }
        }
        series.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_router::HerokuCode;

    fn line(status: u16, code: Option<HerokuCode>, service_ms: u64) -> RouterLog {
        RouterLog {
            status,
            code,
            service_ms: Some(service_ms),
            ..RouterLog::default()
        }
    }

    #[test]
    fn counts_and_histogram() {
        let m = RouterMetrics::default();
        m.observe("web-app", &line(200, None, 3));
        m.observe("web-app", &line(200, None, 30));
        m.observe("web-app", &line(503, Some(HerokuCode::H12), 30000));
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains(
                "dyno_router_requests_total{app=\"web-app\",status=\"200\",code=\"\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "dyno_router_requests_total{app=\"web-app\",status=\"503\",code=\"H12\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("dyno_router_service_seconds_bucket{app=\"web-app\",le=\"0.005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("dyno_router_service_seconds_bucket{app=\"web-app\",le=\"0.05\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("dyno_router_service_seconds_bucket{app=\"web-app\",le=\"30\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("dyno_router_service_seconds_count{app=\"web-app\"} 3\n"),
            "{out}"
        );
        m.remove_app("web-app");
        let mut out = String::new();
        m.render(&mut out);
        assert!(!out.contains("web-app"), "{out}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\cd");
    }

    #[test]
    fn dyno_series_render_restarts_and_queues() {
        let series = [
            DynoSeries {
                app: "web-app".into(),
                dyno: "web.1".into(),
                restarts: 2,
                listen: Some(ListenQueue {
                    queued: 3,
                    backlog: 128,
                }),
            },
            DynoSeries {
                app: "web-app".into(),
                dyno: "worker.1".into(),
                restarts: 0,
                listen: None,
            },
        ];
        let mut out = String::new();
        render_dyno_series(&mut out, &series);
        for want in [
            "# TYPE dyno_restarts_total counter\n",
            "dyno_restarts_total{app=\"web-app\",dyno=\"web.1\"} 2\n",
            "dyno_restarts_total{app=\"web-app\",dyno=\"worker.1\"} 0\n",
            "# TYPE dyno_listen_queue gauge\n",
            "dyno_listen_queue{app=\"web-app\",dyno=\"web.1\"} 3\n",
            "# TYPE dyno_listen_backlog gauge\n",
            "dyno_listen_backlog{app=\"web-app\",dyno=\"web.1\"} 128\n",
        ] {
            assert!(out.contains(want), "{want} in\n{out}");
        }
        assert!(!out.contains("dyno_listen_queue{app=\"web-app\",dyno=\"worker.1\"}"));
        // Every series line has a HELP and a TYPE line before it.
        let help = out.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(help, 3, "{out}");
    }
}
