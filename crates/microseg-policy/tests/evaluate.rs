//! The reference evaluator implements the verdict rules of docs/POLICY.md.

use microseg_policy::*;
use std::net::IpAddr;

const WORKLOADS: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db, labels: {app: db}}
spec: {interface: veth-db, ips: [10.0.0.3, "fd00::3"]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web, labels: {app: web}}
spec: {interface: veth-web, ips: [10.0.0.2, "fd00::2"]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: other, labels: {app: other}}
spec: {ips: [10.0.0.9]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: staged, labels: {app: staged}}
spec: {ips: [10.0.0.7], mode: audit}
"#;

fn set(policies: &str) -> ResourceSet {
    let (res, diags) = parse_str("t.yaml", &format!("{WORKLOADS}\n---\n{policies}"));
    assert!(diags.is_empty(), "{diags:?}");
    let set: ResourceSet = res.into_iter().collect();
    assert!(validate_set(&set).is_empty());
    set
}

fn pkt(src: &str, dst: &str, protocol: u8, src_port: u16, dst_port: u16) -> Packet {
    Packet {
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse().unwrap(),
        protocol,
        src_port,
        dst_port,
    }
}

fn tcp(src: &str, dst: &str, dst_port: u16) -> Packet {
    pkt(src, dst, PROTO_TCP, 40000, dst_port)
}

fn ingress(set: &ResourceSet, wl: &str, p: Packet) -> Decision {
    evaluate(set, set.workload(wl).unwrap(), Direction::Ingress, &p)
}

fn egress(set: &ResourceSet, wl: &str, p: Packet) -> Decision {
    evaluate(set, set.workload(wl).unwrap(), Direction::Egress, &p)
}

fn policy(name: &str, body: &str) -> String {
    format!("apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n{body}\n---\n")
}

#[test]
fn nothing_selects_the_workload_means_open() {
    let s = set("");
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 5432));
    assert_eq!(
        (d.verdict, d.policy, d.rule, d.audit_verdict),
        (Verdict::Allow, None, None, None)
    );
}

#[test]
fn a_section_without_matching_rule_is_default_deny() {
    let s = set(&policy("db-in", "  selector: {matchLabels: {app: db}}\n  ingress:\n    - action: allow\n      from: [{selector: {matchLabels: {app: web}}}]\n      ports: [{protocol: TCP, port: 5432}]"));
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 5432));
    assert_eq!(
        (d.verdict, d.policy.as_deref(), d.rule),
        (Verdict::Allow, Some("db-in"), Some(0))
    );
    assert_eq!(
        d.tied,
        vec![RuleRef {
            policy: "db-in".into(),
            rule: 0
        }]
    );
    let d = ingress(&s, "db", tcp("10.0.0.9", "10.0.0.3", 5432));
    assert_eq!(
        (d.verdict, d.policy.as_deref(), d.rule),
        (Verdict::Deny, Some("default-deny"), None)
    );
    assert!(d.tied.is_empty());
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 5433));
    assert_eq!(d.verdict, Verdict::Deny);
    // The other direction has no section: open.
    let d = egress(&s, "db", tcp("10.0.0.3", "8.8.8.8", 53));
    assert_eq!((d.verdict, d.policy), (Verdict::Allow, None));
}

#[test]
fn an_empty_section_denies_everything() {
    let s = set(&policy("iso", "  selector: {}\n  egress: []"));
    let d = egress(&s, "web", tcp("10.0.0.2", "10.0.0.3", 80));
    assert_eq!(
        (d.verdict, d.policy.as_deref()),
        (Verdict::Deny, Some("default-deny"))
    );
}

#[test]
fn lowest_priority_wins() {
    let s = set(&format!(
        "{}{}",
        policy(
            "a",
            "  selector: {}\n  priority: 200\n  ingress: [{action: deny}]"
        ),
        policy(
            "b",
            "  selector: {}\n  priority: 100\n  ingress: [{action: allow}]"
        )
    ));
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 1));
    assert_eq!(
        (d.verdict, d.policy.as_deref()),
        (Verdict::Allow, Some("b"))
    );
}

