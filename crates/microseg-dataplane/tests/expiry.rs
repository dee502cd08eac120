//! Userspace removes sessions idle past their timeout, by protocol and state.

use std::time::Duration;

mod common;

use microseg_dataplane::{packet::*, sessions::Timeouts, Hook};

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[test]
fn idle_sessions_expire_by_their_own_timeout_and_busy_ones_stay() {
    let yaml = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: a}\nspec: {interface: lo, ips: [10.5.0.1]}\n";
    let mut dp = common::Env::new(yaml, "a").dp;
    let (a, b) = (ip("10.5.0.1"), ip("10.5.0.2"));
    // Nothing selects the workload: open, and its sessions are tracked.
    assert!(dp
        .test_run(
            Hook::FromWorkload,
            &Frame::udp(a, b, 5000, 53).bytes(),
            1,
            1
        )
        .unwrap()
        .passed());
    assert!(dp
        .test_run(
            Hook::FromWorkload,
            &Frame::tcp(a, b, 5001, 80, TCP_SYN).bytes(),
            1,
            1
        )
        .unwrap()
        .passed());
    assert_eq!(dp.session_count(), 2);

    let long = Duration::from_secs(3600);
    let keep_all = Timeouts {
        tcp_opening: long,
        tcp_established: long,
        tcp_closing: long,
        udp: long,
        icmp: long,
        other: long,
    };
    assert!(dp.expire_sessions(&keep_all).unwrap().is_empty());
    assert_eq!(dp.session_count(), 2);

    // UDP idles out after 20 ms; the opening TCP session has an hour.
    std::thread::sleep(Duration::from_millis(50));
    let udp_short = Timeouts {
        udp: Duration::from_millis(20),
        ..keep_all
    };
    let expired = dp.expire_sessions(&udp_short).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0.protocol, 17);
    assert_eq!(expired[0].1.packets[0], 1, "its counters come back with it");
    assert_eq!(dp.session_count(), 1);
    assert!(dp.session_for(6, a, 5001, b, 80).is_some());
}

#[test]
fn the_whole_table_reads_in_batches_as_it_does_key_by_key_and_removal_skips_missing_keys() {
    let yaml = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: a}\nspec: {interface: lo, ips: [10.6.0.1]}\n";
    let mut dp = common::Env::with_sessions(yaml, "a", 16_384).dp;
    let a = ip("10.6.0.1");
    // More sessions than one batch holds (4,096), across many buckets.
    const N: u16 = 10_000;
    for i in 0..N {
        let b = ip(&format!("10.7.{}.{}", i / 250, i % 250 + 1));
        let frame = Frame::tcp(a, b, 10_000 + i, 443, TCP_SYN).bytes();
        assert!(dp
            .test_run(Hook::FromWorkload, &frame, 1, 1)
            .unwrap()
            .passed());
    }
    let mut batched = dp.sessions();
    let mut one_by_one = dp.sessions_one_by_one();
    assert_eq!(batched.len(), N as usize);
    assert_eq!(dp.session_count(), N as usize);
    // A handle of its own sees the same table, before and after changes.
    let reader = dp.session_reader().unwrap();
    assert_eq!(reader.sessions().len(), N as usize);
    let order = |v: &mut Vec<(microseg_common::SessionKey, microseg_common::Session)>| {
        v.sort_by_key(|(k, _)| (k.hi_addr, k.hi_port, k.lo_addr, k.lo_port))
    };
    order(&mut batched);
    order(&mut one_by_one);
    assert_eq!(batched.len(), one_by_one.len());
    for ((kb, sb), (ko, so)) in batched.iter().zip(&one_by_one) {
        assert_eq!(kb, ko);
        assert_eq!(sb.packets, so.packets);
        assert_eq!(sb.created_ns, so.created_ns);
    }

    // Half of them, with one key removed twice and one that never existed.
    let mut keys: Vec<_> = batched.iter().step_by(2).map(|(k, _)| *k).collect();
    keys.insert(10, keys[3]);
    let mut never = keys[0];
    never.lo_port ^= 0x5555;
    keys.push(never);
    let removed = dp.remove_sessions(&keys).unwrap();
    assert_eq!(removed, N as usize / 2);
    assert_eq!(dp.session_count(), N as usize / 2);
    assert_eq!(reader.sessions().len(), N as usize / 2);
    assert!(dp.sessions().iter().all(|(k, _)| !keys.contains(k)));
}
