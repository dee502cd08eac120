//! Peer identities: every address maps, by longest prefix, to one identity, and every
//! address of one identity matches exactly the same rule peers.
//!
//! The prefixes that matter are the workloads' addresses and every CIDR and `except` a
//! policy names. The addresses whose longest match is prefix P are matched by exactly the
//! CIDRs that contain P (more specific prefixes have their own entries), so an identity is
//! (the owning workload's labels, the set of named CIDRs containing P). Workloads with
//! the same labels in the same CIDRs share an identity, and so share policy entries.

use std::collections::BTreeMap;
use std::sync::Arc;

// Hashing addresses and signatures dominates the compile of large policies: FxHash is
// several times faster than SipHash, and these keys are not attacker-chosen at runtime.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::net::IpAddr;

use microseg_common::tables::{addr_words, Prefix};
use microseg_common::{IDENTITY_FIRST, IDENTITY_WORLD};

use crate::model::{IpNet, LabelSelector, Peer, ResourceSet};

/// A CIDR in the data plane's 128-bit space, with its family kept apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    pub v4: bool,
    pub prefix: Prefix,
}

impl Net {
    pub fn from_ipnet(n: &IpNet) -> Net {
        let v4 = n.addr.is_ipv4();
        let len = if v4 { 96 + n.prefix_len } else { n.prefix_len };
        Net {
            v4,
            prefix: Prefix {
                addr: mask(addr_words(n.addr), len),
                len,
            },
        }
    }

    pub fn host(ip: IpAddr) -> Net {
        let v4 = ip.is_ipv4();
        Net {
            v4,
            prefix: Prefix {
                addr: addr_words(ip),
                len: 128,
            },
        }
    }

    /// The same address cut to a shorter prefix (same family).
    fn truncate(&self, len: u8) -> Net {
        Net {
            v4: self.v4,
            prefix: Prefix {
                addr: mask(self.prefix.addr, len),
                len,
            },
        }
    }

    /// Shortest prefix length of this family (IPv4 lives under ::ffff:0:0/96).
    fn root_len(&self) -> u8 {
        if self.v4 {
            96
        } else {
            0
        }
    }
}

/// Clears every bit past `len` (addresses are network-order words).
pub fn mask(addr: [u32; 4], len: u8) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (i, w) in addr.iter().enumerate() {
        let bits = (len as i32 - 32 * i as i32).clamp(0, 32) as u32;
        let m: u32 = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        out[i] = (u32::from_be(*w) & m).to_be();
    }
    out
}

/// What an identity stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    pub labels: Option<BTreeMap<String, String>>,
    /// Named CIDRs (and excepts) containing the identity's addresses, sorted.
    pub cidrs: Vec<Net>,
}

/// Hands out identity numbers that stay the same while their signature exists.
#[derive(Clone, Default)]
pub struct IdentityAllocator {
    /// Shared with [`Identities::signatures`]: one copy of each (100,000 at 100,000 CIDRs).
    ids: HashMap<Arc<Signature>, u32>,
    free: Vec<u32>,
    next: u32,
}

impl IdentityAllocator {
    /// The identity of `sig`, and the allocator's copy of it (None for WORLD).
    fn get(&mut self, sig: Signature) -> (u32, Option<Arc<Signature>>) {
        if sig.labels.is_none() && sig.cidrs.is_empty() {
            return (IDENTITY_WORLD, None);
        }
        if let Some((kept, id)) = self.ids.get_key_value(&sig) {
            return (*id, Some(kept.clone()));
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next = self.next.max(IDENTITY_FIRST);
            self.next += 1;
            self.next - 1
        });
        let sig = Arc::new(sig);
        self.ids.insert(sig.clone(), id);
        (id, Some(sig))
    }

    /// Forgets signatures no longer in use, so their numbers can be reused.
    fn retain(&mut self, used: &HashSet<u32>) {
        let mut freed = Vec::new();
        self.ids.retain(|_, id| {
            let keep = used.contains(id);
            if !keep {
                freed.push(*id);
            }
            keep
        });
        self.free.extend(freed);
    }
}

/// The identities of one compile.
#[derive(Clone)]
pub struct Identities {
    /// Prefix → identity, for the LPM map.
    pub prefixes: BTreeMap<Prefix, u32>,
    /// Identity → what it stands for (WORLD excluded).
    pub signatures: BTreeMap<u32, Arc<Signature>>,
    /// Which identities each named CIDR contains.
    by_cidr: HashMap<Net, Vec<u32>>,
    selector_cache: HashMap<String, Vec<u32>>,
}