#[test]
fn at_equal_priority_deny_beats_log_beats_allow() {
    let s = set(&format!(
        "{}{}",
        policy("a", "  selector: {}\n  ingress: [{action: allow}, {action: log, ports: [{protocol: TCP, port: 80}]}]"),
        policy("b", "  selector: {}\n  ingress: [{action: deny, ports: [{protocol: TCP, port: 22}]}, {action: allow}]")
    ));
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 22));
    assert_eq!(
        (d.verdict, d.policy.as_deref(), d.rule),
        (Verdict::Deny, Some("b"), Some(0))
    );
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 80));
    assert_eq!(
        (d.verdict, d.policy.as_deref(), d.rule),
        (Verdict::Log, Some("a"), Some(1))
    );
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 443));
    assert_eq!(
        (d.verdict, d.policy.as_deref(), d.rule),
        (Verdict::Allow, Some("a"), Some(0))
    );
    assert_eq!(
        d.tied,
        vec![
            RuleRef {
                policy: "a".into(),
                rule: 0
            },
            RuleRef {
                policy: "b".into(),
                rule: 1
            }
        ]
    );
}

#[test]
fn a_workload_in_audit_mode_reports_deny_as_audit() {
    let s = set(&policy(
        "iso",
        "  selector: {}\n  ingress: [{action: deny, ports: [{protocol: UDP}]}]",
    ));
    let d = ingress(&s, "staged", pkt("10.0.0.2", "10.0.0.7", PROTO_UDP, 1, 53));
    assert_eq!(
        (d.verdict, d.policy.as_deref()),
        (Verdict::Audit, Some("iso"))
    );
    let d = ingress(&s, "staged", tcp("10.0.0.2", "10.0.0.7", 80));
    assert_eq!(
        (d.verdict, d.policy.as_deref()),
        (Verdict::Audit, Some("default-deny"))
    );
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 80));
    assert_eq!(d.verdict, Verdict::Deny);
}

#[test]
fn audit_policies_are_reported_separately() {
    let s = set(&format!(
        "{}{}",
        policy("live", "  selector: {}\n  ingress: [{action: allow}]"),
        policy("staged-deny", "  selector: {matchLabels: {app: db}}\n  mode: audit\n  ingress: [{action: deny, ports: [{protocol: TCP, port: 22}]}]")
    ));
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 22));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(
        (d.audit_verdict, d.audit_policy.as_deref(), d.audit_rule),
        (Some(Verdict::Deny), Some("staged-deny"), Some(0))
    );
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 80));
    assert_eq!(
        (d.audit_verdict, d.audit_policy.as_deref(), d.audit_rule),
        (Some(Verdict::Deny), Some("default-deny"), None)
    );
    let d = egress(&s, "db", tcp("10.0.0.3", "10.0.0.2", 80));
    assert_eq!(
        (d.audit_verdict, d.audit_policy),
        (Some(Verdict::Allow), None),
        "selected, but no egress section"
    );
    let d = ingress(&s, "web", tcp("10.0.0.3", "10.0.0.2", 22));
    assert_eq!(d.audit_verdict, None, "no audit policy selects web");
    // Audit-workload conversion does not apply to audit verdicts.
    let s = set(&policy("p", "  selector: {}\n  mode: audit\n  ingress: []"));
    let d = ingress(&s, "staged", tcp("10.0.0.2", "10.0.0.7", 80));
    assert_eq!(
        (d.verdict, d.audit_verdict),
        (Verdict::Allow, Some(Verdict::Deny))
    );
}

#[test]
fn cidr_except_and_address_families() {
    let s = set(&policy(
        "out",
        "  selector: {}\n  egress:\n    - action: allow\n      to: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}, {cidr: \"2001:db8::/32\"}]",
    ));
    assert_eq!(
        egress(&s, "web", tcp("10.0.0.2", "10.2.3.4", 80)).verdict,
        Verdict::Allow
    );
    assert_eq!(
        egress(&s, "web", tcp("10.0.0.2", "10.1.3.4", 80)).verdict,
        Verdict::Deny
    );
    assert_eq!(
        egress(&s, "web", tcp("fd00::2", "2001:db8::1", 80)).verdict,
        Verdict::Allow
    );
    assert_eq!(
        egress(&s, "web", tcp("fd00::2", "2001:db9::1", 80)).verdict,
        Verdict::Deny
    );
    assert_eq!(
        egress(&s, "web", tcp("fd00::2", "::ffff:10.2.3.4", 80)).verdict,
        Verdict::Deny,
        "v4 cidr never matches v6"
    );
}

