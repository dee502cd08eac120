//! Atomic policy updates.
//!
//! Policy maps hold two slots; packets read the one `Config::active_slot` names. An update
//! writes the standby slot, then flips the slot word (one word: every packet sees the old
//! state or the new, never a mix) and raises the generation so sessions are judged again.
//! The slot that went standby keeps the previous state and is brought up to date by the
//! next update, as part of its own write: each update writes one slot, with the changes
//! that slot lacks (the previous update's, then its own). An update costs what it changes,
//! not the size of the policy.

use aya::maps::{lpm_trie::Key as LpmKey, HashMap, LpmTrie, MapData, MapError};
use microseg_common::{names, tables::*, *};

use crate::write::write_hash;
use crate::{Dataplane, Error, Result};

/// What an update wrote (per slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub written: usize,
    pub removed: usize,
    pub generation: u32,
}

fn with_slot(flags: u8, slot: u8) -> u8 {
    (flags & !1) | (slot & 1)
}

/// The slot packets do not read.
fn standby_slot(cfg: &Config) -> u8 {
    1 - (cfg.active_slot & 1) as u8
}

fn lpm_key(slot: u32, p: &Prefix) -> LpmKey<IpKey> {
    LpmKey::new(32 + p.len as u32, IpKey { slot, addr: p.addr })
}

