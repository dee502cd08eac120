//! How a verdict is reached (docs/POLICY.md), through the kernel: what a rule matches and
//! what it counts. Selector peers, CIDR peers with excepts, zero prefixes of one family
//! only, port ranges, egress rules on the hook out of the workload, and per-rule packet and
//! byte counters.

mod common;

use common::*;
use microseg_dataplane::{common::*, packet::*, Hook};
use microseg_policy::Direction::{Egress, Ingress};

#[test]
fn cidr_peers_with_except() {
    let mut env = Env::reporting(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: nets}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - action: allow
      from: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.4/32]}]
    - action: allow
      from: [{cidr: "fd00::/16", except: ["fd00:0:0:bad::/64"]}]
"#,
        ),
        "db",
    );
    let v4 = env.rule_id("nets", Ingress, 0);
    let v6 = env.rule_id("nets", Ingress, 1);
    for (peer, allowed) in [
        ("10.2.0.1", true),
        ("10.255.255.255", true),
        ("10.2.3.5", true),
        ("10.2.3.4", false),
        ("10.1.5.5", false),
        ("10.1.0.2", false), // web: in the except
        ("11.0.0.1", false),
    ] {
        assert_eq!(
            into_db(&env, &Frame::udp(ip(peer), db4(), 1, 2)),
            allowed,
            "{peer}"
        );
        let want = if allowed {
            (verdict::ALLOW, v4)
        } else {
            (verdict::DENY, RULE_DEFAULT_DENY)
        };
        assert_eq!(verdict_of(&mut env), want, "{peer}");
    }
    for (peer, allowed) in [
        ("fd00::2", true),
        ("fd00:ffff::1", true),
        ("fd00:0:0:bad::9", false),
        ("fd01::1", false),
    ] {
        assert_eq!(
            into_db(&env, &Frame::udp(ip(peer), db6(), 1, 2)),
            allowed,
            "{peer}"
        );
        let want = if allowed {
            (verdict::ALLOW, v6)
        } else {
            (verdict::DENY, RULE_DEFAULT_DENY)
        };
        assert_eq!(verdict_of(&mut env), want, "{peer}");
    }
}

#[test]
fn zero_prefixes_match_their_own_family_only() {
    let env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: any6}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: allow, from: [{cidr: "::/0"}], ports: [{protocol: TCP, port: 6}]}]
  egress: [{action: allow, to: [{cidr: "0.0.0.0/0"}]}]
"#,
        ),
        "db",
    );
    assert!(into_db(&env, &Frame::tcp(web6(), db6(), 1, 6, TCP_SYN)));
    assert!(into_db(
        &env,
        &Frame::tcp(ip("2001:db8::1"), db6(), 1, 6, TCP_SYN)
    ));
    assert!(
        !into_db(&env, &Frame::tcp(web4(), db4(), 1, 6, TCP_SYN)),
        "::/0 matched an IPv4 peer"
    );
    assert!(
        !into_db(&env, &Frame::tcp(ip("8.8.8.8"), db4(), 1, 6, TCP_SYN)),
        "::/0 matched an IPv4 peer"
    );
    assert!(from_db(&env, &Frame::udp(db4(), ip("8.8.8.8"), 1, 53)));
    assert!(from_db(&env, &Frame::udp(db4(), web4(), 1, 53)));
    assert!(
        !from_db(&env, &Frame::udp(db6(), ip("2001:4860::8888"), 1, 53)),
        "0.0.0.0/0 matched an IPv6 peer"
    );
    assert!(
        !from_db(&env, &Frame::udp(db6(), web6(), 1, 53)),
        "0.0.0.0/0 matched an IPv6 peer"
    );
    let s = env.dp.stats().unwrap();
    assert_eq!((s.allowed(), s.denied()), (4, 4));
}

#[test]
fn port_ranges_wide_narrow_and_overlapping() {
    let mut env = Env::reporting(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: ranges}
spec:
  selector: {matchLabels: {app: db}}
  priority: 100
  ingress:
    - {action: allow, ports: [{protocol: TCP, port: 1024, endPort: 65535}]}
    - {action: allow, ports: [{protocol: TCP, port: 80, endPort: 90}]}
    - {action: log, ports: [{protocol: TCP, port: 2000, endPort: 2100}]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: holes}
spec:
  selector: {matchLabels: {app: db}}
  priority: 10
  ingress:
    - {action: deny, ports: [{protocol: TCP, port: 8000, endPort: 8100}, {protocol: TCP, port: 30000}]}
"#,
        ),
        "db",
    );
    let wide = env.rule_id("ranges", Ingress, 0);
    let narrow = env.rule_id("ranges", Ingress, 1);
    let log = env.rule_id("ranges", Ingress, 2);
    let hole = env.rule_id("holes", Ingress, 0);
    let dd = RULE_DEFAULT_DENY;
    for (port, want) in [
        (79, (verdict::DENY, dd)),
        (80, (verdict::ALLOW, narrow)),
        (90, (verdict::ALLOW, narrow)),
        (91, (verdict::DENY, dd)),
        (1023, (verdict::DENY, dd)),
        (1024, (verdict::ALLOW, wide)),
        (1999, (verdict::ALLOW, wide)),
        (2000, (verdict::LOG, log)),
        (2100, (verdict::LOG, log)),
        (2101, (verdict::ALLOW, wide)),
        (7999, (verdict::ALLOW, wide)),
        (8000, (verdict::DENY, hole)),
        (8050, (verdict::DENY, hole)),
        (8100, (verdict::DENY, hole)),
        (8101, (verdict::ALLOW, wide)),
        (29999, (verdict::ALLOW, wide)),
        (30000, (verdict::DENY, hole)),
        (30001, (verdict::ALLOW, wide)),
        (65535, (verdict::ALLOW, wide)),
    ] {
        assert_eq!(
            into_db(&env, &Frame::tcp(web4(), db4(), 40000, port, TCP_SYN)),
            want.0 != verdict::DENY,
            "port {port}"
        );
        assert_eq!(verdict_of(&mut env), want, "port {port}");
    }
    // Ranges are per protocol: UDP 5000 matches none.
    assert!(!into_db(&env, &Frame::udp(web4(), db4(), 40000, 5000)));
}