#[test]
fn selector_peers_match_workload_addresses_of_both_families() {
    let s = set(&policy("db-in", "  selector: {matchLabels: {app: db}}\n  ingress: [{action: allow, from: [{selector: {matchLabels: {app: web}}}]}]"));
    assert_eq!(
        ingress(&s, "db", tcp("fd00::2", "fd00::3", 1)).verdict,
        Verdict::Allow
    );
    assert_eq!(
        ingress(&s, "db", tcp("fd00::9", "fd00::3", 1)).verdict,
        Verdict::Deny
    );
    // The peer is the source on ingress: the destination does not matter.
    assert_eq!(
        ingress(&s, "db", tcp("10.0.0.9", "10.0.0.2", 1)).verdict,
        Verdict::Deny
    );
}

#[test]
fn port_ranges_protocols_and_source_ports() {
    let s = set(&policy(
        "p",
        "  selector: {}\n  ingress:\n    - action: allow\n      ports: [{protocol: TCP, port: 8000, endPort: 8100}, {protocol: ICMP}]\n    - action: log\n      ports: [{protocol: 47}]\n    - action: allow\n      ports: [{protocol: UDP, port: 53}]\n      sourcePorts: [{port: 1024, endPort: 65535}]",
    ));
    let d = |p: Packet| ingress(&s, "db", p).verdict;
    assert_eq!(d(tcp("10.0.0.2", "10.0.0.3", 8000)), Verdict::Allow);
    assert_eq!(d(tcp("10.0.0.2", "10.0.0.3", 8100)), Verdict::Allow);
    assert_eq!(d(tcp("10.0.0.2", "10.0.0.3", 8101)), Verdict::Deny);
    assert_eq!(
        d(pkt("10.0.0.2", "10.0.0.3", PROTO_UDP, 5000, 8050)),
        Verdict::Deny,
        "protocol must match"
    );
    assert_eq!(
        d(pkt("10.0.0.2", "10.0.0.3", PROTO_ICMP, 0, 0)),
        Verdict::Allow
    );
    assert_eq!(d(pkt("10.0.0.2", "10.0.0.3", 47, 0, 0)), Verdict::Log);
    assert_eq!(
        d(pkt("10.0.0.2", "10.0.0.3", PROTO_UDP, 5353, 53)),
        Verdict::Allow
    );
    assert_eq!(
        d(pkt("10.0.0.2", "10.0.0.3", PROTO_UDP, 53, 53)),
        Verdict::Deny,
        "source port outside range"
    );
}

#[test]
fn a_rule_without_ports_matches_every_protocol() {
    let s = set(&policy(
        "p",
        "  selector: {}\n  egress: [{action: deny, to: [{cidr: 192.0.2.0/24}]}, {action: allow}]",
    ));
    for proto in [PROTO_TCP, PROTO_UDP, PROTO_ICMP, 47, 255] {
        assert_eq!(
            egress(&s, "web", pkt("10.0.0.2", "192.0.2.1", proto, 0, 0)).verdict,
            Verdict::Deny
        );
        assert_eq!(
            egress(&s, "web", pkt("10.0.0.2", "198.51.100.1", proto, 0, 0)).verdict,
            Verdict::Allow
        );
    }
}

#[test]
fn decisions_serialize_with_lowercase_verdicts() {
    let s = set("");
    let d = ingress(&s, "db", tcp("10.0.0.2", "10.0.0.3", 1));
    let j = serde_json::to_value(&d).unwrap();
    assert_eq!(j["verdict"], "allow");
    assert_eq!(
        serde_json::to_value("10.0.0.0/8".parse::<IpNet>().unwrap()).unwrap(),
        "10.0.0.0/8"
    );
}
