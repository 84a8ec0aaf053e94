//! Our small synchronous netlink client.
//!
//! One [`NetlinkSocket`] per (protocol, network namespace). Requests are collected in a [`Batch`]
//! and written with a single `sendmsg`; the replies are read once, in bulk, and matched to their
//! request by sequence number. Every tracked request carries an [`Object`] label, so a kernel error
//! comes back as `link dy1f3: File exists` instead of a bare errno.
//!
//! The client is generic over the message family (`T`): rtnetlink uses
//! `netlink_packet_route::RouteNetlinkMessage`, sock_diag its own crate, and nf_tables our own
//! raw message type.

pub mod route;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLM_F_ACK_TLVS`: the error message carries extended-ack attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLM_F_CAPPED`: the error message does not echo the request's payload.
const NLM_F_CAPPED: u16 = 0x100;
/// A kernel that does not answer within this time is broken or wedged; we report it rather than
/// hang the caller forever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Dumps interrupted by a concurrent change (`NLM_F_DUMP_INTR`) are retried this many times.
const DUMP_ATTEMPTS: usize = 10;
/// Large enough for one dump skb (the kernel fills up to 32 KiB) with room to spare.
const RECV_BUF_SIZE: usize = 64 * 1024;

/// What a request is about, for error messages: `link dy1f3`, `route 10.213.0.7/32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: &'static str,
    pub name: String,
}

impl Object {
    pub fn new(kind: &'static str, name: impl fmt::Display) -> Self {
        Object {
            kind,
            name: name.to_string(),
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str(self.kind)
        } else {
            write!(f, "{} {}", self.kind, self.name)
        }
    }
}

/// An error of the netlink layer.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused a request.
    #[error("{object}: {}{}", errno_text(*.errno), .detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Kernel {
        object: Object,
        /// Positive errno value (`libc::EEXIST`, ...).
        errno: i32,
        /// The kernel's extended-ack message, when it gave one.
        detail: Option<String>,
    },
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("netlink: the kernel did not answer {0} within {REPLY_TIMEOUT:?}")]
    Timeout(Object),
    #[error("netlink: malformed reply to {object}: {reason}")]
    Malformed { object: Object, reason: String },
    #[error("netlink: dump of {0} kept being interrupted by concurrent changes")]
    DumpInterrupted(Object),
}

impl NetlinkError {
    /// The errno the kernel answered with, if this is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// "The object was not there": the kind of error teardown treats as success.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }

    /// The object a kernel refusal or a timeout is about.
    pub fn object(&self) -> Option<&Object> {
        match self {
            NetlinkError::Kernel { object, .. }
            | NetlinkError::Timeout(object)
            | NetlinkError::Malformed { object, .. }
            | NetlinkError::DumpInterrupted(object) => Some(object),
            NetlinkError::Io(_) => None,
        }
    }

    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

/// `File exists`, without std's ` (os error 17)` suffix.
pub fn errno_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// Requests to be written in one `sendmsg`. A socket runs one dump at a time: a batch may hold
/// at most one `NLM_F_DUMP` request (a second one is refused with `EBUSY`).
pub struct Batch<T> {
    bytes: Vec<u8>,
    tracked: Vec<Tracked>,
    /// Sequence numbers of the untracked messages (nfnetlink's batch markers).
    untracked: Vec<u32>,
    _family: PhantomData<T>,
}

struct Tracked {
    seq: u32,
    object: Object,
}

impl<T: NetlinkSerializable> Batch<T> {
    fn new() -> Self {
        Batch {
            bytes: Vec::with_capacity(1024),
            tracked: Vec::new(),
            untracked: Vec::new(),
            _family: PhantomData,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tracked.len()
    }
}

/// The answer to one tracked request of a batch: the data messages it produced (a `GET`'s object,
/// a dump's entries; empty for a plain ACK) or the kernel's refusal.
pub struct Reply<T> {
    pub object: Object,
    pub result: Result<Vec<T>, NetlinkError>,
}

/// All answers of a batch, in request order.
pub struct Replies<T>(pub Vec<Reply<T>>);

impl<T> Replies<T> {
    /// The data of every request, or the first refusal.
    pub fn check(self) -> Result<Vec<Vec<T>>, NetlinkError> {
        self.0.into_iter().map(|r| r.result).collect()
    }

