//! Atomic policy updates.
//!
//! Policy maps hold two slots; packets read the one `Config::active_slot` names. An update
//! writes the standby slot, then flips the slot word (one word: every packet sees the old
//! state or the new, never a mix) and raises the generation so sessions are judged again.
//! The slot that went standby keeps the previous state and is brought up to date by the
//! next update, as part of its own write: each update writes one slot, with the difference
//! between what that slot holds (two states back) and the new state.

use std::{collections::HashMap as StdHashMap, hash::Hash};

use aya::maps::lpm_trie::Key as LpmKey;
use microseg_common::{names, tables::*, *};

use crate::{Dataplane, Error, Result};

/// What an update wrote (per slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub written: usize,
    pub removed: usize,
    pub generation: u32,
}

/// Entries to write and keys to remove to turn one map's content into another's.
struct Delta<K, V> {
    upsert: Vec<(K, V)>,
    remove: Vec<K>,
}

fn delta<K: Copy + Eq + Hash, V: Copy + PartialEq>(
    old: Option<&StdHashMap<K, V>>,
    new: &StdHashMap<K, V>,
) -> Delta<K, V> {
    let empty = StdHashMap::new();
    let old = old.unwrap_or(&empty);
    Delta {
        upsert: new
            .iter()
            .filter(|(k, v)| old.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect(),
        remove: old
            .keys()
            .filter(|k| !new.contains_key(k))
            .copied()
            .collect(),
    }
}

/// Every table flattened to per-map key/value collections.
struct Flat {
    endpoints: StdHashMap<u32, EndpointInfo>,
    addrs: StdHashMap<(u32, [u32; 4]), u32>,
    identities: StdHashMap<Prefix, u32>,
}

fn flat(t: &Tables) -> Flat {
    Flat {
        endpoints: t.endpoints.iter().map(|(k, v)| (*k, *v)).collect(),
        addrs: t.endpoint_addrs.iter().map(|k| (*k, 1)).collect(),
        identities: t.identities.iter().map(|(k, v)| (*k, *v)).collect(),
    }
}

fn with_slot(flags: u8, slot: u8) -> u8 {
    (flags & !1) | (slot & 1)
}

fn lpm_key(slot: u32, p: &Prefix) -> LpmKey<IpKey> {
    LpmKey::new(32 + p.len as u32, IpKey { slot, addr: p.addr })
}

impl Dataplane {
    /// Makes `new` the policy state, atomically.
    pub fn apply(&mut self, new: &Tables) -> Result<ApplyReport> {
        let mut cfg = self.config()?;
        if self.current.as_ref() == Some(new) {
            // Nothing changed: keep the generation, so no session is judged again.
            return Ok(ApplyReport {
                generation: cfg.generation,
                ..Default::default()
            });
        }
        let standby = 1 - (cfg.active_slot & 1) as u8;
        // Taken first: if the write fails half way, the standby content is unknown.
        let behind = self.standby.take();
        let mut report = self.write_slot(standby, behind.as_ref(), new)?;
        cfg.active_slot = standby as u32;
        cfg.generation = cfg.generation.wrapping_add(1);
        self.config
            .set(0, cfg, 0)
            .map_err(Error::map(names::CONFIG))?;
        self.standby = self.current.replace(new.clone());
        report.generation = cfg.generation;
        Ok(report)
    }

    /// The state packets see, if an update has been applied by this process.
    pub fn current(&self) -> Option<&Tables> {
        self.current.as_ref()
    }

    /// Brings one slot from `old` to `new`; with no `old` (first update, or adopted pins
    /// of unknown content) the slot is emptied and written whole.
    fn write_slot(&mut self, slot: u8, old: Option<&Tables>, new: &Tables) -> Result<ApplyReport> {
        if old.is_none() {
            self.clear_slot(slot)?;
        }
        let s32 = slot as u32;
        let mut report = ApplyReport::default();
        let (old_flat, new_flat) = (old.map(flat), flat(new));

        let d = delta(old.map(|o| &o.policy), &new.policy);
        for k in &d.remove {
            let key = PolicyKey {
                flags: with_slot(k.flags, slot),
                ..*k
            };
            self.policy
                .remove(&key)
                .map_err(Error::map(names::POLICY))?;
        }
        for (k, v) in &d.upsert {
            let key = PolicyKey {
                flags: with_slot(k.flags, slot),
                ..*k
            };
            self.policy
                .insert(key, v, 0)
                .map_err(Error::map(names::POLICY))?;
        }
        report.written += d.upsert.len();
        report.removed += d.remove.len();

        let d = delta(old.map(|o| &o.port_ranges), &new.port_ranges);
        for k in &d.remove {
            let key = PolicyKey {
                flags: with_slot(k.flags, slot),
                ..*k
            };
            self.port_ranges
                .remove(&key)
                .map_err(Error::map(names::PORT_RANGES))?;
        }
        for (k, v) in &d.upsert {
            let key = PolicyKey {
                flags: with_slot(k.flags, slot),
                ..*k
            };
            self.port_ranges
                .insert(key, v, 0)
                .map_err(Error::map(names::PORT_RANGES))?;
        }
        report.written += d.upsert.len();
        report.removed += d.remove.len();

        let d = delta(old.map(|o| &o.source_ports), &new.source_ports);
        for k in &d.remove {
            let key = PolicyKey {
                flags: with_slot(k.flags, slot),
                ..*k
            };
            self.source_ports
                .remove(&key)
                .map_err(Error::map(names::SOURCE_PORT_RULES))?;
        }
        for (k, v) in &d.upsert {
            let key = PolicyKey {
                flags: with_slot(k.flags, slot),
                ..*k
            };
            self.source_ports
                .insert(key, v, 0)
                .map_err(Error::map(names::SOURCE_PORT_RULES))?;
        }
        report.written += d.upsert.len();
        report.removed += d.remove.len();

        let d = delta(
            old_flat.as_ref().map(|o| &o.identities),
            &new_flat.identities,
        );
        for p in &d.remove {
            self.remove_identity(s32, p)?;
        }
        for (p, id) in &d.upsert {
            self.insert_identity(s32, p, *id)?;
        }
        report.written += d.upsert.len();
        report.removed += d.remove.len();

        let d = delta(old_flat.as_ref().map(|o| &o.addrs), &new_flat.addrs);
        for (ifindex, addr) in &d.remove {
            let key = EndpointAddrKey {
                slot: s32,
                ifindex: *ifindex,
                addr: *addr,
            };
            self.endpoint_addrs
                .remove(&key)
                .map_err(Error::map(names::ENDPOINT_ADDRS))?;
        }
        for ((ifindex, addr), v) in &d.upsert {
            let key = EndpointAddrKey {
                slot: s32,
                ifindex: *ifindex,
                addr: *addr,
            };
            self.endpoint_addrs
                .insert(key, v, 0)
                .map_err(Error::map(names::ENDPOINT_ADDRS))?;
        }
        report.written += d.upsert.len();
        report.removed += d.remove.len();

        // Endpoints last: an endpoint's entries exist before packets can find it.
        let d = delta(old_flat.as_ref().map(|o| &o.endpoints), &new_flat.endpoints);
        for ifindex in &d.remove {
            let key = EndpointKey {
                slot: s32,
                ifindex: *ifindex,
            };
            self.endpoints
                .remove(&key)
                .map_err(Error::map(names::ENDPOINTS))?;
        }
        for (ifindex, info) in &d.upsert {
            let key = EndpointKey {
                slot: s32,
                ifindex: *ifindex,
            };
            self.endpoints
                .insert(key, info, 0)
                .map_err(Error::map(names::ENDPOINTS))?;
        }
        report.written += d.upsert.len();
        report.removed += d.remove.len();
        Ok(report)
    }

    /// Single addresses go to the exact-match map, shorter prefixes to the trie.
    fn insert_identity(&mut self, slot: u32, p: &Prefix, identity: u32) -> Result<()> {
        let v = IdentityEntry { identity, _pad: 0 };
        if p.len == 128 {
            let key = IpKey { slot, addr: p.addr };
            self.host_identities
                .insert(key, v, 0)
                .map_err(Error::map(names::HOST_IDENTITIES))
        } else {
            self.identities
                .insert(&lpm_key(slot, p), v, 0)
                .map_err(Error::map(names::IDENTITIES))
        }
    }

    fn remove_identity(&mut self, slot: u32, p: &Prefix) -> Result<()> {
        if p.len == 128 {
            let key = IpKey { slot, addr: p.addr };
            self.host_identities
                .remove(&key)
                .map_err(Error::map(names::HOST_IDENTITIES))
        } else {
            self.identities
                .remove(&lpm_key(slot, p))
                .map_err(Error::map(names::IDENTITIES))
        }
    }

    /// Removes every entry of one slot.
    fn clear_slot(&mut self, slot: u8) -> Result<()> {
        let s32 = slot as u32;
        let keys: Vec<_> = self
            .policy
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.flags & 1 == slot)
            .collect();
        for k in keys {
            let _ = self.policy.remove(&k);
        }
        let keys: Vec<_> = self
            .port_ranges
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.flags & 1 == slot)
            .collect();
        for k in keys {
            let _ = self.port_ranges.remove(&k);
        }
        let keys: Vec<_> = self
            .source_ports
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.flags & 1 == slot)
            .collect();
        for k in keys {
            let _ = self.source_ports.remove(&k);
        }
        let keys: Vec<_> = self
            .identities
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.data().slot == s32)
            .collect();
        for k in keys {
            let _ = self.identities.remove(&k);
        }
        let keys: Vec<_> = self
            .host_identities
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.slot == s32)
            .collect();
        for k in keys {
            let _ = self.host_identities.remove(&k);
        }
        let keys: Vec<_> = self
            .endpoint_addrs
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.slot == s32)
            .collect();
        for k in keys {
            let _ = self.endpoint_addrs.remove(&k);
        }
        let keys: Vec<_> = self
            .endpoints
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.slot == s32)
            .collect();
        for k in keys {
            let _ = self.endpoints.remove(&k);
        }
        Ok(())
    }
}
