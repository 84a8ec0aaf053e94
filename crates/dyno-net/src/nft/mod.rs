//! dyno's static firewall: table `inet dyno`, programmed over nf_tables netlink by our own code
//! (no libnftnl, no `nft` binary).
//!
//! The ruleset is installed once, in a single nfnetlink batch — one kernel transaction, so it
//! appears whole or not at all — and removed on `dyno reset`. Per dyno there is no rule, only at
//! most one element `ip . $PORT` in the set `exposed`, added and deleted with one round trip,
//! and one element (its address) in the set `flows`, which the kernel adds and removes itself.
//! See ARCHITECTURE.md §2 "Firewall" for the rules and why they are there.
//!
//! Layout: [`message`] is the raw nfnetlink message and attribute codec, [`expr`] the rule
//! expressions, [`rules`] the chains, set and rules of the ruleset, [`objects`] all of it (and
//! the set elements) as messages.

pub mod expr;
pub mod message;
pub mod objects;
pub mod rules;

use std::fmt;
use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::netlink::{Batch, NetlinkError, NetlinkSocket, Object};
use message::{AttrWriter, NftMessage, NftMsg, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END};
use objects::SetRef;

pub use rules::{EXPOSED_SET, FLOWS_SET};

/// The default [`FirewallConfig::flows_per_dyno`]. A web app's outbound flows are its database
/// and cache pools, HTTP clients and DNS lookups: tens to hundreds at once, a few thousand for a
/// busy crawler or proxy. 10,000 leaves that a wide margin, while one dyno can hold at most 4%
/// of a table of 262,144 entries (the kernel's default `nf_conntrack_max` from 4 GiB of memory
/// up). It is fixed rather than derived from the host's `nf_conntrack_max`, so an app behaves the
/// same on every host; a host that runs many dynos must size its table for them anyway.
pub const DEFAULT_FLOWS_PER_DYNO: u32 = 10_000;

/// How often an install is built again after another instance changed the ruleset under it.
const INSTALL_ATTEMPTS: usize = 20;

/// The socket mark (`SO_MARK`) of the router's connections to dynos: only marked traffic may
/// reach a dyno's `$PORT`. 0x6479 is "dy" in ASCII.
pub const ROUTER_MARK: u32 = 0x6479;

/// The parts of the ruleset that are configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// Name of the table, in family `inet`.
    pub table: String,
    /// The dyno address pool (network address, prefix length); its egress is masqueraded.
    pub pool: (Ipv4Addr, u8),
    /// Mark of the router's sockets, see [`ROUTER_MARK`].
    pub router_mark: u32,
    /// Name prefix of the host ends of the dynos' veth pairs (`dy` for `dy<id>`).
    pub link_prefix: String,
    /// The link-local network (network address, prefix length), which dynos must not reach
    /// through the host: the cloud metadata endpoint 169.254.169.254 is there, and so are
    /// other services of cloud hosts (ECS task metadata 169.254.170.2, DNS 169.254.169.253).
    pub link_local: (Ipv4Addr, u8),
    /// The most flows a dyno may have tracked at once in the host's conntrack table (TCP
    /// connections not yet closed, UDP and other flows until they time out); the first packet
    /// of one more is dropped. See [`DEFAULT_FLOWS_PER_DYNO`].
    pub flows_per_dyno: u32,
    /// Networks (address, prefix length) whose connections also reach the exposed ports, as
    /// the router's do: a router on other hosts of a cluster, or health probes. Empty on a
    /// single host, where the router is known by its mark. At most [`MAX_ROUTER_SOURCES`].
    pub router_sources: Vec<(Ipv4Addr, u8)>,
}

/// Each router source costs four rules (TCP and UDP, forwarded and local): a short list.
pub const MAX_ROUTER_SOURCES: usize = 32;

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            table: "dyno".into(),
            pool: (Ipv4Addr::new(10, 213, 0, 0), 16),
            router_mark: ROUTER_MARK,
            link_prefix: "dy".into(),
            link_local: (Ipv4Addr::new(169, 254, 0, 0), 16),
            flows_per_dyno: DEFAULT_FLOWS_PER_DYNO,
            router_sources: Vec::new(),
        }
    }
}

/// `NFT_NAME_MAXLEN` (with the NUL) and `IFNAMSIZ` (with the NUL).
const NFT_NAME_MAXLEN: usize = 256;
const IFNAMSIZ: usize = 16;

