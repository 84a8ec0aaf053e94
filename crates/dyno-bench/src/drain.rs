//! `dyno bench drain`: log lines from one dyno to a syslog drain, a tail, or `dyno up`'s stdout.
//! A real `dyno serve` (in a throwaway lab namespace) runs one worker that prints `--lines`
//! numbered lines (as fast as it can, or at `--rate` lines/s). With `--to syslog` the app has a
//! `syslog://` drain to a receiver this bench runs on the lab's loopback, which reads the
//! octet-counted RFC 5424 frames as fast as they come; with `--to tail` the bench reads a log
//! session with `tail` over the API, the stream `heroku logs --tail` and `dyno logs --tail`
//! read; with `--to up` the worker runs under `dyno up` (no daemon), whose stdout the bench reads
//! through a pipe. Reported: the lines received and lost (by their numbers), what the
//! `L10`/`L11` notices said was dropped, and the rate they arrived at. No anchor: the figure is the sink's own
//! throughput against what the worker printed.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use dyno_api::ApiClient;
use dyno_net::lab::Lab;

use super::scale::{scale_app, spawn_serve, Daemon};

#[derive(Args)]
#[command(
    after_help = "The last line is key=value pairs: to (the sink), lines (printed), received, \
    lost, notice_dropped (the sum of the L10 or, for a tail, L11 notices' counts), lines_per_s (received, from the first \
    line's arrival to the last's), print_s (how long the worker took to print them, by \
    the arrival of its first and last line) and queue_lines (the drain's queue)."
)]
pub struct DrainBench {
    /// Numbered lines the worker prints
    #[arg(long, default_value_t = 100_000)]
    lines: u64,
    /// Lines per second the worker prints at (0: as fast as it can)
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to wait for more lines once none came (the drain's backoff is up to 30 s)
    #[arg(long, default_value_t = 5)]
    quiet_s: u64,
    /// Where the lines go: a syslog drain, or a tail of the app's log over the API
    #[arg(long, value_enum, default_value_t = Sink::Syslog)]
    to: Sink,
}

/// The sink the bench measures.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sink {
    Syslog,
    Tail,
    /// `dyno up`'s stdout (its printer), read by the bench through a pipe.
    Up,
}

const APP: &str = "drainbench";
const PORT: u16 = 6514;
const MARK: &str = "drainbench n=";

/// What the receiver has seen so far.
#[derive(Default)]
struct Received {
    /// Numbers of the bench's lines seen (several connections may overlap after a reconnect).
    seen: Vec<bool>,
    received: u64,
    duplicates: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Notices: `L10` lines and their counts.
    l10_dropped: u64,
    l10_lines: Vec<String>,
    frames: u64,
    connections: u64,
}

