//! The parser, through the kernel: every frame shape either reaches the policy with the
//! right protocol and ports (shown by an allowed and a denied case judged on them), or is
//! dropped and counted as malformed; what the network needs passes, counted.

mod common;

use common::*;
use microseg_dataplane::{common::*, packet::*, Hook};

/// db (on lo) accepts TCP 80, UDP 53, SCTP 9000, ICMP, ICMPv6 and GRE (47) from anyone;
/// anything else is default-denied. Its egress is open (no policy has an egress section).
const POLICY: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - action: allow
      ports:
        - {protocol: TCP, port: 80}
        - {protocol: UDP, port: 53}
        - {protocol: SCTP, port: 9000}
        - {protocol: ICMP}
        - {protocol: ICMPv6}
        - {protocol: 47}
"#;

fn env() -> Env {
    Env::new(&with(POLICY), "db")
}

fn ingress(env: &Env, frame: &Frame) -> bool {
    passes(env, Hook::ToWorkload, &frame.bytes())
}

fn stats(env: &Env) -> Stats {
    env.dp.stats().expect("stats")
}

/// Runs `frame` into db and asserts it is dropped as malformed (parse_errors +1, no verdict
/// from policy: neither allowed nor denied counters move).
fn assert_malformed(env: &Env, hook: Hook, frame: &[u8], what: &str) {
    let before = stats(env);
    assert!(!passes(env, hook, frame), "{what}: passed");
    let after = stats(env);
    assert_eq!(
        after.parse_errors,
        before.parse_errors + 1,
        "{what}: parse_errors"
    );
    assert_eq!(after.allowed(), before.allowed(), "{what}: judged allowed");
    assert_eq!(
        after.session_misses, before.session_misses,
        "{what}: reached the policy path"
    );
}

#[test]
fn ipv4_plain_is_judged_on_its_ports() {
    let env = env();
    assert!(ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 81, TCP_SYN)
    ));
    assert!(ingress(&env, &Frame::udp(web4(), db4(), 40000, 53)));
    assert!(!ingress(&env, &Frame::udp(web4(), db4(), 40000, 54)));
    assert!(ingress(&env, &Frame::sctp(web4(), db4(), 40000, 9000)));
    assert!(!ingress(&env, &Frame::sctp(web4(), db4(), 40000, 9001)));
    assert!(ingress(&env, &Frame::echo_request(web4(), db4(), 7)));
    let s = stats(&env);
    assert_eq!((s.allowed(), s.denied(), s.parse_errors), (4, 3, 0));
}

#[test]
fn ipv4_options_shift_the_l4_header() {
    let env = env();
    // NOP, NOP, then a 12-byte timestamp-like option: 16 bytes of options, IHL 9.
    let opts = [1u8, 1, 68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).with_ipv4_options(&opts)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40001, 81, TCP_SYN).with_ipv4_options(&opts)
    ));
    // The longest header: 40 bytes of options (IHL 15).
    let max = [1u8; 40];
    assert!(ingress(
        &env,
        &Frame::udp(web4(), db4(), 40000, 53).with_ipv4_options(&max)
    ));
    assert!(!ingress(
        &env,
        &Frame::udp(web4(), db4(), 40000, 5353).with_ipv4_options(&max)
    ));
    assert_eq!(stats(&env).parse_errors, 0);
}

#[test]
fn ipv6_plain_is_judged_on_its_ports() {
    let env = env();
    assert!(ingress(
        &env,
        &Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web6(), db6(), 40000, 81, TCP_SYN)
    ));
    assert!(ingress(&env, &Frame::udp(web6(), db6(), 40000, 53)));
    assert!(!ingress(&env, &Frame::udp(web6(), db6(), 40000, 54)));
    assert!(ingress(&env, &Frame::echo_request(web6(), db6(), 9)));
    assert_eq!(stats(&env).parse_errors, 0);
}

