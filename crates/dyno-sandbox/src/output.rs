//! The dyno's output relay, run by the shim: the app writes its stdout and stderr into a pipe the
//! shim reads; the shim hands complete lines to whoever is connected to the dyno's log socket
//! (`log.sock` in its state dir: the daemon).
//!
//! Why not give the app the daemon's pipe, as a shell would: the daemon may die (kill -9, an
//! upgrade) while its dynos run on, and an app writing into a pipe nobody reads gets SIGPIPE or
//! blocks forever. The shim outlives the daemon and keeps reading; a restarted daemon connects
//! to the socket again and receives what was written meanwhile. What the shim holds is bounded
//! ([`OUTBOX_LIMIT`]): past it the oldest lines go and the next reader is told how many, the way
//! Heroku's L10 does. Lines still held when the dyno ends are left in `unsent.log` for the next
//! daemon.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Bytes of complete lines the shim keeps for a reader that is not there (or slow).
pub const OUTBOX_LIMIT: usize = 256 * 1024;
/// A line longer than this is cut and passed on in parts (Logplex cuts long lines too).
pub const LINE_LIMIT: usize = 16 * 1024;

/// The first byte of the shim's own lines on the log socket (notices such as a denied system
/// call); no line of the app starts with it (a leading one is replaced), so an app cannot speak
/// for the platform.
pub const NOTICE_MARK: char = '\u{1e}';

/// Lines on their way to the log socket.
#[derive(Debug)]
pub struct Outbox {
    lines: VecDeque<Vec<u8>>,
    /// Bytes held in `lines`.
    held: usize,
    /// Bytes of the front line already sent (a socket may take half a line).
    front_sent: usize,
    /// The end of the output that has no newline yet.
    partial: Vec<u8>,
    /// Lines dropped since the last notice.
    dropped: u64,
    limit: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::with_limit(OUTBOX_LIMIT)
    }
}

impl Outbox {
    pub fn with_limit(limit: usize) -> Outbox {
        Outbox {
            lines: VecDeque::new(),
            held: 0,
            front_sent: 0,
            partial: Vec::new(),
            dropped: 0,
            limit,
        }
    }

