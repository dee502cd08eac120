//! Memory: kernel memory of rule sets (slab, vmalloc), the agent's BPF maps (memlock), and
//! what a session costs in microseg's session map and in conntrack.

use crate::agent::map_show;
use crate::contender::{Ctx, Who};

fn meminfo_kb(keys: &[&str]) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Kernel memory that rule sets live in: slab (iptables/nftables objects) and vmalloc
/// (BPF maps, big nftables sets). Machine-wide, so other activity shows up as noise.
pub(crate) fn kernel_kb() -> u64 {
    meminfo_kb(&["Slab", "VmallocUsed"])
}

impl Ctx {
    pub(crate) fn memlock_kb(&self) -> f64 {
        let dir = self.t.bpffs.join("maps");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return f64::NAN;
        };
        let mut total = 0u64;
        for e in rd.flatten() {
            if let Some(v) = map_show(e.path().to_str().unwrap()) {
                total += v["bytes_memlock"].as_u64().unwrap_or(0);
            }
        }
        total as f64 / 1024.0
    }

    fn sessions_map_memlock(&self) -> Option<(u64, u64)> {
        let p = self.t.bpffs.join("maps").join("MSEG_SESSIONS");
        let v = map_show(p.to_str()?)?;
        Some((v["bytes_memlock"].as_u64()?, v["max_entries"].as_u64()?))
    }
}

/// Sessions: microseg's session map as loaded (memlock / capacity); conntrack estimated.
/// The lines for the report; starts the agent for it and stops it again.
pub(crate) fn session_costs(ctx: &mut Ctx) -> String {
    let mut sess_line = String::new();
    if ctx.install_base(Who::Microseg).is_ok() {
        if let Some((bytes, cap)) = ctx.sessions_map_memlock() {
            sess_line += &format!(
                "microseg: MSEG_SESSIONS bytes_memlock {} B for max_entries {} (LRU hash, preallocated) -> {:.1} MiB per 1,000,000 sessions ({:.0} B/session), whether used or not\n",
                bytes, cap, bytes as f64 * 1e6 / cap as f64 / 1048576.0, bytes as f64 / cap as f64
            );
        }
    }
    ctx.teardown(Who::Microseg);
    let slab = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    if let Some(l) = slab.lines().find(|l| l.starts_with("nf_conntrack ")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let objsize: f64 = f.get(3).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
        let per_slab: f64 = f.get(4).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
        let pages: f64 = f.get(5).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
        let per_obj = pages * 4096.0 / per_slab;
        let max =
            std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").unwrap_or_default();
        let buckets = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_buckets")
            .unwrap_or_default();
        sess_line += &format!(
            "conntrack (iptables and nftables): slab nf_conntrack objsize {objsize} B, {per_obj:.0} B/entry with slab packing -> {:.1} MiB per 1,000,000 entries + hash buckets 8 B each ({:.1} MiB for 1,000,000 buckets); estimate, allocated per entry; nf_conntrack_max here is {} (buckets {})\n",
            per_obj * 1e6 / 1048576.0, 8e6 / 1048576.0, max.trim(), buckets.trim()
        );
    } else {
        sess_line += "conntrack: no nf_conntrack line in /proc/slabinfo (merged slab?)\n";
    }
    sess_line
}
