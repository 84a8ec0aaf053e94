//! The victim's load: a few keep-alive connections to the router, each sending GETs at a fixed
//! pace, for a bounded time. A steady rate (not as fast as possible) keeps the victim far from
//! saturation, so a latency change is the abuse's doing, not the load's own queueing.
//!
//! Latency is measured from when a request was *due*, not when it was sent (as wrk2 does): a
//! stall delays every request that should have gone out meanwhile, and each of them counts it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dyno_net::ns::Netns;

/// A request that takes longer than this is an error (and its connection is dropped).
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Load {
    pub(super) latencies: Vec<Duration>,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    /// The slowest request: its latency, and when it was due (from the start of the run), to
    /// tell a stall at the abuse's start from one while it holds.
    pub(super) worst: (Duration, Duration),
}

impl Load {
    fn merge(&mut self, other: Load) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.worst = self.worst.max(other.worst);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

pub(super) struct Target<'a> {
    /// The namespace the router listens in (the lab host): connections are made there.
    pub(super) netns: &'a Netns,
    pub(super) addr: SocketAddr,
    pub(super) host: &'a str,
    pub(super) connections: usize,
    /// Requests per second, all connections together.
    pub(super) rate: f64,
}

impl Target<'_> {
    /// Runs the load for `duration` (plus at most [`TIMEOUT`] for the last requests) while
    /// `meanwhile` runs on this thread; returns both results.
    pub(super) fn run<R>(
        &self,
        duration: Duration,
        meanwhile: impl FnOnce(Instant) -> R,
    ) -> (Load, R) {
        self.run_with(duration, false, meanwhile)
    }

    /// Runs the load while `work` runs on this thread, and stops it (after the requests then
    /// due) once `work` returns, or after `longest`.
    pub(super) fn run_during<R>(&self, longest: Duration, work: impl FnOnce() -> R) -> (Load, R) {
        self.run_with(longest, true, |_| work())
    }

    fn run_with<R>(
        &self,
        duration: Duration,
        stop_after_meanwhile: bool,
        meanwhile: impl FnOnce(Instant) -> R,
    ) -> (Load, R) {
        let start = Instant::now();
        let end = start + duration;
        let interval = Duration::from_secs_f64(self.connections as f64 / self.rate);
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..self.connections)
                .map(|c| {
                    // Connections take turns: their first requests are spread over one interval.
                    let first = start + interval.mul_f64(c as f64 / self.connections as f64);
                    let stop = &stop;
                    scope.spawn(move || self.connection(start, first, interval, end, stop))
                })
                .collect();
            let other = meanwhile(end);
            if stop_after_meanwhile {
                stop.store(true, Ordering::Relaxed);
            }
            let mut load = Load::default();
            for worker in workers {
                load.merge(worker.join().unwrap_or_default());
            }
            (load, other)
        })
    }

    fn connection(
        &self,
        start: Instant,
        first: Instant,
        interval: Duration,
        end: Instant,
        stop: &AtomicBool,
    ) -> Load {
        let mut load = Load::default();
        let mut stream: Option<BufReader<TcpStream>> = None;
        let mut due = first;
        while due < end && !stop.load(Ordering::Relaxed) {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let result = match stream.as_mut() {
                Some(s) => self.get(s).map(drop),
                None => self.connect().and_then(|mut s| {
                    let r = self.get(&mut s).map(drop);
                    stream = Some(s);
                    r
                }),
            };
            match result {
                Ok(()) => {
                    let latency = due.elapsed();
                    load.worst = load.worst.max((latency, due - start));
                    load.latencies.push(latency);
                }
                Err(e) => {
                    load.errors += 1;
                    load.first_error.get_or_insert(e);
                    stream = None;
                }
            }
            due += interval;
        }
        load
    }

    /// A connection to the router, made in the target's namespace.
    pub(super) fn connect(&self) -> Result<BufReader<TcpStream>, String> {
        let addr = self.addr;
        let made = self
            .netns
            .run(move || TcpStream::connect_timeout(&addr, TIMEOUT));
        let stream = made.map_err(|e| e.to_string())?;
        let stream = stream.map_err(|e| format!("connect to the router: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(BufReader::new(stream))
    }

    /// One GET; the body of a whole `200` response.
    pub(super) fn get(&self, stream: &mut BufReader<TcpStream>) -> Result<Vec<u8>, String> {
        let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        let io = |e: std::io::Error| format!("GET via the router: {e}");
        stream.get_mut().write_all(request.as_bytes()).map_err(io)?;
        let mut line = String::new();
        stream.read_line(&mut line).map_err(io)?;
        let status = line.trim_end().to_owned();
        let mut length = 0usize;
        loop {
            line.clear();
            if stream.read_line(&mut line).map_err(io)? == 0 {
                return Err("the router closed the connection".into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).map_err(io)?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(format!("answer: {status}"));
        }
        Ok(body)
    }
}
