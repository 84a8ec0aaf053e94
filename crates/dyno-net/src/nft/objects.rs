//! The ruleset's objects as nf_tables messages: table, chains, set, rules and set elements.

use std::net::Ipv4Addr;

use super::expr::{write_data_value, NFTA_DATA_VALUE};
use super::message::{AttrWriter, Attrs, NftMessage, NftMsg, NFPROTO_INET};
use super::rules::{
    Chain, Rule, EXPOSED_KEY_LEN, EXPOSED_KEY_TYPE, EXPOSED_SET, EXPOSED_SET_ID, FLOWS_KEY_LEN,
    FLOWS_KEY_TYPE, FLOWS_SET, FLOWS_SET_ID, LAYOUT_SET_ID,
};

/// Elements per message: keeps every nested attribute far below netlink's 64 KiB limit.
const ELEMENTS_PER_MESSAGE: usize = 1024;

// Attribute numbers, from linux/netfilter/nf_tables.h.
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_DESC_SIZE: u16 = 1;
/// `NFT_SET_EVAL`, nft's `flags dynamic`: the rules add elements. It makes the kernel choose a
/// resizable hash that runs a GC, which frees elements whose connlimit count fell to 0.
const NFT_SET_EVAL: u32 = 0x20;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;

/// `NEWTABLE` / `DELTABLE` / `GETTABLE` of `inet <table>`.
pub fn table_message(kind: NftMsg, table: &str) -> NftMessage {
    let mut w = AttrWriter::new();
    w.string(NFTA_TABLE_NAME, table);
    if kind == NftMsg::NewTable {
        // No NFT_TABLE_F_OWNER: the table must outlive the process that installed it.
        w.u32_be(NFTA_TABLE_FLAGS, 0);
    }
    NftMessage::new(kind, NFPROTO_INET, w)
}

/// `NEWCHAIN`: a base chain with policy accept.
pub fn chain_message(table: &str, chain: &Chain) -> NftMessage {
    /// `NF_ACCEPT`
    const POLICY_ACCEPT: u32 = 1;
    let mut w = AttrWriter::new();
    w.string(NFTA_CHAIN_TABLE, table)
        .string(NFTA_CHAIN_NAME, chain.name)
        .string(NFTA_CHAIN_TYPE, chain.kind)
        .u32_be(NFTA_CHAIN_POLICY, POLICY_ACCEPT)
        .nested(NFTA_CHAIN_HOOK, |w| {
            w.u32_be(NFTA_HOOK_HOOKNUM, chain.hook as u32);
            // A signed priority travels as its two's-complement bits.
            w.u32_be(NFTA_HOOK_PRIORITY, chain.priority as u32);
        });
    NftMessage::new(NftMsg::NewChain, NFPROTO_INET, w)
}

/// `NEWSET` of the exposed set: a plain (hash) set, no flags, no timeout.
pub fn exposed_set_message(table: &str) -> NftMessage {
    let mut w = AttrWriter::new();
    w.string(NFTA_SET_TABLE, table)
        .string(NFTA_SET_NAME, EXPOSED_SET)
        .u32_be(NFTA_SET_FLAGS, 0)
        .u32_be(NFTA_SET_KEY_TYPE, EXPOSED_KEY_TYPE)
        .u32_be(NFTA_SET_KEY_LEN, EXPOSED_KEY_LEN as u32)
        .u32_be(NFTA_SET_ID, EXPOSED_SET_ID);
    NftMessage::new(NftMsg::NewSet, NFPROTO_INET, w)
}

/// `NEWSET` of the flows set: `type ipv4_addr; size SIZE; flags dynamic;`, filled by the
/// forward rule's `add @flows`.
pub fn flows_set_message(table: &str, size: u32) -> NftMessage {
    let mut w = AttrWriter::new();
    w.string(NFTA_SET_TABLE, table)
        .string(NFTA_SET_NAME, FLOWS_SET)
        .u32_be(NFTA_SET_FLAGS, NFT_SET_EVAL)
        .u32_be(NFTA_SET_KEY_TYPE, FLOWS_KEY_TYPE)
        .u32_be(NFTA_SET_KEY_LEN, FLOWS_KEY_LEN as u32)
        .u32_be(NFTA_SET_ID, FLOWS_SET_ID)
        .nested(NFTA_SET_DESC, |w| {
            w.u32_be(NFTA_SET_DESC_SIZE, size);
        });
    NftMessage::new(NftMsg::NewSet, NFPROTO_INET, w)
}

/// `NEWSET` of an empty set named after the ruleset's layout (see [`rules::layout_name`]):
/// that a table carries it says that its rules are the ones the config asks for.
pub fn layout_set_message(table: &str, name: &str) -> NftMessage {
    NftMessage::new(
        NftMsg::NewSet,
        NFPROTO_INET,
        set_ref(table, name, |w| {
            w.u32_be(NFTA_SET_FLAGS, 0)
                .u32_be(NFTA_SET_KEY_TYPE, FLOWS_KEY_TYPE)
                .u32_be(NFTA_SET_KEY_LEN, FLOWS_KEY_LEN as u32)
                .u32_be(NFTA_SET_ID, LAYOUT_SET_ID);
        }),
    )
}

/// `GETSET` of one set by name (`ENOENT` when the table or the set is not there).
pub fn get_set_message(table: &str, name: &str) -> NftMessage {
    NftMessage::new(NftMsg::GetSet, NFPROTO_INET, set_ref(table, name, |_| {}))
}

fn set_ref(table: &str, name: &str, rest: impl FnOnce(&mut AttrWriter)) -> AttrWriter {
    let mut w = AttrWriter::new();
    w.string(NFTA_SET_TABLE, table).string(NFTA_SET_NAME, name);
    rest(&mut w);
    w
}

