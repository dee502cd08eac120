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

/// The difference between two [`Tables`], per map: a key with `Some` gets that value, a key
/// with `None` goes (for `endpoint_addrs`, `true` adds the pair and `false` removes it).
///
/// The compiler reports each update as changes, so that a one-rule edit costs the data plane
/// a few map writes however large the rest of the policy is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableChanges {
    pub endpoints: HashMap<u32, Option<EndpointInfo>>,
    pub endpoint_addrs: HashMap<(u32, [u32; 4]), bool>,
    pub identities: HashMap<Prefix, Option<u32>>,
    pub policy: HashMap<PolicyKey, Option<PolicyEntry>>,
    pub port_ranges: HashMap<PolicyKey, Option<PortRangeTable>>,
    pub source_ports: HashMap<PolicyKey, Option<SourcePortTable>>,
}

/// What [`TableChanges`] needs of a map, for the hash and the ordered maps of [`Tables`].
trait Map<K, V> {
    fn get_value(&self, k: &K) -> Option<&V>;
    fn set(&mut self, k: K, v: Option<V>);
    fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a;
}

macro_rules! impl_map {
    ($map:ident, $($bound:tt)+) => {
        impl<K: $($bound)+, V> Map<K, V> for $map<K, V> {
            fn get_value(&self, k: &K) -> Option<&V> {
                self.get(k)
            }
            fn set(&mut self, k: K, v: Option<V>) {
                match v {
                    Some(v) => self.insert(k, v),
                    None => self.remove(&k),
                };
            }
            fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
            where
                K: 'a,
                V: 'a,
            {
                self.iter()
            }
        }
    };
}
impl_map!(HashMap, Eq + core::hash::Hash);
impl_map!(BTreeMap, Ord);

/// Records in `out` what turns `old` into `new`.
fn diff_into<K: Copy + Eq + core::hash::Hash, V: Copy + PartialEq>(
    old: &impl Map<K, V>,
    new: &impl Map<K, V>,
    out: &mut HashMap<K, Option<V>>,
) {
    for (k, _) in old.entries() {
        if new.get_value(k).is_none() {
            out.insert(*k, None);
        }
    }
    for (k, v) in new.entries() {
        if old.get_value(k) != Some(v) {
            out.insert(*k, Some(*v));
        }
    }
}

fn apply_map<K: Copy, V: Copy>(map: &mut impl Map<K, V>, changes: &HashMap<K, Option<V>>) {
    for (k, v) in changes {
        map.set(*k, *v);
    }
}

impl TableChanges {
    /// What turns `old` into `new`.
    pub fn between(old: &Tables, new: &Tables) -> TableChanges {
        let mut c = TableChanges::default();
        diff_into(&old.endpoints, &new.endpoints, &mut c.endpoints);
        for k in old.endpoint_addrs.difference(&new.endpoint_addrs) {
            c.endpoint_addrs.insert(*k, false);
        }
        for k in new.endpoint_addrs.difference(&old.endpoint_addrs) {
            c.endpoint_addrs.insert(*k, true);
        }
        diff_into(&old.identities, &new.identities, &mut c.identities);
        diff_into(&old.policy, &new.policy, &mut c.policy);
        diff_into(&old.port_ranges, &new.port_ranges, &mut c.port_ranges);
        diff_into(&old.source_ports, &new.source_ports, &mut c.source_ports);
        c
    }

    /// Keys written or removed, over all maps.
    pub fn len(&self) -> usize {
        self.endpoints.len()
            + self.endpoint_addrs.len()
            + self.identities.len()
            + self.policy.len()
            + self.port_ranges.len()
            + self.source_ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// These changes followed by `later`: later values win.
    pub fn then(&mut self, later: &TableChanges) {
        self.endpoints
            .extend(later.endpoints.iter().map(|(k, v)| (*k, *v)));
        self.endpoint_addrs
            .extend(later.endpoint_addrs.iter().map(|(k, v)| (*k, *v)));
        self.identities
            .extend(later.identities.iter().map(|(k, v)| (*k, *v)));
        self.policy
            .extend(later.policy.iter().map(|(k, v)| (*k, *v)));
        self.port_ranges
            .extend(later.port_ranges.iter().map(|(k, v)| (*k, *v)));
        self.source_ports
            .extend(later.source_ports.iter().map(|(k, v)| (*k, *v)));
    }
}

impl Tables {
    /// Brings these tables up to date with `changes`.
    pub fn apply(&mut self, changes: &TableChanges) {
        apply_map(&mut self.endpoints, &changes.endpoints);
        for (k, add) in &changes.endpoint_addrs {
            if *add {
                self.endpoint_addrs.insert(*k);
            } else {
                self.endpoint_addrs.remove(k);
            }
        }
        apply_map(&mut self.identities, &changes.identities);
        apply_map(&mut self.policy, &changes.policy);
        apply_map(&mut self.port_ranges, &changes.port_ranges);
        apply_map(&mut self.source_ports, &changes.source_ports);
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
