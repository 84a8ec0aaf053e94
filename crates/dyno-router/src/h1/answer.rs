//! The router's own answers (an error page with its status): to a request refused before any
//! dyno was involved, or with an H-code, logged.

use std::io::Write as _;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::head::{self, Framing, RequestHead};
use super::Conn;
use crate::body::Ctx;
use crate::codes::{HerokuCode, RouterError};

/// The router's own answer for `err` (a complete response) into `out`.
pub(super) fn error_response(
    out: &mut Vec<u8>,
    err: &RouterError,
    pages: &crate::routes::ErrorPages,
    request_id: &str,
    head_only: bool,
    close: bool,
) {
    let status = err.status();
    let html = err.html_for(pages);
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-cache, no-store\r\n\
         Content-Length: {}\r\nDate: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Client Closed Request"),
        html.len(),
        httpdate::fmt_http_date(SystemTime::now()),
    );
    if !request_id.is_empty() {
        head::push_header(out, b"X-Request-Id", request_id.as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(html.as_bytes());
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Write the router's own answer (no dyno involved, nothing logged). Returns whether the
    /// connection may carry another request.
    pub(super) async fn refuse(
        &mut self,
        err: &RouterError,
        rid: &str,
        head: &RequestHead,
    ) -> bool {
        // An unread body would be taken for the next request: close instead.
        let keep = head.keep_alive && head.body == Framing::Empty;
        error_response(
            &mut self.resp_out,
            err,
            &Default::default(),
            rid,
            head.is_head,
            !keep,
        );
        self.io.write_all(&self.resp_out).await.is_ok() && self.io.flush().await.is_ok() && keep
    }

    /// Answer with an H-code page and log it.
    pub(super) async fn fail(
        &mut self,
        ctx: &mut Ctx,
        err: RouterError,
        head: &RequestHead,
        body_done: bool,
    ) -> bool {
        ctx.set_error(&err);
        if matches!(err.code(), Some(HerokuCode::H27 | HerokuCode::H28)) {
            // 499 is for the log: the client left or went silent, there is nobody to answer.
            ctx.emit();
            return false;
        }
        let keep = head.keep_alive && body_done;
        error_response(
            &mut self.resp_out,
            &err,
            &ctx.pages,
            &ctx.line.request_id,
            head.is_head,
            !keep,
        );
        ctx.emit();
        self.io.write_all(&self.resp_out).await.is_ok() && self.io.flush().await.is_ok() && keep
    }
}
