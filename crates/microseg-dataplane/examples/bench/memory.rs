//! The BPF maps and programs this process holds: kernel memory of the maps (fdinfo
//! memlock) and sizes of the programs, with names from `bpftool`.

use std::{collections::BTreeMap, process::Command};

struct FdInfo {
    fields: BTreeMap<String, String>,
}

/// fdinfo of every fd of this process whose target is `anon_inode:bpf-<what>`.
fn bpf_fds(what: &str) -> Vec<FdInfo> {
    let want = format!("anon_inode:bpf-{what}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target.to_string_lossy() != want {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            e.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let fields = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        out.push(FdInfo { fields });
    }
    out
}

/// id → (name, rest of the line) from `bpftool <obj> show`.
pub(crate) fn bpftool_show(obj: &str) -> BTreeMap<u64, (String, String)> {
    let mut out = BTreeMap::new();
    let Ok(o) = Command::new("bpftool").args([obj, "show"]).output() else {
        return out;
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let mut cur: Option<u64> = None;
    for line in text.lines() {
        if let Some((id, rest)) = line
            .split_once(':')
            .filter(|(id, _)| id.trim().parse::<u64>().is_ok())
        {
            let id: u64 = id.trim().parse().unwrap();
            let toks: Vec<&str> = rest.split_whitespace().collect();
            let name = toks
                .iter()
                .position(|t| *t == "name")
                .and_then(|p| toks.get(p + 1))
                .unwrap_or(&"?");
            out.insert(id, (name.to_string(), String::new()));
            cur = Some(id);
        } else if let Some(id) = cur {
            if let Some(e) = out.get_mut(&id) {
                e.1.push_str(line.trim());
                e.1.push(' ');
            }
        }
    }
    out
}

fn map_type_name(t: &str) -> &'static str {
    match t {
        "1" => "hash",
        "2" => "array",
        "3" => "prog_array",
        "6" => "percpu_array",
        "9" => "lru_hash",
        "11" => "lpm_trie",
        "27" => "ringbuf",
        _ => "other",
    }
}

pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Prints every BPF map this process holds (fdinfo memlock) and returns the total bytes.
pub(crate) fn print_map_memory() -> u64 {
    let names = bpftool_show("map");
    let mut maps: Vec<(String, &'static str, u64, u64)> = bpf_fds("map")
        .iter()
        .map(|f| {
            let id: u64 = f
                .fields
                .get("map_id")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let name = names
                .get(&id)
                .map(|n| n.0.clone())
                .unwrap_or_else(|| format!("id {id}"));
            let ty = map_type_name(f.fields.get("map_type").map(String::as_str).unwrap_or(""));
            let max: u64 = f
                .fields
                .get("max_entries")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let memlock: u64 = f
                .fields
                .get("memlock")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (name, ty, max, memlock)
        })
        .collect();
    maps.sort_by(|a, b| b.3.cmp(&a.3).then(a.0.cmp(&b.0)));
    maps.dedup_by(|a, b| a.0 == b.0 && a.3 == b.3);
    let mut total = 0;
    println!(
        "  {:<20} {:<13} {:>12} {:>14} {:>11}",
        "map", "type", "max_entries", "memlock bytes", ""
    );
    for (name, ty, max, mem) in &maps {
        // The bench's own reference map is no part of the data plane's memory.
        let reference = "MSEG_LRU_REFERENCE".starts_with(name.as_str());
        println!(
            "  {name:<20} {ty:<13} {max:>12} {mem:>14} {:>11}{}",
            mib(*mem),
            if reference {
                "  (bench only, not in the total)"
            } else {
                ""
            }
        );
        if !reference {
            total += mem;
        }
    }
    println!(
        "  {:<20} {:<13} {:>12} {:>14} {:>11}",
        "total",
        "",
        "",
        total,
        mib(total)
    );
    total
}

pub(crate) fn print_programs() {
    let info = bpftool_show("prog");
    let mut seen = std::collections::BTreeSet::new();
    for f in bpf_fds("prog") {
        let id: u64 = f
            .fields
            .get("prog_id")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if !seen.insert(id) {
            continue;
        }
        if let Some((name, rest)) = info.get(&id) {
            let keep: Vec<&str> = rest
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| matches!(w[0], "xlated" | "jited" | "memlock"))
                .map(|w| w[1])
                .collect();
            println!(
                "  {name:<16} xlated {:>7}  jited {:>7}  verified_insns {}",
                keep.first().unwrap_or(&"?"),
                keep.get(1).unwrap_or(&"?"),
                f.fields
                    .get("verified_insns")
                    .map(String::as_str)
                    .unwrap_or("?")
            );
        }
    }
}
