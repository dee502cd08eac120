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
pub(crate) fn write_hash<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    items: impl Iterator<Item = (K, Option<V>)>,
    report: &mut ApplyReport,
) -> Result<()> {
    let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in items {
        match v {
            Some(v) => {
                keys.push(k);
                values.push(v);
            }
            None => gone.push(k),
        }
    }
    let set = batch::update_all(map.map().fd().as_fd(), &keys, &values, 1);
    match set {
        Ok(()) => {}
        Err((0, e)) if batch::unsupported(&e) => {
            for (k, v) in keys.iter().zip(&values) {
                map.insert(k, v, 0).map_err(Error::map_write(name))?;
            }
        }
        Err((_, e)) => {
            return Err(Error::map_write(name)(syscall_error(
                "bpf_map_update_batch",
                e,
            )))
        }
    }
    report.written += keys.len();
    let removed = batch::delete_all(map.map().fd().as_fd(), &gone);
    match removed {
        Ok(_) => {}
        Err(e) if batch::unsupported(&e) => {
            for k in &gone {
                match map.remove(k) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(MapError::SyscallError(e))
                        if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(Error::map_write(name)(e)),
                }
            }
        }
        Err(e) => {
            return Err(Error::map_write(name)(syscall_error(
                "bpf_map_delete_batch",
                e,
            )))
        }
    }
    report.removed += gone.len();
    Ok(())
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
    // Per key, the kernel reads one value per possible CPU (16 bytes each, 8-aligned).
    let zeros = vec![RuleCounter::default(); rule_ids.len() * cpus];
    let set = batch::update_all(counters.map().fd().as_fd(), rule_ids, &zeros, cpus);
    match set {
        Ok(()) => Ok(()),
        Err((0, e)) if batch::unsupported(&e) => {
            for id in rule_ids {
                let zeros = aya::maps::PerCpuValues::try_from(vec![RuleCounter::default(); cpus])
                    .map_err(|e| Error::io("per-cpu values")(e))?;
                counters
                    .set(*id, zeros, 0)
                    .map_err(Error::map_write(names::RULE_COUNTERS))?;
            }
            Ok(())
        }
        Err((_, e)) => Err(Error::map_write(names::RULE_COUNTERS)(syscall_error(
            "bpf_map_update_batch",
            e,
        ))),
    }
}

impl Dataplane {
    /// Zeroes the counters of `rule_ids`, in batches: what
    /// [`Dataplane::reset_rule_counters`] does one system call per rule.
    pub fn zero_rule_counters(&mut self, rule_ids: &[u32]) -> Result<()> {
        zero_counters(&mut self.rule_counters, rule_ids)
    }
}
