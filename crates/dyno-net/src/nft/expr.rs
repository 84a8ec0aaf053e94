//! The nf_tables expressions our ruleset uses, encoded as the kernel's virtual machine expects.
//!
//! A rule is a list of expressions working on registers: loads (`meta`, `ct`, `payload`, `fib`)
//! fill a register, `bitwise` masks it, `cmp` and `lookup` end the rule early when they do not
//! match, `dynset` adds the key in a register to a set (with a per-element expression such as
//! `connlimit`), `immediate` sets the verdict and `masq` rewrites the source address. Only what
//! the static firewall needs is here.

use super::message::AttrWriter;

/// The verdict register (`NFT_REG_VERDICT`).
pub const REG_VERDICT: u32 = 0;
/// `NFT_REG_1`: the first 16-byte data register, the one nft uses for single values. It is the
/// same storage as `NFT_REG32_00`; the kernel reports either as `NFT_REG_1`.
pub const REG_1: u32 = 1;
/// `NFT_REG32_00` / `NFT_REG32_01`: consecutive 4-byte registers, so a concatenation of two
/// fields (each padded to 4 bytes) can be looked up as one 8-byte key.
pub const REG32_00: u32 = 8;
pub const REG32_01: u32 = 9;

// Attribute numbers, from linux/netfilter/nf_tables.h.
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_SET_ID: u16 = 2;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFTA_DYNSET_EXPR: u16 = 7;
const NFTA_CONNLIMIT_COUNT: u16 = 1;
const NFTA_CONNLIMIT_FLAGS: u16 = 2;
/// `NFT_CONNLIMIT_F_INV`: match when the count is *over* the limit (nft's `ct count over N`).
const NFT_CONNLIMIT_F_INV: u32 = 1;

/// Writes a data value (`NFTA_DATA_VALUE` inside an `nft_data` nest) under `kind`.
pub fn write_data_value(w: &mut AttrWriter, kind: u16, value: &[u8]) {
    w.nested(kind, |w| {
        w.bytes(NFTA_DATA_VALUE, value);
    });
}

/// `enum nft_meta_keys`, the ones we load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetaKey {
    Mark = 3,
    IifName = 6,
    OifName = 7,
    NfProto = 15,
    L4Proto = 16,
}

/// `enum nft_cmp_ops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// `enum nft_ct_keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CtKey {
    State = 0,
}

/// `enum nft_payload_bases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PayloadBase {
    Network = 1,
    Transport = 2,
}

/// `enum nft_fib_result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum FibResult {
    Oif = 1,
}

/// `enum nft_dynset_ops`: what `dynset` does with the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DynsetOp {
    /// Add the element unless it is there; either way, evaluate its expression.
    Add = 0,
}

/// `NFTA_FIB_F_*`: which flow fields the FIB lookup is keyed on, and how the result is reported.
pub mod fib_flags {
    pub const SADDR: u32 = 1 << 0;
    pub const IIF: u32 = 1 << 3;
    /// Only report whether a route exists (a boolean in the register).
    pub const PRESENT: u32 = 1 << 5;
}