impl FirewallConfig {
    /// Catches what the kernel would refuse with a bare `EINVAL`, and what it would accept but
    /// would make the firewall meaningless.
    pub fn validate(&self) -> Result<(), FirewallError> {
        let invalid = |reason: String| {
            Err(FirewallError::InvalidConfig {
                table: self.table.clone(),
                reason,
            })
        };
        if self.table.is_empty() || self.table.len() >= NFT_NAME_MAXLEN || self.table.contains('\0')
        {
            return invalid(format!(
                "table name {:?} must have 1 to {} bytes and no NUL",
                self.table,
                NFT_NAME_MAXLEN - 1
            ));
        }
        let prefix = &self.link_prefix;
        if prefix.is_empty() || prefix.len() >= IFNAMSIZ || prefix.contains(['\0', '*']) {
            // An empty prefix would match every interface of the host.
            return invalid(format!(
                "link prefix {prefix:?} must have 1 to {} bytes and no NUL or '*'",
                IFNAMSIZ - 1
            ));
        }
        if self.router_sources.len() > MAX_ROUTER_SOURCES {
            return invalid(format!(
                "{} router sources are more than {MAX_ROUTER_SOURCES}; list networks, not hosts",
                self.router_sources.len()
            ));
        }
        let networks = [("pool", self.pool), ("link-local", self.link_local)]
            .into_iter()
            .chain(self.router_sources.iter().map(|s| ("router source", *s)));
        for (what, (network, prefix_len)) in networks {
            if !(1..=32).contains(&prefix_len) {
                return invalid(format!(
                    "{what} prefix length /{prefix_len} is not in 1..=32"
                ));
            }
            let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
            if u32::from(network) & host_bits != 0 {
                let masked = Ipv4Addr::from(u32::from(network) & !host_bits);
                return invalid(format!(
                    "{what} {network}/{prefix_len} has host bits set (network is {masked}/{prefix_len})"
                ));
            }
        }
        if self.router_mark == 0 {
            // Every unmarked socket of the host has mark 0: all of them would reach the dynos.
            return invalid("router mark 0 would let every host process reach dynos".into());
        }
        if self.flows_per_dyno == 0 {
            // The kernel takes 0, and then every new flow of every dyno is dropped.
            return invalid("a limit of 0 flows per dyno would stop all egress".into());
        }
        Ok(())
    }
}

/// An error of the firewall. Every message names the table it is about.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("nf_tables: cannot open a netfilter netlink socket: {0}")]
    Open(#[source] NetlinkError),
    #[error(
        "nf_tables table inet {table} is not installed: run the `dyno net` setup \
         (Firewall::install) first"
    )]
    NotInstalled { table: String },
    #[error("nf_tables table inet {table}: {source}")]
    Netlink {
        table: String,
        #[source]
        source: NetlinkError,
    },
    #[error("nf_tables table inet {table}: invalid firewall configuration: {reason}")]
    InvalidConfig { table: String, reason: String },
    #[error(
        "nf_tables table inet {table}: the install transaction with {elements} exposed elements \
         does not fit in one netlink message; raise net.core.wmem_default"
    )]
    BatchTooLarge { table: String, elements: usize },
    #[error("nf_tables table inet {table}: unexpected answer from the kernel: {reason}")]
    Malformed { table: String, reason: String },
}

impl FirewallError {
    /// The kernel's errno, when the kernel refused a request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            FirewallError::Netlink { source, .. } | FirewallError::Open(source) => source.errno(),
            _ => None,
        }
    }
}

/// A handle on the nf_tables of one network namespace (the one it was opened in).
pub struct Firewall {
    socket: NetlinkSocket<NftMessage>,
    /// The table `expose`, `unexpose` and `exposed` work on.
    table: String,
}

