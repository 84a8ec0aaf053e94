//! The raw nfnetlink message and its attributes.
//!
//! An nf_tables message is a `nfgenmsg` header (family, version, resource id) followed by netlink
//! attributes. We keep the attributes as bytes: [`AttrWriter`] builds them (with nesting and the
//! 4-byte alignment netlink requires) and [`Attrs`] walks them, checking every length it reads,
//! because the bytes come from the kernel.

use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkSerializable};

/// `NFNL_SUBSYS_NFTABLES`: the nfnetlink subsystem of nf_tables, the high byte of a message type.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNETLINK_V0`, the only version of the `nfgenmsg` header.
const NFNETLINK_V0: u8 = 0;
/// `NFNL_MSG_BATCH_BEGIN` / `NFNL_MSG_BATCH_END` (`NLMSG_MIN_TYPE` and the next): they frame a
/// transaction; the kernel applies everything between them, or nothing.
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;

/// `NFPROTO_UNSPEC`, used by the batch markers.
pub const NFPROTO_UNSPEC: u8 = 0;
/// `NFPROTO_INET`: tables of this family see IPv4 and IPv6.
pub const NFPROTO_INET: u8 = 1;
/// `NFPROTO_IPV4`, the value of `meta nfproto` for IPv4 packets.
pub const NFPROTO_IPV4: u8 = 2;

/// nf_tables message kinds (`enum nf_tables_msg_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum NftMsg {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    NewRule = 6,
    NewSet = 9,
    GetSet = 10,
    NewSetElem = 12,
    GetSetElem = 13,
    DelSetElem = 14,
    GetGen = 16,
}

/// `NFTA_GEN_ID`: the ruleset generation in a `NEWGEN` answer.
pub const NFTA_GEN_ID: u16 = 1;
/// `NFNL_BATCH_GENID`: a batch-begin attribute; the kernel refuses the batch (`ERESTART`)
/// unless the ruleset is still at that generation.
pub const NFNL_BATCH_GENID: u16 = 1;

const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// `NLA_F_NESTED`: set on nested attributes, as nft does; strict kernels expect it.
const NLA_F_NESTED: u16 = 0x8000;
/// Strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` from a received attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `len` rounded up to netlink's 4-byte alignment.
pub const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// One nfnetlink message of the nf_tables subsystem (or a batch marker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftMessage {
    /// The full netlink message type: `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_*`, or a batch marker.
    pub msg_type: u16,
    /// Address family of the object (`NFPROTO_INET` for our table).
    pub family: u8,
    /// Resource id; the batch markers name the subsystem they are for here.
    pub res_id: u16,
    /// The attributes, already encoded.
    pub attrs: Vec<u8>,
}

impl NftMessage {
    /// An nf_tables request of `kind` about an object of `family`.
    pub fn new(kind: NftMsg, family: u8, attrs: AttrWriter) -> NftMessage {
        NftMessage {
            msg_type: (NFNL_SUBSYS_NFTABLES << 8) | kind as u16,
            family,
            res_id: 0,
            attrs: attrs.finish(),
        }
    }

    /// A batch marker (`NFNL_MSG_BATCH_BEGIN` or `_END`) for the nf_tables subsystem.
    pub fn batch_marker(msg_type: u16) -> NftMessage {
        NftMessage {
            msg_type,
            family: NFPROTO_UNSPEC,
            res_id: NFNL_SUBSYS_NFTABLES,
            attrs: Vec::new(),
        }
    }

    /// A batch begin that holds the transaction to ruleset generation `generation`.
    pub fn batch_begin_at(generation: u32) -> NftMessage {
        let mut attrs = AttrWriter::new();
        attrs.u32_be(NFNL_BATCH_GENID, generation);
        NftMessage {
            attrs: attrs.finish(),
            ..NftMessage::batch_marker(NFNL_MSG_BATCH_BEGIN)
        }
    }