    /// Every refusal (used by teardown, which keeps going past errors).
    pub fn errors(self) -> Vec<NetlinkError> {
        self.0.into_iter().filter_map(|r| r.result.err()).collect()
    }
}

/// A netlink socket bound to the network namespace it was opened in, for one message family.
pub struct NetlinkSocket<T> {
    socket: Socket,
    next_seq: u32,
    recv_buf: Vec<u8>,
    _family: PhantomData<T>,
}

impl<T> NetlinkSocket<T>
where
    T: NetlinkSerializable + NetlinkDeserializable,
{
    /// Opens a socket of `protocol` (e.g. `netlink_sys::protocols::NETLINK_ROUTE`) in the calling
    /// thread's network namespace. It stays bound to that namespace for its whole life.
    pub fn open(protocol: isize) -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors without the echoed request, but with the kernel's explanation.
        socket.set_cap_ack(true)?;
        // Not every family supports extended ACKs; they only improve messages.
        let _ = socket.set_ext_ack(true);
        rustix::net::sockopt::set_socket_timeout(
            socket.as_fd(),
            rustix::net::sockopt::Timeout::Recv,
            Some(REPLY_TIMEOUT),
        )
        .map_err(io::Error::from)?;
        Ok(NetlinkSocket {
            socket,
            next_seq: 1,
            recv_buf: vec![0; RECV_BUF_SIZE],
            _family: PhantomData,
        })
    }

    pub fn batch(&self) -> Batch<T> {
        Batch::new()
    }

    /// Adds a request that the kernel will acknowledge (`NLM_F_ACK` is added). `flags` are the
    /// extra header flags (`NLM_F_CREATE | NLM_F_EXCL`, ...).
    pub fn push(&mut self, batch: &mut Batch<T>, message: T, flags: u16, object: Object) {
        let seq = self.append(batch, message, flags | NLM_F_ACK);
        batch.tracked.push(Tracked { seq, object });
    }

    /// Adds a message that gets no answer of its own (nfnetlink's batch begin/end markers).
    pub fn push_untracked(&mut self, batch: &mut Batch<T>, message: T, flags: u16) -> u32 {
        let seq = self.append(batch, message, flags);
        batch.untracked.push(seq);
        seq
    }

    /// A single acknowledged request sent as message type `message_type` rather than the
    /// payload's own (sock_diag's `SOCK_DESTROY` carries the same body as a query).
    pub fn request_as(
        &mut self,
        message: T,
        message_type: u16,
        object: Object,
    ) -> Result<Vec<T>, NetlinkError> {
        let mut batch = self.batch();
        let seq = self.append_as(&mut batch, message, NLM_F_ACK, Some(message_type));
        batch.tracked.push(Tracked { seq, object });
        let mut replies = self.execute(batch)?.0;
        replies.pop().expect("one request, one reply").result
    }

    fn append(&mut self, batch: &mut Batch<T>, message: T, flags: u16) -> u32 {
        self.append_as(batch, message, flags, None)
    }

    fn append_as(
        &mut self,
        batch: &mut Batch<T>,
        message: T,
        flags: u16,
        message_type: Option<u16>,
    ) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        if let Some(message_type) = message_type {
            packet.header.message_type = message_type;
        }
        let start = batch.bytes.len();
        batch.bytes.resize(start + packet.buffer_len(), 0);
        packet.serialize(&mut batch.bytes[start..]);
        seq
    }

