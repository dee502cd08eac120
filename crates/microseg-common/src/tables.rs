//! The data plane's desired policy state, as plain collections.
//!
//! The policy compiler produces a [`Tables`]; the data plane writes it into the inactive
//! slot of its maps and flips the slot. Keys here carry slot 0: the loader sets the slot.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::maps::*;

/// An address prefix in the 128-bit IPv4-mapped space, in network byte order words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: [u32; 4],
    /// 0..=128; an IPv4 /n is 96 + n.
    pub len: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// ifindex → endpoint.
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    /// (ifindex, address) pairs a workload may send from.
    pub endpoint_addrs: BTreeSet<(u32, [u32; 4])>,
    pub identities: BTreeMap<Prefix, u32>,
    pub policy: HashMap<PolicyKey, PolicyEntry>,
    pub port_ranges: HashMap<PolicyKey, PortRangeTable>,
    pub source_ports: HashMap<PolicyKey, SourcePortTable>,
}

impl Tables {
    /// Entries per map, so a user can see what a policy costs.
    pub fn sizes(&self) -> TableSizes {
        TableSizes {
            endpoints: self.endpoints.len(),
            endpoint_addrs: self.endpoint_addrs.len(),
            identities: self.identities.len(),
            policy: self.policy.len(),
            port_ranges: self.port_ranges.len(),
            source_ports: self.source_ports.len(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    pub endpoints: usize,
    pub endpoint_addrs: usize,
    pub identities: usize,
    pub policy: usize,
    pub port_ranges: usize,
    pub source_ports: usize,
}

/// Converts an IP address to the data plane's 128-bit form (IPv4-mapped for IPv4).
pub fn addr_words(ip: std::net::IpAddr) -> [u32; 4] {
    let v6 = match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    let b = v6.octets();
    core::array::from_fn(|i| {
        u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    })
}

/// The inverse of [`addr_words`]: IPv4-mapped addresses come back as IPv4.
pub fn words_addr(w: [u32; 4]) -> std::net::IpAddr {
    let mut b = [0u8; 16];
    for i in 0..4 {
        b[4 * i..4 * i + 4].copy_from_slice(&w[i].to_ne_bytes());
    }
    let v6 = std::net::Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(v6),
    }
}
