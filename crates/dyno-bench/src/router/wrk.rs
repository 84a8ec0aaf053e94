//! wrk: finding the tools, running the load, reading wrk's report.

use super::*;

#[derive(Clone)]
pub(super) struct Tools {
    pub(super) wrk: PathBuf,
    pub(super) taskset: PathBuf,
    pub(super) threads: usize,
    pub(super) connections: usize,
}

pub(super) struct WrkResult {
    pub(super) rps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) requests: u64,
}

impl Tools {
    pub(super) fn wrk_command(&self, addr: SocketAddr, duration: Duration) -> Command {
        let mut cmd = Command::new(&self.taskset);
        cmd.arg("-c")
            .arg(LOAD_CPU.to_string())
            .arg(&self.wrk)
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .arg("--latency")
            .arg("-H")
            .arg(format!("Host: {HOST}"))
            .arg(format!("http://{addr}/"));
        cmd
    }

    pub(super) fn wrk(&self, addr: SocketAddr, duration: Duration) -> Result<WrkResult, String> {
        let out = self
            .wrk_command(addr, duration)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running wrk: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "wrk against {addr} failed ({}):\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if text.contains("Non-2xx or 3xx responses") {
            return Err(format!("wrk against {addr}: error responses:\n{text}"));
        }
        parse_wrk(&text).ok_or_else(|| format!("cannot parse wrk output:\n{text}"))
    }
}

/// `Requests/sec:`, the `50%` and `99%` lines of `--latency`, and "N requests in".
pub(super) fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => rps = v.parse::<f64>().ok(),
            (Some("50%"), Some(v)) => p50 = latency_ms(v),
            (Some("99%"), Some(v)) => p99 = latency_ms(v),
            (Some(n), Some("requests")) => requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(WrkResult {
        rps: rps?,
        p50_ms: p50?,
        p99_ms: p99?,
        requests,
    })
}

/// wrk's latency: `812.00us`, `1.23ms`, `1.01s`, `2.00m`.
pub(super) fn latency_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

pub(crate) fn find_tool(name: &str, package: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} not found: apt-get install {package}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.10ms  300.00us   9.00ms   90.00%\n  \
            Latency Distribution\n     50%  812.00us\n     75%    1.01ms\n     90%    1.50ms\n     99%    2.34ms\n  \
            123456 requests in 10.00s, 12.00MB read\nRequests/sec:  12345.67\nTransfer/sec:      1.20MB\n";
        let r = parse_wrk(text).unwrap();
        assert!((r.rps - 12345.67).abs() < 1e-6);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 2.34).abs() < 1e-9);
        assert_eq!(r.requests, 123456);
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("5x").is_err());
    }
}
