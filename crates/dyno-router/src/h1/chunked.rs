//! The chunked transfer coding (RFC 9112 §7.1), scanned byte by byte so a body can be passed
//! through unchanged while the router still knows exactly where it ends, or decoded to its data.
//!
//! Strict on purpose: sizes are hex without overflow, every line ends in CRLF. A body that a lax
//! parser and a strict one would split differently is how requests get smuggled.

use std::ops::Range;

/// Where the scanner stands inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk size; `digits` so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// Skipping a chunk extension up to its CR.
    Extension {
        value: u64,
    },
    /// After the size line's CR.
    SizeLf {
        value: u64,
    },
    /// Inside chunk data, this much left.
    Data(u64),
    /// After chunk data: CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
    /// The whole body has been seen.
    Done,
}

/// A chunked body broke the coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct ChunkError;

/// One step of [`Chunked::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Input bytes that belong to the body (framing included).
    pub consumed: usize,
    /// Chunk data among them, as a range of the input.
    pub data: Option<Range<usize>>,
}

/// Scanner over one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub fn new() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    /// The final CRLF has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume framing from the start of `input` up to (and including) the next run of chunk
    /// data, or to the end of the body. Stops early at the end of the body: bytes after it are
    /// not consumed.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Done => break,
                State::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step {
                        consumed: i + take,
                        data: Some(i..i + take),
                    });
                }
                State::Size { value, digits } => match hex(b) {
                    Some(d) if digits < 16 => State::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(ChunkError),
                    None if digits == 0 => return Err(ChunkError),
                    None => match b {
                        b'\r' => State::SizeLf { value },
                        b';' | b' ' | b'\t' => State::Extension { value },
                        _ => return Err(ChunkError),
                    },
                },
                State::Extension { value } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(ChunkError),
                    _ => State::Extension { value },
                },
                State::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => State::Data(n),
                    _ => return Err(ChunkError),
                },
                State::DataCr => expect(b, b'\r', State::DataLf)?,
                State::DataLf => expect(
                    b,
                    b'\n',
                    State::Size {
                        value: 0,
                        digits: 0,
                    },
                )?,
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkError),
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError),
                    _ => State::TrailerLine,
                },
                State::TrailerLf => expect(b, b'\n', State::TrailerStart)?,
                State::EndLf => {
                    expect(b, b'\n', State::Done)?;
                    self.state = State::Done;
                    return Ok(Step {
                        consumed: i + 1,
                        data: None,
                    });
                }
            };
            i += 1;
        }
        Ok(Step {
            consumed: i,
            data: None,
        })
    }

    #[cfg(test)]
    /// How many bytes at the start of `input` belong to the body (all of it unless the body
    /// ends inside `input`).
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < input.len() && !self.is_done() {
            at += self.step(&input[at..])?.consumed;
        }
        Ok(at)
    }
}

fn expect(got: u8, want: u8, next: State) -> Result<State, ChunkError> {
    if got == want {
        Ok(next)
    } else {
        Err(ChunkError)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut c = Chunked::new();
        let mut data = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(split.max(1)) {
            let mut at = 0;
            while at < piece.len() && !c.is_done() {
                let step = c.step(&piece[at..])?;
                if let Some(r) = step.data {
                    data.extend_from_slice(&piece[at + r.start..at + r.end]);
                }
                at += step.consumed;
            }
            consumed += at;
            if c.is_done() {
                break;
            }
        }
        assert!(c.is_done(), "body not finished");
        Ok((data, consumed))
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: a\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        for split in 1..body.len() {
            let (data, consumed) = decode(body, split).expect("valid");
            assert_eq!(data, b"hello, world");
            assert_eq!(consumed, end, "split {split}");
        }
        let mut c = Chunked::new();
        assert_eq!(c.scan(body), Ok(end));
        assert!(c.is_done());
    }

    #[test]
    fn big_hex_sizes() {
        let mut c = Chunked::new();
        assert_eq!(c.scan(b"1F\r\n"), Ok(4));
        assert_eq!(c.step(&[b'x'; 40]).expect("data").data, Some(0..31));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"5;a\nb\r\n",
        ] {
            let mut c = Chunked::new();
            assert_eq!(
                c.scan(bad),
                Err(ChunkError),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