#[test]
fn every_ipv6_extension_header_kind_is_walked() {
    let env = env();
    // Hop-by-hop, routing, destination options, mobility, HIP, shim6, authentication.
    for ext in [0u8, 43, 60, 135, 139, 140, 51] {
        let ok = Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).with_ipv6_ext(&[ext]);
        assert!(
            ingress(&env, &ok),
            "extension header {ext}: allowed port dropped"
        );
        let bad = Frame::tcp(web6(), db6(), 40001, 81, TCP_SYN).with_ipv6_ext(&[ext]);
        assert!(
            !ingress(&env, &bad),
            "extension header {ext}: denied port passed"
        );
    }
    assert_eq!(stats(&env).parse_errors, 0);
}

#[test]
fn ipv6_extension_header_chains_are_walked_up_to_eight() {
    let env = env();
    let chain = [0u8, 60, 43, 51, 60];
    assert!(ingress(
        &env,
        &Frame::udp(web6(), db6(), 40000, 53).with_ipv6_ext(&chain)
    ));
    assert!(!ingress(
        &env,
        &Frame::udp(web6(), db6(), 40000, 54).with_ipv6_ext(&chain)
    ));
    let eight = [0u8, 60, 43, 135, 139, 140, 51, 60];
    assert!(
        ingress(
            &env,
            &Frame::udp(web6(), db6(), 40000, 53).with_ipv6_ext(&eight)
        ),
        "8 headers"
    );
    assert!(!ingress(
        &env,
        &Frame::udp(web6(), db6(), 40000, 54).with_ipv6_ext(&eight)
    ));
    assert_eq!(stats(&env).parse_errors, 0);
    // Beyond the limit the packet cannot be judged: dropped, never passed unjudged.
    let nine = [0u8, 60, 43, 135, 139, 140, 51, 60, 60];
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &Frame::udp(web6(), db6(), 40000, 53)
            .with_ipv6_ext(&nine)
            .bytes(),
        "9 headers",
    );
}

#[test]
fn vlan_tagged_frames_are_judged_by_their_inner_packet() {
    let env = env();
    assert!(ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).with_vlan(100)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 81, TCP_SYN).with_vlan(100)
    ));
    assert!(ingress(
        &env,
        &Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).with_vlan(4094)
    ));
    assert!(!ingress(
        &env,
        &Frame::tcp(web6(), db6(), 40000, 81, TCP_SYN).with_vlan(4094)
    ));
    // 802.1ad outer tag alone is one tag too.
    let mut qinq = Frame::udp(web4(), db4(), 40000, 53).with_vlan(7).bytes();
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    assert!(passes(&env, Hook::ToWorkload, &qinq));
    let s = stats(&env);
    assert_eq!(s.vlan, 5);
    assert_eq!((s.allowed(), s.denied(), s.parse_errors), (3, 2, 0));
}

/// Inserts a second 802.1Q tag after the first one.
fn double_tag(mut frame: Vec<u8>, outer: u16) -> Vec<u8> {
    let mut tag = outer.to_be_bytes().to_vec();
    tag.extend_from_slice(&[0, 5]);
    frame.splice(12..12, tag);
    frame
}

#[test]
fn double_tagged_frames_are_dropped() {
    let env = env();
    let inner = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN)
        .with_vlan(100)
        .bytes();
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &double_tag(inner.clone(), 0x8100),
        "802.1Q in 802.1Q",
    );
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &double_tag(inner, 0x88a8),
        "802.1Q in 802.1ad",
    );
    // On the egress side too, even from the workload's own address.
    let out = Frame::tcp(db4(), web4(), 80, 40000, TCP_SYN | TCP_ACK)
        .with_vlan(100)
        .bytes();
    assert_malformed(
        &env,
        Hook::FromWorkload,
        &double_tag(out, 0x8100),
        "egress double tag",
    );
}