    /// The `NFT_MSG_*` part of the type, when the message belongs to nf_tables.
    pub fn nft_kind(&self) -> Option<u16> {
        (self.msg_type >> 8 == NFNL_SUBSYS_NFTABLES).then_some(self.msg_type & 0xff)
    }

    pub fn attrs(&self) -> Attrs<'_> {
        Attrs::new(&self.attrs)
    }
}

impl NetlinkSerializable for NftMessage {
    fn message_type(&self) -> u16 {
        self.msg_type
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.attrs.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = NFNETLINK_V0;
        // nfgenmsg.res_id is big-endian, unlike the rest of the netlink header.
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        buffer[NFGENMSG_LEN..NFGENMSG_LEN + self.attrs.len()].copy_from_slice(&self.attrs);
    }
}

/// A message from the kernel that is too short to carry an `nfgenmsg` header.
#[derive(Debug, thiserror::Error)]
#[error("nfnetlink message of type {msg_type:#x} has {len} bytes, less than an nfgenmsg header")]
pub struct ShortMessage {
    msg_type: u16,
    len: usize,
}

impl NetlinkDeserializable for NftMessage {
    type Error = ShortMessage;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        if payload.len() < NFGENMSG_LEN {
            return Err(ShortMessage {
                msg_type: header.message_type,
                len: payload.len(),
            });
        }
        Ok(NftMessage {
            msg_type: header.message_type,
            family: payload[0],
            res_id: u16::from_be_bytes([payload[2], payload[3]]),
            attrs: payload[NFGENMSG_LEN..].to_vec(),
        })
    }
}

/// Builds a run of netlink attributes. Integers of nf_tables attributes are big-endian
/// (`NLA_U32` values go through `ntohl` in the kernel); data blobs are written as given.
#[derive(Debug, Default)]
pub struct AttrWriter {
    buf: Vec<u8>,
}

impl AttrWriter {
    pub fn new() -> AttrWriter {
        AttrWriter::default()
    }

    /// An attribute holding `value`, padded with zeros to 4 bytes (the padding is not counted in
    /// the attribute's length, as netlink wants).
    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + value.len();
        let len16 = u16::try_from(len).expect("netlink attribute over 64 KiB");
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    pub fn u32_be(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// A NUL-terminated string (`NLA_STRING` / `NLA_NUL_STRING`).
    pub fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let len = NLA_HDRLEN + value.len() + 1;
        let len16 = u16::try_from(len).expect("netlink attribute over 64 KiB");
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
        self
    }

    /// A nested attribute whose content `fill` writes. Its length covers the (padded) children.
    pub fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut AttrWriter)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; NLA_HDRLEN]);
        fill(self);
        let len = u16::try_from(self.buf.len() - start).expect("nested attribute over 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }
}

/// A malformed attribute run in a kernel message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed netlink attribute at byte {offset}: {reason}")]
pub struct AttrError {
    pub offset: usize,
    pub reason: &'static str,
}

