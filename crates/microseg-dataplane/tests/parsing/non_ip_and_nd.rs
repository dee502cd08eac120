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
            let nd = Frame::icmp(ip("fe80::1"), ip("ff02::1"), t, 0, [0; 4]);
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

#[test]
fn neighbour_discovery_passes_where_policy_denies_icmpv6() {
    let yaml = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db, labels: {app: db}}
spec: {interface: lo, ips: ["fd00::3"]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: lockdown}
spec: {selector: {}, ingress: [], egress: []}
"#;
    let env = Env::new(yaml, "db");
    for t in 133u8..=137 {
        let nd = Frame::icmp(ip("fe80::1"), ip("fd00::3"), t, 0, [0; 4]);
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
fn drop_non_ip_drops_lldp_but_not_arp() {
    let mut env = env();
    env.dp.set_flags(config_flags::DROP_NON_IP).unwrap();
    assert!(!passes(&env, Hook::ToWorkload, &non_ip()));
    assert!(!passes(&env, Hook::FromWorkload, &non_ip()));
    assert!(passes(&env, Hook::ToWorkload, &arp()));
    assert!(passes(&env, Hook::FromWorkload, &arp()));
    let nd = Frame::icmp(ip("fe80::1"), ip("ff02::1"), 135, 0, [0; 4]);
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
