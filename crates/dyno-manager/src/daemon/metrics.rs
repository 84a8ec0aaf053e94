//! The daemon's Prometheus metrics (`GET /metrics` on the API): dynos by state, and the
//! router's requests by status and H-code with a service-time histogram, fed from the router's
//! log lines (every request is one).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use dyno_router::RouterLog;

/// Upper bounds (seconds) of the service-time histogram's buckets.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Latency {
    /// Requests at or under each bound (cumulative, as Prometheus wants).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// Router counters per app.
#[derive(Default)]
pub struct RouterMetrics {
    /// (app, status, code) → requests
    requests: Mutex<BTreeMap<(String, u16, &'static str), u64>>,
    latency: Mutex<BTreeMap<String, Latency>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        *lock(&self.requests)
            .entry((app.to_string(), line.status, code))
            .or_default() += 1;
        if let Some(ms) = line.service_ms {
            let seconds = ms as f64 / 1000.0;
            let mut latency = lock(&self.latency);
            let l = latency.entry(app.to_string()).or_default();
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
        lock(&self.requests).retain(|(a, _, _), _| a != app);
        lock(&self.latency).remove(app);
    }

    /// The router's series in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP dyno_router_requests_total Requests through the router, by app, status and H-code.\n");
        out.push_str("# TYPE dyno_router_requests_total counter\n");
        for ((app, status, code), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "dyno_router_requests_total{{app=\"{}\",status=\"{status}\",code=\"{code}\"}} {n}",
                label(app)
            );
        }
        out.push_str("# HELP dyno_router_service_seconds Time from the request to the end of the response, less the connect time.\n");
        out.push_str("# TYPE dyno_router_service_seconds histogram\n");
        for (app, l) in lock(&self.latency).iter() {
            let app = label(app);
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
}