/// Netfilter verdicts (`NF_DROP`, `NF_ACCEPT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    Drop = 0,
    Accept = 1,
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => dreg`
    Meta { key: MetaKey, dreg: u32 },
    /// `cmp OP sreg DATA`: the rule stops unless the first `data.len()` bytes compare true.
    Cmp { op: CmpOp, sreg: u32, data: Vec<u8> },
    /// `ct load KEY => dreg`
    Ct { key: CtKey, dreg: u32 },
    /// `bitwise dreg = (sreg & mask) ^ xor`, over `mask.len()` bytes.
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `payload load LEN b @ BASE header + OFFSET => dreg`
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `fib FLAGS RESULT => dreg`
    Fib {
        flags: u32,
        result: FibResult,
        dreg: u32,
    },
    /// `lookup sreg set NAME`: the rule stops unless the key in the registers from `sreg` on is
    /// in the set. `set_id` finds a set created earlier in the same transaction.
    Lookup { set: String, set_id: u32, sreg: u32 },
    /// `dynset OP reg_key SREG set NAME expr [ EXPR ]`: adds the key in `sreg_key` to the set
    /// (a set with `flags dynamic`), each new element getting its own copy of `expr`, then
    /// evaluates the element's `expr`: the rule stops unless it matches. Like `lookup`, `set_id`
    /// finds a set created earlier in the same transaction.
    Dynset {
        op: DynsetOp,
        set: String,
        set_id: u32,
        sreg_key: u32,
        expr: Box<Expr>,
    },
    /// `connlimit count N [flags 1]`: counts the connections tracked under this expression (per
    /// set element, inside a `dynset`); matches when the count is within `count`, or with
    /// `over` when it exceeds it. It counts every flow conntrack still holds, except TCP
    /// connections already in TIME_WAIT or CLOSE.
    Connlimit { count: u32, over: bool },
    /// `immediate reg 0 VERDICT`
    Verdict(Verdict),
    /// `masq`: source NAT to the outgoing interface's address.
    Masq,
}

impl Expr {
    /// The kernel's name of this expression type.
    pub fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Ct { .. } => "ct",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Payload { .. } => "payload",
            Expr::Fib { .. } => "fib",
            Expr::Lookup { .. } => "lookup",
            Expr::Dynset { .. } => "dynset",
            Expr::Connlimit { .. } => "connlimit",
            Expr::Verdict(_) => "immediate",
            Expr::Masq => "masq",
        }
    }

    /// Writes this expression as one element of `NFTA_RULE_EXPRESSIONS`.
    pub fn write(&self, w: &mut AttrWriter) {
        w.nested(NFTA_LIST_ELEM, |w| self.write_named(w));
    }

    /// The expression's name and data, without the list element around them (an expression
    /// nested in `dynset` is written this way).
    fn write_named(&self, w: &mut AttrWriter) {
        w.string(NFTA_EXPR_NAME, self.name());
        w.nested(NFTA_EXPR_DATA, |w| self.write_data(w));
    }

    fn write_data(&self, w: &mut AttrWriter) {
        match self {
            Expr::Meta { key, dreg } => {
                w.u32_be(NFTA_META_KEY, *key as u32);
                w.u32_be(NFTA_META_DREG, *dreg);
            }
            Expr::Cmp { op, sreg, data } => {
                w.u32_be(NFTA_CMP_SREG, *sreg);
                w.u32_be(NFTA_CMP_OP, *op as u32);
                write_data_value(w, NFTA_CMP_DATA, data);
            }
            Expr::Ct { key, dreg } => {
                w.u32_be(NFTA_CT_KEY, *key as u32);
                w.u32_be(NFTA_CT_DREG, *dreg);
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                debug_assert_eq!(mask.len(), xor.len());
                w.u32_be(NFTA_BITWISE_SREG, *sreg);
                w.u32_be(NFTA_BITWISE_DREG, *dreg);
                w.u32_be(NFTA_BITWISE_LEN, mask.len() as u32);
                write_data_value(w, NFTA_BITWISE_MASK, mask);
                write_data_value(w, NFTA_BITWISE_XOR, xor);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.u32_be(NFTA_PAYLOAD_DREG, *dreg);
                w.u32_be(NFTA_PAYLOAD_BASE, *base as u32);
                w.u32_be(NFTA_PAYLOAD_OFFSET, *offset);
                w.u32_be(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Fib {
                flags,
                result,
                dreg,
            } => {
                w.u32_be(NFTA_FIB_FLAGS, *flags);
                w.u32_be(NFTA_FIB_RESULT, *result as u32);
                w.u32_be(NFTA_FIB_DREG, *dreg);
            }
            Expr::Lookup { set, set_id, sreg } => {
                w.u32_be(NFTA_LOOKUP_SREG, *sreg);
                w.string(NFTA_LOOKUP_SET, set);
                w.u32_be(NFTA_LOOKUP_SET_ID, *set_id);
            }
            // In nft's order. No NFTA_DYNSET_TIMEOUT: the kernel refuses a timeout on a set
            // without `flags timeout`, and elements need none (see `rules::FLOWS_SET`).
            Expr::Dynset {
                op,
                set,
                set_id,
                sreg_key,
                expr,
            } => {
                w.u32_be(NFTA_DYNSET_SREG_KEY, *sreg_key);
                w.u32_be(NFTA_DYNSET_OP, *op as u32);
                w.string(NFTA_DYNSET_SET_NAME, set);
                w.u32_be(NFTA_DYNSET_SET_ID, *set_id);
                w.nested(NFTA_DYNSET_EXPR, |w| expr.write_named(w));
            }
            Expr::Connlimit { count, over } => {
                w.u32_be(NFTA_CONNLIMIT_COUNT, *count);
                let flags = if *over { NFT_CONNLIMIT_F_INV } else { 0 };
                w.u32_be(NFTA_CONNLIMIT_FLAGS, flags);
            }
            Expr::Verdict(verdict) => {
                w.u32_be(NFTA_IMMEDIATE_DREG, REG_VERDICT);
                w.nested(NFTA_IMMEDIATE_DATA, |w| {
                    w.nested(NFTA_DATA_VERDICT, |w| {
                        w.u32_be(NFTA_VERDICT_CODE, *verdict as u32);
                    });
                });
            }
            // No attributes: masquerade to the primary address of the outgoing interface, any port.
            Expr::Masq => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(expr: &Expr) -> Vec<u8> {
        let mut w = AttrWriter::new();
        expr.write(&mut w);
        w.finish()
    }

    // The expected bytes below were checked against what `nft --debug=mnl` sends for the same
    // rules (attribute headers are host-endian, i.e. little-endian on our machines).

    #[test]
    fn cmp_on_interface_name_prefix() {
        let expr = Expr::Cmp {
            op: CmpOp::Eq,
            sreg: REG_1,
            data: b"dy".to_vec(),
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            44, 0, 1, 0x80,                    // NFTA_LIST_ELEM
              8, 0, 1, 0, b'c', b'm', b'p', 0, // NFTA_EXPR_NAME "cmp"
              32, 0, 2, 0x80,                  // NFTA_EXPR_DATA
                8, 0, 1, 0, 0, 0, 0, 1,        // NFTA_CMP_SREG 1
                8, 0, 2, 0, 0, 0, 0, 0,        // NFTA_CMP_OP eq
                12, 0, 3, 0x80,                // NFTA_CMP_DATA
                  6, 0, 1, 0, b'd', b'y', 0, 0, // NFTA_DATA_VALUE "dy": only the prefix bytes
        ];
        assert_eq!(encode(&expr), expected);
    }

    #[test]
    fn payload_load_of_ip_daddr() {
        let expr = Expr::Payload {
            base: PayloadBase::Network,
            offset: 16,
            len: 4,
            dreg: REG_1,
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            52, 0, 1, 0x80,
              12, 0, 1, 0, b'p', b'a', b'y', b'l', b'o', b'a', b'd', 0,
              36, 0, 2, 0x80,
                8, 0, 1, 0, 0, 0, 0, 1,   // NFTA_PAYLOAD_DREG 1
                8, 0, 2, 0, 0, 0, 0, 1,   // NFTA_PAYLOAD_BASE network header
                8, 0, 3, 0, 0, 0, 0, 16,  // NFTA_PAYLOAD_OFFSET 16: ip daddr
                8, 0, 4, 0, 0, 0, 0, 4,   // NFTA_PAYLOAD_LEN 4
        ];
        assert_eq!(encode(&expr), expected);
    }

    #[test]
    fn lookup_in_named_set() {
        let expr = Expr::Lookup {
            set: "exposed".into(),
            set_id: 1,
            sreg: REG32_00,
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            48, 0, 1, 0x80,
              11, 0, 1, 0, b'l', b'o', b'o', b'k', b'u', b'p', 0, 0,
              32, 0, 2, 0x80,
                8, 0, 2, 0, 0, 0, 0, 8,   // NFTA_LOOKUP_SREG NFT_REG32_00
                12, 0, 1, 0, b'e', b'x', b'p', b'o', b's', b'e', b'd', 0,
                8, 0, 4, 0, 0, 0, 0, 1,   // NFTA_LOOKUP_SET_ID 1
        ];
        assert_eq!(encode(&expr), expected);
    }

    #[test]
    fn verdict_is_nested_twice() {
        #[rustfmt::skip]
        let expected: &[u8] = &[
            48, 0, 1, 0x80,
              14, 0, 1, 0, b'i', b'm', b'm', b'e', b'd', b'i', b'a', b't', b'e', 0, 0, 0,
              28, 0, 2, 0x80,
                8, 0, 1, 0, 0, 0, 0, 0,   // NFTA_IMMEDIATE_DREG: the verdict register
                16, 0, 2, 0x80,           // NFTA_IMMEDIATE_DATA
                  12, 0, 2, 0x80,         // NFTA_DATA_VERDICT
                    8, 0, 1, 0, 0, 0, 0, 1, // NFTA_VERDICT_CODE NF_ACCEPT
        ];
        assert_eq!(encode(&Expr::Verdict(Verdict::Accept)), expected);
    }

    #[test]
    fn dynset_nests_its_connlimit_without_a_list_element() {
        let expr = Expr::Dynset {
            op: DynsetOp::Add,
            set: "flows".into(),
            set_id: 2,
            sreg_key: REG_1,
            expr: Box::new(Expr::Connlimit {
                count: 4096,
                over: true,
            }),
        };
        #[rustfmt::skip]
        let expected: &[u8] = &[
            96, 0, 1, 0x80,
              11, 0, 1, 0, b'd', b'y', b'n', b's', b'e', b't', 0, 0,
              80, 0, 2, 0x80,
                8, 0, 4, 0, 0, 0, 0, 1,   // NFTA_DYNSET_SREG_KEY 1
                8, 0, 3, 0, 0, 0, 0, 0,   // NFTA_DYNSET_OP add
                10, 0, 1, 0, b'f', b'l', b'o', b'w', b's', 0, 0, 0,
                8, 0, 2, 0, 0, 0, 0, 2,   // NFTA_DYNSET_SET_ID 2
                40, 0, 7, 0x80,           // NFTA_DYNSET_EXPR: name and data, no list element
                  14, 0, 1, 0, b'c', b'o', b'n', b'n', b'l', b'i', b'm', b'i', b't', 0, 0, 0,
                  20, 0, 2, 0x80,
                    8, 0, 1, 0, 0, 0, 0x10, 0, // NFTA_CONNLIMIT_COUNT 4096
                    8, 0, 2, 0, 0, 0, 0, 1,    // NFTA_CONNLIMIT_FLAGS: over
        ];
        assert_eq!(encode(&expr), expected);
    }

    #[test]
    fn masq_has_an_empty_data_nest() {
        #[rustfmt::skip]
        let expected: &[u8] = &[
            20, 0, 1, 0x80,
              9, 0, 1, 0, b'm', b'a', b's', b'q', 0, 0, 0, 0,
              4, 0, 2, 0x80,
        ];
        assert_eq!(encode(&Expr::Masq), expected);
    }
}
