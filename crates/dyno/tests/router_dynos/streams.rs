//! What streams through the router: WebSockets, 100 MB each way with bounded memory, HTTP/2.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rig::*;
use crate::support::*;

// ---- WebSocket --------------------------------------------------------------------------------

#[test]
fn websocket_echo_through_a_dyno() {
    let rig = Rig::start("websocket", &[]);
    let mut stream = open_websocket(&rig);
    let long = "x".repeat(300);
    for (opcode, message) in [
        (0x1, "hello through a dyno".as_bytes()),
        (0x1, long.as_bytes()),
        (0x2, &[0u8, 1, 2, 255][..]),
    ] {
        stream.write_all(&ws_frame(opcode, message)).unwrap();
        let (got_opcode, payload) = read_ws_frame(&mut stream);
        assert_eq!(got_opcode, opcode);
        assert_eq!(payload, message);
    }
    // Close, echoed back as the close handshake; then the dyno hangs up, and so does the router.
    stream
        .write_all(&ws_frame(0x8, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(
        read_ws_frame(&mut stream),
        (0x8, 1000u16.to_be_bytes().to_vec())
    );
    assert!(read_until_closed(&mut stream, Duration::from_secs(5)).is_empty());
    drop(stream);
    let line = rig.wait_line_for_path("/ws");
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=info method=GET path=\"/ws\" host={} request_id=* fwd=\"127.0.0.1\" dyno=web.1 \
             connect=* service=* status=101 bytes=0 protocol=http",
            rig.host
        )
    );
    rig.finish();
}

#[test]
fn ctrl_c_stops_dyno_up_while_a_client_holds_a_websocket_open() {
    let mut rig = Rig::start("ws-stop", &[]);
    let mut stream = open_websocket(&rig);
    stream.write_all(&ws_frame(0x1, b"still here")).unwrap();
    assert_eq!(read_ws_frame(&mut stream), (0x1, b"still here".to_vec()));
    // The client stays; Ctrl-C stops the dyno (SIGTERM, 2 s grace), which ends the WebSocket.
    let mut reader = stream.try_clone().unwrap();
    let client_sees_the_end = std::thread::spawn(move || {
        let rest = read_until_closed(&mut reader, Duration::from_secs(20));
        (Instant::now(), rest)
    });
    let t0 = Instant::now();
    let stopped = rig.up.interrupt_within(Duration::from_secs(8));
    let stop_took = t0.elapsed();
    // The client goes (so that `dyno up` can finish even if it hung on the WebSocket).
    let _ = stream.shutdown(std::net::Shutdown::Both);
    drop(stream);
    let (ended, rest) = client_sees_the_end.join().unwrap();
    let Some(status) = stopped else {
        let after = rig.up.interrupt_within(Duration::from_secs(30));
        panic!(
            "dyno up did not stop within 8 s of Ctrl-C while a client held a WebSocket open \
             (the client's side ended {:?} after Ctrl-C{}); once the client closed it: {}\n{}\n\
             --- stderr:\n{}",
            ended.duration_since(t0),
            if rest.is_empty() { "" } else { ", with data" },
            match after {
                Some(s) => format!("it stopped ({s})"),
                None => "it still did not stop".into(),
            },
            rig.up.logs(),
            rig.up.notes()
        );
    };
    assert!(status.success(), "{status:?}\n{}", rig.up.notes());
    assert!(
        ended.duration_since(t0) < Duration::from_secs(8),
        "the client's WebSocket stayed open {:?} after Ctrl-C",
        ended.duration_since(t0)
    );
    assert!(rest.is_empty(), "{rest:?}");
    eprintln!("dyno up stopped {stop_took:?} after Ctrl-C");
    rig.up
        .assert_nothing_left(dyno_manager::daemon::uids::app_uid(&rig.name));
}

/// A WebSocket to the app's `/ws`, through the router: handshake checked.
fn open_websocket(rig: &Rig) -> TcpStream {
    let mut stream = rig.up.connect_router();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // RFC 6455's own example key and answer.
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        rig.host
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the 101 head");
        head.push(byte[0]);
    }
    let reply = parse_reply(&head).unwrap();
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(
        reply
            .header("upgrade")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("websocket")
    );
    assert_eq!(
        reply.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    stream
}

/// A client frame: FIN, `opcode`, masked.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A server frame (unmasked): its opcode and payload.
fn read_ws_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut two = [0u8; 2];
    stream.read_exact(&mut two).expect("a frame from the dyno");
    assert_eq!(two[0] & 0x80, 0x80, "not a final frame");
    assert_eq!(two[1] & 0x80, 0, "the server must not mask");
    let len = match two[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).unwrap();
            u16::from_be_bytes(n) as usize
        }
        127 => panic!("unexpected 64-bit length"),
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    (two[0] & 0x0f, payload)
}

// ---- big bodies, bounded memory ---------------------------------------------------------------

const HUNDRED_MB: usize = 100 * MB;
/// The slow side of a big transfer waits this long per MiB: 100 MB take about half a second,
/// long enough for the memory samples, and a router that reads ahead of it shows.
const PACE: Duration = Duration::from_millis(4);
/// Growth of `dyno up`'s resident memory allowed while 100 MB stream through its router.
const RSS_BOUND_KIB: u64 = 32 * 1024;

/// The app's byte pattern (`offset % 251`), twice a whole number of periods long, so that any
/// chunk of up to half its length at any offset is one slice of it.
fn pattern() -> Vec<u8> {
    (0..2 * 251 * 4096).map(|i| (i % 251) as u8).collect()
}