/// The kernel's test runner refuses untagged frames too short for the IP header their
/// ethertype announces, so truncated IP headers are sent behind a VLAN tag (the parser
/// takes the same path after the tag). On the wire such frames do arrive.
#[test]
fn truncated_headers_are_dropped_and_counted() {
    let env = env();
    // Ethernet: a VLAN ethertype with its tag cut off (the kernel refuses frames < 14 bytes).
    for cut in [14, 16, 17] {
        let mut eth = Frame::tcp(web4(), db4(), 1, 80, TCP_SYN)
            .with_vlan(3)
            .bytes();
        eth.truncate(cut);
        assert_malformed(
            &env,
            Hook::ToWorkload,
            &eth,
            &format!("VLAN tag cut at {cut}"),
        );
    }
    for (what, full, cut) in [
        (
            "IPv4 header",
            Frame::tcp(web4(), db4(), 1, 80, TCP_SYN)
                .with_vlan(3)
                .bytes(),
            18 + 12,
        ),
        (
            "IPv4 header without addresses",
            Frame::tcp(web4(), db4(), 1, 80, TCP_SYN)
                .with_vlan(3)
                .bytes(),
            18 + 19,
        ),
        (
            "IPv6 header",
            Frame::tcp(web6(), db6(), 1, 80, TCP_SYN)
                .with_vlan(3)
                .bytes(),
            18 + 30,
        ),
        (
            "IPv6 header without destination",
            Frame::tcp(web6(), db6(), 1, 80, TCP_SYN)
                .with_vlan(3)
                .bytes(),
            18 + 39,
        ),
    ] {
        let mut f = full;
        f.truncate(cut);
        assert_malformed(&env, Hook::ToWorkload, &f, what);
        assert_malformed(&env, Hook::FromWorkload, &f, what);
    }
    // L4 headers cut short, with IP lengths that agree (only the L4 header is missing).
    for (src, dst) in [(web4(), db4()), (web6(), db6())] {
        let mut tcp = Frame::tcp(src, dst, 40000, 80, TCP_SYN);
        tcp.l4.truncate(12);
        assert_malformed(&env, Hook::ToWorkload, &tcp.bytes(), "TCP header");
        let mut udp = Frame::udp(src, dst, 40000, 53);
        udp.l4.truncate(6);
        assert_malformed(&env, Hook::ToWorkload, &udp.bytes(), "UDP header");
        let mut sctp = Frame::sctp(src, dst, 40000, 9000);
        sctp.l4.truncate(4);
        assert_malformed(&env, Hook::ToWorkload, &sctp.bytes(), "SCTP header");
        let mut icmp = Frame::echo_request(src, dst, 1);
        icmp.l4.truncate(4);
        assert_malformed(&env, Hook::ToWorkload, &icmp.bytes(), "ICMP header");
        // An IPv6 extension header cut off.
        if src.is_ipv6() {
            let mut ext = Frame::udp(src, dst, 40000, 53).with_ipv6_ext(&[0, 60]);
            ext.l4.clear();
            let mut f = ext.bytes();
            // Hop-by-hop whole, then 1 byte of the destination options header.
            f.truncate(f.len() - 7);
            f[18..20].copy_from_slice(&9u16.to_be_bytes());
            assert_malformed(&env, Hook::ToWorkload, &f, "IPv6 extension header");
        }
    }
    assert_eq!(stats(&env).parse_errors, 3 + 8 + 9);
}

