//! Request heads: parsing with Heroku's limits, the body's framing, and the head rewritten for
//! the dyno.

use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};

use super::{is, listed, parse_length, push_header, tokens, Framing, INLINE_HEADERS};
use crate::HOP_BY_HOP;

/// Request headers the router replaces with its own.
const ROUTER_SET: [&str; 7] = [
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-request-start",
    "x-request-id",
];

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// `400 Bad Request`, with the reason shown to the client.
    Bad(&'static str),
    /// The whole head is larger than the router buffers: `431`.
    TooLarge,
}

/// The router's limits on request heads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_line: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_name: usize,
    /// Largest whole head buffered.
    pub(crate) max_head: usize,
}

/// What the router needs to know about a request once its head was parsed and rewritten.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Bytes of the head in the client's buffer.
    pub(crate) len: usize,
    pub(crate) method: String,
    /// The request target as sent (origin-form or `*`).
    pub(crate) target: String,
    pub(crate) http10: bool,
    pub(crate) is_head: bool,
    pub(crate) host: Option<String>,
    pub(crate) body: Framing,
    /// The client lets the connection live after this exchange.
    pub(crate) keep_alive: bool,
    /// `Upgrade` value of a request asking to switch protocols (`Connection: upgrade`).
    pub(crate) upgrade: Option<Vec<u8>>,
    /// `Expect: 100-continue`.
    pub(crate) expect_continue: bool,
    /// Any other `Expect` (→ 417).
    pub(crate) expect_other: bool,
    /// The client's `X-Forwarded-For` chain, joined with ", ".
    pub(crate) forwarded_for: Option<String>,
    /// The client's `X-Request-Id` when it is one Heroku keeps.
    pub(crate) request_id: Option<String>,
}

/// Heroku keeps a client's request id of 20–200 characters of `[A-Za-z0-9+/=-]`.
pub(crate) fn valid_request_id(v: &[u8]) -> bool {
    (20..=200).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-'))
}

/// Parse a request head at the start of `buf`; `Ok(None)` when more bytes are needed. On
/// success `out` holds the request line and the headers to forward (no final CRLF yet).
pub(crate) fn parse_request(
    buf: &[u8],
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut inline = [const { MaybeUninit::<Header>::uninit() }; INLINE_HEADERS];
    match parse_request_with(buf, limits, out, &mut inline) {
        Err(HeadError::Bad(TOO_MANY)) if limits.max_headers >= INLINE_HEADERS => {
            let mut heap = Vec::with_capacity(limits.max_headers + 1);
            heap.resize_with(limits.max_headers + 1, MaybeUninit::uninit);
            parse_request_with(buf, limits, out, &mut heap)
        }
        other => other,
    }
}

const TOO_MANY: &str = "Too many headers.";

