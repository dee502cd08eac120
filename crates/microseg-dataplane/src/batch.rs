//! Batched map reads, writes and deletes (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_UPDATE_BATCH`,
//! `BPF_MAP_DELETE_BATCH`, Linux 5.6+), which aya does not wrap. Walking a million-entry
//! session table one key at a time costs two system calls per entry, and writing 100,000
//! rules one per call is most of an apply; a batch moves thousands of entries per call
//! (docs/PERFORMANCE.md section 12).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Entries per call: large enough that calls are few, small enough for any bucket.
pub(crate) const BATCH_ENTRIES: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the pointers in it
    // point at buffers the caller keeps alive and sized for `count` entries.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether `e` says the kernel has no batch operations for this map (EINVAL, or
/// EOPNOTSUPP/ENOTSUPP).
pub(crate) fn unsupported(e: &io::Error) -> bool {
    const ENOTSUPP: i32 = 524;
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(ENOTSUPP)
    )
}

/// Every (key, value) of a hash map, read in batches. `K` and `V` must be the map's
/// plain-data key and value types. An error the first call returns (as `EINVAL` from a
/// kernel without batch support) comes back untouched, so callers can fall back.
pub(crate) fn lookup_all<K: Copy + Default, V: Copy + Default>(
    map: BorrowedFd<'_>,
) -> io::Result<Vec<(K, V)>> {
    let mut all = Vec::new();
    for_each_batch(map, |keys: &[K], values: &[V]| {
        all.extend(keys.iter().copied().zip(values.iter().copied()))
    })?;
    Ok(all)
}

/// Calls `f` with each batch of a hash map's keys and their values, so that a large map
/// is read without a copy of it whole. An error of the first call comes back untouched
/// (see [`lookup_all`]); a later one ends the reading early, with what was read given.
pub(crate) fn for_each_batch<K: Copy + Default, V: Copy + Default>(
    map: BorrowedFd<'_>,
    mut f: impl FnMut(&[K], &[V]),
) -> io::Result<()> {
    let mut keys = vec![K::default(); BATCH_ENTRIES];
    let mut values = vec![V::default(); BATCH_ENTRIES];
    // For hash maps the position is a bucket index; none for the first call.
    let mut position: Option<u32> = None;
    let mut next: u32 = 0;
    loop {
        let mut attr = BatchAttr {
            in_batch: position.as_ref().map_or(0, |p| p as *const u32 as u64),
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH_ENTRIES as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let last = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => false,
            // ENOENT: no bucket left; what this call found is still counted.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) if position.is_none() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "reading a map in batches stopped early");
                return Ok(());
            }
        };
        let got = (attr.count as usize).min(BATCH_ENTRIES);
        f(&keys[..got], &values[..got]);
        if last {
            return Ok(());
        }
        position = Some(next);
    }
}

/// Deletes `keys` in batches; keys already gone (evicted meanwhile) are skipped. Returns
/// how many were deleted.
pub(crate) fn delete_all<K: Copy>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut deleted = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH_ENTRIES)];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let result = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        // The kernel stops at the first key it cannot delete and says how many it did.
        let done = (attr.count as usize).min(chunk.len());
        deleted += done;
        match result {
            Ok(()) => rest = &rest[chunk.len()..],
            // That key is gone already: skip it and go on after it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => rest = &rest[done + 1..],
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Writes the values of `keys[i]`, `values[i * per_key..(i + 1) * per_key]`, in batches
/// (`BPF_MAP_UPDATE_BATCH`, flags `BPF_ANY`). `K` and `V` must be the map's key and value
/// types; `per_key` is 1, or for a per-CPU map the number of possible CPUs (`V` a multiple
/// of 8 bytes, as the kernel lays them out). On an error, says how many keys were written
/// before it: the first call's error comes back with 0, so that callers can fall back to
/// one key per call where the kernel has no batch update for the map.
pub(crate) fn update_all<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    per_key: usize,
) -> Result<(), (usize, io::Error)> {
    assert_eq!(keys.len() * per_key, values.len(), "values for every key");
    let mut done = 0;
    while done < keys.len() {
        let end = keys.len().min(done + BATCH_ENTRIES);
        let mut attr = BatchAttr {
            keys: keys[done..end].as_ptr() as u64,
            values: values[done * per_key..end * per_key].as_ptr() as u64,
            count: (end - done) as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
        // On an error the kernel says how many of this call it wrote.
        let written = (attr.count as usize).min(end - done);
        if let Err(e) = result {
            return Err((done + written, e));
        }
        done = end;
    }
    Ok(())
}
