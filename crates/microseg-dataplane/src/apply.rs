//! Atomic policy updates.
//!
//! Policy maps hold two slots; packets read the one `Config::active_slot` names. An update
//! writes the standby slot, then flips the slot word (one word: every packet sees the old
//! state or the new, never a mix) and raises the generation so sessions are judged again.
//! The slot that went standby keeps the previous state and is brought up to date by the
//! next update, as part of its own write: each update writes one slot, with the changes
//! that slot lacks (the previous update's, then its own). An update costs what it changes,
//! not the size of the policy.

use aya::maps::{lpm_trie::Key as LpmKey, MapError};
use microseg_common::{names, tables::*, *};

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
                self.apply_changes(&changes)
            }
            None => self.switch(None, new.clone()),
        }
    }

    /// Applies `changes` to the current state (the last one applied by this process),
    /// atomically; only the changed keys are written. Without a current state this is an
    /// error: use [`Dataplane::apply`] first.
    pub fn apply_changes(&mut self, changes: &TableChanges) -> Result<ApplyReport> {
        if self.current.is_none() {
            return Err(Error::NoState);
        }
        if changes.is_empty() {
            // Nothing changed: keep the generation, so no session is judged again.
            return Ok(ApplyReport {
                generation: self.config()?.generation,
                ..Default::default()
            });
        }
        match self.behind.take() {
            Some(mut pending) => {
                pending.then(changes);
                let report = self.switch(Some(&pending), Tables::default())?;
                if let Some(cur) = self.current.as_mut() {
                    cur.apply(changes);
                }
                self.behind = Some(changes.clone());
                Ok(report)
            }
            None => {
                // The standby slot's content is unknown: it is written whole.
                let mut next = self.current.clone().unwrap_or_default();
                next.apply(changes);
                self.switch(None, next)
            }
        }
    }

    /// Writes the standby slot, flips to it and raises the generation. With `changes`, the
    /// slot is brought up to date with them; without, it is emptied and `whole` is written
    /// and becomes the current state.
    fn switch(&mut self, changes: Option<&TableChanges>, whole: Tables) -> Result<ApplyReport> {
        let mut cfg = self.config()?;
        let standby = 1 - (cfg.active_slot & 1) as u8;
        // If the write fails half way the standby content is unknown: `behind` stays None.
        self.behind = None;
        let mut report = match changes {
            Some(c) => self.write_slot(standby, c)?,
            None => {
                self.clear_slot(standby)?;
                let all = TableChanges::between(&Tables::default(), &whole);
                self.write_slot(standby, &all)?
            }
        };
        cfg.active_slot = standby as u32;
        cfg.generation = cfg.generation.wrapping_add(1);
        self.config
            .set(0, cfg, 0)
            .map_err(Error::map(names::CONFIG))?;
        report.generation = cfg.generation;
        if changes.is_none() {
            // The slot now in standby holds the previous state, if this process knew it.
            let previous = self.current.replace(whole);
            self.behind = match (&previous, &self.current) {
                (Some(prev), Some(cur)) => Some(TableChanges::between(prev, cur)),
                _ => None,
            };
        }
        Ok(report)
    }

    /// Whether the standby slot's content is unknown, so the next update would write the
    /// whole state (see [`Dataplane::prepare_standby`]).
    pub fn standby_unknown(&self) -> bool {
        self.current.is_some() && self.behind.is_none()
    }

    /// Writes the whole current state into the standby slot, which packets do not read,
    /// so that the next update writes only its changes. Worth calling when idle after the
    /// first update (or after a failed one); a no-op when the slot is known.
    pub fn prepare_standby(&mut self) -> Result<usize> {
        let Some(cur) = self.current.as_ref().filter(|_| self.behind.is_none()) else {
            return Ok(0);
        };
        let all = TableChanges::between(&Tables::default(), cur);
        let standby = 1 - (self.config()?.active_slot & 1) as u8;
        self.clear_slot(standby)?;
        let report = self.write_slot(standby, &all)?;
        self.behind = Some(TableChanges::default());
        Ok(report.written)
    }

    /// The state packets see, if an update has been applied by this process.
    pub fn current(&self) -> Option<&Tables> {
        self.current.as_ref()
    }

    /// Writes `changes` into one slot.
    fn write_slot(&mut self, slot: u8, changes: &TableChanges) -> Result<ApplyReport> {
        let s32 = slot as u32;
        let mut report = ApplyReport::default();
        let mut count = |v: bool| {
            if v {
                report.written += 1
            } else {
                report.removed += 1
            }
        };
        let slotted = |k: &PolicyKey| PolicyKey {
            flags: with_slot(k.flags, slot),
            ..*k
        };
        for (k, v) in &changes.policy {
            let key = slotted(k);
            match v {
                Some(v) => self.policy.insert(key, v, 0),
                None => removed(self.policy.remove(&key)),
            }
            .map_err(Error::map(names::POLICY))?;
            count(v.is_some());
        }
        for (k, v) in &changes.port_ranges {
            let key = slotted(k);
            match v {
                Some(v) => self.port_ranges.insert(key, v, 0),
                None => removed(self.port_ranges.remove(&key)),
            }
            .map_err(Error::map(names::PORT_RANGES))?;
            count(v.is_some());
        }
        for (k, v) in &changes.source_ports {
            let key = slotted(k);
            match v {
                Some(v) => self.source_ports.insert(key, v, 0),
                None => removed(self.source_ports.remove(&key)),
            }
            .map_err(Error::map(names::SOURCE_PORT_RULES))?;
            count(v.is_some());
        }
        for (p, v) in &changes.identities {
            match v {
                Some(id) => self.insert_identity(s32, p, *id)?,
                None => self.remove_identity(s32, p)?,
            }
            count(v.is_some());
        }
        for ((ifindex, addr), add) in &changes.endpoint_addrs {
            let key = EndpointAddrKey {
                slot: s32,
                ifindex: *ifindex,
                addr: *addr,
            };
            match add {
                true => self.endpoint_addrs.insert(key, 1, 0),
                false => removed(self.endpoint_addrs.remove(&key)),
            }
            .map_err(Error::map(names::ENDPOINT_ADDRS))?;
            count(*add);
        }
        // Endpoints last: an endpoint's entries exist before packets can find it.
        for (ifindex, info) in &changes.endpoints {
            let key = EndpointKey {
                slot: s32,
                ifindex: *ifindex,
            };
            match info {
                Some(info) => self.endpoints.insert(key, info, 0),
                None => removed(self.endpoints.remove(&key)),
            }
            .map_err(Error::map(names::ENDPOINTS))?;
            count(info.is_some());
        }
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
            removed(self.host_identities.remove(&key)).map_err(Error::map(names::HOST_IDENTITIES))
        } else {
            removed(self.identities.remove(&lpm_key(slot, p)))
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