/// Samples `dyno up`'s VmRSS every 50 ms while it runs; `finish` gives the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Also resets the kernel's peak-RSS mark of `pid` (`clear_refs` 5), so that `VmHWM` at the
    /// end is the peak during the transfer even between two samples.
    fn start(pid: u32) -> RssSampler {
        let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        assert!(hwm_reset, "cannot reset the peak RSS of {pid}");
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib_of(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// The peak: the highest sample, or the kernel's mark if higher.
    fn finish(mut self, pid: u32) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed).max(hwm_kib_of(pid))
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The peak resident memory of a process since its mark was last reset, in KiB.
fn hwm_kib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM for {pid}"))
}

/// Warms the router up with a small transfer, then gives `dyno up`'s pid and its RSS.
fn rss_baseline(rig: &Rig) -> (u32, u64) {
    let reply = rig.get(&format!("/download?bytes={}", 4 * MB));
    assert_eq!(reply.body.len(), 4 * MB);
    std::thread::sleep(Duration::from_millis(200));
    let pid = rig.up.child.as_ref().unwrap().id();
    (pid, rig.up.rss_kib())
}

#[test]
fn a_100_mb_download_streams_through_with_bounded_router_memory() {
    let rig = Rig::start("download", &[]);
    let (pid, baseline) = rss_baseline(&rig);
    let sampler = RssSampler::start(pid);
    let t0 = Instant::now();
    let mut stream = rig.up.connect_router();
    let path = format!("/download?bytes={HUNDRED_MB}");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        rig.host
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    // The head, byte by byte; then the body in reads of up to 1 MiB, checked against the
    // pattern.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the response head");
        head.push(byte[0]);
    }
    let reply = parse_reply(&head).unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-length"),
        Some(HUNDRED_MB.to_string().as_str())
    );
    let expected = pattern();
    let mut buf = vec![0u8; MB];
    let mut received = 0usize;
    let mut paced = 0usize;
    loop {
        let n = stream.read(&mut buf).expect("the body");
        if n == 0 {
            break;
        }
        // A slow reader (4 ms per MiB), so that a router reading ahead would pile data up.
        if received + n >= paced + MB {
            paced += MB;
            std::thread::sleep(PACE);
        }
        let start = received % 251;
        assert!(
            buf[..n] == expected[start..start + n],
            "wrong bytes at offset {received}"
        );
        received += n;
    }
    let took = t0.elapsed();
    let peak = sampler.finish(pid);
    assert_eq!(received, HUNDRED_MB);
    assert!(
        peak.saturating_sub(baseline) < RSS_BOUND_KIB,
        "dyno up grew from {baseline} KiB to {peak} KiB during the download"
    );
    let line = rig.wait_line_for_path(&path);
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=info method=GET path=\"{path}\" host={} request_id=* fwd=\"127.0.0.1\" \
             dyno=web.1 connect=* service=* status=200 bytes={HUNDRED_MB} protocol=http",
            rig.host
        )
    );
    eprintln!("100 MB download in {took:?}; dyno up RSS {baseline} KiB → peak {peak} KiB");
    rig.finish();
}

#[test]
fn a_100_mb_upload_streams_through_with_bounded_router_memory() {
    let rig = Rig::start("upload", &[]);
    let (pid, baseline) = rss_baseline(&rig);
    let sampler = RssSampler::start(pid);
    let t0 = Instant::now();
    let mut stream = rig.up.connect_router();
    write!(
        stream,
        "POST /upload?pace_ms={} HTTP/1.1\r\nHost: {}\r\nContent-Length: {HUNDRED_MB}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        PACE.as_millis(),
        rig.host
    )
    .unwrap();
    // Whole periods of the pattern per write, from one buffer.
    let data = pattern();
    let mut left = HUNDRED_MB;
    while left > 0 {
        let n = left.min(data.len());
        stream.write_all(&data[..n]).expect("the upload");
        left -= n;
    }
    let reply = parse_reply(&read_until_closed(&mut stream, Duration::from_secs(30)))
        .expect("a response to the upload");
    let took = t0.elapsed();
    let peak = sampler.finish(pid);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.text(),
        format!("received {HUNDRED_MB} bytes pattern ok\n")
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_BOUND_KIB,
        "dyno up grew from {baseline} KiB to {peak} KiB during the upload"
    );
    let path = format!("/upload?pace_ms={}", PACE.as_millis());
    let line = rig.wait_line_for_path(&path);
    assert_eq!(
        shape(&line, &MASKED),
        format!(
            "at=info method=POST path=\"{path}\" host={} request_id=* fwd=\"127.0.0.1\" \
             dyno=web.1 connect=* service=* status=200 bytes={} protocol=http",
            rig.host,
            reply.body.len()
        )
    );
    eprintln!("100 MB upload in {took:?}; dyno up RSS {baseline} KiB → peak {peak} KiB");
    rig.finish();
}

// ---- HTTP/2 -----------------------------------------------------------------------------------

#[test]
fn an_http2_client_is_served_by_an_http1_dyno() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let rig = Rig::start("h2c", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = runtime.block_on(async {
        let stream = rig.up.connect_router_async();
        // h2c with prior knowledge.
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("HTTP/2 handshake with the router");
        tokio::spawn(conn);
        let request = hyper::Request::builder()
            .uri(format!("http://{}/echo", rig.host))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("a response within 10 s")
            .expect("a response");
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    });
    assert_eq!(status, 200);
    let reply = Reply {
        status,
        headers: Vec::new(),
        body,
    };
    // The dyno speaks HTTP/1.1 and sees the usual Heroku headers.
    assert_plain_echo(&echoed(&reply), &rig.host);
    let line = rig.line_of_echo(&reply);
    assert_echo_access_line(&line, &rig.host, &reply);
    drop(runtime);
    rig.finish();
}
