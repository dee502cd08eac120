//! Userspace removes sessions idle past their timeout, by protocol and state. The clock is
//! an input: the tests pass the time to judge idleness at, and never wait for it.

use std::time::Duration;

mod common;

use microseg_common::{Session, SessionKey};
use microseg_dataplane::{
    packet::*,
    sessions::{idle, Timeouts},
    Hook,
};

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

/// Hours apart, so that the milliseconds between the test's packets never matter.
const TIMEOUTS: Timeouts = Timeouts {
    tcp_opening: HOUR,
    tcp_established: Duration::from_secs(2 * 3600),
    tcp_closing: Duration::from_secs(3 * 3600),
    udp: Duration::from_secs(4 * 3600),
    icmp: Duration::from_secs(5 * 3600),
    other: Duration::from_secs(6 * 3600),
};

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// The sessions' (protocol, lo port, hi port), sorted.
fn tuples(sessions: &[(SessionKey, Session)]) -> Vec<(u8, u16, u16)> {
    let mut t: Vec<_> = sessions
        .iter()
        .map(|(k, _)| (k.protocol, k.lo_port, k.hi_port))
        .collect();
    t.sort();
    t
}

#[test]
fn idle_sessions_expire_by_their_own_timeout_and_busy_ones_stay() {
    let yaml = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: a}\nspec: {interface: lo, ips: [10.5.0.1]}\n";
    let mut dp = common::Env::new(yaml, "a").dp;
    let (a, b) = (ip("10.5.0.1"), ip("10.5.0.2"));
    // Nothing selects the workload: open, and its sessions are tracked. One session per
    // timeout: TCP opening (SYN), established (picked up mid-stream), closing (FIN); UDP;
    // ICMP echo; protocol 47.
    let frames = [
        Frame::tcp(a, b, 5001, 80, TCP_SYN),
        Frame::tcp(a, b, 5002, 80, TCP_ACK),
        Frame::tcp(a, b, 5003, 80, TCP_FIN | TCP_ACK),
        Frame::udp(a, b, 5000, 53),
        Frame::echo_request(a, b, 7),
        Frame::new(a, b, 47, vec![0; 16]),
    ];
    for f in &frames {
        assert!(dp
            .test_run(Hook::FromWorkload, &f.bytes(), 1, 1)
            .unwrap()
            .passed());
    }
    let sessions = dp.sessions();
    assert_eq!(sessions.len(), frames.len());
    let newest = sessions.iter().map(|(_, s)| s.last_seen_ns).max().unwrap();

    // Each session lives exactly its own timeout past its last packet, and not a
    // nanosecond more.
    // The workload's address is the lower one: its port (the echo's id) is the lo port.
    let timeouts = [
        (6, 5001, TIMEOUTS.tcp_opening),
        (6, 5002, TIMEOUTS.tcp_established),
        (6, 5003, TIMEOUTS.tcp_closing),
        (17, 5000, TIMEOUTS.udp),
        (1, 7, TIMEOUTS.icmp),
        (47, 0, TIMEOUTS.other),
    ];
    for (protocol, port, timeout) in timeouts {
        let one: Vec<_> = sessions
            .iter()
            .filter(|(k, _)| (k.protocol, k.lo_port) == (protocol, port))
            .copied()
            .collect();
        assert_eq!(one.len(), 1, "protocol {protocol} port {port}: {one:?}");
        let last_seen = one[0].1.last_seen_ns;
        assert!(
            idle(one.clone(), &TIMEOUTS, last_seen + ns(timeout)).is_empty(),
            "protocol {protocol} port {port} at its timeout"
        );
        assert_eq!(
            idle(one.clone(), &TIMEOUTS, last_seen + ns(timeout) + 1).len(),
            1,
            "protocol {protocol} port {port} past its timeout"
        );
    }

    // Nothing is idle at the time of the packets.
    assert!(dp.expire_sessions(&TIMEOUTS, newest).unwrap().is_empty());
    assert_eq!(dp.session_count(), frames.len());

    // 3.5 hours on: the three TCP sessions go, with their counters.
    let expired = dp
        .expire_sessions(&TIMEOUTS, newest + ns(HOUR * 7 / 2))
        .unwrap();
    assert_eq!(
        tuples(&expired),
        vec![(6, 5001, 80), (6, 5002, 80), (6, 5003, 80)]
    );
    assert!(expired.iter().all(|(_, s)| s.packets[0] == 1));
    assert_eq!(dp.session_count(), 3);
    assert!(dp.session_for(17, a, 5000, b, 53).is_some());

    // 5.5 hours on: UDP and ICMP; 6.5 hours: the last one.
    let expired = dp
        .expire_sessions(&TIMEOUTS, newest + ns(HOUR * 11 / 2))
        .unwrap();
    assert_eq!(tuples(&expired), vec![(1, 7, 0), (17, 5000, 53)]);
    let expired = dp
        .expire_sessions(&TIMEOUTS, newest + ns(HOUR * 13 / 2))
        .unwrap();
    assert_eq!(tuples(&expired), vec![(47, 0, 0)]);
    assert_eq!(dp.session_count(), 0);
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
