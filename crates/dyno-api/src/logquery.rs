//! `GET /apps/{app}/logs?n=100&ps=web.1&source=app&tail=1`: which log lines a client asks for.

use serde::{Deserialize, Serialize};

use crate::error::{quote, ApiError};

/// `GET /apps/{name}/logs` query: `n` lines (default 100, at most 1500), filtered by dyno or
/// process type (`ps=web.1`, `ps=web`) and source (`app`, `heroku`, `router`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    pub n: Option<usize>,
    pub ps: Option<String>,
    pub source: Option<String>,
    /// `tail=1`: stream new lines after the recent ones (`text/plain`, a line per chunk).
    #[serde(default)]
    pub tail: bool,
}

impl LogQuery {
    /// From a URL query string (`n=10&ps=web.1`); unknown keys and bad numbers are refused.
    pub fn parse(query: &str) -> Result<LogQuery, ApiError> {
        let mut q = LogQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "n" => {
                    let n: usize = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1500).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid_params(format!(
                                "n must be a number of lines from 1 to 1500: got {}.",
                                quote(v)
                            ))
                        })?;
                    q.n = Some(n);
                }
                "ps" => q.ps = Some(v.to_owned()),
                "tail" => q.tail = matches!(v, "1" | "true" | ""),
                "source" => match v {
                    "app" | "heroku" | "router" => q.source = Some(v.to_owned()),
                    _ => {
                        return Err(ApiError::invalid_params(format!(
                            "source must be app, heroku or router: got {}.",
                            quote(v)
                        )))
                    }
                },
                _ => {
                    return Err(ApiError::invalid_params(format!(
                        "Unknown log parameter {}: use n, ps, source and tail.",
                        quote(k)
                    )))
                }
            }
        }
        if let Some(ps) = &q.ps {
            let ok = !ps.is_empty()
                && ps.len() <= 40
                && ps
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(ApiError::invalid_params(format!(
                    "ps must name a dyno or a process type, e.g. web.1 or web: got {}.",
                    quote(ps)
                )));
            }
        }
        Ok(q)
    }

    /// The query string for a URL (`n=10&ps=web.1`).
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.n {
            parts.push(format!("n={n}"));
        }
        if let Some(ps) = &self.ps {
            parts.push(format!("ps={ps}"));
        }
        if let Some(s) = &self.source {
            parts.push(format!("source={s}"));
        }
        if self.tail {
            parts.push("tail=1".into());
        }
        parts.join("&")
    }
}