/// Walks a run of attributes: yields `(type without flags, value)`, or an error once and then
/// stops, when a length does not fit.
pub struct Attrs<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> Attrs<'a> {
    pub fn new(bytes: &'a [u8]) -> Attrs<'a> {
        Attrs {
            rest: bytes,
            offset: 0,
        }
    }

    /// The value of the first attribute of type `kind`.
    pub fn find(self, kind: u16) -> Result<Option<&'a [u8]>, AttrError> {
        for attr in self {
            let (found, value) = attr?;
            if found == kind {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), AttrError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let fail = |this: &mut Self, reason| {
            this.rest = &[];
            Some(Err(AttrError {
                offset: this.offset,
                reason,
            }))
        };
        if self.rest.len() < NLA_HDRLEN {
            return fail(self, "truncated attribute header");
        }
        let len = usize::from(u16::from_ne_bytes([self.rest[0], self.rest[1]]));
        let kind = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            return fail(self, "attribute length out of bounds");
        }
        let value = &self.rest[NLA_HDRLEN..len];
        // The last attribute's padding may be missing.
        let step = align4(len).min(self.rest.len());
        self.rest = &self.rest[step..];
        self.offset += step;
        Some(Ok((kind, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_attribute_is_nul_terminated_and_padded() {
        let mut w = AttrWriter::new();
        w.string(1, "dyno");
        // len 9 = 4 header + "dyno\0", padded to 12.
        assert_eq!(w.finish(), [9, 0, 1, 0, b'd', b'y', b'n', b'o', 0, 0, 0, 0]);
    }

    #[test]
    fn u32_attributes_are_big_endian() {
        let mut w = AttrWriter::new();
        w.u32_be(2, 0x0102_0304);
        assert_eq!(w.finish(), [8, 0, 2, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn nested_attribute_length_covers_padded_children() {
        let mut w = AttrWriter::new();
        w.nested(3, |w| {
            w.bytes(1, b"dy");
            w.nested(2, |w| {
                w.u32_be(1, 1);
            });
        });
        let bytes = w.finish();
        #[rustfmt::skip]
        let expected = [
            24, 0, 3, 0x80,            // nested 3, NLA_F_NESTED, 4 + 8 + 12 bytes
              6, 0, 1, 0, b'd', b'y', 0, 0,   // len 6, padded to 8
              12, 0, 2, 0x80,          // nested 2
                8, 0, 1, 0, 0, 0, 0, 1,
        ];
        assert_eq!(bytes, expected);
        let mut outer = Attrs::new(&bytes);
        let (kind, inner) = outer.next().unwrap().unwrap();
        assert_eq!(kind, 3, "NLA_F_NESTED is masked off");
        assert!(outer.next().is_none());
        let inner: Vec<_> = Attrs::new(inner).map(Result::unwrap).collect();
        assert_eq!(inner[0], (1, &b"dy"[..]));
        assert_eq!(inner[1].0, 2);
    }

    #[test]
    fn attribute_walker_rejects_bad_lengths() {
        let too_long = [12u8, 0, 1, 0, 0, 0, 0, 0];
        let mut attrs = Attrs::new(&too_long);
        assert!(attrs.next().unwrap().is_err());
        assert!(attrs.next().is_none(), "stops after an error");

        let too_short = [2u8, 0, 1, 0];
        assert!(Attrs::new(&too_short).next().unwrap().is_err());
        assert!(Attrs::new(&[1u8, 0]).next().unwrap().is_err());
    }

    #[test]
    fn message_has_nfgenmsg_header() {
        let mut w = AttrWriter::new();
        w.string(1, "dyno");
        let msg = NftMessage::new(NftMsg::DelTable, NFPROTO_INET, w);
        assert_eq!(msg.message_type(), 0x0a02);
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert_eq!(&buf[..4], [NFPROTO_INET, 0, 0, 0]);

        let begin = NftMessage::batch_marker(NFNL_MSG_BATCH_BEGIN);
        let mut buf = vec![0; begin.buffer_len()];
        begin.serialize(&mut buf);
        assert_eq!(buf, [0, 0, 0, 10], "res_id names nf_tables, big-endian");
    }

    #[test]
    fn deserialize_round_trips_and_rejects_short_payload() {
        let mut header = NetlinkHeader::default();
        header.message_type = 0x0a0c;
        let msg = NftMessage::deserialize(&header, &[1, 0, 0, 5, 8, 0, 1, 0, 1, 2, 3, 4]).unwrap();
        assert_eq!(msg.nft_kind(), Some(NftMsg::NewSetElem as u16));
        assert_eq!(msg.family, NFPROTO_INET);
        assert_eq!(msg.res_id, 5);
        assert_eq!(msg.attrs().find(1).unwrap(), Some(&[1u8, 2, 3, 4][..]));
        assert!(NftMessage::deserialize(&header, &[1, 0]).is_err());
    }
}