/// Removing a key the slot does not hold is not an error: composed changes may remove a
/// key that a skipped state had added.
fn removed(r: std::result::Result<(), MapError>) -> std::result::Result<(), MapError> {
    match r {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

impl Dataplane {
    /// Makes `new` the policy state, atomically. The difference from the current state is
    /// computed here; a caller that knows it already uses [`Dataplane::apply_changes`].
    pub fn apply(&mut self, new: &Tables) -> Result<ApplyReport> {
        match &self.current {
            Some(cur) => {
                let changes = TableChanges::between(cur, new);
                self.apply_owned_changes(changes)
            }
            None => {
                // What the other slot holds is unknown (fresh maps, or adopted pins).
                let report = self.flip(|dp, slot| dp.write_whole(slot, new))?;
                self.current = Some(new.clone());
                Ok(report)
            }
        }
    }

    /// Applies `changes` to the current state (the last one applied by this process),
    /// atomically; only the changed keys are written. Without a current state this is an
    /// error: use [`Dataplane::apply`] first.
    pub fn apply_changes(&mut self, changes: &TableChanges) -> Result<ApplyReport> {
        if changes.is_empty() {
            return self.apply_owned_changes(TableChanges::default());
        }
        self.apply_owned_changes(changes.clone())
    }

    /// [`Dataplane::apply_changes`] for a caller that no longer needs `changes`: they are
    /// kept (for the standby slot's catch-up) instead of copied, which at 100,000 rules
    /// is 200,000 entries.
    pub fn apply_owned_changes(&mut self, changes: TableChanges) -> Result<ApplyReport> {
        let Some(current) = &self.current else {
            return Err(Error::NoState);
        };
        if changes.is_empty() {
            // Nothing changed: keep the generation, so no session is judged again.
            return Ok(ApplyReport {
                generation: self.config()?.generation,
                ..Default::default()
            });
        }
        let report = match self.behind.take() {
            // The standby slot holds the current state: it lacks only these changes.
            Some(pending) if pending.is_empty() => {
                let report = self.flip(|dp, slot| dp.write_slot(slot, &changes))?;
                self.current_apply(&changes);
                report
            }
            Some(mut pending) => {
                pending.then(&changes);
                let report = self.flip(|dp, slot| dp.write_slot(slot, &pending))?;
                self.current_apply(&changes);
                report
            }
            None => {
                // The standby slot's content is unknown: it is written whole.
                let mut next = current.clone();
                next.apply(&changes);
                let report = self.flip(|dp, slot| dp.write_whole(slot, &next))?;
                self.current = Some(next);
                report
            }
        };
        // The slot that went standby holds the state before these changes.
        self.behind = Some(changes);
        Ok(report)
    }

    fn current_apply(&mut self, changes: &TableChanges) {
        if let Some(cur) = self.current.as_mut() {
            cur.apply(changes);
        }
    }

    /// Writes the standby slot with `write`, then flips to it and raises the generation.
    fn flip(
        &mut self,
        write: impl FnOnce(&mut Self, u8) -> Result<ApplyReport>,
    ) -> Result<ApplyReport> {
        let mut cfg = self.config()?;
        let standby = standby_slot(&cfg);
        // If the write fails half way the standby content is unknown: `behind` stays None.
        self.behind = None;
        let mut report = write(self, standby)?;
        cfg.active_slot = standby as u32;
        cfg.generation = cfg.generation.wrapping_add(1);
        self.config
            .set(0, cfg, 0)
            .map_err(Error::map_write(names::CONFIG))?;
        report.generation = cfg.generation;
        Ok(report)
    }

    /// Empties one slot and writes all of `t` into it.
    fn write_whole(&mut self, slot: u8, t: &Tables) -> Result<ApplyReport> {
        self.clear_slot(slot)?;
        self.write(slot, Writes::whole(t))
    }

    /// Whether the standby slot lags the current state: its content is unknown, or the
    /// last update's changes are not in it yet (see [`Dataplane::catch_up_standby`]).
    pub fn standby_behind(&self) -> bool {
        self.current.is_some() && self.behind.as_ref().is_none_or(|b| !b.is_empty())
    }

    /// Brings the standby slot, which packets do not read, up to the current state, so
    /// that the next update writes only its own changes rather than also the previous
    /// update's (or, when the slot's content is unknown, everything). Worth calling when
    /// idle after an update. Returns the keys written.
    pub fn catch_up_standby(&mut self) -> Result<usize> {
        if self.current.is_none() {
            return Ok(0);
        }
        let standby = standby_slot(&self.config()?);
        // Unknown content until the write completes.
        let report = match self.behind.take() {
            Some(pending) => self.write_slot(standby, &pending)?,
            None => {
                // Taken out for the write, so that it need not be copied.
                let cur = self.current.take().expect("checked");
                let written = self.write_whole(standby, &cur);
                self.current = Some(cur);
                written?
            }
        };
        self.behind = Some(TableChanges::default());
        Ok(report.written + report.removed)
    }

    /// The state packets see, if an update has been applied by this process.
    pub fn current(&self) -> Option<&Tables> {
        self.current.as_ref()
    }

    /// Writes `changes` into one slot.
    fn write_slot(&mut self, slot: u8, changes: &TableChanges) -> Result<ApplyReport> {
        self.write(slot, Writes::changes(changes))
    }

    /// Writes one slot, the policy maps and the identity maps from two threads (an update
    /// of 100,000 rules is 200,000 map writes, each a system call), endpoints last.
    fn write(&mut self, slot: u8, w: Writes<'_>) -> Result<ApplyReport> {
        let s32 = slot as u32;
        let Dataplane {
            policy,
            port_ranges,
            source_ports,
            identities,
            host_identities,
            endpoint_addrs,
            endpoints,
            ..
        } = self;
        let slotted = move |k: PolicyKey| PolicyKey {
            flags: with_slot(k.flags, slot),
            ..k
        };
        let Writes {
            policy: w_policy,
            port_ranges: w_ranges,
            source_ports: w_sports,
            identities: w_ids,
            endpoint_addrs: w_addrs,
            endpoints: w_endpoints,
        } = w;
        let policy_side = move || -> Result<ApplyReport> {
            let mut r = ApplyReport::default();
            let each = w_policy.map(|(k, v)| (slotted(k), v));
            write_hash(policy, names::POLICY, each, &mut r)?;
            let each = w_ranges.map(|(k, v)| (slotted(k), v));
            write_hash(port_ranges, names::PORT_RANGES, each, &mut r)?;
            let each = w_sports.map(|(k, v)| (slotted(k), v));
            write_hash(source_ports, names::SOURCE_PORT_RULES, each, &mut r)?;
            Ok(r)
        };
        let identity_side = move || -> Result<ApplyReport> {
            let mut r = ApplyReport::default();
            // Single addresses go to the exact-match map (in batches), shorter prefixes to
            // the trie (one key per call: the trie has no batch update).
            let mut hosts = Vec::new();
            for (p, v) in w_ids {
                if p.len == 128 {
                    let value = v.map(|identity| IdentityEntry { identity, _pad: 0 });
                    hosts.push((
                        IpKey {
                            slot: s32,
                            addr: p.addr,
                        },
                        value,
                    ));
                    continue;
                }
                match v {
                    Some(id) => insert_identity(identities, host_identities, s32, &p, id)?,
                    None => remove_identity(identities, host_identities, s32, &p)?,
                }
                r.count(v.is_some());
            }
            write_hash(
                host_identities,
                names::HOST_IDENTITIES,
                hosts.into_iter(),
                &mut r,
            )?;
            let each = w_addrs.map(|((ifindex, addr), add)| {
                let key = EndpointAddrKey {
                    slot: s32,
                    ifindex,
                    addr,
                };
                (key, add.then_some(1))
            });
            write_hash(endpoint_addrs, names::ENDPOINT_ADDRS, each, &mut r)?;
            Ok(r)
        };
        let (a, b) = std::thread::scope(|scope| {
            let ids = scope.spawn(identity_side);
            let a = policy_side();
            (a, ids.join().expect("identity writer panicked"))
        });
        let (a, b) = (a?, b?);
        let mut report = ApplyReport {
            written: a.written + b.written,
            removed: a.removed + b.removed,
            generation: 0,
        };
        // Endpoints last: an endpoint's entries exist before packets can find it.
        let each = w_endpoints.map(|(ifindex, info)| (EndpointKey { slot: s32, ifindex }, info));
        write_hash(endpoints, names::ENDPOINTS, each, &mut report)?;
        Ok(report)
    }

    /// Removes every entry of one slot.
    fn clear_slot(&mut self, slot: u8) -> Result<()> {
        let s32 = slot as u32;
        clear(&mut self.policy, |k| k.flags & 1 == slot);
        clear(&mut self.port_ranges, |k| k.flags & 1 == slot);
        clear(&mut self.source_ports, |k| k.flags & 1 == slot);
        clear(&mut self.host_identities, |k| k.slot == s32);
        clear(&mut self.endpoint_addrs, |k| k.slot == s32);
        clear(&mut self.endpoints, |k| k.slot == s32);
        let keys: Vec<_> = self
            .identities
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.data().slot == s32)
            .collect();
        for k in keys {
            let _ = self.identities.remove(&k);
        }
        Ok(())
    }
}

/// Removes every key of `map` that `in_slot` picks.
fn clear<K: aya::Pod, V: aya::Pod>(map: &mut HashMap<MapData, K, V>, in_slot: impl Fn(&K) -> bool) {
    let keys: Vec<K> = map
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| in_slot(k))
        .collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// Single addresses go to the exact-match map, shorter prefixes to the trie.
fn insert_identity(
    trie: &mut LpmTrie<MapData, IpKey, IdentityEntry>,
    hosts: &mut HashMap<MapData, IpKey, IdentityEntry>,
    slot: u32,
    p: &Prefix,
    identity: u32,
) -> Result<()> {
    let v = IdentityEntry { identity, _pad: 0 };
    if p.len == 128 {
        let key = IpKey { slot, addr: p.addr };
        hosts
            .insert(key, v, 0)
            .map_err(Error::map_write(names::HOST_IDENTITIES))
    } else {
        trie.insert(&lpm_key(slot, p), v, 0)
            .map_err(Error::map_write(names::IDENTITIES))
    }
}

fn remove_identity(
    trie: &mut LpmTrie<MapData, IpKey, IdentityEntry>,
    hosts: &mut HashMap<MapData, IpKey, IdentityEntry>,
    slot: u32,
    p: &Prefix,
) -> Result<()> {
    if p.len == 128 {
        let key = IpKey { slot, addr: p.addr };
        removed(hosts.remove(&key)).map_err(Error::map_write(names::HOST_IDENTITIES))
    } else {
        removed(trie.remove(&lpm_key(slot, p))).map_err(Error::map_write(names::IDENTITIES))
    }
}

impl ApplyReport {
    fn count(&mut self, written: bool) {
        if written {
            self.written += 1;
        } else {
            self.removed += 1;
        }
    }
}

type Each<'a, T> = Box<dyn Iterator<Item = T> + Send + 'a>;

/// What one slot write does to each map: a key and its new value, or None to remove it.
struct Writes<'a> {
    policy: Each<'a, (PolicyKey, Option<PolicyEntry>)>,
    port_ranges: Each<'a, (PolicyKey, Option<PortRangeTable>)>,
    source_ports: Each<'a, (PolicyKey, Option<SourcePortTable>)>,
    identities: Each<'a, (Prefix, Option<u32>)>,
    endpoint_addrs: Each<'a, ((u32, [u32; 4]), bool)>,
    endpoints: Each<'a, (u32, Option<EndpointInfo>)>,
}

