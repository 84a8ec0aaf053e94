//! Router settings. Defaults are Heroku's numbers; tests shrink the timeouts to milliseconds.

use std::time::Duration;

use crate::upstream::ROUTER_MARK;

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Total budget to connect to a dyno, across retries (`H19` when spent). Heroku: 5 s.
    pub connect_timeout: Duration,
    /// Connect attempts across the app's dynos (`H21` when all refuse). Heroku: 10.
    pub connect_tries: usize,
    /// How long a dyno that refused a connection is avoided. 5 s.
    pub quarantine: Duration,
    /// From the whole request (head and body) written to the dyno to its first response byte
    /// (`H12`). Heroku: 30 s. A slow upload does not eat into it; an upload the dyno never
    /// reads is bounded by `idle_timeout` on each side instead (`H28` client silent, `H18`).
    pub request_timeout: Duration,
    /// How long a request waits for one of the app's starting web dynos to come up when none
    /// is up (`H20` after that). Heroku: 75 s.
    pub boot_wait: Duration,
    /// `H11` when an app has more than this × its web dynos requests in flight. Heroku: 200.
    pub backlog_per_dyno: usize,
    /// No data from the dyno for this long while streaming a response: `H15`. Heroku: 55 s.
    pub idle_timeout: Duration,
    /// Idle upstream keep-alive connections are closed after this. 90 s.
    pub pool_idle_timeout: Duration,
    /// Whole request head must arrive within this (slowloris). 30 s.
    pub header_read_timeout: Duration,
    /// `SO_MARK` on upstream sockets (`None` only for unprivileged experiments).
    pub mark: Option<u32>,
    /// Longest request line or single header line (bytes) before `400`. 8 KiB.
    pub max_line_bytes: usize,
    /// Most request headers before `400`. 1000.
    pub max_headers: usize,
    /// Longest header name before `400`. 1000.
    pub max_header_name_bytes: usize,
    /// Largest response head from a dyno before `H25`/502. 512 KiB.
    pub max_response_header_bytes: usize,
    /// Open client connections from one address. A bound reached closes that client's oldest
    /// idle connection for the new one, or refuses the new one when none is idle. The default
    /// keeps 1,000 clients behind one NAT working with two connections each. 2048.
    pub max_connections_per_client: usize,
    /// Open client connections in all, the same way (the oldest idle of anyone's). Keep it
    /// below the process's open-file limit. 16384.
    pub max_connections: usize,
    /// The `Via` entry the router adds. Heroku's router says `1.1 vegur`; we keep that so apps
    /// that look for it behave the same.
    pub via: &'static str,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            connect_tries: 10,
            quarantine: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            boot_wait: Duration::from_secs(75),
            backlog_per_dyno: 200,
            idle_timeout: Duration::from_secs(55),
            pool_idle_timeout: Duration::from_secs(90),
            header_read_timeout: Duration::from_secs(30),
            mark: Some(ROUTER_MARK),
            max_line_bytes: 8 * 1024,
            max_headers: 1000,
            max_header_name_bytes: 1000,
            max_response_header_bytes: 512 * 1024,
            max_connections_per_client: 2048,
            max_connections: 16384,
            via: "1.1 vegur",
        }
    }
}