impl Identities {
    pub fn build(set: &ResourceSet, alloc: &mut IdentityAllocator) -> Identities {
        // Sized from the peers named (an upper bound): 100,000 CIDRs would regrow it
        // seventeen times.
        let named: usize = set
            .policies
            .iter()
            .flat_map(|p| p.ingress.iter().chain(p.egress.iter()).flatten())
            .map(|rule| rule.peers.len())
            .sum();
        let mut cidrs: HashSet<Net> = HashSet::with_capacity_and_hasher(named, Default::default());
        for p in &set.policies {
            for rule in p.ingress.iter().chain(p.egress.iter()).flatten() {
                for peer in &rule.peers {
                    if let Peer::Cidr { cidr, except } = peer {
                        cidrs.insert(Net::from_ipnet(cidr));
                        cidrs.extend(except.iter().map(Net::from_ipnet));
                    }
                }
            }
        }
        let mut owners: HashMap<Net, &BTreeMap<String, String>> = HashMap::default();
        for w in &set.workloads {
            for ip in &w.ips {
                owners.insert(Net::host(*ip), &w.labels);
            }
        }
        // IPv4's root keeps IPv4 addresses from matching an IPv6 ::/0.
        let v4_root = Net::from_ipnet(&IpNet::new(IpAddr::from([0, 0, 0, 0]), 0).expect("0/0"));
        let mut all: Vec<Net> = cidrs.iter().chain(owners.keys()).copied().collect();
        all.push(v4_root);
        all.sort_unstable();
        all.dedup();

        let mut out = Identities {
            prefixes: BTreeMap::new(),
            signatures: BTreeMap::new(),
            by_cidr: HashMap::with_capacity_and_hasher(cidrs.len(), Default::default()),
            selector_cache: HashMap::default(),
        };
        alloc.ids.reserve(all.len().saturating_sub(alloc.ids.len()));
        // Only the prefix lengths some CIDR has can contain anything: usually a handful.
        let mut lengths: Vec<(bool, u8)> = cidrs.iter().map(|c| (c.v4, c.prefix.len)).collect();
        lengths.sort_unstable();
        lengths.dedup();
        // Gathered in vectors and built into the maps at once: much faster than inserting
        // 100,000 entries one by one.
        let mut prefixes = Vec::with_capacity(all.len());
        let mut signatures = Vec::with_capacity(all.len());
        let mut seen: HashSet<u32> =
            HashSet::with_capacity_and_hasher(all.len(), Default::default());
        for net in all {
            let mut containing: Vec<Net> = lengths
                .iter()
                .filter(|(v4, len)| *v4 == net.v4 && *len <= net.prefix.len)
                .map(|(_, len)| net.truncate(*len))
                .filter(|n| cidrs.contains(n))
                .collect();
            containing.sort();
            let sig = Signature {
                labels: owners.get(&net).map(|l| (*l).clone()),
                cidrs: containing,
            };
            let (id, kept) = alloc.get(sig);
            prefixes.push((net.prefix, id));
            if let Some(sig) = kept.filter(|_| seen.insert(id)) {
                for c in &sig.cidrs {
                    out.by_cidr.entry(*c).or_default().push(id);
                }
                signatures.push((id, sig));
            }
        }
        out.prefixes = prefixes.into_iter().collect();
        out.signatures = signatures.into_iter().collect();
        alloc.retain(&seen);
        out
    }

    /// The identity an address resolves to (as the kernel's LPM lookup would).
    pub fn of(&self, ip: IpAddr) -> u32 {
        let host = Net::host(ip);
        (host.root_len()..=128)
            .rev()
            .find_map(|l| self.prefixes.get(&host.truncate(l).prefix))
            .copied()
            .unwrap_or(IDENTITY_WORLD)
    }

    /// Identities a rule peer matches.
    pub fn matching(&mut self, peer: &Peer) -> Vec<u32> {
        match peer {
            Peer::Cidr { cidr, except } => {
                let excepts: Vec<Net> = except.iter().map(Net::from_ipnet).collect();
                let Some(ids) = self.by_cidr.get(&Net::from_ipnet(cidr)) else {
                    return Vec::new();
                };
                if excepts.is_empty() {
                    return ids.clone();
                }
                ids.iter()
                    .copied()
                    .filter(|id| {
                        let sig = &self.signatures[id];
                        !excepts.iter().any(|e| sig.cidrs.binary_search(e).is_ok())
                    })
                    .collect()
            }
            Peer::Selector(sel) => self.matching_selector(sel),
        }
    }

    fn matching_selector(&mut self, sel: &LabelSelector) -> Vec<u32> {
        let key = format!("{sel:?}");
        if let Some(ids) = self.selector_cache.get(&key) {
            return ids.clone();
        }
        let ids: Vec<u32> = self
            .signatures
            .iter()
            .filter(|(_, s)| s.labels.as_ref().is_some_and(|l| sel.matches(l)))
            .map(|(id, _)| *id)
            .collect();
        self.selector_cache.insert(key, ids.clone());
        ids
    }
}
