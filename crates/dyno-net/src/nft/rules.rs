//! The static ruleset of table `inet dyno`: its chains, its sets and its rules.
//!
//! Each rule is built from small matchers that emit the same expressions nft compiles for the
//! same nft notation, including the dependencies nft adds on its own (`meta nfproto ipv4` before
//! an `ip` field in an inet table, `meta l4proto tcp` before `tcp dport`), so that
//! `nft list ruleset` shows exactly the intended text. Each rule also carries that text, for
//! error messages.

use std::net::Ipv4Addr;

use super::expr::{
    fib_flags, CmpOp, CtKey, DynsetOp, Expr, FibResult, MetaKey, PayloadBase, Verdict, REG32_00,
    REG32_01, REG_1,
};
use super::message::NFPROTO_IPV4;
use super::FirewallConfig;

/// The set of `dyno ip . $PORT` the router may connect to.
pub const EXPOSED_SET: &str = "exposed";
/// Names the set inside the install transaction, so rules and elements can refer to it before it
/// is committed. Any number unique within one batch will do.
pub const EXPOSED_SET_ID: u32 = 1;
/// Key type of the set: the concatenation `ipv4_addr . inet_service`. nft encodes a
/// concatenation's type as the field type ids shifted in by 6 bits each
/// (`TYPE_IPADDR` = 7, `TYPE_INET_SERVICE` = 13).
pub const EXPOSED_KEY_TYPE: u32 = (7 << 6) | 13;
/// Key length: each field of a concatenation takes a whole 4-byte register.
pub const EXPOSED_KEY_LEN: usize = 8;

/// The set that counts each dyno's tracked flows: one element per dyno source address, each
/// with its own `ct count` (connlimit). Elements are added by the forward rule as dynos send,
/// never by us; the kernel's set GC removes an element once its count is back to 0.
pub const FLOWS_SET: &str = "flows";
pub const FLOWS_SET_ID: u32 = 2;
/// Key type `ipv4_addr` (`TYPE_IPADDR`), 4 bytes.
pub const FLOWS_KEY_TYPE: u32 = 7;
pub const FLOWS_KEY_LEN: usize = 4;

/// The `size` of the flows set: one element per address of the pool, so that every dyno always
/// finds room — `add` into a full set does not match, and a dyno without an element would not
/// be limited at all. A pool larger than 2^24 addresses is capped there (no host runs that many
/// dynos; the cap keeps the kernel's bound meaningful).
pub fn flows_set_size((_, prefix_len): (Ipv4Addr, u8)) -> u32 {
    1u32 << (32 - u32::from(prefix_len.max(8)))
}

/// Names the layout marker set inside the install transaction.
pub const LAYOUT_SET_ID: u32 = 3;

/// The name of the empty set that marks a table as built for `config` by this code:
/// `layout_` and a hash of every chain, set and rule. A table without it (a dyno of another
/// version, another pool or other router sources) is replaced; one with it is left alone,
/// which makes "is the firewall as it should be" one lookup.
pub fn layout_name(config: &FirewallConfig) -> String {
    let mut parts: Vec<String> = CHAINS
        .iter()
        .map(|c| format!("{} {} {:?} {}", c.name, c.kind, c.hook, c.priority))
        .collect();
    parts.push(format!(
        "{EXPOSED_SET} {EXPOSED_KEY_TYPE} {EXPOSED_KEY_LEN}; {FLOWS_SET} {FLOWS_KEY_TYPE} {}",
        flows_set_size(config.pool)
    ));
    parts.extend(
        rules(config)
            .into_iter()
            .map(|r| format!("{}: {}", r.chain, r.text)),
    );
    // FNV-1a: stable across builds, so that every binary names the same layout alike.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.bytes().chain([b'\n'])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("layout_{hash:016x}")
}

/// `enum nf_inet_hooks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// A base chain of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    /// `filter` or `nat`.
    pub kind: &'static str,
    pub hook: Hook,
    pub priority: i32,
}