    /// Writes the batch; the answers are read by [`NetlinkSocket::collect`]. Between the two, the
    /// caller may send on other sockets, so that several namespaces work in parallel.
    pub fn send(&mut self, batch: &Batch<T>) -> Result<(), NetlinkError> {
        if batch.bytes.is_empty() {
            return Ok(());
        }
        let sent = self.socket.send(&batch.bytes, 0)?;
        if sent != batch.bytes.len() {
            return Err(NetlinkError::Io(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("netlink: sent {sent} of {} bytes", batch.bytes.len()),
            )));
        }
        Ok(())
    }

    /// Reads until every tracked request of `batch` is answered.
    pub fn collect(&mut self, batch: Batch<T>) -> Result<Replies<T>, NetlinkError> {
        let mut replies: Vec<Reply<T>> = batch
            .tracked
            .iter()
            .map(|t| Reply {
                object: t.object.clone(),
                result: Ok(Vec::new()),
            })
            .collect();
        let mut done = vec![false; replies.len()];
        let mut open = replies.len();
        let first_seq = batch.tracked.first().map(|t| t.seq).unwrap_or(0);
        let index_of = |seq: u32| -> Option<usize> {
            let i = seq.wrapping_sub(first_seq) as usize;
            // Sequence numbers of one batch are consecutive, except around untracked messages.
            if i < batch.tracked.len() && batch.tracked[i].seq == seq {
                return Some(i);
            }
            batch.tracked.iter().position(|t| t.seq == seq)
        };
        while open > 0 {
            let len = match self.socket.recv(&mut &mut self.recv_buf[..], 0) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let waiting = replies
                        .iter()
                        .zip(&done)
                        .find(|(_, d)| !**d)
                        .map(|(r, _)| r.object.clone())
                        .unwrap_or_else(|| Object::new("batch", ""));
                    return Err(NetlinkError::Timeout(waiting));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let mut offset = 0;
            while offset + NLMSG_HDRLEN <= len {
                let raw = &self.recv_buf[offset..len];
                let msg_len = u32::from_ne_bytes(raw[0..4].try_into().unwrap()) as usize;
                if msg_len < NLMSG_HDRLEN || msg_len > raw.len() {
                    return Err(NetlinkError::Malformed {
                        object: Object::new("batch", ""),
                        reason: format!("message length {msg_len} in a {}-byte read", raw.len()),
                    });
                }
                let raw = &raw[..msg_len];
                offset += (msg_len + 3) & !3;
                let header = parse_header(raw);
                let Some(i) = index_of(header.sequence_number) else {
                    // nfnetlink refuses a whole batch at its BEGIN marker (EPERM without
                    // CAP_NET_ADMIN, ...): that refusal answers every request still waiting.
                    let seq = header.sequence_number;
                    if header.message_type == NLMSG_ERROR && batch.untracked.contains(&seq) {
                        if let Some((errno, detail)) = parse_error(raw, &header) {
                            for (reply, answered) in replies.iter_mut().zip(done.iter_mut()) {
                                if !*answered {
                                    reply.result = Err(NetlinkError::Kernel {
                                        object: reply.object.clone(),
                                        errno,
                                        detail: detail.clone(),
                                    });
                                    *answered = true;
                                }
                            }
                            open = 0;
                        }
                    }
                    // Otherwise not ours (a stale answer of an earlier, timed-out batch).
                    continue;
                };
                if done[i] {
                    continue;
                }
                match header.message_type {
                    NLMSG_NOOP => {}
                    NLMSG_DONE => {
                        // A dump that failed half-way says so in its DONE message's code.
                        if let Some((errno, detail)) = parse_error(raw, &header) {
                            replies[i].result = Err(NetlinkError::Kernel {
                                object: replies[i].object.clone(),
                                errno,
                                detail,
                            });
                        }
                        done[i] = true;
                        open -= 1;
                    }
                    NLMSG_ERROR => {
                        let errno = parse_error(raw, &header);
                        if let Some((errno, detail)) = errno {
                            replies[i].result = Err(NetlinkError::Kernel {
                                object: replies[i].object.clone(),
                                errno,
                                detail,
                            });
                        }
                        done[i] = true;
                        open -= 1;
                    }
                    _ => {
                        if header.flags & NLM_F_DUMP_INTR != 0 {
                            replies[i].result =
                                Err(NetlinkError::DumpInterrupted(replies[i].object.clone()));
                        }
                        let message =
                            T::deserialize(&header, &raw[NLMSG_HDRLEN..]).map_err(|e| {
                                NetlinkError::Malformed {
                                    object: replies[i].object.clone(),
                                    reason: e.to_string(),
                                }
                            })?;
                        if let Ok(data) = &mut replies[i].result {
                            data.push(message);
                        }
                    }
                }
            }
        }
        Ok(Replies(replies))
    }

    /// `send` + `collect`.
    pub fn execute(&mut self, batch: Batch<T>) -> Result<Replies<T>, NetlinkError> {
        self.send(&batch)?;
        self.collect(batch)
    }

    /// A single acknowledged request.
    pub fn request(
        &mut self,
        message: T,
        flags: u16,
        object: Object,
    ) -> Result<Vec<T>, NetlinkError> {
        let mut batch = self.batch();
        self.push(&mut batch, message, flags, object);
        let mut replies = self.execute(batch)?.0;
        replies.pop().expect("one request, one reply").result
    }

    /// A dump (`NLM_F_DUMP`), retried while the kernel reports it was interrupted by a change.
    pub fn dump(&mut self, make: impl Fn() -> T, object: Object) -> Result<Vec<T>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            match self.request(make(), NLM_F_DUMP, object.clone()) {
                Err(NetlinkError::DumpInterrupted(_)) => continue,
                other => return other,
            }
        }
        Err(NetlinkError::DumpInterrupted(object))
    }
}

