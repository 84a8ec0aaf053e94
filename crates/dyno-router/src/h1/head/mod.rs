//! HTTP/1.x message heads: parsing (httparse), Heroku's limits, body framing (RFC 9112 §6),
//! and rewriting each head for the other side in one pass over its headers.
//!
//! Headers are copied byte for byte (names keep their case) except the hop-by-hop ones, those
//! the router sets itself, and any named in `Connection`. Framing headers are written from the
//! framing the router decided, never copied, so the two sides cannot disagree about where a
//! body ends.
//!
//! Request heads are in `request.rs`, response heads in `response.rs`; this file holds what
//! both share: the body framing and the header helpers.

mod request;
mod response;

pub(crate) use request::{parse_request, valid_request_id, HeadError, Limits, RequestHead};
pub(crate) use response::{parse_response, BadResponse, ClientSide, Relay, ResponseHead};

/// Headers parsed without touching the heap; more fall back to a heap buffer.
const INLINE_HEADERS: usize = 64;

fn is(name: &str, lit: &str) -> bool {
    name.len() == lit.len() && name.eq_ignore_ascii_case(lit)
}

fn listed(name: &str, list: &[&str]) -> bool {
    list.iter().any(|l| is(name, l))
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