/// `NF_IP_PRI_RAW`, `NF_IP_PRI_FILTER`, `NF_IP_PRI_NAT_SRC`: nft's `raw`, `filter`, `srcnat`.
const PRIORITY_RAW: i32 = -300;
const PRIORITY_FILTER: i32 = 0;
const PRIORITY_SRCNAT: i32 = 100;

pub const PREROUTING: Chain = Chain {
    name: "prerouting",
    kind: "filter",
    hook: Hook::Prerouting,
    priority: PRIORITY_RAW,
};
pub const FORWARD: Chain = Chain {
    name: "forward",
    kind: "filter",
    hook: Hook::Forward,
    priority: PRIORITY_FILTER,
};
pub const INPUT: Chain = Chain {
    name: "input",
    kind: "filter",
    hook: Hook::Input,
    priority: PRIORITY_FILTER,
};
pub const OUTPUT: Chain = Chain {
    name: "output",
    kind: "filter",
    hook: Hook::Output,
    priority: PRIORITY_FILTER,
};
pub const POSTROUTING: Chain = Chain {
    name: "postrouting",
    kind: "nat",
    hook: Hook::Postrouting,
    priority: PRIORITY_SRCNAT,
};
pub const CHAINS: [Chain; 5] = [PREROUTING, FORWARD, INPUT, OUTPUT, POSTROUTING];

/// One rule: its chain, its expressions and the nft notation they implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: &'static str,
    pub text: String,
    pub exprs: Vec<Expr>,
}

/// IP protocol numbers, the values of `meta l4proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Proto {
    Tcp = 6,
    Udp = 17,
}