fn parse_header(raw: &[u8]) -> NetlinkHeader {
    let mut header = NetlinkHeader::default();
    header.length = u32::from_ne_bytes(raw[0..4].try_into().unwrap());
    header.message_type = u16::from_ne_bytes(raw[4..6].try_into().unwrap());
    header.flags = u16::from_ne_bytes(raw[6..8].try_into().unwrap());
    header.sequence_number = u32::from_ne_bytes(raw[8..12].try_into().unwrap());
    header.port_number = u32::from_ne_bytes(raw[12..16].try_into().unwrap());
    header
}

/// `None` for an ACK, `Some((errno, extack message))` for a refusal.
fn parse_error(raw: &[u8], header: &NetlinkHeader) -> Option<(i32, Option<String>)> {
    let body = &raw[NLMSG_HDRLEN..];
    if body.len() < 4 {
        return Some((libc::EPROTO, Some("truncated error message".into())));
    }
    let code = i32::from_ne_bytes(body[0..4].try_into().unwrap());
    if code == 0 {
        return None;
    }
    let mut detail = None;
    if header.flags & NLM_F_ACK_TLVS != 0 {
        // After the error code: the request's header (only the header when capped), then TLVs.
        let mut tlvs = 4 + NLMSG_HDRLEN;
        if header.flags & NLM_F_CAPPED == 0 && body.len() >= 4 + NLMSG_HDRLEN {
            let echoed = u32::from_ne_bytes(body[4..8].try_into().unwrap()) as usize;
            tlvs = 4 + ((echoed + 3) & !3);
        }
        while tlvs + 4 <= body.len() {
            let nla_len = u16::from_ne_bytes(body[tlvs..tlvs + 2].try_into().unwrap()) as usize;
            let nla_type =
                u16::from_ne_bytes(body[tlvs + 2..tlvs + 4].try_into().unwrap()) & 0x3fff;
            if nla_len < 4 || tlvs + nla_len > body.len() {
                break;
            }
            if nla_type == NLMSGERR_ATTR_MSG {
                let text = &body[tlvs + 4..tlvs + nla_len];
                let text = text.split(|b| *b == 0).next().unwrap_or_default();
                detail = Some(String::from_utf8_lossy(text).into_owned());
            }
            tlvs += (nla_len + 3) & !3;
        }
    }
    Some((-code, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_names_the_object() {
        let e = NetlinkError::Kernel {
            object: Object::new("link", "dy1f3"),
            errno: libc::EEXIST,
            detail: None,
        };
        assert_eq!(e.to_string(), "link dy1f3: File exists");
        assert!(e.is_exists());
        assert!(!e.is_not_found());
    }

    #[test]
    fn extack_detail_is_shown() {
        let e = NetlinkError::Kernel {
            object: Object::new("route", "0.0.0.0/0"),
            errno: libc::ENETUNREACH,
            detail: Some("Nexthop has invalid gateway".into()),
        };
        assert_eq!(
            e.to_string(),
            "route 0.0.0.0/0: Network is unreachable (Nexthop has invalid gateway)"
        );
    }

    #[test]
    fn parses_capped_error_with_extack() {
        let mut raw = Vec::new();
        let msg = b"bad thing\0";
        let nla_len = 4 + msg.len();
        let total = NLMSG_HDRLEN + 4 + NLMSG_HDRLEN + ((nla_len + 3) & !3);
        raw.extend_from_slice(&(total as u32).to_ne_bytes());
        raw.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        raw.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        raw.extend_from_slice(&7u32.to_ne_bytes());
        raw.extend_from_slice(&0u32.to_ne_bytes());
        raw.extend_from_slice(&(-libc::EINVAL).to_ne_bytes());
        raw.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        raw.extend_from_slice(&(nla_len as u16).to_ne_bytes());
        raw.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        raw.extend_from_slice(msg);
        raw.resize(total, 0);
        let header = parse_header(&raw);
        assert_eq!(header.sequence_number, 7);
        assert_eq!(
            parse_error(&raw, &header),
            Some((libc::EINVAL, Some("bad thing".into())))
        );
    }

    #[test]
    fn ack_is_not_an_error() {
        let mut raw = vec![0u8; NLMSG_HDRLEN + 4 + NLMSG_HDRLEN];
        raw[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        let header = parse_header(&raw);
        assert_eq!(parse_error(&raw, &header), None);
    }
}