fn parse_request_with<'b>(
    buf: &'b [u8],
    limits: &Limits,
    out: &mut Vec<u8>,
    slots: &mut [MaybeUninit<Header<'b>>],
) -> Result<Option<RequestHead>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, slots)
    {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => {
            return if buf.len() > limits.max_head {
                Err(HeadError::TooLarge)
            } else if !buf[..buf.len().min(limits.max_line + 2)].contains(&b'\n')
                && buf.len() > limits.max_line
            {
                Err(HeadError::Bad("Request line too long."))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::Bad(TOO_MANY)),
        Err(_) => return Err(HeadError::Bad("Malformed request.")),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Bad("Malformed request."));
    };
    if len > limits.max_head {
        return Err(HeadError::TooLarge);
    }
    if method.len() + target.len() + 10 > limits.max_line {
        return Err(HeadError::Bad("Request line too long."));
    }
    if req.headers.len() > limits.max_headers {
        return Err(HeadError::Bad(TOO_MANY));
    }
    if !(target.starts_with('/') || (target == "*" && method == "OPTIONS")) {
        // Absolute-form (proxy requests) and authority-form (CONNECT) are not for a router.
        return Err(HeadError::Bad("Absolute-form request target not allowed."));
    }
    let http10 = minor == 0;
    let mut head = RequestHead {
        len,
        method: method.to_owned(),
        target: target.to_owned(),
        http10,
        is_head: method == "HEAD",
        host: None,
        body: Framing::Empty,
        keep_alive: !http10,
        upgrade: None,
        expect_continue: false,
        expect_other: false,
        forwarded_for: None,
        request_id: None,
    };
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut upgrade_token = false;
    let mut upgrade_value: Option<&[u8]> = None;
    let mut connection_listed: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        let (name, value) = (h.name, h.value);
        if name.len() > limits.max_name {
            return Err(HeadError::Bad("Header name too long."));
        }
        if name.len() + 2 + value.len() > limits.max_line {
            return Err(HeadError::Bad("Header line too long."));
        }
        match name.len() {
            4 if is(name, "host") => {
                if head.host.is_some() {
                    return Err(HeadError::Bad("Multiple Host headers."));
                }
                let v = std::str::from_utf8(value)
                    .map_err(|_| HeadError::Bad("Missing or invalid Host header."))?;
                head.host = Some(v.to_owned());
            }
            14 if is(name, "content-length") => {
                let n = parse_length(value).ok_or(HeadError::Bad("Invalid Content-Length."))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Bad("Conflicting Content-Length headers."));
                }
                length = Some(n);
            }
            17 if is(name, "transfer-encoding") => {
                for t in tokens(value) {
                    if chunked_last {
                        // Anything after `chunked` (or `chunked` twice) leaves no way to
                        // find the body's end.
                        return Err(HeadError::Bad("Invalid Transfer-Encoding."));
                    }
                    chunked_last = t.eq_ignore_ascii_case(b"chunked");
                }
                transfer_encoding = true;
            }
            10 if is(name, "connection") => {
                for t in tokens(value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        head.keep_alive = false;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        head.keep_alive = head.keep_alive || http10;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        upgrade_token = true;
                    } else {
                        connection_listed.push(t);
                    }
                }
            }
            7 if is(name, "upgrade") => upgrade_value = Some(value),
            6 if is(name, "expect") => {
                if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    head.expect_continue = true;
                } else {
                    head.expect_other = true;
                }
            }
            15 if is(name, "x-forwarded-for") => {
                let v = std::str::from_utf8(value.trim_ascii()).unwrap_or("");
                if !v.is_empty() {
                    match head.forwarded_for.as_mut() {
                        Some(chain) => {
                            chain.push_str(", ");
                            chain.push_str(v);
                        }
                        None => head.forwarded_for = Some(v.to_owned()),
                    }
                }
            }
            12 if is(name, "x-request-id")
                && head.request_id.is_none()
                && valid_request_id(value) =>
            {
                // Checked ASCII above.
                head.request_id = std::str::from_utf8(value).ok().map(str::to_owned);
            }
            _ => {}
        }
    }
    head.body = match (transfer_encoding, length) {
        (true, Some(_)) => {
            return Err(HeadError::Bad("Both Content-Length and Transfer-Encoding."))
        }
        (true, None) if chunked_last && !http10 => Framing::Chunked,
        (true, None) => return Err(HeadError::Bad("Invalid Transfer-Encoding.")),
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    if upgrade_token && !http10 {
        head.upgrade = upgrade_value.map(<[u8]>::to_vec);
    }

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if listed(h.name, &HOP_BY_HOP)
            || listed(h.name, &ROUTER_SET)
            || connection_listed
                .iter()
                .any(|t| t.eq_ignore_ascii_case(h.name.as_bytes()))
        {
            continue;
        }
        push_header(out, h.name.as_bytes(), h.value);
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_line: 8192,
        max_headers: 1000,
        max_name: 1000,
        max_head: 256 * 1024,
    };

    fn req(raw: &str) -> (Result<Option<RequestHead>, HeadError>, String) {
        let mut out = Vec::new();
        let r = parse_request(raw.as_bytes(), &LIMITS, &mut out);
        (r, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn request_rewrite_drops_hop_by_hop_and_router_headers() {
        let (r, out) = req("POST /a?b=1 HTTP/1.1\r\nHost: x.localhost\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: s\r\nContent-Length: 3\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n\
             X-Request-Id: short\r\nAccept: */*\r\nKeep-Alive: 5\r\n\r\nabc");
        let h = r.expect("valid").expect("complete");
        assert_eq!(h.body, Framing::Length(3));
        assert_eq!(h.host.as_deref(), Some("x.localhost"));
        assert_eq!(h.forwarded_for.as_deref(), Some("1.2.3.4, 5.6.7.8"));
        assert_eq!(h.request_id, None);
        assert!(h.keep_alive && !h.http10);
        assert_eq!(
            out,
            "POST /a?b=1 HTTP/1.1\r\nHost: x.localhost\r\nAccept: */*\r\n"
        );
    }

    #[test]
    fn request_framing_rules() {
        let bad = |raw: &str| match req(raw).0 {
            Err(HeadError::Bad(why)) => why,
            other => panic!("{raw:?}: {other:?}"),
        };
        assert_eq!(
            bad("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "Both Content-Length and Transfer-Encoding."
        );
        bad("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        bad("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
        bad("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        bad("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n");
        bad("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
        bad("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        bad("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n");
        let (r, _) = req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(r.expect("ok").expect("complete").body, Framing::Chunked);
        let (r, _) = req("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        let h = r.expect("ok").expect("complete");
        assert!(h.http10 && h.keep_alive && h.body == Framing::Empty);
        assert!(matches!(req("GET / HTTP/1.1\r\nHost: a\r\n").0, Ok(None)));
    }

    #[test]
    fn request_limits() {
        let many: String = (0..1001).map(|i| format!("X-H{i}: 1\r\n")).collect();
        let (r, _) = req(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n"));
        assert_eq!(r.unwrap_err(), HeadError::Bad(TOO_MANY));
        let ok: String = (0..999).map(|i| format!("X-H{i}: 1\r\n")).collect();
        let (r, out) = req(&format!("GET / HTTP/1.1\r\nHost: a\r\n{ok}\r\n"));
        assert!(r.expect("999 + Host is fine").is_some());
        assert!(out.ends_with("X-H998: 1\r\n"));
        let long = "a".repeat(8200);
        let (r, _) = req(&format!("GET /{long} HTTP/1.1\r\n"));
        assert_eq!(r.unwrap_err(), HeadError::Bad("Request line too long."));
        let (r, _) = req(&format!("GET / HTTP/1.1\r\nX: {long}\r\n\r\n"));
        assert_eq!(r.unwrap_err(), HeadError::Bad("Header line too long."));
        let name = "n".repeat(1001);
        let (r, _) = req(&format!("GET / HTTP/1.1\r\n{name}: 1\r\n\r\n"));
        assert_eq!(r.unwrap_err(), HeadError::Bad("Header name too long."));
    }
}
