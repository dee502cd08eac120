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
    assert!(dp.session_for(1, 6, a, 5001, b, 80).is_some());
}
