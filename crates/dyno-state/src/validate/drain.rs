//! Log drain URLs: `syslog://host:port`, `syslog+tls://host:port`, `https://[user:pass@]host[:port][/path]`.
//!
//! Parsed by hand: the grammar we accept is small (no relative references, no percent-decoding
//! needed to store it), and a URL crate would accept far more than a drain can use.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::{shown, string_newtype, ValidationError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainScheme {
    /// RFC 5424 over TCP (octet-counted framing, RFC 6587).
    Syslog,
    /// RFC 5424 over TLS (RFC 5425).
    SyslogTls,
    /// Batches of lines POSTed as `application/logplex-1`.
    Https,
}

impl DrainScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            DrainScheme::Syslog => "syslog",
            DrainScheme::SyslogTls => "syslog+tls",
            DrainScheme::Https => "https",
        }
    }
}

/// A validated drain URL, kept as given (scheme in lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DrainUrl(String);
string_newtype!(DrainUrl);

/// The parts of a drain URL a log shipper needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainTarget {
    pub scheme: DrainScheme,
    /// A host name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// The explicit port, or 443 for `https`.
    pub port: u16,
}

const HINT: &str =
    "use syslog://host:port, syslog+tls://host:port or https://host[:port]/path (like syslog+tls://logs.example.com:6514)";

impl DrainUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(s: &str) -> Result<DrainUrl, ValidationError> {
        let target = parse_parts(s)?;
        let (_, rest) = s.split_once("://").expect("checked by parse_parts");
        Ok(DrainUrl(format!("{}://{rest}", target.scheme.as_str())))
    }

    pub fn target(&self) -> DrainTarget {
        parse_parts(&self.0).expect("validated at parse")
    }

    pub fn scheme(&self) -> DrainScheme {
        self.target().scheme
    }
}

fn parse_parts(s: &str) -> Result<DrainTarget, ValidationError> {
    let bad = |why: String| Err(ValidationError::new("drain url", format!("{why}; {HINT}")));
    if s.len() > DrainUrl::MAX_LEN {
        return bad(format!(
            "drain URL of {} bytes is too long (at most {})",
            s.len(),
            DrainUrl::MAX_LEN
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return bad(format!(
            "drain URL {} contains {c:?}; spaces, control and non-ASCII characters must be percent-encoded",
            shown(s)
        ));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return bad(format!("{} is not a URL", shown(s)));
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "syslog" => DrainScheme::Syslog,
        "syslog+tls" => DrainScheme::SyslogTls,
        "https" => DrainScheme::Https,
        "http" => return bad("plain http drains would send logs unencrypted: use https".into()),
        other => return bad(format!("unsupported drain scheme {}", shown(other))),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_port = match authority.rsplit_once('@') {
        Some(_) if scheme != DrainScheme::Https => {
            return bad("syslog drains take no user or password".into())
        }
        Some((_user, hp)) => hp,
        None => authority,
    };
    if scheme != DrainScheme::Https && !tail.is_empty() && tail != "/" {
        return bad(format!(
            "syslog drain {} has a path or query; a syslog drain is only host:port",
            shown(s)
        ));
    }
    let (host, port) = match split_host_port(host_port) {
        Ok(hp) => hp,
        Err(why) => return bad(why),
    };
    let port = match (port, scheme) {
        (Some(p), _) => p,
        (None, DrainScheme::Https) => 443,
        (None, _) => return bad(format!("syslog drain {} needs a port", shown(s))),
    };
    Ok(DrainTarget { scheme, host, port })
}

fn split_host_port(hp: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(inner) = hp.strip_prefix('[') {
        let (v6, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{} has an unclosed '['", shown(hp)))?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("{} is not an IPv6 address", shown(v6)))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {} after ']'", shown(p)))?,
            ),
        };
        (v6.to_string(), port)
    } else {
        match hp.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hp.to_string(), None),
        }
    };
    if !host.contains(':') {
        check_host(&host)?;
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((host, port))
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the drain URL has no host".into());
    }
    if host.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| format!("{} is not an IPv4 address", shown(host)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{} is not a valid host name", shown(host)));
    }
    Ok(())
}

fn parse_port(p: &str) -> Result<u16, String> {
    let bad = || format!("port {} must be a number from 1 to 65535", shown(p));
    if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(n) => Ok(n),
    }
}

impl FromStr for DrainTarget {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<DrainTarget, ValidationError> {
        parse_parts(s)
    }
}

impl fmt::Display for DrainScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
