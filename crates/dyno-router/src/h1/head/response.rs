//! A dyno's response heads: parsing (informational responses skipped), the framing of the body
//! on its way to the client, and the head rewritten for the client.

use std::io::Write as _;
use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};

use super::{is, listed, parse_length, push_header, tokens, Framing, INLINE_HEADERS};
use crate::HOP_BY_HOP;

/// Most headers in a dyno's response head (its size is limited separately).
const MAX_RESPONSE_HEADERS: usize = 4096;

/// The client side of an exchange, as the response rewrite needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSide {
    pub(crate) http10: bool,
    pub(crate) keep_alive: bool,
    pub(crate) is_head: bool,
    /// The request asked to switch protocols.
    pub(crate) upgrade: bool,
}

/// How the response body travels to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relay {
    /// Copied as is, delimited as the dyno delimited it.
    Pass(Framing),
    /// Chunked from the dyno, decoded and delimited by closing (HTTP/1.0 clients).
    Dechunk,
}

/// A dyno's response head, parsed and rewritten for the client.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// Bytes of the head in the upstream buffer.
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) relay: Relay,
    /// The client connection must close after this response.
    pub(crate) close_client: bool,
    /// The dyno lets the connection be reused.
    pub(crate) upstream_keep_alive: bool,
}

/// Why a dyno's response head is refused (`H25`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadResponse;

/// Parse a response head at the start of `buf`; `Ok(None)` when more bytes are needed. On
/// success `out` holds the complete head for the client (final CRLF included). Informational
/// responses other than `101` are skipped: `len` covers them and `status` is < 200 only for
/// `101`.
pub(crate) fn parse_response(
    buf: &[u8],
    client: ClientSide,
    via: &str,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut at = 0;
    loop {
        let mut inline = [const { MaybeUninit::<Header>::uninit() }; INLINE_HEADERS];
        let step = match parse_response_with(&buf[at..], client, via, out, &mut inline) {
            Err(TooMany) => {
                let mut heap = Vec::with_capacity(MAX_RESPONSE_HEADERS);
                heap.resize_with(MAX_RESPONSE_HEADERS, MaybeUninit::uninit);
                parse_response_with(&buf[at..], client, via, out, &mut heap)
                    .map_err(|_| BadResponse)?
            }
            Err(Malformed) => return Err(BadResponse),
            Ok(step) => step,
        };
        match step {
            None => return Ok(None),
            Some(head) if head.status < 200 && head.status != 101 => {
                // 100 Continue (we never forward Expect, but apps send it anyway), 103…
                at += head.len;
            }
            Some(mut head) => {
                head.len += at;
                return Ok(Some(head));
            }
        }
    }
}

enum ParseFail {
    TooMany,
    Malformed,
}
use ParseFail::{Malformed, TooMany};