impl<'a> Writes<'a> {
    fn changes(c: &'a TableChanges) -> Writes<'a> {
        Writes {
            policy: Box::new(c.policy.iter().map(|(k, v)| (*k, *v))),
            port_ranges: Box::new(c.port_ranges.iter().map(|(k, v)| (*k, *v))),
            source_ports: Box::new(c.source_ports.iter().map(|(k, v)| (*k, *v))),
            identities: Box::new(c.identities.iter().map(|(k, v)| (*k, *v))),
            endpoint_addrs: Box::new(c.endpoint_addrs.iter().map(|(k, v)| (*k, *v))),
            endpoints: Box::new(c.endpoints.iter().map(|(k, v)| (*k, *v))),
        }
    }

    /// Every entry of `t` (into an emptied slot).
    fn whole(t: &'a Tables) -> Writes<'a> {
        Writes {
            policy: Box::new(t.policy.iter().map(|(k, v)| (*k, Some(*v)))),
            port_ranges: Box::new(t.port_ranges.iter().map(|(k, v)| (*k, Some(*v)))),
            source_ports: Box::new(t.source_ports.iter().map(|(k, v)| (*k, Some(*v)))),
            identities: Box::new(t.identities.iter().map(|(k, v)| (*k, Some(*v)))),
            endpoint_addrs: Box::new(t.endpoint_addrs.iter().map(|k| (*k, true))),
            endpoints: Box::new(t.endpoints.iter().map(|(k, v)| (*k, Some(*v)))),
        }
    }
}
