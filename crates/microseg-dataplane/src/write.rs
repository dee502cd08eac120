//! Writing one map's share of an update in batches (`BPF_MAP_UPDATE_BATCH` for the keys
//! set, `BPF_MAP_DELETE_BATCH` for the keys removed): an update of 100,000 rules is
//! 200,000 keys, and one system call per key was most of its apply time. One key per call
//! remains for maps or kernels without batch operations (docs/PERFORMANCE.md section 12).

use std::os::fd::AsFd;

use aya::maps::{HashMap, IterableMap, MapData, MapError, PerCpuArray};
use microseg_common::{names, RuleCounter};

use crate::apply::ApplyReport;
use crate::{batch, Dataplane, Error, Result};

fn syscall_error(call: &'static str, io_error: std::io::Error) -> MapError {
    aya::sys::SyscallError { call, io_error }.into()
}

/// Writes `items` into `map`: `Some` sets the key, `None` removes it (a key the map does
/// not hold is no error: composed changes may remove what a skipped state had added).
/// Streams them a batch at a time, so that the buffers stay small whatever the update.
pub(crate) fn write_hash<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    items: impl Iterator<Item = (K, Option<V>)>,
    report: &mut ApplyReport,
) -> Result<()> {
    let mut w = HashWriter {
        map,
        name,
        keys: Vec::with_capacity(batch::BATCH_ENTRIES),
        values: Vec::with_capacity(batch::BATCH_ENTRIES),
        gone: Vec::with_capacity(batch::BATCH_ENTRIES),
        one_by_one: false,
    };
    for (k, v) in items {
        match v {
            Some(v) => {
                w.keys.push(k);
                w.values.push(v);
                if w.keys.len() == batch::BATCH_ENTRIES {
                    report.written += w.set()?;
                }
            }
            None => {
                w.gone.push(k);
                if w.gone.len() == batch::BATCH_ENTRIES {
                    report.removed += w.remove()?;
                }
            }
        }
    }
    report.written += w.set()?;
    report.removed += w.remove()?;
    Ok(())
}

/// One map's pending keys, and whether its kernel has no batch operations for it.
struct HashWriter<'a, K: aya::Pod, V: aya::Pod> {
    map: &'a mut HashMap<MapData, K, V>,
    name: &'static str,
    keys: Vec<K>,
    values: Vec<V>,
    gone: Vec<K>,
    one_by_one: bool,
}

impl<K: aya::Pod, V: aya::Pod> HashWriter<'_, K, V> {
    /// Writes the pending keys; returns how many.
    fn set(&mut self) -> Result<usize> {
        let n = self.keys.len();
        if n > 0 && !self.one_by_one {
            let fd = self.map.map().fd().as_fd();
            match batch::update_all(fd, &self.keys, &self.values, 1) {
                Ok(()) => {}
                Err((0, e)) if batch::unsupported(&e) => self.one_by_one = true,
                Err((_, e)) => {
                    let e = syscall_error("bpf_map_update_batch", e);
                    return Err(Error::map_write(self.name)(e));
                }
            }
        }
        if self.one_by_one {
            for (k, v) in self.keys.iter().zip(&self.values) {
                self.map
                    .insert(k, v, 0)
                    .map_err(Error::map_write(self.name))?;
            }
        }
        self.keys.clear();
        self.values.clear();
        Ok(n)
    }

    /// Removes the pending keys; returns how many were asked for.
    fn remove(&mut self) -> Result<usize> {
        let n = self.gone.len();
        if n > 0 && !self.one_by_one {
            match batch::delete_all(self.map.map().fd().as_fd(), &self.gone) {
                Ok(_) => {}
                Err(e) if batch::unsupported(&e) => self.one_by_one = true,
                Err(e) => {
                    let e = syscall_error("bpf_map_delete_batch", e);
                    return Err(Error::map_write(self.name)(e));
                }
            }
        }
        if self.one_by_one {
            for k in &self.gone {
                match self.map.remove(k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(MapError::SyscallError(e))
                        if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(Error::map_write(self.name)(e)),
                }
            }
        }
        self.gone.clear();
        Ok(n)
    }
}

/// Zeroes the per-CPU counters of `rule_ids` in batches, so that a rule id handed out
/// again starts from nothing (100,000 new rules were 100,000 system calls).
pub(crate) fn zero_counters(
    counters: &mut PerCpuArray<MapData, RuleCounter>,
    rule_ids: &[u32],
) -> Result<()> {
    if rule_ids.is_empty() {
        return Ok(());
    }
    let cpus =
        aya::util::nr_cpus().map_err(|(_, e)| Error::io("/sys/devices/system/cpu/possible")(e))?;
    // Per key, the kernel reads one value per possible CPU (16 bytes each, 8-aligned); one
    // batch's worth of zeros serves every batch.
    let chunk = rule_ids.len().min(batch::BATCH_ENTRIES);
    let zeros = vec![RuleCounter::default(); chunk * cpus];
    for ids in rule_ids.chunks(chunk) {
        let fd = counters.map().fd().as_fd();
        match batch::update_all(fd, ids, &zeros[..ids.len() * cpus], cpus) {
            Ok(()) => {}
            Err((0, e)) if batch::unsupported(&e) => {
                for id in ids {
                    let zeros =
                        aya::maps::PerCpuValues::try_from(vec![RuleCounter::default(); cpus])
                            .map_err(|e| Error::io("per-cpu values")(e))?;
                    counters
                        .set(*id, zeros, 0)
                        .map_err(Error::map_write(names::RULE_COUNTERS))?;
                }
            }
            Err((_, e)) => {
                let e = syscall_error("bpf_map_update_batch", e);
                return Err(Error::map_write(names::RULE_COUNTERS)(e));
            }
        }
    }
    Ok(())
}

impl Dataplane {
    /// Zeroes the counters of `rule_ids`, in batches: what
    /// [`Dataplane::reset_rule_counters`] does one system call per rule.
    pub fn zero_rule_counters(&mut self, rule_ids: &[u32]) -> Result<()> {
        zero_counters(&mut self.rule_counters, rule_ids)
    }
}