fn parse_response_with<'b>(
    buf: &'b [u8],
    client: ClientSide,
    via: &str,
    out: &mut Vec<u8>,
    slots: &mut [MaybeUninit<Header<'b>>],
) -> Result<Option<ResponseHead>, ParseFail> {
    let mut resp = httparse::Response::new(&mut []);
    let len =
        match ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots) {
            Ok(Status::Complete(len)) => len,
            Ok(Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(TooMany),
            Err(_) => return Err(Malformed),
        };
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(Malformed);
    };
    let reason = resp.reason.unwrap_or("");
    if status < 200 && status != 101 {
        return Ok(Some(ResponseHead {
            len,
            status,
            relay: Relay::Pass(Framing::Empty),
            close_client: false,
            upstream_keep_alive: true,
        }));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut upstream_keep_alive = minor == 1;
    let mut upgrade_value: Option<&[u8]> = None;
    let mut connection_listed: Vec<&[u8]> = Vec::new();
    for h in resp.headers.iter() {
        match h.name.len() {
            14 if is(h.name, "content-length") => {
                let n = parse_length(h.value).ok_or(Malformed)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed);
                }
                length = Some(n);
            }
            17 if is(h.name, "transfer-encoding") => {
                transfer_encoding = true;
                chunked = tokens(h.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            }
            10 if is(h.name, "connection") => {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        upstream_keep_alive = false;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        upstream_keep_alive = upstream_keep_alive || minor == 0;
                    } else if !t.eq_ignore_ascii_case(b"upgrade") {
                        connection_listed.push(t);
                    }
                }
            }
            7 if is(h.name, "upgrade") => upgrade_value = Some(h.value),
            _ => {}
        }
    }
    let no_body = client.is_head || status == 204 || status == 304 || status == 101;
    let framing = if no_body {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if transfer_encoding {
        // A coding other than chunked last: the body runs until the dyno closes.
        Framing::UntilClose
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let relay = if framing == Framing::Chunked && client.http10 {
        Relay::Dechunk
    } else {
        Relay::Pass(framing)
    };
    let switching = status == 101 && client.upgrade;
    let close_client = !switching
        && (!client.keep_alive
            || matches!(framing, Framing::UntilClose)
            || relay == Relay::Dechunk);
    if matches!(framing, Framing::UntilClose) {
        upstream_keep_alive = false;
    }

    out.clear();
    let _ = write!(out, "HTTP/1.1 {status} ");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let keep_length = is(h.name, "content-length") && no_body;
        if (listed(h.name, &HOP_BY_HOP) || is(h.name, "content-length")) && !keep_length
            || connection_listed
                .iter()
                .any(|t| t.eq_ignore_ascii_case(h.name.as_bytes()))
        {
            continue;
        }
        push_header(out, h.name.as_bytes(), h.value);
    }
    // Heroku's router marks responses too.
    push_header(out, b"Via", via.as_bytes());
    match relay {
        Relay::Pass(Framing::Length(n)) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Relay::Pass(Framing::Chunked) => push_header(out, b"Transfer-Encoding", b"chunked"),
        _ => {}
    }
    if switching {
        push_header(out, b"Connection", b"upgrade");
        if let Some(v) = upgrade_value {
            push_header(out, b"Upgrade", v);
        }
    } else if close_client {
        push_header(out, b"Connection", b"close");
    } else if client.http10 {
        push_header(out, b"Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        relay,
        close_client,
        upstream_keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(raw: &str, client: ClientSide) -> (Result<Option<ResponseHead>, BadResponse>, String) {
        let mut out = Vec::new();
        let r = parse_response(raw.as_bytes(), client, "1.1 vegur", &mut out);
        (r, String::from_utf8_lossy(&out).into_owned())
    }

    const CLIENT11: ClientSide = ClientSide {
        http10: false,
        keep_alive: true,
        is_head: false,
        upgrade: false,
    };

    #[test]
    fn response_rewrite() {
        let (r, out) = resp(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nServer: x\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n0\r\n\r\n",
            CLIENT11,
        );
        let h = r.expect("ok").expect("complete");
        assert_eq!(h.relay, Relay::Pass(Framing::Chunked));
        assert!(!h.upstream_keep_alive && !h.close_client);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nServer: x\r\nVia: 1.1 vegur\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let http10 = ClientSide {
            http10: true,
            keep_alive: true,
            ..CLIENT11
        };
        let (r, out) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            http10,
        );
        let h = r.expect("ok").expect("complete");
        assert_eq!(h.relay, Relay::Dechunk);
        assert!(h.close_client && out.contains("Connection: close\r\n"));
        let (r, out) = resp("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", http10);
        let h = r.expect("ok").expect("complete");
        assert!(!h.close_client && !h.upstream_keep_alive);
        assert!(out.contains("Content-Length: 2\r\nConnection: keep-alive\r\n"));
        let head = ClientSide {
            is_head: true,
            ..CLIENT11
        };
        let (r, out) = resp("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n", head);
        assert_eq!(
            r.expect("ok").expect("complete").relay,
            Relay::Pass(Framing::Empty)
        );
        assert!(out.contains("Content-Length: 20\r\n"));
        let (r, _) = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            CLIENT11,
        );
        assert_eq!(r.unwrap_err(), BadResponse);
        let (r, _) = resp("HTTP/1.1 200 OK\r\n", CLIENT11);
        assert!(matches!(r, Ok(None)));
    }
}