pub fn run(args: DrainBench) -> Result<(), String> {
    let lab = Lab::new("bench-drain").map_err(|e| format!("lab: {e}"))?;
    let scratch = std::env::temp_dir().join(format!("dyno-bench-drain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let app_dir = scratch.join("app");
    std::fs::create_dir_all(&app_dir).map_err(|e| format!("{}: {e}", app_dir.display()))?;
    std::fs::write(app_dir.join("print.py"), printer(args.lines, args.rate))
        .map_err(|e| format!("app: {e}"))?;
    std::fs::write(
        app_dir.join("Procfile"),
        "worker: python3 print.py; exec sleep 86400\n",
    )
    .map_err(|e| format!("app: {e}"))?;

    // The receiver listens on the lab's loopback, where the daemon's drain connects.
    let listener = lab
        .host
        .netns()
        .run(|| TcpListener::bind(("127.0.0.1", PORT)))
        .map_err(|e| format!("receiver: {e}"))?
        .map_err(|e| format!("receiver: bind 127.0.0.1:{PORT}: {e}"))?;
    let received = Arc::new(Mutex::new(Received {
        seen: vec![false; args.lines as usize + 1],
        ..Received::default()
    }));
    {
        let received = received.clone();
        std::thread::spawn(move || accept(listener, received));
    }

    if args.to == Sink::Up {
        let result = up_stdout(&args, &lab, &scratch, &app_dir);
        drop(lab);
        let _ = std::fs::remove_dir_all(&scratch);
        println!("{}", result?);
        return Ok(());
    }
    let child = spawn_serve(&lab, &scratch, &[], Stdio::inherit())?;
    let daemon = Daemon { child, scratch };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let socket = daemon.scratch.join("api.sock");
    let result = runtime.block_on(measure(&args, &socket, &app_dir, &received));
    drop(daemon);
    drop(lab);
    let pairs = result?;
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
    Ok(())
}

/// The worker's program: `lines` numbered lines to stdout, as fast as it can or at `rate`.
fn printer(lines: u64, rate: u64) -> String {
    format!(
        r#"import sys, time
lines, rate = {lines}, {rate}
out = sys.stdout
start = time.monotonic()
step = 1000
for first in range(1, lines + 1, step):
    last = min(first + step, lines + 1)
    out.write("".join("{MARK}%d\n" % i for i in range(first, last)))
    if rate:
        out.flush()
        ahead = (last - 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
out.flush()
"#
    )
}

async fn measure(
    args: &DrainBench,
    socket: &std::path::Path,
    app_dir: &std::path::Path,
    received: &Arc<Mutex<Received>>,
) -> Result<Vec<(&'static str, String)>, String> {
    let api = ApiClient::unix(socket);
    super::scale::wait_for_api(&api).await?;
    api.create_app(APP).await.map_err(|e| e.to_string())?;
    let tail = match args.to {
        Sink::Syslog => {
            api.add_drain(APP, &format!("syslog://127.0.0.1:{PORT}"))
                .await
                .map_err(|e| e.to_string())?;
            None
        }
        Sink::Tail => Some(tokio::spawn(follow(api.clone(), received.clone()))),
        Sink::Up => return Err("dyno up is measured without a daemon".into()),
    };
    let dir = app_dir.to_string_lossy().into_owned();
    api.deploy(APP, &dir).await.map_err(|e| e.to_string())?;
    eprintln!(
        "bench drain: one worker prints {} lines{} to {}",
        args.lines,
        if args.rate == 0 {
            " as fast as it can".to_string()
        } else {
            format!(" at {} lines/s", args.rate)
        },
        match args.to {
            Sink::Syslog => "a syslog drain",
            Sink::Tail => "a tail of the app's log",
            Sink::Up => "dyno up's stdout",
        }
    );
    scale_app(&api, APP, "worker", 1).await?;

    // Until every line came, or none came for `quiet_s`.
    let quiet = Duration::from_secs(args.quiet_s);
    let start = Instant::now();
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (count, frames) = {
            let r = received.lock().unwrap_or_else(|e| e.into_inner());
            (r.received, r.frames)
        };
        if count >= args.lines {
            break;
        }
        if frames != last_count {
            last_count = frames;
            last_change = Instant::now();
        } else if count > 0 && last_change.elapsed() > quiet {
            break;
        } else if count == 0 && start.elapsed() > Duration::from_secs(120) {
            return Err("no line reached the drain within 120 s".into());
        }
    }
    scale_app(&api, APP, "worker", 0).await?;
    if let Some(tail) = tail {
        tail.abort();
    }
    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    let lost = args.lines - r.received;
    let (span, rate) = r.span_and_rate();
    for l10 in &r.l10_lines {
        eprintln!("bench drain: notice: {l10}");
    }
    eprintln!(
        "bench drain: {} of {} lines in {span:.3} s over {} connection(s); {} lost, L10/L11 said {}",
        r.received, args.lines, r.connections, lost, r.l10_dropped
    );
    Ok(vec![
        (
            "to",
            match args.to {
                Sink::Syslog => "syslog",
                Sink::Tail => "tail",
                Sink::Up => "up",
            }
            .to_string(),
        ),
        ("lines", args.lines.to_string()),
        ("rate", args.rate.to_string()),
        ("received", r.received.to_string()),
        ("lost", lost.to_string()),
        ("duplicates", r.duplicates.to_string()),
        ("notice_dropped", r.l10_dropped.to_string()),
        ("lines_per_s", format!("{rate:.0}")),
        ("print_s", format!("{span:.3}")),
        (
            "queue_lines",
            dyno_logs::drains::DrainOptions::default()
                .queue_lines
                .to_string(),
        ),
    ])
}

/// `dyno up APP` in the lab, its stdout read through a pipe until every line came or none came
/// for `--quiet-s`; then Ctrl-C (SIGINT) stops it. The result line.
fn up_stdout(
    args: &DrainBench,
    lab: &Lab,
    scratch: &std::path::Path,
    app_dir: &std::path::Path,
) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("find dyno: {e}"))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("up")
        .arg(app_dir)
        .arg("--run-dir")
        .arg(&lab.run_dir.0)
        .arg("--state-dir")
        .arg(scratch.join("state"))
        .arg("--no-lxcfs")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    dyno_net::ns::command_in(&mut command, lab.host.netns(), None).map_err(|e| e.to_string())?;
    let mut child = command.spawn().map_err(|e| format!("start dyno up: {e}"))?;
    let stdout = child.stdout.take().ok_or("dyno up has no stdout")?;
    let received = Arc::new(Mutex::new(Received {
        seen: vec![false; args.lines as usize + 1],
        connections: 1,
        ..Received::default()
    }));
    let reader = {
        let received = received.clone();
        std::thread::spawn(move || {
            let (mut numbers, mut notices, mut frames) = (Vec::new(), Vec::new(), 0u64);
            let mut lines = BufReader::with_capacity(1 << 20, stdout);
            let mut line = String::new();
            while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                count_line(&line, &mut numbers, &mut notices, &mut frames);
                line.clear();
                if numbers.len() >= 4096 || lines.buffer().is_empty() {
                    record(&received, &mut numbers, &mut notices, &mut frames);
                }
            }
            record(&received, &mut numbers, &mut notices, &mut frames);
        })
    };
    eprintln!(
        "bench drain: one worker prints {} lines to dyno up's stdout",
        args.lines
    );
    let start = Instant::now();
    let (mut last_count, mut last_change) = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let count = received.lock().unwrap_or_else(|e| e.into_inner()).received;
        if count >= args.lines {
            break;
        }
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
            continue;
        }
        // No more coming: quiet for `--quiet-s` after some came, or none in 120 s.
        let quiet = last_change.elapsed() > Duration::from_secs(args.quiet_s);
        if (count > 0 && quiet) || start.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
    let _ = child.wait();
    let _ = reader.join();
    let r = received.lock().unwrap_or_else(|e| e.into_inner());
    let (span, rate) = r.span_and_rate();
    Ok(format!(
        "to=up lines={} rate={} received={} lost={} duplicates={} notice_dropped={} \
         lines_per_s={rate:.0} print_s={span:.3}",
        args.lines,
        args.rate,
        r.received,
        args.lines - r.received,
        r.duplicates,
        r.l10_dropped
    ))
}