    /// Output as read from the pipe: complete lines are queued, the rest waits for its newline.
    pub fn push_bytes(&mut self, mut data: &[u8]) {
        while let Some(end) = data.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&data[..=end]);
            self.push_line(line);
            data = &data[end + 1..];
        }
        self.partial.extend_from_slice(data);
        while self.partial.len() >= LINE_LIMIT {
            let rest = self.partial.split_off(LINE_LIMIT);
            let mut line = std::mem::replace(&mut self.partial, rest);
            line.push(b'\n');
            self.push_line(line);
        }
    }

    /// The output ended: an unterminated last line still counts.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.push_line(line);
        }
    }

    /// A line of the shim's own (see [`NOTICE_MARK`]).
    pub fn push_notice(&mut self, text: &str) {
        let line = format!("{NOTICE_MARK}{}\n", text.replace('\n', " "));
        self.push_trusted(line.into_bytes());
    }

    fn push_line(&mut self, mut line: Vec<u8>) {
        if line.first() == Some(&(NOTICE_MARK as u8)) {
            line[0] = b'?';
        }
        self.push_trusted(line);
    }

    fn push_trusted(&mut self, line: Vec<u8>) {
        self.held += line.len();
        self.lines.push_back(line);
        while self.held > self.limit && self.lines.len() > 1 {
            // A half-sent front line stays: the reader has its beginning.
            let victim = if self.front_sent > 0 { 1 } else { 0 };
            if let Some(old) = self.lines.remove(victim) {
                self.held -= old.len();
                self.dropped += 1;
            }
        }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Whether `bytes` more fit without pushing out the oldest lines.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.held + bytes <= self.limit
    }

    /// A new reader connected: it starts at a line boundary, told first what was dropped.
    pub fn reader_connected(&mut self) {
        self.front_sent = 0;
        self.report_drops("while no one was reading the dyno's output");
    }

    /// Puts the count of lines dropped so far next in line (after a half-sent line), as
    /// Heroku's L10 line, so that no line goes without a word.
    pub fn report_drops(&mut self, why: &str) {
        if self.dropped == 0 {
            return;
        }
        let notice = format!(
            "{NOTICE_MARK}Error L10 (output buffer overflow): {} log lines dropped {why}\n",
            self.dropped
        );
        self.dropped = 0;
        self.held += notice.len();
        let at = usize::from(self.front_sent > 0).min(self.lines.len());
        self.lines.insert(at, notice.into_bytes());
    }

    /// Sends what the socket takes without blocking. `Ok(true)`: all sent; `Ok(false)`: the
    /// socket is full; an error: the reader is gone.
    pub fn send_to(&mut self, socket: BorrowedFd<'_>) -> io::Result<bool> {
        while let Some(line) = self.lines.front() {
            let rest = &line[self.front_sent..];
            // SAFETY: a valid fd and a buffer of `rest.len()` readable bytes. MSG_NOSIGNAL: a
            // reader that went away is an EPIPE error here, not a SIGPIPE that kills the shim.
            let n = unsafe {
                libc::send(
                    socket.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(false),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            let n = n as usize;
            if n < rest.len() {
                self.front_sent += n;
                continue;
            }
            self.held -= line.len();
            self.lines.pop_front();
            self.front_sent = 0;
        }
        Ok(true)
    }

    /// Everything still held, as bytes (for `unsent.log`).
    pub fn take_all(&mut self) -> Vec<u8> {
        self.finish();
        let mut out = Vec::with_capacity(self.held);
        if let Some(front) = self.lines.pop_front() {
            out.extend_from_slice(&front[self.front_sent..]);
        }
        for line in self.lines.drain(..) {
            out.extend_from_slice(&line);
        }
        self.held = 0;
        self.front_sent = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn lines(outbox: &mut Outbox) -> String {
        String::from_utf8(outbox.take_all()).unwrap()
    }

    #[test]
    fn lines_are_split_and_joined_across_reads() {
        let mut outbox = Outbox::default();
        outbox.push_bytes(b"one\ntw");
        outbox.push_bytes(b"o\nthr");
        assert_eq!(outbox.lines.len(), 2);
        outbox.finish();
        assert_eq!(lines(&mut outbox), "one\ntwo\nthr\n");
    }

    #[test]
    fn a_long_line_is_cut() {
        let mut outbox = Outbox::default();
        outbox.push_bytes(&vec![b'x'; LINE_LIMIT * 2 + 5]);
        assert_eq!(outbox.lines.len(), 2);
        assert_eq!(outbox.partial.len(), 5);
    }

    #[test]
    fn past_the_limit_the_oldest_lines_go_and_the_next_reader_is_told() {
        let mut outbox = Outbox::with_limit(20);
        for i in 0..10 {
            outbox.push_bytes(format!("line {i}\n").as_bytes());
        }
        assert!(outbox.held <= 20);
        outbox.reader_connected();
        let text = lines(&mut outbox);
        assert!(
            text.starts_with(&format!(
                "{NOTICE_MARK}Error L10 (output buffer overflow): 8 log lines dropped while no one"
            )),
            "{text}"
        );
        assert!(text.ends_with("line 8\nline 9\n"), "{text}");
    }

    #[test]
    fn drops_while_a_reader_is_there_are_reported_after_a_half_sent_line() {
        let mut outbox = Outbox::with_limit(20);
        outbox.push_bytes(b"first line\n");
        outbox.front_sent = 3;
        for i in 0..10 {
            outbox.push_bytes(format!("line {i}\n").as_bytes());
        }
        assert!(!outbox.has_room(10));
        outbox.report_drops("because the dyno's reader was too slow");
        outbox.report_drops("again");
        let text = lines(&mut outbox);
        let (first, rest) = text.split_once('\n').unwrap();
        assert_eq!(first, "st line");
        assert!(
            rest.starts_with(&format!(
                "{NOTICE_MARK}Error L10 (output buffer overflow): "
            )),
            "{rest}"
        );
        assert!(
            rest.contains("because the dyno's reader was too slow\n"),
            "{rest}"
        );
        assert!(!rest.contains("again"), "{rest}");
    }

    #[test]
    fn lines_reach_a_reader_and_a_full_socket_keeps_the_rest() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut outbox = Outbox::with_limit(64 << 20);
        let line = vec![b'y'; 1000];
        for _ in 0..2000 {
            outbox.push_bytes(&line);
            outbox.push_bytes(b"\n");
        }
        // 2 MB do not fit into a socket buffer: part stays, without blocking.
        assert!(!outbox.send_to(ours.as_fd()).unwrap());
        assert!(!outbox.is_empty());
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).unwrap();
            all
        });
        while !outbox.send_to(ours.as_fd()).unwrap() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(ours);
        let all = reader.join().unwrap();
        assert_eq!(all.len(), 2000 * 1001);
        assert!(all
            .split(|b| *b == b'\n')
            .all(|l| l.is_empty() || l.len() == 1000));
    }

    #[test]
    fn a_gone_reader_is_an_error_not_a_signal() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let mut outbox = Outbox::default();
        outbox.push_bytes(b"hello\n");
        assert!(outbox.send_to(ours.as_fd()).is_err());
        assert!(!outbox.is_empty());
    }
}