impl L4Proto {
    fn name(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

/// `ct state` bits (`NF_CT_STATE_BIT`), in host byte order as the kernel stores them.
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_NEW: u32 = 1 << 3;
const CT_STATE_RELATED: u32 = 1 << 2;
/// Offsets in the IPv4 header and in the TCP/UDP header.
const IPV4_SADDR_OFFSET: u32 = 12;
const IPV4_DADDR_OFFSET: u32 = 16;
const L4_DPORT_OFFSET: u32 = 2;

/// Builds one rule from matchers, in order.
struct RuleBuilder {
    chain: &'static str,
    words: Vec<String>,
    exprs: Vec<Expr>,
    /// Whether `meta nfproto ipv4` is already matched: nft adds it once per rule.
    ipv4_matched: bool,
}

impl RuleBuilder {
    fn new(chain: Chain) -> RuleBuilder {
        RuleBuilder {
            chain: chain.name,
            words: Vec::new(),
            exprs: Vec::new(),
            ipv4_matched: false,
        }
    }

    fn load_meta(&mut self, key: MetaKey) {
        self.exprs.push(Expr::Meta { key, dreg: REG_1 });
    }

    fn compare(&mut self, op: CmpOp, data: impl Into<Vec<u8>>) {
        self.exprs.push(Expr::Cmp {
            op,
            sreg: REG_1,
            data: data.into(),
        });
    }

    /// `iifname "dy*"`: a wildcard compares only the prefix bytes of the name.
    fn iifname_prefix(mut self, prefix: &str) -> Self {
        self.words.push(format!("iifname \"{prefix}*\""));
        self.load_meta(MetaKey::IifName);
        self.compare(CmpOp::Eq, prefix.as_bytes());
        self
    }

    /// `oifname "dy*"` or `oifname != "dy*"`.
    fn oifname_prefix(mut self, op: CmpOp, prefix: &str) -> Self {
        let not = if op == CmpOp::Neq { "!= " } else { "" };
        self.words.push(format!("oifname {not}\"{prefix}*\""));
        self.load_meta(MetaKey::OifName);
        self.compare(op, prefix.as_bytes());
        self
    }

    /// `meta nfproto ipv4`, which nft adds (and hides) before any IPv4 field in an inet table.
    fn nfproto_ipv4(&mut self) {
        if std::mem::replace(&mut self.ipv4_matched, true) {
            return;
        }
        self.load_meta(MetaKey::NfProto);
        self.compare(CmpOp::Eq, [NFPROTO_IPV4]);
    }

    /// `ip saddr NET/LEN`.
    fn ip_saddr_in(self, network: (Ipv4Addr, u8)) -> Self {
        self.ip_addr_in("saddr", IPV4_SADDR_OFFSET, network)
    }

    /// `ip daddr NET/LEN`.
    fn ip_daddr_in(self, network: (Ipv4Addr, u8)) -> Self {
        self.ip_addr_in("daddr", IPV4_DADDR_OFFSET, network)
    }

    /// `ip FIELD NET/LEN`. Like nft: a byte-aligned prefix loads and compares only its bytes;
    /// any other prefix masks the whole address first.
    fn ip_addr_in(
        mut self,
        field: &str,
        offset: u32,
        (network, prefix_len): (Ipv4Addr, u8),
    ) -> Self {
        self.words.push(if prefix_len == 32 {
            format!("ip {field} {network}")
        } else {
            format!("ip {field} {network}/{prefix_len}")
        });
        self.nfproto_ipv4();
        let octets = network.octets();
        if prefix_len % 8 == 0 {
            let len = usize::from(prefix_len / 8);
            self.exprs.push(Expr::Payload {
                base: PayloadBase::Network,
                offset,
                len: len as u32,
                dreg: REG_1,
            });
            self.compare(CmpOp::Eq, &octets[..len]);
        } else {
            self.exprs.push(Expr::Payload {
                base: PayloadBase::Network,
                offset,
                len: 4,
                dreg: REG_1,
            });
            self.exprs.push(Expr::Bitwise {
                sreg: REG_1,
                dreg: REG_1,
                mask: prefix_mask(prefix_len).to_vec(),
                xor: vec![0; 4],
            });
            self.compare(CmpOp::Eq, octets);
        }
        self
    }

    /// `ct state established,related`: any of the two bits set.
    fn ct_established_or_related(self) -> Self {
        self.ct_state_any(
            "established,related",
            CT_STATE_ESTABLISHED | CT_STATE_RELATED,
        )
    }

    /// `ct state new`: the first packet of a flow (TCP SYN, a UDP datagram of a new 5-tuple,
    /// an ICMP echo...), the only one that can add to a count.
    fn ct_new(self) -> Self {
        self.ct_state_any("new", CT_STATE_NEW)
    }

    /// `ct state NAMES`: any of the `bits` set.
    fn ct_state_any(mut self, names: &str, bits: u32) -> Self {
        self.words.push(format!("ct state {names}"));
        self.exprs.push(Expr::Ct {
            key: CtKey::State,
            dreg: REG_1,
        });
        self.exprs.push(Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        });
        self.compare(CmpOp::Neq, [0; 4]);
        self
    }

    /// `add @flows { ip saddr ct count over N }`: the source address's element (created on its
    /// first flow) counts the flows conntrack tracks for it, this packet's included; matches
    /// when they are more than `limit`.
    fn saddr_flows_over(mut self, limit: u32) -> Self {
        self.words.push(format!(
            "add @{FLOWS_SET} {{ ip saddr ct count over {limit} }}"
        ));
        self.nfproto_ipv4();
        self.exprs.push(Expr::Payload {
            base: PayloadBase::Network,
            offset: IPV4_SADDR_OFFSET,
            len: 4,
            dreg: REG_1,
        });
        self.exprs.push(Expr::Dynset {
            op: DynsetOp::Add,
            set: FLOWS_SET.into(),
            set_id: FLOWS_SET_ID,
            sreg_key: REG_1,
            expr: Box::new(Expr::Connlimit {
                count: limit,
                over: true,
            }),
        });
        self
    }

    /// `meta mark 0x00006479` (the mark is a host-order u32 in the kernel).
    fn mark(mut self, mark: u32) -> Self {
        self.words.push(format!("meta mark {mark:#010x}"));
        self.load_meta(MetaKey::Mark);
        self.compare(CmpOp::Eq, mark.to_ne_bytes());
        self
    }

    fn l4proto(mut self, proto: L4Proto) -> Self {
        self.words.push(format!("meta l4proto {}", proto.name()));
        self.load_meta(MetaKey::L4Proto);
        self.compare(CmpOp::Eq, [proto as u8]);
        self
    }

    /// `ip daddr . tcp dport @exposed`: both fields into consecutive 4-byte registers, looked up
    /// as one key. Expects `l4proto(proto)` before it (nft's dependency for `dport`).
    fn daddr_dport_in_exposed(mut self, proto: L4Proto) -> Self {
        self.words
            .push(format!("ip daddr . {} dport @{EXPOSED_SET}", proto.name()));
        self.nfproto_ipv4();
        self.exprs.push(Expr::Payload {
            base: PayloadBase::Network,
            offset: IPV4_DADDR_OFFSET,
            len: 4,
            dreg: REG32_00,
        });
        self.exprs.push(Expr::Payload {
            base: PayloadBase::Transport,
            offset: L4_DPORT_OFFSET,
            len: 2,
            dreg: REG32_01,
        });
        self.exprs.push(Expr::Lookup {
            set: EXPOSED_SET.into(),
            set_id: EXPOSED_SET_ID,
            sreg: REG32_00,
        });
        self
    }

    /// `fib saddr . iif oif missing`: no route back to the source through the interface the
    /// packet came in on, i.e. a spoofed source.
    fn no_route_back_to_source(mut self) -> Self {
        self.words.push("fib saddr . iif oif missing".into());
        self.exprs.push(Expr::Fib {
            flags: fib_flags::SADDR | fib_flags::IIF | fib_flags::PRESENT,
            result: FibResult::Oif,
            dreg: REG_1,
        });
        self.compare(CmpOp::Eq, [0; 4]);
        self
    }

    fn verdict(mut self, verdict: Verdict) -> Rule {
        self.words.push(
            match verdict {
                Verdict::Accept => "accept",
                Verdict::Drop => "drop",
            }
            .into(),
        );
        self.exprs.push(Expr::Verdict(verdict));
        self.build()
    }

    fn masquerade(mut self) -> Rule {
        self.words.push("masquerade".into());
        self.exprs.push(Expr::Masq);
        self.build()
    }

    fn build(self) -> Rule {
        Rule {
            chain: self.chain,
            text: self.words.join(" "),
            exprs: self.exprs,
        }
    }
}

/// The network mask of a prefix length (0..=32), as bytes.
fn prefix_mask(prefix_len: u8) -> [u8; 4] {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    bits.to_be_bytes()
}

/// Every rule of the ruleset, in chain order and, within a chain, in evaluation order.
pub fn rules(config: &FirewallConfig) -> Vec<Rule> {
    use Verdict::{Accept, Drop};
    let dy = config.link_prefix.as_str();
    let rule = RuleBuilder::new;
    // Connections from the router's networks to an exposed port, in `chain` (forwarded: a
    // router on another host; output: a probe of this host that is not marked).
    let from_router_sources = |chain: Chain| {
        config.router_sources.iter().flat_map(move |source| {
            [L4Proto::Tcp, L4Proto::Udp].map(|proto| {
                rule(chain)
                    .oifname_prefix(CmpOp::Eq, dy)
                    .ip_saddr_in(*source)
                    .l4proto(proto)
                    .daddr_dport_in_exposed(proto)
                    .verdict(Accept)
            })
        })
    };
    let mut rules = vec![
        // No spoofed sources: a dyno may only send from the address routed to its own link.
        rule(PREROUTING)
            .iifname_prefix(dy)
            .no_route_back_to_source()
            .verdict(Drop),
        // Dyno to dyno: Common Runtime isolation.
        rule(FORWARD)
            .iifname_prefix(dy)
            .oifname_prefix(CmpOp::Eq, dy)
            .verdict(Drop),
        // Nothing link-local through the host: the metadata endpoint and the other services a
        // cloud host has there (a packet for 169.254.x.y would otherwise leave by the default
        // route: Linux forwards link-local destinations).
        rule(FORWARD)
            .iifname_prefix(dy)
            .ip_daddr_in(config.link_local)
            .verdict(Drop),
        rule(FORWARD)
            .oifname_prefix(CmpOp::Eq, dy)
            .ct_established_or_related()
            .verdict(Accept),
    ];
    rules.extend(from_router_sources(FORWARD));
    rules.extend([
        // Nothing else from outside opens a connection into a dyno.
        rule(FORWARD).oifname_prefix(CmpOp::Eq, dy).verdict(Drop),
        // Egress is forwarded, so every flow of every dyno takes an entry in the host's one
        // conntrack table: no dyno may hold more than its share, or it could fill the table and
        // stop everyone's new flows (the router's to the dynos too).
        rule(FORWARD)
            .iifname_prefix(dy)
            .ct_new()
            .saddr_flows_over(config.flows_per_dyno)
            .verdict(Drop),
        rule(FORWARD).iifname_prefix(dy).verdict(Accept),
        // Dynos cannot reach host services.
        rule(INPUT)
            .iifname_prefix(dy)
            .ct_established_or_related()
            .verdict(Accept),
        rule(INPUT).iifname_prefix(dy).verdict(Drop),
        // Only the router (its sockets carry the mark) reaches a dyno, and only on its $PORT.
        rule(OUTPUT)
            .oifname_prefix(CmpOp::Eq, dy)
            .ct_established_or_related()
            .verdict(Accept),
        rule(OUTPUT)
            .oifname_prefix(CmpOp::Eq, dy)
            .mark(config.router_mark)
            .l4proto(L4Proto::Tcp)
            .daddr_dport_in_exposed(L4Proto::Tcp)
            .verdict(Accept),
        rule(OUTPUT)
            .oifname_prefix(CmpOp::Eq, dy)
            .mark(config.router_mark)
            .l4proto(L4Proto::Udp)
            .daddr_dport_in_exposed(L4Proto::Udp)
            .verdict(Accept),
    ]);
    rules.extend(from_router_sources(OUTPUT));
    rules.extend([
        rule(OUTPUT).oifname_prefix(CmpOp::Eq, dy).verdict(Drop),
        // Egress leaves with the host's address.
        rule(POSTROUTING)
            .ip_saddr_in(config.pool)
            .oifname_prefix(CmpOp::Neq, dy)
            .masquerade(),
    ]);
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(0), [0, 0, 0, 0]);
        assert_eq!(prefix_mask(12), [255, 240, 0, 0]);
        assert_eq!(prefix_mask(32), [255; 4]);
    }

    #[test]
    fn rule_texts_are_the_intended_nft_notation() {
        let texts: Vec<_> = rules(&FirewallConfig::default())
            .into_iter()
            .map(|r| format!("{}: {}", r.chain, r.text))
            .collect();
        assert_eq!(
            texts,
            [
                r#"prerouting: iifname "dy*" fib saddr . iif oif missing drop"#,
                r#"forward: iifname "dy*" oifname "dy*" drop"#,
                r#"forward: iifname "dy*" ip daddr 169.254.0.0/16 drop"#,
                r#"forward: oifname "dy*" ct state established,related accept"#,
                r#"forward: oifname "dy*" drop"#,
                r#"forward: iifname "dy*" ct state new add @flows { ip saddr ct count over 10000 } drop"#,
                r#"forward: iifname "dy*" accept"#,
                r#"input: iifname "dy*" ct state established,related accept"#,
                r#"input: iifname "dy*" drop"#,
                r#"output: oifname "dy*" ct state established,related accept"#,
                r#"output: oifname "dy*" meta mark 0x00006479 meta l4proto tcp ip daddr . tcp dport @exposed accept"#,
                r#"output: oifname "dy*" meta mark 0x00006479 meta l4proto udp ip daddr . udp dport @exposed accept"#,
                r#"output: oifname "dy*" drop"#,
                r#"postrouting: ip saddr 10.213.0.0/16 oifname != "dy*" masquerade"#,
            ]
        );
    }

    /// The expressions nft emits for the same rule (`nft --debug=netlink`): the `meta nfproto`
    /// dependency before `ip saddr`, the full address as the key, and no timeout.
    #[test]
    fn flow_limit_is_a_dynset_with_connlimit() {
        let config = FirewallConfig {
            flows_per_dyno: 4096,
            ..FirewallConfig::default()
        };
        let rule = rules(&config)
            .into_iter()
            .find(|r| r.text.contains("@flows"))
            .unwrap();
        assert_eq!(rule.chain, "forward");
        // After `iifname` (5 expressions) and `ct state new` (3): nfproto, saddr, dynset, drop.
        assert_eq!(rule.exprs.len(), 10);
        assert_eq!(
            rule.exprs[3],
            Expr::Bitwise {
                sreg: REG_1,
                dreg: REG_1,
                mask: 8u32.to_ne_bytes().to_vec(),
                xor: vec![0; 4]
            }
        );
        let nfproto = Expr::Cmp {
            op: CmpOp::Eq,
            sreg: REG_1,
            data: vec![NFPROTO_IPV4],
        };
        let saddr = Expr::Payload {
            base: PayloadBase::Network,
            offset: 12,
            len: 4,
            dreg: REG_1,
        };
        let dynset = Expr::Dynset {
            op: DynsetOp::Add,
            set: "flows".into(),
            set_id: FLOWS_SET_ID,
            sreg_key: REG_1,
            expr: Box::new(Expr::Connlimit {
                count: 4096,
                over: true,
            }),
        };
        assert_eq!(
            rule.exprs[6..],
            [nfproto, saddr, dynset, Expr::Verdict(Verdict::Drop)]
        );
        assert_eq!(
            rule.text,
            r#"iifname "dy*" ct state new add @flows { ip saddr ct count over 4096 } drop"#
        );
    }

    #[test]
    fn flows_set_has_room_for_every_address_of_the_pool() {
        let net = Ipv4Addr::new(10, 0, 0, 0);
        assert_eq!(flows_set_size((net, 16)), 65536);
        assert_eq!(flows_set_size((net, 24)), 256);
        assert_eq!(flows_set_size((net, 32)), 1);
        assert_eq!(flows_set_size((net, 1)), 1 << 24);
    }

    #[test]
    fn byte_aligned_pool_loads_only_its_bytes() {
        let rules = rules(&FirewallConfig::default());
        let masq = rules.last().unwrap();
        assert!(masq.exprs.contains(&Expr::Payload {
            base: PayloadBase::Network,
            offset: 12,
            len: 2,
            dreg: REG_1
        }));
        assert!(masq.exprs.contains(&Expr::Cmp {
            op: CmpOp::Eq,
            sreg: REG_1,
            data: vec![10, 213]
        }));
    }

    #[test]
    fn other_pools_are_masked() {
        let config = FirewallConfig {
            pool: (Ipv4Addr::new(10, 208, 0, 0), 12),
            ..FirewallConfig::default()
        };
        let rules = rules(&config);
        let masq = rules.last().unwrap();
        assert!(masq.exprs.contains(&Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: vec![255, 240, 0, 0],
            xor: vec![0; 4]
        }));
        assert!(masq.text.starts_with("ip saddr 10.208.0.0/12 "));
    }
}