impl fmt::Debug for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Firewall")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Firewall {
    /// Opens the firewall of the calling thread's network namespace, for the default table.
    /// Use [`crate::ns::Netns::run`] to open it in another namespace; the handle stays bound
    /// to that namespace wherever it is used.
    pub fn open() -> Result<Firewall, FirewallError> {
        Self::open_with(&FirewallConfig::default())
    }

    /// Like [`Firewall::open`], for the table of `config`.
    pub fn open_with(config: &FirewallConfig) -> Result<Firewall, FirewallError> {
        config.validate()?;
        let socket = NetlinkSocket::open(NETLINK_NETFILTER).map_err(FirewallError::Open)?;
        Ok(Firewall {
            socket,
            table: config.table.clone(),
        })
    }

    /// The table `expose`, `unexpose` and `exposed` work on.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Installs the whole ruleset with `exposed` as the set's elements, replacing any previous
    /// copy of the table, in one transaction (`NEWTABLE, DELTABLE, NEWTABLE`, chains, sets,
    /// rules, elements): the table is never seen half-built, and installing twice leaves
    /// exactly one copy — also over a table of an older dyno, whatever it had. From then on
    /// this handle works on `config.table`.
    ///
    /// The replaced `flows` set starts empty: flows opened before the install are not counted
    /// against their dyno's limit (they still hold their conntrack entries) until they end.
    ///
    /// Other instances on the host (daemons, `dyno up`s) share the table and expose their
    /// dynos' ports in it at any time, so the set gets the union of `exposed` and the elements
    /// the table has, read in the same ruleset generation that the transaction is held to
    /// (`NFNL_BATCH_GENID`): an element added in between makes the kernel refuse it
    /// (`ERESTART`), and it is read and built again. Returns the set's elements as installed.
    pub fn install(
        &mut self,
        config: &FirewallConfig,
        exposed: &[(Ipv4Addr, u16)],
    ) -> Result<Vec<(Ipv4Addr, u16)>, FirewallError> {
        config.validate()?;
        let mut attempts = 0;
        loop {
            let generation = self.generation(&config.table)?;
            let mut elements: std::collections::BTreeSet<(Ipv4Addr, u16)> =
                exposed.iter().copied().collect();
            // A table of an older layout may not read back; its elements are then the caller's.
            if let Ok(current) = self.exposed_in(&config.table) {
                elements.extend(current);
            }
            let elements: Vec<(Ipv4Addr, u16)> = elements.into_iter().collect();
            match self.install_at(config, &elements, generation) {
                Ok(()) => return Ok(elements),
                Err(e) if e.errno() == Some(libc::ERESTART) && attempts < INSTALL_ATTEMPTS => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The ruleset's generation (`NFT_MSG_GETGEN`): it changes with every transaction.
    fn generation(&mut self, table: &str) -> Result<u32, FirewallError> {
        let message = NftMessage::new(NftMsg::GetGen, message::NFPROTO_UNSPEC, AttrWriter::new());
        let answer = self
            .socket
            .request(message, 0, Object::new("ruleset generation", ""))
            .map_err(|e| netlink_error(table, e))?;
        let malformed = |reason: &str| FirewallError::Malformed {
            table: table.to_string(),
            reason: format!("ruleset generation: {reason}"),
        };
        let first = answer.first().ok_or_else(|| malformed("no answer"))?;
        let value = first
            .attrs()
            .find(message::NFTA_GEN_ID)
            .map_err(|e| malformed(&e.to_string()))?
            .ok_or_else(|| malformed("no NFTA_GEN_ID"))?;
        let bytes: [u8; 4] = value.try_into().map_err(|_| malformed("not 4 bytes"))?;
        Ok(u32::from_be_bytes(bytes))
    }

    /// One install transaction, held to ruleset generation `generation`.
    fn install_at(
        &mut self,
        config: &FirewallConfig,
        exposed: &[(Ipv4Addr, u16)],
        generation: u32,
    ) -> Result<(), FirewallError> {
        let table = config.table.as_str();
        let mut batch = self.socket.batch();
        let begin = NftMessage::batch_begin_at(generation);
        self.socket.push_untracked(&mut batch, begin, 0);
        let socket = &mut self.socket;
        // "Add" first, so that the delete cannot fail on a missing table; then build afresh.
        let table_steps = [
            (NftMsg::NewTable, NLM_F_CREATE, "add table"),
            (NftMsg::DelTable, 0, "delete old table"),
            (NftMsg::NewTable, NLM_F_CREATE, "create table"),
        ];
        for (kind, flags, what) in table_steps {
            let message = objects::table_message(kind, table);
            socket.push(&mut batch, message, flags, Object::new(what, ""));
        }
        for chain in &rules::CHAINS {
            let message = objects::chain_message(table, chain);
            socket.push(
                &mut batch,
                message,
                NLM_F_CREATE,
                Object::new("chain", chain.name),
            );
        }
        let set = objects::exposed_set_message(table);
        socket.push(
            &mut batch,
            set,
            NLM_F_CREATE,
            Object::new("set", EXPOSED_SET),
        );
        let set = objects::flows_set_message(table, rules::flows_set_size(config.pool));
        socket.push(&mut batch, set, NLM_F_CREATE, Object::new("set", FLOWS_SET));
        let layout = rules::layout_name(config);
        let set = objects::layout_set_message(table, &layout);
        socket.push(&mut batch, set, NLM_F_CREATE, Object::new("set", layout));
        for rule in rules::rules(config) {
            let message = objects::rule_message(table, &rule);
            let object = Object::new("rule", format!("`{}` in chain {}", rule.text, rule.chain));
            socket.push(&mut batch, message, NLM_F_CREATE | NLM_F_APPEND, object);
        }
        let elements =
            objects::element_messages(NftMsg::NewSetElem, table, SetRef::InThisBatch, exposed);
        for message in elements {
            let object = Object::new("elements of set", EXPOSED_SET);
            socket.push(&mut batch, message, NLM_F_CREATE, object);
        }
        self.commit(batch).map_err(|e| match e {
            // The whole transaction must fit in one `sendmsg`, i.e. in the socket's send buffer
            // (net.core.wmem_default, 208 KiB by default: about 9,000 elements).
            NetlinkError::Io(io) if io.raw_os_error() == Some(libc::EMSGSIZE) => {
                FirewallError::BatchTooLarge {
                    table: table.to_string(),
                    elements: exposed.len(),
                }
            }
            e => netlink_error(table, e),
        })?;
        self.table = config.table.clone();
        Ok(())
    }

    /// Removes the table of `config` with everything in it. A table that is not there is success.
    pub fn remove(&mut self, config: &FirewallConfig) -> Result<(), FirewallError> {
        let table = config.table.as_str();
        let mut batch = self.begin();
        let message = objects::table_message(NftMsg::DelTable, table);
        let object = Object::new("delete table", "");
        self.socket.push(&mut batch, message, 0, object);
        match self.commit(batch) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(netlink_error(table, e)),
        }
    }

    /// Whether the table of `config` exists.
    pub fn is_installed(&mut self, config: &FirewallConfig) -> Result<bool, FirewallError> {
        let table = config.table.as_str();
        self.exists(
            table,
            objects::table_message(NftMsg::GetTable, table),
            "get table",
        )
    }

    /// Whether the table of `config` is there with exactly the ruleset `install` makes for
    /// `config` (its layout marker, see [`rules::layout_name`]): one lookup, for callers that
    /// install only when needed (the CNI plugin, on every ADD).
    pub fn is_current(&mut self, config: &FirewallConfig) -> Result<bool, FirewallError> {
        let table = config.table.as_str();
        let message = objects::get_set_message(table, &rules::layout_name(config));
        self.exists(table, message, "get layout set")
    }

    /// Whether the object a `GET…` `message` asks for is there (`ENOENT`: it is not).
    fn exists(
        &mut self,
        table: &str,
        message: NftMessage,
        what: &'static str,
    ) -> Result<bool, FirewallError> {
        match self.socket.request(message, 0, Object::new(what, "")) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(netlink_error(table, e)),
        }
    }

    /// Lets the router reach `ip:port` (TCP and UDP). Already exposed is success.
    pub fn expose(&mut self, ip: Ipv4Addr, port: u16) -> Result<(), FirewallError> {
        self.change_element(NftMsg::NewSetElem, ip, port)
    }

    /// Takes `ip:port` out of the router's reach. Not exposed (or no table at all) is success.
    pub fn unexpose(&mut self, ip: Ipv4Addr, port: u16) -> Result<(), FirewallError> {
        self.change_element(NftMsg::DelSetElem, ip, port)
    }

    /// Every exposed `ip . port`, in the kernel's order.
    pub fn exposed(&mut self) -> Result<Vec<(Ipv4Addr, u16)>, FirewallError> {
        let table = self.table.clone();
        self.exposed_in(&table)
    }

    fn exposed_in(&mut self, table: &str) -> Result<Vec<(Ipv4Addr, u16)>, FirewallError> {
        let table = table.to_string();
        let dump = self.socket.dump(
            || objects::get_elements_message(&table),
            Object::new("elements of set", EXPOSED_SET),
        );
        let messages = match dump {
            Ok(messages) => messages,
            Err(e) if e.errno() == Some(libc::ENOENT) => {
                return Err(FirewallError::NotInstalled { table })
            }
            Err(e) => return Err(netlink_error(&table, e)),
        };
        let mut exposed = Vec::new();
        for message in &messages {
            if message.nft_kind() != Some(NftMsg::NewSetElem as u16) {
                continue;
            }
            let elements =
                objects::parse_elements(message).map_err(|reason| FirewallError::Malformed {
                    table: table.clone(),
                    reason,
                })?;
            exposed.extend(elements);
        }
        Ok(exposed)
    }

    /// One element added or deleted: one batch, one round trip. `NEWSETELEM` without
    /// `NLM_F_EXCL` accepts an element that is already there; `DELSETELEM` of a missing element
    /// answers `ENOENT`, which we take as success.
    fn change_element(
        &mut self,
        kind: NftMsg,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<(), FirewallError> {
        let mut batch = self.begin();
        let flags = if kind == NftMsg::NewSetElem {
            NLM_F_CREATE
        } else {
            0
        };
        let elements = [(ip, port)];
        for message in objects::element_messages(kind, &self.table, SetRef::Committed, &elements) {
            let object = Object::new("element", format!("{ip} . {port} of set {EXPOSED_SET}"));
            self.socket.push(&mut batch, message, flags, object);
        }
        match self.commit(batch) {
            Ok(()) => Ok(()),
            // Deleting: the element (or its whole table) is not there, which is what we want.
            Err(e) if kind == NftMsg::DelSetElem && e.errno() == Some(libc::ENOENT) => Ok(()),
            // The table or the set is missing.
            Err(e) if e.errno() == Some(libc::ENOENT) => Err(FirewallError::NotInstalled {
                table: self.table.clone(),
            }),
            Err(e) => Err(netlink_error(&self.table, e)),
        }
    }

    /// A batch opened with `NFNL_MSG_BATCH_BEGIN`: what follows is one nf_tables transaction.
    fn begin(&mut self) -> Batch<NftMessage> {
        let mut batch = self.socket.batch();
        let begin = NftMessage::batch_marker(NFNL_MSG_BATCH_BEGIN);
        self.socket.push_untracked(&mut batch, begin, 0);
        batch
    }

    /// Closes the transaction and sends it; the kernel applies all of it or, on the first
    /// refusal, none of it (and still answers every request, so the first error is the cause).
    fn commit(&mut self, mut batch: Batch<NftMessage>) -> Result<(), NetlinkError> {
        let end = NftMessage::batch_marker(NFNL_MSG_BATCH_END);
        self.socket.push_untracked(&mut batch, end, 0);
        self.socket.execute(batch)?.check()?;
        Ok(())
    }
}

fn netlink_error(table: &str, source: NetlinkError) -> FirewallError {
    FirewallError::Netlink {
        table: table.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        FirewallConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_configs_are_explained() {
        let bad = |change: fn(&mut FirewallConfig)| {
            let mut config = FirewallConfig::default();
            change(&mut config);
            config.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(|c| c.pool = (Ipv4Addr::new(10, 213, 0, 1), 16)),
            "nf_tables table inet dyno: invalid firewall configuration: pool 10.213.0.1/16 has \
             host bits set (network is 10.213.0.0/16)"
        );
        assert!(bad(|c| c.pool.1 = 0).contains("/0 is not in 1..=32"));
        assert!(bad(|c| c.pool.1 = 33).contains("/33"));
        assert!(bad(|c| c.link_prefix.clear()).contains("link prefix \"\""));
        assert!(bad(|c| c.link_prefix = "dy*".into()).contains("'*'"));
        assert!(bad(|c| c.link_prefix = "a".repeat(16)).contains("1 to 15 bytes"));
        assert!(bad(|c| c.table.clear()).contains("table name"));
        assert!(bad(|c| c.router_mark = 0).contains("router mark 0"));
        assert!(bad(|c| c.flows_per_dyno = 0).contains("0 flows per dyno"));
        assert!(bad(|c| c.router_sources = vec![(Ipv4Addr::UNSPECIFIED, 0)])
            .contains("router source prefix length /0"));
        assert!(
            bad(|c| c.router_sources = vec![(Ipv4Addr::new(192, 0, 2, 1), 24)])
                .contains("router source 192.0.2.1/24 has host bits set")
        );
        assert!(
            bad(|c| c.router_sources = vec![(Ipv4Addr::new(192, 0, 2, 1), 32); 33])
                .contains("33 router sources")
        );
        let host = FirewallConfig {
            router_sources: vec![(Ipv4Addr::new(192, 0, 2, 1), 32)],
            ..FirewallConfig::default()
        };
        assert!(host.validate().is_ok());
    }

    #[test]
    fn not_installed_error_says_what_to_do() {
        let e = FirewallError::NotInstalled {
            table: "dyno".into(),
        };
        assert_eq!(
            e.to_string(),
            "nf_tables table inet dyno is not installed: run the `dyno net` setup \
             (Firewall::install) first"
        );
    }

    #[test]
    fn kernel_errors_name_table_and_object() {
        let e = netlink_error(
            "dyno",
            NetlinkError::Kernel {
                object: Object::new("chain", "forward"),
                errno: libc::EOPNOTSUPP,
                detail: None,
            },
        );
        assert_eq!(
            e.to_string(),
            "nf_tables table inet dyno: chain forward: Operation not supported"
        );
        assert_eq!(e.errno(), Some(libc::EOPNOTSUPP));
    }
}
