//! A fuzz harness for the HTTP/1 parsers, run as a test: a million generated inputs (valid
//! heads and chunked bodies, mutated byte by byte, cut short, or random), each checked for the
//! parser's promises. A seeded generator makes every failure reproducible: the assertion names
//! the seed and the input.
//!
//! - `parse_request` and `parse_response` never panic; a complete head never claims more bytes
//!   than the buffer has, and re-parsing exactly those bytes gives the same head length (a head
//!   delimits itself: what follows it cannot change it).
//! - The chunked decoder gives the same verdict and the same data bytes (and, for a good body,
//!   the same body length) whether the input comes at once or cut into random pieces, as the
//!   network cuts it.

use super::chunked::{ChunkError, Chunked};
use super::head::{parse_request, parse_response, ClientSide, Limits};

/// How many inputs in all (requests, chunked bodies and responses).
const CASES: u64 = 1_000_000;

const LIMITS: Limits = Limits {
    max_line: 8192,
    max_headers: 100,
    max_name: 1000,
    max_head: 64 * 1024,
};

/// xorshift64*: small, fast and good enough to spread the cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

const REQUESTS: [&[u8]; 6] = [
    b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
    b"POST /x?y=1 HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT /u HTTP/1.1\r\nHost: b.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: c.localhost\r\nConnection: Upgrade, X-Secret\r\nUpgrade: websocket\r\nX-Secret: 1\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: d.localhost:8080\r\nX-Forwarded-For: 1.2.3.4\r\nX-Request-Id: abcdefghijklmnopqrstuvwxyz\r\nExpect: 100-continue\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: e.localhost\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
];

const RESPONSES: [&[u8]; 5] = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 301 Moved\r\nLocation: /x\r\nKeep-Alive: 5\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
];

const CHUNKED: [&[u8]; 5] = [
    b"0\r\n\r\n",
    b"3\r\nabc\r\n0\r\n\r\n",
    b"A;ext=1\r\n0123456789\r\n1\r\nx\r\n0\r\nTrailer: t\r\n\r\n",
    b"ffffffff\r\n",
    b"1\r\na\r\n2\r\nbc\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
];

/// Bytes that matter to HTTP/1 framing, so that mutations hit the parsers' decisions.
const SPECIAL: &[u8] = b"\r\n :;,\t\0\x7f\xff0123456789abcdefABCDEF-/?=Hh";

/// A valid input, changed at a few places: a byte replaced or inserted, a range removed or
/// duplicated, or cut short; sometimes random bytes only.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    if rng.below(20) == 0 {
        let len = rng.below(200);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut v = base.to_vec();
    for _ in 0..rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if at < v.len() => v[at] = SPECIAL[rng.below(SPECIAL.len())],
            1 => v.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
            2 if at < v.len() => {
                let end = (at + rng.below(8)).min(v.len());
                v.drain(at..end);
            }
            3 if at < v.len() => {
                let end = (at + rng.below(16)).min(v.len());
                let copy = v[at..end].to_vec();
                v.splice(at..at, copy);
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn check_request(seed: u64, input: &[u8]) {
    let mut out = Vec::new();
    if let Ok(Some(head)) = parse_request(input, &LIMITS, &mut out) {
        assert!(head.len <= input.len(), "seed {seed}: {input:?}");
        let mut again = Vec::new();
        let head2 = parse_request(&input[..head.len], &LIMITS, &mut again);
        assert!(
            matches!(&head2, Ok(Some(h)) if h.len == head.len) && again == out,
            "seed {seed}: the head of {input:?} parses differently on its own: {head2:?}"
        );
    }
}

fn check_response(seed: u64, input: &[u8]) {
    let client = ClientSide {
        http10: seed.is_multiple_of(2),
        keep_alive: !seed.is_multiple_of(3),
        is_head: seed.is_multiple_of(5),
        upgrade: seed.is_multiple_of(7),
    };
    let mut out = Vec::new();
    if let Ok(Some(head)) = parse_response(input, client, "1.1 vegur", &mut out) {
        assert!(head.len <= input.len(), "seed {seed}: {input:?}");
    }
}

/// (verdict, bytes of the body, data bytes) of a chunked decode fed `pieces` one after another.
fn decode(pieces: &[&[u8]]) -> (Result<(), ChunkError>, usize, Vec<u8>) {
    let mut c = Chunked::new();
    let (mut consumed, mut data) = (0, Vec::new());
    for piece in pieces {
        let mut at = 0;
        while at < piece.len() && !c.is_done() {
            match c.step(&piece[at..]) {
                Ok(step) => {
                    if let Some(range) = step.data {
                        data.extend_from_slice(&piece[at..][range]);
                    }
                    if step.consumed == 0 {
                        break;
                    }
                    at += step.consumed;
                    consumed += step.consumed;
                }
                Err(e) => return (Err(e), consumed, data),
            }
        }
    }
    (Ok(()), consumed, data)
}

fn check_chunked(rng: &mut Rng, seed: u64, input: &[u8]) {
    let whole = decode(&[input]);
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let end = (at + 1 + rng.below(7)).min(input.len());
        pieces.push(&input[at..end]);
        at = end;
    }
    let cut = decode(&pieces);
    // The same verdict and data; where the coding breaks, how much framing a step had taken
    // before it found out is not part of the answer.
    let comparable = |d: &(Result<(), ChunkError>, usize, Vec<u8>)| match d.0 {
        Ok(()) => (Ok(()), d.1, d.2.clone()),
        Err(e) => (Err(e), 0, d.2.clone()),
    };
    assert_eq!(
        comparable(&whole),
        comparable(&cut),
        "seed {seed}: {input:?} cut as {pieces:?}"
    );
    assert!(
        whole.1 <= input.len() && whole.2.len() <= whole.1,
        "seed {seed}"
    );
}

#[test]
fn a_million_generated_inputs_keep_the_parsers_promises() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..CASES {
        let seed = rng.next();
        let mut case_rng = Rng(seed | 1);
        match case % 5 {
            0 | 1 => {
                let base = case_rng.pick(&REQUESTS);
                check_request(seed, &mutate(&mut case_rng, base));
            }
            2 | 3 => {
                let base = case_rng.pick(&CHUNKED);
                let input = mutate(&mut case_rng, base);
                check_chunked(&mut case_rng, seed, &input);
            }
            _ => {
                let base = case_rng.pick(&RESPONSES);
                check_response(seed, &mutate(&mut case_rng, base));
            }
        }
    }
}
