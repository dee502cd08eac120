//! Component costs: single operations of the classifier paths priced with hand-assembled
//! programs, in the same harness, against the data plane's own maps.

use std::net::IpAddr;

use microseg_dataplane::{
    common::{direction, FlowEvent},
    Dataplane,
};
use microseg_policy::PROTO_TCP;

use crate::{
    args::Args,
    measure::median,
    memory::bpftool_show,
    policy::{peer, port, DB_IP},
    raw,
};

type PolicyKeyT = microseg_dataplane::common::PolicyKey;
type IpKeyT = microseg_dataplane::common::IpKey;

/// fd of a map this process holds, by (possibly truncated) kernel name.
fn map_fd(name: &str) -> Option<i32> {
    let names = bpftool_show("map");
    let short = &name[..name.len().min(15)];
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let fd: i32 = e.file_name().to_string_lossy().parse().ok()?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        let id: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse().ok())?;
        if names.get(&id).is_some_and(|n| n.0 == short) {
            return Some(fd);
        }
    }
    None
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the map key types are repr(C) with explicit padding: every byte is initialised.
    unsafe {
        std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()).to_vec()
    }
}

/// Prices single operations of the classifier paths with hand-assembled programs run in the
/// same harness, against the maps of `dp` as they are now (informative, not a target).
pub(crate) fn components(
    dp: &mut Dataplane,
    args: &Args,
    ack: &[u8],
    last: usize,
    policy_key: Option<PolicyKeyT>,
    batch: u32,
) {
    const COPIES: usize = 4;
    let Some((skey, sess)) = dp.session_for(
        PROTO_TCP,
        IpAddr::V4(peer(last)),
        64_000,
        IpAddr::V4(DB_IP),
        port(last),
    ) else {
        println!("components: benchmark session not found, skipped");
        return;
    };
    let slot = dp.config().map(|c| c.active_slot).unwrap_or(0);
    // (name, program, operations per run, repeat)
    let mut progs: Vec<(String, raw::Prog, usize, u32)> = Vec::new();
    let mut add_n = |name: String,
                     insns: Result<Vec<raw::Insn>, String>,
                     ops: usize,
                     repeat: u32| match insns.and_then(|i| raw::load(&i)) {
        Ok(p) => progs.push((name, p, ops, repeat)),
        Err(e) => println!("  {name}: {e}"),
    };
    let ev_size = std::mem::size_of::<FlowEvent>() as i32;
    add_n(
        "empty program (return 0)".into(),
        Ok(raw::helper_calls(0, 0)),
        1,
        args.repeat,
    );
    add_n(
        format!("1 x ringbuf reserve+submit ({ev_size} B; ring drained, batches of {batch})"),
        map_fd("MSEG_EVENTS")
            .ok_or("map MSEG_EVENTS not found".to_string())
            .map(|f| raw::ringbuf_event(f, ev_size)),
        1,
        batch.min(args.repeat),
    );
    let mut add = |name: String, insns: Result<Vec<raw::Insn>, String>| {
        add_n(name, insns, COPIES, args.repeat)
    };
    add(
        format!("{COPIES} x bpf_ktime_get_coarse_ns()"),
        Ok(raw::helper_calls(raw::HELPER_KTIME_GET_COARSE_NS, COPIES)),
    );
    add(
        format!("{COPIES} x bpf_jiffies64()"),
        Ok(raw::helper_calls(raw::HELPER_JIFFIES64, COPIES)),
    );
    add(
        format!("{COPIES} x bpf_ktime_get_ns()"),
        Ok(raw::helper_calls(raw::HELPER_KTIME_GET_NS, COPIES)),
    );
    let fd = |n: &str| map_fd(n).ok_or(format!("map {n} not found"));
    add(
        format!("{COPIES} x MSEG_SESSIONS lookup (hit)"),
        fd("MSEG_SESSIONS").map(|f| raw::lookups(f, &bytes_of(&skey), COPIES)),
    );
    let mut miss = skey;
    miss.lo_port ^= 0x5555;
    add(
        format!("{COPIES} x MSEG_SESSIONS lookup (miss)"),
        fd("MSEG_SESSIONS").map(|f| raw::lookups(f, &bytes_of(&miss), COPIES)),
    );
    add(
        format!("{COPIES} x MSEG_RULE_COUNTERS lookup"),
        fd("MSEG_RULE_COUNTERS").map(|f| {
            raw::lookups(
                f,
                &sess.legs[direction::INGRESS as usize].rule_id.to_ne_bytes(),
                COPIES,
            )
        }),
    );
    let host_key = IpKeyT {
        slot,
        addr: microseg_dataplane::common::tables::addr_words(IpAddr::V4(peer(last))),
    };
    add(
        format!("{COPIES} x MSEG_HOST_IDENTITIES hash lookup (peer, exact address)"),
        fd("MSEG_HOST_IDENTITIES").map(|f| raw::lookups(f, &bytes_of(&host_key), COPIES)),
    );
    let mut lpm = (160u32).to_ne_bytes().to_vec();
    lpm.extend(bytes_of(&IpKeyT {
        slot,
        addr: microseg_dataplane::common::tables::addr_words(IpAddr::V4(peer(last))),
    }));
    add(
        format!("{COPIES} x MSEG_IDENTITIES LPM lookup (peer)"),
        fd("MSEG_IDENTITIES").map(|f| raw::lookups(f, &lpm, COPIES)),
    );
    if let Some(mut k) = policy_key {
        k.flags = (k.flags & !1) | (slot as u8 & 1);
        add(
            format!("{COPIES} x MSEG_POLICY lookup (hit)"),
            fd("MSEG_POLICY").map(|f| raw::lookups(f, &bytes_of(&k), COPIES)),
        );
        k.port ^= 0x5555;
        add(
            format!("{COPIES} x MSEG_POLICY lookup (miss)"),
            fd("MSEG_POLICY").map(|f| raw::lookups(f, &bytes_of(&k), COPIES)),
        );
    }
    let mut samples: Vec<Vec<f64>> = vec![vec![]; progs.len()];
    for round in 0..args.rounds {
        for k in 0..progs.len() {
            let i = (k + round) % progs.len();
            dp.drain_events();
            match raw::test_run(&progs[i].1, ack, progs[i].3) {
                Ok(ns) => samples[i].push(ns as f64),
                Err(e) => {
                    println!("  {}: {e}", progs[i].0);
                    return;
                }
            }
        }
    }
    let empty = median(&samples[0]);
    dp.drain_events();
    println!(
        "component costs [info] (hand-assembled programs, median of {} rounds; per op = (median - empty) / ops):",
        args.rounds
    );
    for (i, (name, _, ops, _)) in progs.iter().enumerate() {
        let md = median(&samples[i]);
        let per = if i == 0 {
            String::new()
        } else {
            format!("{:>6.1} ns per op", (md - empty) / *ops as f64)
        };
        println!("  {name:<44} {md:>7.1} ns  {per}");
    }
}