impl Received {
    /// Seconds from the first line's arrival to the last's, and lines received per second.
    fn span_and_rate(&self) -> (f64, f64) {
        let span = match (self.first, self.last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let rate = if span > 0.0 {
            self.received as f64 / span
        } else {
            0.0
        };
        (span, rate)
    }
}

/// Counts one log line: a bench line's number, or an L10/L11 notice's dropped count.
fn count_line(
    text: &str,
    numbers: &mut Vec<u64>,
    notices: &mut Vec<(String, u64)>,
    frames: &mut u64,
) {
    *frames += 1;
    if let Some(at) = text.find(MARK) {
        if let Ok(number) = text[at + MARK.len()..].trim().parse::<u64>() {
            numbers.push(number);
        }
    } else if let Some(count) = dropped_by(text, "Error L10")
        .or_else(|| dropped_by(text, "Error L11 (Tail buffer overflow)"))
    {
        notices.push((text.trim().to_string(), count));
    }
}

/// Reads a tail of the app's log (from now on) and counts its lines as the receiver does.
async fn follow(api: ApiClient, received: Arc<Mutex<Received>>) {
    let query = dyno_api::LogQuery {
        n: Some(1),
        ps: None,
        source: None,
        tail: true,
    };
    received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .connections += 1;
    let (mut numbers, mut notices, mut frames) = (Vec::new(), Vec::new(), 0u64);
    let tailed = api
        .tail_logs(APP, &query, |lines| {
            for text in lines {
                count_line(text, &mut numbers, &mut notices, &mut frames);
            }
            record(&received, &mut numbers, &mut notices, &mut frames);
        })
        .await;
    if let Err(e) = tailed {
        eprintln!("bench drain: the tail ended: {e}");
    }
}

/// The count of lines a Heroku notice (`Error L10 …`, `Error L11 …`) says were dropped: the
/// first number after its code.
fn dropped_by(text: &str, code: &str) -> Option<u64> {
    let rest = &text[text.find(code)? + code.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

fn accept(listener: TcpListener, received: Arc<Mutex<Received>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections += 1;
        let received = received.clone();
        std::thread::spawn(move || read_frames(stream, received));
    }
}

/// Reads `LEN SP MSG` frames until the connection ends, counting them into `received` a
/// chunk at a time (the lock is not taken per line).
fn read_frames(stream: TcpStream, received: Arc<Mutex<Received>>) {
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut len = Vec::with_capacity(8);
    let mut frame = Vec::with_capacity(256);
    let mut numbers: Vec<u64> = Vec::with_capacity(4096);
    // Every notice counts, also two with the same text (same count, same second).
    let mut notices: Vec<(String, u64)> = Vec::new();
    let mut frames = 0u64;
    loop {
        len.clear();
        match reader.read_until(b' ', &mut len) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(n) = std::str::from_utf8(&len[..len.len() - 1])
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        else {
            break;
        };
        frame.resize(n, 0);
        if reader.read_exact(&mut frame).is_err() {
            break;
        }
        frames += 1;
        let text = String::from_utf8_lossy(&frame);
        if let Some(at) = text.find(MARK) {
            if let Ok(number) = text[at + MARK.len()..].trim().parse::<u64>() {
                numbers.push(number);
            }
        } else if let Some(at) = text.find("Error L10 (output buffer overflow): ") {
            let rest = &text[at + "Error L10 (output buffer overflow): ".len()..];
            let count = rest
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0);
            notices.push((text[at..].trim().to_string(), count));
        }
        if numbers.len() >= 4096 || reader.buffer().is_empty() {
            record(&received, &mut numbers, &mut notices, &mut frames);
        }
    }
    record(&received, &mut numbers, &mut notices, &mut frames);
}

fn record(
    received: &Mutex<Received>,
    numbers: &mut Vec<u64>,
    notices: &mut Vec<(String, u64)>,
    frames: &mut u64,
) {
    let now = Instant::now();
    let mut r = received.lock().unwrap_or_else(|e| e.into_inner());
    r.frames += std::mem::take(frames);
    if !numbers.is_empty() {
        r.first.get_or_insert(now);
        r.last = Some(now);
    }
    for n in numbers.drain(..) {
        match r.seen.get_mut(n as usize) {
            Some(seen) if !*seen => {
                *seen = true;
                r.received += 1;
            }
            Some(_) => r.duplicates += 1,
            None => {}
        }
    }
    for (line, count) in std::mem::take(notices) {
        r.l10_dropped += count;
        r.l10_lines.push(line);
    }
}
