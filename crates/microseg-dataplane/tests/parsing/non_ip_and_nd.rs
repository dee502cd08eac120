//! ARP, other non-IP frames and neighbour discovery: what the network needs passes.

use microseg_dataplane::{common::*, packet::*, Hook};

use crate::common::*;
use crate::helpers::*;

#[test]
fn arp_neighbour_discovery_and_other_non_ip_frames_pass_counted() {
    let env = env();
    for hook in [Hook::ToWorkload, Hook::FromWorkload] {
        assert!(passes(&env, hook, &arp()));
        assert!(passes(&env, hook, &non_ip()));
        // ICMPv6 is allowed in by policy, but ND must pass even where policy denies:
        // db's egress is open, so try ND types 133-137 from a peer that is no one.
        for t in 133u8..=137 {
            let nd = Frame::neighbour_discovery(ip("fe80::1"), ip("ff02::1"), t);
            assert!(passes(&env, hook, &nd.bytes()), "ND type {t}");
        }
    }
    let s = stats(&env);
    assert_eq!((s.arp, s.non_ip, s.neighbor_discovery), (2, 2, 10));
    assert_eq!(
        (s.allowed(), s.denied(), s.session_misses, s.non_ip_dropped),
        (0, 0, 0, 0)
    );
}

/// db, on lo, isolated both ways.
const LOCKED_DOWN_DB: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db, labels: {app: db}}
spec: {interface: lo, ips: ["fd00::3", "10.0.0.3"]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: lockdown}
spec: {selector: {}, ingress: [], egress: []}
"#;

#[test]
fn neighbour_discovery_passes_where_policy_denies_icmpv6() {
    let env = Env::new(LOCKED_DOWN_DB, "db");
    for t in 133u8..=137 {
        let nd = Frame::neighbour_discovery(ip("fe80::1"), ip("fd00::3"), t);
        assert!(passes(&env, Hook::ToWorkload, &nd.bytes()), "ND type {t}");
    }
    // Other ICMPv6 is policy's: echo is default-denied.
    assert!(!ingress(
        &env,
        &Frame::echo_request(ip("fd00::2"), ip("fd00::3"), 1)
    ));
    assert_eq!(stats(&env).neighbor_discovery, 5);
}

#[test]
fn only_real_neighbour_discovery_is_exempt_from_policy() {
    let env = Env::new(LOCKED_DOWN_DB, "db");
    for t in 133u8..=137 {
        // Receivers discard ND that crossed a router (RFC 4861): policy judges it.
        let routed = Frame::neighbour_discovery(ip("fd00::2"), ip("fd00::3"), t).with_hop_limit(64);
        assert!(
            !ingress(&env, &routed),
            "ND type {t} with hop limit 64 passed"
        );
        assert!(!from_db(
            &env,
            &Frame::neighbour_discovery(ip("fd00::3"), ip("2001:db8::9"), t).with_hop_limit(254)
        ));
        // Protocol 58 in IPv4 is no ICMPv6 at all: no exemption either way.
        let v4_58 = |src, dst| Frame::new(ip(src), ip(dst), 58, vec![t, 0, 0, 0, 0, 0, 0, 0]);
        let v4 = v4_58("10.0.0.2", "10.0.0.3");
        assert!(!ingress(&env, &v4), "IPv4 protocol 58 type {t} passed in");
        let out = v4_58("10.0.0.3", "192.0.2.7");
        assert!(!from_db(&env, &out), "IPv4 protocol 58 type {t} passed out");
    }
    let s = stats(&env);
    assert_eq!((s.neighbor_discovery, s.parse_errors), (0, 0));
    assert_eq!(s.denied(), 20);
}

#[test]
fn drop_non_ip_drops_lldp_but_not_arp() {
    let mut env = env();
    env.dp.set_flags(config_flags::DROP_NON_IP).unwrap();
    assert!(!passes(&env, Hook::ToWorkload, &non_ip()));
    assert!(!passes(&env, Hook::FromWorkload, &non_ip()));
    assert!(passes(&env, Hook::ToWorkload, &arp()));
    assert!(passes(&env, Hook::FromWorkload, &arp()));
    let nd = Frame::neighbour_discovery(ip("fe80::1"), ip("ff02::1"), 135);
    assert!(passes(&env, Hook::ToWorkload, &nd.bytes()));
    // IP traffic is unaffected.
    assert!(ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN)
    ));
    let s = stats(&env);
    assert_eq!(
        (s.non_ip, s.non_ip_dropped, s.arp, s.neighbor_discovery),
        (2, 2, 2, 1)
    );
}