/// `NEWRULE`, appended to its chain.
pub fn rule_message(table: &str, rule: &Rule) -> NftMessage {
    let mut w = AttrWriter::new();
    w.string(NFTA_RULE_TABLE, table)
        .string(NFTA_RULE_CHAIN, rule.chain)
        .nested(NFTA_RULE_EXPRESSIONS, |w| {
            for expr in &rule.exprs {
                expr.write(w);
            }
        });
    NftMessage::new(NftMsg::NewRule, NFPROTO_INET, w)
}

/// The set key of `ip . port`: the address, then the port in network order, padded to 4 bytes.
pub fn element_key(ip: Ipv4Addr, port: u16) -> [u8; EXPOSED_KEY_LEN] {
    let mut key = [0; EXPOSED_KEY_LEN];
    key[..4].copy_from_slice(&ip.octets());
    key[4..6].copy_from_slice(&port.to_be_bytes());
    key
}

/// The inverse of [`element_key`]; `None` for a key of another shape.
pub fn parse_element_key(key: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let key: &[u8; EXPOSED_KEY_LEN] = key.try_into().ok()?;
    let ip = Ipv4Addr::new(key[0], key[1], key[2], key[3]);
    Some((ip, u16::from_be_bytes([key[4], key[5]])))
}

/// How a set-element message names its set: by name only, or also by the id it has in the
/// current transaction (needed when the set is created in the same batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRef {
    Committed,
    InThisBatch,
}

/// `NEWSETELEM` / `DELSETELEM` messages for `elements` of the exposed set, as many as needed to
/// keep each one small. An empty list gives no message.
pub fn element_messages(
    kind: NftMsg,
    table: &str,
    set: SetRef,
    elements: &[(Ipv4Addr, u16)],
) -> Vec<NftMessage> {
    elements
        .chunks(ELEMENTS_PER_MESSAGE)
        .map(|chunk| {
            let mut w = set_elem_list_header(table, set);
            w.nested(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
                for &(ip, port) in chunk {
                    w.nested(NFTA_LIST_ELEM, |w| {
                        write_data_value(w, NFTA_SET_ELEM_KEY, &element_key(ip, port));
                    });
                }
            });
            NftMessage::new(kind, NFPROTO_INET, w)
        })
        .collect()
}

/// `GETSETELEM` of the exposed set (to be sent as a dump).
pub fn get_elements_message(table: &str) -> NftMessage {
    let w = set_elem_list_header(table, SetRef::Committed);
    NftMessage::new(NftMsg::GetSetElem, NFPROTO_INET, w)
}

fn set_elem_list_header(table: &str, set: SetRef) -> AttrWriter {
    let mut w = AttrWriter::new();
    w.string(NFTA_SET_ELEM_LIST_TABLE, table)
        .string(NFTA_SET_ELEM_LIST_SET, EXPOSED_SET);
    if set == SetRef::InThisBatch {
        w.u32_be(NFTA_SET_ELEM_LIST_SET_ID, EXPOSED_SET_ID);
    }
    w
}

/// The `ip . port` elements in one `NEWSETELEM` message of a dump.
pub fn parse_elements(message: &NftMessage) -> Result<Vec<(Ipv4Addr, u16)>, String> {
    let mut found = Vec::new();
    let Some(list) = message
        .attrs()
        .find(NFTA_SET_ELEM_LIST_ELEMENTS)
        .map_err(|e| e.to_string())?
    else {
        return Ok(found);
    };
    for element in Attrs::new(list) {
        let (_, element) = element.map_err(|e| e.to_string())?;
        let Some(key) = Attrs::new(element)
            .find(NFTA_SET_ELEM_KEY)
            .map_err(|e| e.to_string())?
        else {
            // A catch-all element (`*`, added by hand) has no key; dyno never adds one.
            continue;
        };
        let value = Attrs::new(key)
            .find(NFTA_DATA_VALUE)
            .map_err(|e| e.to_string())?
            .ok_or("set element key without a value")?;
        let parsed = parse_element_key(value)
            .ok_or_else(|| format!("set element key of {} bytes, expected 8", value.len()))?;
        found.push(parsed);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_key_is_address_then_padded_port() {
        let key = element_key(Ipv4Addr::new(10, 213, 0, 5), 5000);
        assert_eq!(key, [10, 213, 0, 5, 0x13, 0x88, 0, 0]);
        assert_eq!(
            parse_element_key(&key),
            Some((Ipv4Addr::new(10, 213, 0, 5), 5000))
        );
        assert_eq!(parse_element_key(&key[..6]), None);
    }

    #[test]
    fn element_message_parses_back() {
        let elements = [
            (Ipv4Addr::new(10, 213, 0, 5), 5000),
            (Ipv4Addr::new(10, 213, 1, 9), 80),
        ];
        let messages = element_messages(NftMsg::NewSetElem, "dyno", SetRef::Committed, &elements);
        assert_eq!(messages.len(), 1);
        assert_eq!(parse_elements(&messages[0]).unwrap(), elements);
    }

    #[test]
    fn many_elements_are_split_across_messages() {
        let elements: Vec<_> = (0..2500u16)
            .map(|i| (Ipv4Addr::new(10, 213, (i >> 8) as u8, i as u8), 5000))
            .collect();
        let messages = element_messages(NftMsg::NewSetElem, "dyno", SetRef::InThisBatch, &elements);
        assert_eq!(messages.len(), 3);
        let back: Vec<_> = messages
            .iter()
            .flat_map(|m| parse_elements(m).unwrap())
            .collect();
        assert_eq!(back, elements);
        assert!(element_messages(NftMsg::NewSetElem, "dyno", SetRef::Committed, &[]).is_empty());
    }
}
