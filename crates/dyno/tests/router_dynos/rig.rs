//! The rig of the router tests: a `dyno up` of the scripted app, and what its answers and log
//! lines say.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;

const APP_PY: &str = include_str!("app.py");
pub const MB: usize = 1024 * 1024;

/// A `dyno up` of the scripted app, named `rt-<tag>`, its web dyno(s) up.
pub struct Rig {
    // Field order is drop order: stop `dyno up` before its app dir goes.
    pub up: Up,
    _app: TempApp,
    pub name: String,
    pub host: String,
}

impl Rig {
    pub fn start(tag: &str, extra: &[&str]) -> Rig {
        Rig::start_with(tag, "web: python3 app.py\n", extra, &["web.1"])
    }

    pub fn start_with(tag: &str, procfile: &str, extra: &[&str], wait: &[&str]) -> Rig {
        require_root();
        let name = format!("rt-{tag}");
        let app = app_dir(&format!("rt-{tag}"), procfile);
        std::fs::write(app.join("app.py"), APP_PY).unwrap();
        let mut args = vec!["--app", name.as_str(), "--stop-grace", "2s"];
        args.extend_from_slice(extra);
        let up = Up::start(&format!("rt-{tag}"), &app, &args);
        for dyno in wait {
            up.wait_up(dyno, Duration::from_secs(30));
            if dyno.starts_with("web.") {
                // Announced once the router routes to it.
                up.address_of(dyno);
            }
        }
        Rig {
            up,
            _app: app,
            host: format!("{name}.localhost"),
            name,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.up.get_with(&self.host, path, "")
    }

    pub fn get_with(&self, path: &str, extra: &str) -> Reply {
        self.up.get_with(&self.host, path, extra)
    }

    /// `GET path` with a request id of our own, and the router's line for it.
    pub fn get_logged(&self, path: &str) -> (Reply, String) {
        static N: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "rt-{}-{:06}-request-id",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let reply = self.get_with(path, &format!("X-Request-Id: {id}\r\n"));
        (reply, self.up.router_line_for(&id))
    }

    /// The router line of a request `/echo` answered (by the `X-Request-Id` the dyno saw).
    pub fn line_of_echo(&self, reply: &Reply) -> String {
        let echo = echoed(reply);
        let id = echo
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no request id in {reply:?}"));
        self.up.router_line_for(id)
    }

    /// The only router line with `code=<code>`, waited for.
    pub fn error_line(&self, code: &str) -> String {
        let needle = format!("at=error code={code} ");
        let line = self
            .up
            .wait_router_line(|l| l.starts_with(&needle), Duration::from_secs(10));
        let count = self
            .up
            .router_lines()
            .iter()
            .filter(|l| l.starts_with(&needle))
            .count();
        assert_eq!(count, 1, "{code} logged {count} times:\n{}", self.up.logs());
        line
    }

    /// Connections the app accepted so far (it logs each).
    pub fn accepted(&self, dyno: &str) -> usize {
        self.up
            .app_lines(dyno)
            .iter()
            .filter(|l| l.starts_with("accepted "))
            .count()
    }

    /// Waits until the app accepted `count` connections (the request reached the dyno).
    pub fn wait_accepted(&self, dyno: &str, count: usize) {
        poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            (self.accepted(dyno) >= count).then_some(()).ok_or_else(|| {
                format!(
                    "{dyno} did not accept {count} connection(s):\n{}",
                    self.up.logs()
                )
            })
        })
    }

    /// Ctrl-C, and nothing of the run is left.
    pub fn finish(mut self) {
        let status = self.up.interrupt();
        assert!(status.success(), "{status:?}\n{}", self.up.notes());
        self.up
            .assert_nothing_left(dyno_manager::daemon::uids::app_uid(&self.name));
    }
}

/// What `/echo` saw: the dyno, the request line and the request headers.
pub struct Echo {
    pub dyno: String,
    pub request_line: String,
    pub headers: Vec<(String, String)>,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The dyno got `GET /echo` from the router, as HTTP/1.1, with the Heroku headers every request
/// carries (whatever the client spoke).
pub fn assert_plain_echo(echo: &Echo, host: &str) {
    assert_eq!(echo.dyno, "web.1");
    assert_eq!(echo.request_line, "GET /echo HTTP/1.1");
    assert_eq!(echo.header("host"), Some(host));
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("via"), Some("1.1 vegur"));
}

/// The access line of a `GET /echo` answered 200 by web.1 with `reply`, timings masked.
pub fn assert_echo_access_line(line: &str, host: &str, reply: &Reply) {
    assert_eq!(
        shape(line, &MASKED),
        format!(
            "at=info method=GET path=\"/echo\" host={host} request_id=* fwd=\"127.0.0.1\" dyno=web.1 \
             connect=* service=* status=200 bytes={} protocol=http",
            reply.body.len()
        )
    );
}

pub fn echoed(reply: &Reply) -> Echo {
    let text = reply.text();
    let mut lines = text.lines();
    let dyno = lines.next().unwrap_or_default().to_string();
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Echo {
        dyno,
        request_line,
        headers,
    }
}

pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `123ms` → 123.
pub fn millis(line: &str, key: &str) -> u64 {
    let v = value(line, key);
    v.strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key}={v} is not NNNms in {line}"))
}

/// The shape of an `at=error` line of a request that reached `dyno=web.1`.
pub fn error_shape(
    code: &str,
    desc: &str,
    method: &str,
    path: &str,
    host: &str,
    status: u16,
) -> String {
    format!(
        "at=error code={code} desc=\"{desc}\" method={method} path=\"{path}\" host={host} \
         request_id=* fwd=\"127.0.0.1\" dyno=web.1 connect=* service=* status={status} bytes=0 \
         protocol=http"
    )
}

pub const MASKED: [&str; 3] = ["request_id", "connect", "service"];

pub fn assert_application_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert!(
        reply.text().contains("Application Error"),
        "{}",
        reply.text()
    );
}

impl Rig {
    pub fn wait_line_for_path(&self, path: &str) -> String {
        let needle = format!(" path=\"{path}\" ");
        self.up
            .wait_router_line(|l| l.contains(&needle), Duration::from_secs(10))
    }
}
