//! A workload sends only from its own addresses, in both families.

mod common;

use microseg_dataplane::{packet::*, Hook};

const YAML: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: v4only}
spec: {interface: lo, ips: [10.8.0.1]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: trusted, labels: {role: trusted}}
spec: {interface: other0, ips: [10.8.0.2, "fd08::2"]}
"#;

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[test]
fn an_ipv4_only_workload_cannot_send_ipv6_from_another_workloads_address() {
    let env = common::Env::new(YAML, "v4only");
    let send = |f: Frame| {
        env.dp
            .test_run(Hook::FromWorkload, &f.bytes(), common::LO, 1)
            .unwrap()
            .passed()
    };
    assert!(
        send(Frame::tcp(
            ip("10.8.0.1"),
            ip("10.8.0.9"),
            1000,
            80,
            TCP_SYN
        )),
        "its own address"
    );
    assert!(
        !send(Frame::tcp(
            ip("10.8.0.2"),
            ip("10.8.0.9"),
            1000,
            80,
            TCP_SYN
        )),
        "another's IPv4"
    );
    assert!(
        !send(Frame::tcp(ip("fd08::2"), ip("fd08::9"), 1000, 80, TCP_SYN)),
        "another's IPv6"
    );
    assert!(
        send(Frame::tcp(ip("fe80::1"), ip("fe80::2"), 1000, 80, TCP_SYN)),
        "link-local is exempt"
    );
    assert_eq!(env.dp.stats().unwrap().spoofed, 2);
}
