//! A workload sends only from its own addresses, in both families.

mod common;

use common::{db4, from_db, into_db, web4, web6, Env, WORKLOADS};
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

#[test]
fn egress_from_a_foreign_source_address_is_dropped() {
    let env = Env::new(WORKLOADS, "db");
    // No policy at all: open, but db may not borrow web's address (or anyone's).
    assert!(from_db(&env, &Frame::tcp(db4(), web4(), 1, 80, TCP_SYN)));
    assert!(!from_db(
        &env,
        &Frame::tcp(web4(), ip("10.9.9.9"), 1, 80, TCP_SYN)
    ));
    assert!(!from_db(
        &env,
        &Frame::udp(ip("10.1.0.99"), ip("10.9.9.9"), 1, 53)
    ));
    assert!(!from_db(
        &env,
        &Frame::tcp(web6(), ip("fd00::9"), 1, 80, TCP_SYN)
    ));
    // IPv6 link-local sources are exempt.
    assert!(from_db(
        &env,
        &Frame::udp(ip("fe80::5"), ip("ff02::1:2"), 546, 547)
    ));
    // Ingress is not about db's source: any peer may be the source there.
    assert!(into_db(
        &env,
        &Frame::tcp(ip("10.9.9.9"), db4(), 1, 80, TCP_SYN)
    ));
    let s = env.dp.stats().unwrap();
    assert_eq!(s.spoofed, 3);
    assert_eq!(s.denied(), 3);
}

const V6_ONLY: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: v6only}
spec: {interface: lo, ips: ["fd08::1"]}
"#;

#[test]
fn an_ipv6_only_workload_sends_ipv4_only_from_the_unspecified_address() {
    let env = Env::new(V6_ONLY, "v6only");
    let send = |f: Frame| {
        env.dp
            .test_run(Hook::FromWorkload, &f.bytes(), common::LO, 1)
            .unwrap()
            .passed()
    };
    assert!(
        send(Frame::tcp(ip("fd08::1"), ip("fd08::9"), 1000, 80, TCP_SYN)),
        "its own address"
    );
    assert!(
        !send(Frame::tcp(
            ip("2001:db8::1"),
            ip("fd08::9"),
            1000,
            80,
            TCP_SYN
        )),
        "an IPv6 address nobody has"
    );
    assert!(
        !send(Frame::udp(ip("10.8.0.1"), ip("10.8.0.9"), 1000, 53)),
        "any routable IPv4"
    );
    assert!(
        !send(Frame::udp(ip("169.254.0.5"), ip("169.254.0.9"), 1000, 53)),
        "IPv4 link-local is not exempt"
    );
    assert!(
        send(Frame::udp(ip("0.0.0.0"), ip("255.255.255.255"), 68, 67)),
        "DHCP's unspecified source"
    );
    assert!(
        send(Frame::udp(ip("::"), ip("ff02::1"), 1000, 1000)),
        "the unspecified IPv6 source"
    );
    assert!(
        send(Frame::udp(ip("fe80::1"), ip("ff02::1"), 546, 547)),
        "IPv6 link-local"
    );
    assert_eq!(env.dp.stats().unwrap().spoofed, 3);
}
