//! `dyno run`'s side of an attached one-off (see `dyno_api::server::attach`): our stdin to the
//! dyno (raw keys when it is a terminal, Heroku's `\x04` at its end otherwise), the dyno's output
//! to our stdout, and the one-off's exit status, from the stream's last line, as ours.

use std::io::{IsTerminal, Read, Write};

use dyno_api::{ApiClient, DynoCreate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The start of the stream's last line (see `dyno_api::exit_status_line`).
const EXIT_MARK: &[u8] = "\u{FFFF} heroku-command-exit-status: ".as_bytes();
/// Heroku's end of input, sent when stdin ends and is not a terminal.
const END_OF_INPUT: u8 = 0x04;

/// The body that starts an attached one-off: with our terminal's size when we have one.
pub(super) fn one_off(command: String, tty: bool) -> DynoCreate {
    let mut env = std::collections::BTreeMap::new();
    if tty {
        if let Some((cols, rows)) = terminal_size() {
            env.insert("COLUMNS".to_string(), cols.to_string());
            env.insert("LINES".to_string(), rows.to_string());
        }
        if let Ok(term) = std::env::var("TERM") {
            env.insert("TERM".to_string(), term);
        }
    }
    DynoCreate {
        command,
        attach: Some(true),
        env: Some(env),
        force_no_tty: Some(!tty),
        ..Default::default()
    }
}

/// Whether our side has a terminal to give the dyno.
pub(super) fn has_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

fn terminal_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (size.ws_col > 0).then_some((size.ws_col, size.ws_row))
}

/// Our terminal in raw mode until dropped: every key goes to the dyno as typed (Ctrl-C too),
/// and the dyno's terminal echoes.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let before = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = before.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode(before))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.0,
        );
    }
}

/// Attaches to the one-off behind `secret` until its output ends; its exit status.
pub(super) async fn attach(api: &ApiClient, secret: &str, tty: bool) -> Result<i32, String> {
    let io = api.attach(secret, true).await.map_err(|e| e.to_string())?;
    let (mut from_dyno, mut to_dyno) = tokio::io::split(io);
    let _raw = if tty { RawMode::enter() } else { None };
    // Its own thread: a blocking read of stdin must not hold up the runtime's end.
    let (keys, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    if !tty {
                        let _ = keys.blocking_send(vec![END_OF_INPUT]);
                    }
                    return;
                }
                Ok(n) => {
                    if keys.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let send = async move {
        while let Some(bytes) = typed.recv().await {
            if to_dyno.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // Not shut down: a client that hangs up ends the one-off.
        std::future::pending::<()>().await;
    };
    let receive = async {
        let mut stdout = std::io::stdout();
        let mut held: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from_dyno.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return exit_code(&held);
            }
            held.extend_from_slice(&buf[..n]);
            let keep = held_back(&held);
            let _ = stdout.write_all(&held[..held.len() - keep]);
            let _ = stdout.flush();
            held.drain(..held.len() - keep);
        }
    };
    let code = tokio::select! {
        code = receive => code,
        () = send => unreachable!("sending never ends on its own"),
    };
    code.ok_or_else(|| {
        "the connection to the one-off ended before its exit status: see `dyno logs`".to_string()
    })
}

/// How many bytes at the end of `held` may be (the start of) the exit-status line, and so wait
/// for the rest of the stream.
fn held_back(held: &[u8]) -> usize {
    if let Some(at) = find(held, EXIT_MARK) {
        return held.len() - at;
    }
    (1..EXIT_MARK.len())
        .rev()
        .find(|&k| held.ends_with(&EXIT_MARK[..k]))
        .unwrap_or(0)
}

/// The status in the exit-status line at the start of `tail`.
fn exit_code(tail: &[u8]) -> Option<i32> {
    let rest = tail.strip_prefix(EXIT_MARK)?;
    std::str::from_utf8(rest).ok()?.trim().parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_line_is_held_back_and_read() {
        let line = dyno_api::exit_status_line(7);
        let mut stream = b"out\n".to_vec();
        stream.extend_from_slice(line.as_bytes());
        assert_eq!(held_back(&stream), line.len());
        assert_eq!(exit_code(&stream[4..]), Some(7));
        // A partial mark at a chunk's end waits; plain output does not.
        assert_eq!(held_back(&stream[..4 + 5]), 5);
        assert_eq!(held_back(b"$ "), 0);
        assert_eq!(exit_code(b"broken"), None);
    }
}