#[test]
fn invalid_ip_headers_are_dropped_and_counted() {
    let env = env();
    let good = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).bytes();
    assert!(passes(&env, Hook::ToWorkload, &good));
    for ihl in [0u8, 4] {
        let mut f = good.clone();
        f[14] = 0x40 | ihl;
        assert_malformed(&env, Hook::ToWorkload, &f, &format!("IHL {ihl}"));
    }
    let mut v = good.clone();
    v[14] = 0x65; // version 6 behind an IPv4 ethertype
    assert_malformed(&env, Hook::ToWorkload, &v, "IPv4 version");
    let mut long = good.clone();
    long[16..18].copy_from_slice(&(40u16 + 1).to_be_bytes());
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &long,
        "IPv4 total length beyond the frame",
    );
    let mut short = good.clone();
    short[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &short,
        "IPv4 total length below the header",
    );
    // IHL larger than the frame holds.
    let mut big_ihl = good.clone();
    big_ihl[14] = 0x4f;
    assert_malformed(&env, Hook::ToWorkload, &big_ihl, "IHL 15 without options");

    let good6 = Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).bytes();
    assert!(passes(&env, Hook::ToWorkload, &good6));
    let mut v6 = good6.clone();
    v6[14] = 0x40;
    assert_malformed(&env, Hook::ToWorkload, &v6, "IPv6 version");
    let mut long6 = good6.clone();
    long6[18..20].copy_from_slice(&21u16.to_be_bytes());
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &long6,
        "IPv6 payload length beyond the frame",
    );
}

#[test]
fn unknown_ip_protocols_are_judged_by_protocol_rules_and_defaults() {
    let mut env = env();
    let gre = |s, d| Frame::new(s, d, 47, vec![0u8; 24]);
    let nonext = |s, d| Frame::new(s, d, 59, vec![0u8; 24]);
    assert!(
        ingress(&env, &gre(web4(), db4())),
        "GRE allowed by {{protocol: 47}}"
    );
    assert!(
        ingress(&env, &gre(web6(), db6())),
        "GRE over IPv6 allowed by {{protocol: 47}}"
    );
    assert!(
        !ingress(&env, &nonext(web4(), db4())),
        "protocol 59 default-denied"
    );
    assert!(
        !ingress(&env, &nonext(web6(), db6())),
        "IPv6 no-next-header default-denied"
    );
    let ev = env.new_events();
    assert_eq!(ev.len(), 4);
    let rule = env.rule_id("db-ingress", microseg_policy::Direction::Ingress, 0);
    assert_eq!(
        (ev[0].protocol, ev[0].verdict, ev[0].rule_id),
        (47, verdict::ALLOW, rule)
    );
    assert_eq!(
        (ev[1].protocol, ev[1].verdict, ev[1].rule_id),
        (47, verdict::ALLOW, rule)
    );
    assert_eq!(
        (ev[2].protocol, ev[2].verdict, ev[2].rule_id),
        (59, verdict::DENY, RULE_DEFAULT_DENY)
    );
    assert_eq!(
        (ev[3].protocol, ev[3].verdict, ev[3].rule_id),
        (59, verdict::DENY, RULE_DEFAULT_DENY)
    );
    // db's egress has no policy: open, for unknown protocols too (to a peer with no
    // session: web's protocol-59 "connection" was denied, and so is its reply direction).
    assert!(passes(
        &env,
        Hook::FromWorkload,
        &nonext(db4(), ip("10.9.9.9")).bytes()
    ));
    assert!(!passes(
        &env,
        Hook::FromWorkload,
        &nonext(db4(), web4()).bytes()
    ));
    assert_eq!(stats(&env).parse_errors, 0);
}

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