#[test]
fn egress_rules_apply_on_the_from_workload_hook() {
    let mut env = Env::reporting(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-egress}
spec:
  selector: {matchLabels: {app: db}}
  egress:
    - {action: deny, to: [{cidr: 0.0.0.0/0}, {cidr: "::/0"}], ports: [{protocol: UDP, port: 53}]}
    - {action: allow}
"#,
        ),
        "db",
    );
    assert!(!from_db(&env, &Frame::udp(db4(), ip("8.8.8.8"), 40000, 53)));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::DENY, env.rule_id("db-egress", Egress, 0))
    );
    assert!(!from_db(
        &env,
        &Frame::udp(db6(), ip("2001:4860::8888"), 40000, 53)
    ));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::DENY, env.rule_id("db-egress", Egress, 0))
    );
    assert!(from_db(
        &env,
        &Frame::tcp(db4(), web4(), 40000, 443, TCP_SYN)
    ));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::ALLOW, env.rule_id("db-egress", Egress, 1))
    );
    let ev = env.dp.drain_events();
    assert!(ev.is_empty());
    // Ingress has no section: UDP 53 into db is open.
    assert!(into_db(&env, &Frame::udp(ip("8.8.4.4"), db4(), 40000, 53)));
    let e = env.new_events();
    assert_eq!(e[0].direction, direction::INGRESS);
    assert_eq!((e[0].verdict, e[0].rule_id), (verdict::ALLOW, RULE_NONE));
}

#[test]
fn rule_counters_count_packets_and_bytes_of_their_sessions() {
    let env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - {action: allow, ports: [{protocol: TCP, port: 5432}]}
    - {action: deny, ports: [{protocol: UDP}]}
"#,
        ),
        "db",
    );
    let allow = env.rule_id("db-ingress", Ingress, 0);
    let deny = env.rule_id("db-ingress", Ingress, 1);
    let syn = web_to_db(TCP_SYN);
    let synack = db_to_web(TCP_SYN | TCP_ACK);
    let mut ack = web_to_db(TCP_ACK);
    ack.l4.extend_from_slice(&[0u8; 100]);
    assert!(into_db(&env, &syn));
    assert!(from_db(&env, &synack));
    assert!(into_db(&env, &ack));
    let c = env.dp.rule_counter(allow).unwrap();
    let bytes = (syn.bytes().len() + synack.bytes().len() + ack.bytes().len()) as u64;
    assert_eq!((c.packets, c.bytes), (3, bytes));
    let udp = Frame::udp(web4(), db4(), 1, 2);
    assert!(!into_db(&env, &udp));
    assert!(!into_db(&env, &udp));
    let c = env.dp.rule_counter(deny).unwrap();
    assert_eq!((c.packets, c.bytes), (2, 2 * udp.bytes().len() as u64));
    assert_eq!(env.dp.rule_counter(allow).unwrap().packets, 3);
}

#[test]
fn selector_rule_allows_web_and_default_denies_others() {
    let env = Env::new(&with(DB_ALLOWS_WEB), "db");
    let (web, db, other) = (web4(), db4(), ip("10.9.9.9"));
    let to_db = |f: Frame| passes(&env, Hook::ToWorkload, &f.bytes());
    assert!(to_db(Frame::tcp(web, db, 40000, 5432, TCP_SYN)));
    assert!(
        !to_db(Frame::tcp(web, db, 40001, 5433, TCP_SYN)),
        "another port"
    );
    assert!(
        !to_db(Frame::tcp(other, db, 40002, 5432, TCP_SYN)),
        "another peer"
    );
    // The reply of the allowed connection passes db's egress (no egress policy: open anyway).
    let reply = Frame::tcp(db, web, 5432, 40000, TCP_SYN | TCP_ACK);
    assert!(passes(&env, Hook::FromWorkload, &reply.bytes()));
    let st = env.dp.stats().unwrap();
    assert_eq!(st.denied(), 2);
    assert_eq!(st.allowed(), 2);
}