#[test]
fn ipv4_fragments_follow_their_first_fragment() {
    let env = env();
    // Allowed datagram: first fragment carries port 80; later ones carry no ports.
    let first = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).fragment(0, true, 0x1111);
    assert!(ingress(&env, &first));
    let mid = Frame::tcp(web4(), db4(), 0, 0, 0).fragment(185, true, 0x1111);
    let last = Frame::tcp(web4(), db4(), 0, 0, 0).fragment(370, false, 0x1111);
    assert!(ingress(&env, &mid), "later fragment of an allowed datagram");
    assert!(ingress(&env, &last), "last fragment of an allowed datagram");
    // Denied datagram: its later fragments are dropped too.
    let first_bad = Frame::udp(web4(), db4(), 40000, 54).fragment(0, true, 0x2222);
    assert!(!ingress(&env, &first_bad));
    let later_bad = Frame::udp(web4(), db4(), 0, 0).fragment(185, false, 0x2222);
    assert!(
        !ingress(&env, &later_bad),
        "later fragment of a denied datagram"
    );
    let s = stats(&env);
    assert_eq!(s.fragments_dropped, 0);
    // A later fragment whose first fragment was never seen: dropped and counted.
    let orphan = Frame::tcp(web4(), db4(), 0, 0, 0).fragment(185, false, 0x3333);
    assert!(!ingress(&env, &orphan));
    // Same id, other protocol: not the same datagram.
    let other_proto = Frame::udp(web4(), db4(), 0, 0).fragment(185, false, 0x1111);
    assert!(!ingress(&env, &other_proto));
    let s = stats(&env);
    assert_eq!(s.fragments_dropped, 2);
    // Counted: both first fragments and every later one.
    assert_eq!(s.fragments, 2 + 2 + 1 + 2);
    assert_eq!(env.dp.fragment_count(), 2);
    assert_eq!(s.parse_errors, 0);
}

#[test]
fn ipv4_tcp_fragment_at_offset_one_is_malformed() {
    let env = env();
    let first = Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN).fragment(0, true, 0x4444);
    assert!(ingress(&env, &first));
    // It could overwrite the flags of the allowed first fragment's TCP header (RFC 1858).
    let overlap = Frame::tcp(web4(), db4(), 0, 0, 0).fragment(1, false, 0x4444);
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &overlap.bytes(),
        "TCP fragment at offset 1",
    );
}

#[test]
fn ipv6_fragments_follow_their_first_fragment() {
    let env = env();
    let first = Frame::tcp(web6(), db6(), 40000, 80, TCP_SYN).fragment(0, true, 0xabcdef);
    assert!(ingress(&env, &first));
    let later = Frame::tcp(web6(), db6(), 0, 0, 0).fragment(181, false, 0xabcdef);
    assert!(
        ingress(&env, &later),
        "later fragment of an allowed datagram"
    );
    // Behind other extension headers too.
    let first_ext = Frame::udp(web6(), db6(), 40000, 53)
        .with_ipv6_ext(&[0, 60])
        .fragment(0, true, 7);
    assert!(ingress(&env, &first_ext));
    let later_ext = Frame::udp(web6(), db6(), 0, 0)
        .with_ipv6_ext(&[0, 60])
        .fragment(10, false, 7);
    assert!(ingress(&env, &later_ext));
    let first_bad = Frame::tcp(web6(), db6(), 40000, 81, TCP_SYN).fragment(0, true, 0x99);
    assert!(!ingress(&env, &first_bad));
    let later_bad = Frame::tcp(web6(), db6(), 0, 0, 0).fragment(181, false, 0x99);
    assert!(
        !ingress(&env, &later_bad),
        "later fragment of a denied datagram"
    );
    let orphan = Frame::tcp(web6(), db6(), 0, 0, 0).fragment(181, false, 0x100);
    assert!(!ingress(&env, &orphan));
    let s = stats(&env);
    assert_eq!(s.fragments_dropped, 1);
    assert_eq!(s.parse_errors, 0);
}

#[test]
fn ipv4_mapped_ipv6_addresses_are_dropped() {
    let env = env();
    let mapped_src = Frame::tcp(ip("::ffff:10.1.0.2"), db6(), 40000, 80, TCP_SYN);
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &mapped_src.bytes(),
        "v4-mapped source",
    );
    let mapped_dst = Frame::tcp(web6(), ip("::ffff:10.1.0.3"), 40000, 80, TCP_SYN);
    assert_malformed(
        &env,
        Hook::ToWorkload,
        &mapped_dst.bytes(),
        "v4-mapped destination",
    );
    assert_malformed(
        &env,
        Hook::FromWorkload,
        &Frame::tcp(db6(), ip("::ffff:10.1.0.2"), 80, 1, TCP_SYN).bytes(),
        "egress",
    );
}
