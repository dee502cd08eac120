//! CONTRACT §1, rule by rule, through the kernel: verdicts, their attribution in events,
//! counters, sessions and policy generations.

mod common;

use common::*;
use microseg_dataplane::{common::*, packet::*, Hook};
use microseg_policy::Direction::{Egress, Ingress};

fn into_db(env: &Env, f: &Frame) -> bool {
    passes(env, Hook::ToWorkload, &f.bytes())
}
fn from_db(env: &Env, f: &Frame) -> bool {
    passes(env, Hook::FromWorkload, &f.bytes())
}

/// The single NEW event of the last packet: (verdict, rule id).
fn verdict_of(env: &mut Env) -> (u8, u32) {
    let ev = env.new_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    (ev[0].verdict, ev[0].rule_id)
}

#[test]
fn lowest_priority_number_wins() {
    let mut env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: early-deny}
spec:
  selector: {matchLabels: {app: db}}
  priority: 10
  ingress: [{action: deny, ports: [{protocol: TCP, port: 5432}]}]
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: late-allow}
spec:
  selector: {matchLabels: {app: db}}
  priority: 100
  ingress: [{action: allow, from: [{selector: {matchLabels: {app: web}}}]}]
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: early-allow}
spec:
  selector: {matchLabels: {app: db}}
  priority: 5
  ingress: [{action: allow, ports: [{protocol: UDP, port: 53}]}]
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: late-deny}
spec:
  selector: {}
  ingress: [{action: deny, ports: [{protocol: UDP}]}]
"#,
        ),
        "db",
    );
    assert!(
        !into_db(&env, &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)),
        "priority 10 deny beats priority 100 allow"
    );
    assert_eq!(
        verdict_of(&mut env),
        (verdict::DENY, env.rule_id("early-deny", Ingress, 0))
    );
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN)
    ));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::ALLOW, env.rule_id("late-allow", Ingress, 0))
    );
    assert!(
        into_db(&env, &Frame::udp(ip("10.9.9.9"), db4(), 40000, 53)),
        "priority 5 allow beats default 1000 deny"
    );
    assert_eq!(
        verdict_of(&mut env),
        (verdict::ALLOW, env.rule_id("early-allow", Ingress, 0))
    );
    assert!(!into_db(
        &env,
        &Frame::udp(ip("10.9.9.9"), db4(), 40000, 54)
    ));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::DENY, env.rule_id("late-deny", Ingress, 0))
    );
}

#[test]
fn at_equal_priority_deny_beats_log_beats_allow() {
    let mut env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: a-allow}
spec:
  selector: {matchLabels: {app: db}}
  priority: 100
  ingress: [{action: allow, ports: [{protocol: TCP, port: 1}, {protocol: TCP, port: 2}, {protocol: TCP, port: 3}]}]
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: b-log}
spec:
  selector: {matchLabels: {app: db}}
  priority: 100
  ingress: [{action: log, ports: [{protocol: TCP, port: 1}, {protocol: TCP, port: 2}]}]
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: c-deny}
spec:
  selector: {matchLabels: {app: db}}
  priority: 100
  ingress: [{action: deny, from: [{cidr: 10.0.0.0/8}], ports: [{protocol: TCP, port: 1}]}]
"#,
        ),
        "db",
    );
    assert!(!into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 1, TCP_SYN)
    ));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::DENY, env.rule_id("c-deny", Ingress, 0))
    );
    assert!(into_db(&env, &Frame::tcp(web4(), db4(), 40000, 2, TCP_SYN)));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::LOG, env.rule_id("b-log", Ingress, 0))
    );
    assert!(into_db(&env, &Frame::tcp(web4(), db4(), 40000, 3, TCP_SYN)));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::ALLOW, env.rule_id("a-allow", Ingress, 0))
    );
    // The deny's peer is IPv4 only: over IPv6 port 1 is logged.
    assert!(into_db(&env, &Frame::tcp(web6(), db6(), 40000, 1, TCP_SYN)));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::LOG, env.rule_id("b-log", Ingress, 0))
    );
}

#[test]
fn default_deny_needs_a_selecting_policy_with_the_section() {
    let mut env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-lockdown}
spec:
  selector: {matchLabels: {app: db}}
  ingress: []
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-only}
spec:
  selector: {matchLabels: {app: web}}
  egress: []
"#,
        ),
        "db",
    );
    // db's ingress: an empty section is a section: default deny, attributed to rule 1.
    assert!(!into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)
    ));
    let (v, rule) = verdict_of(&mut env);
    assert_eq!((v, rule), (verdict::DENY, RULE_DEFAULT_DENY));
    assert_eq!(
        env.policy_of(rule).as_deref(),
        Some(microseg_policy::DEFAULT_DENY)
    );
    // db's egress: the selecting policy has no egress section, the one with one selects web: open.
    assert!(from_db(
        &env,
        &Frame::tcp(db4(), web4(), 40001, 80, TCP_SYN)
    ));
    assert_eq!(verdict_of(&mut env), (verdict::ALLOW, RULE_NONE));
    assert_eq!(env.policy_of(RULE_NONE), None);

    // Nothing selects db at all: open both ways.
    env.reapply(&with(
        r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-only}
spec:
  selector: {matchLabels: {app: web}}
  ingress: []
  egress: []
"#,
    ));
    assert!(into_db(&env, &Frame::udp(web4(), db4(), 40002, 9)));
    assert_eq!(verdict_of(&mut env), (verdict::ALLOW, RULE_NONE));
    let s = env.dp.stats().unwrap();
    assert_eq!((s.allowed(), s.denied()), (2, 1));
}

#[test]
fn audit_workload_reports_denies_and_passes_them() {
    let yaml = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db, labels: {app: db}}
spec: {interface: lo, ips: [10.1.0.3], mode: audit}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - {action: deny, ports: [{protocol: TCP, port: 22}]}
    - {action: allow, ports: [{protocol: TCP, port: 5432}]}
"#;
    let mut env = Env::new(yaml, "db");
    assert!(
        into_db(&env, &Frame::tcp(web4(), db4(), 40000, 22, TCP_SYN)),
        "audit mode never drops"
    );
    assert_eq!(
        verdict_of(&mut env),
        (verdict::AUDIT, env.rule_id("db-ingress", Ingress, 0))
    );
    assert!(
        into_db(&env, &Frame::tcp(web4(), db4(), 40000, 23, TCP_SYN)),
        "nor on default deny"
    );
    assert_eq!(verdict_of(&mut env), (verdict::AUDIT, RULE_DEFAULT_DENY));
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)
    ));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::ALLOW, env.rule_id("db-ingress", Ingress, 1))
    );
    let s = env.dp.stats().unwrap();
    assert_eq!((s.audited(), s.denied(), s.allowed()), (2, 0, 1));
}

#[test]
fn audit_policies_report_their_verdict_and_change_nothing() {
    let mut env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: staged}
spec:
  selector: {matchLabels: {app: db}}
  mode: audit
  ingress: [{action: deny, ports: [{protocol: TCP, port: 5432}]}, {action: log, ports: [{protocol: UDP}]}]
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: enforced}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: allow, ports: [{protocol: TCP}]}]
"#,
        ),
        "db",
    );
    let allow = env.rule_id("enforced", Ingress, 0);
    let check = |env: &mut Env, passed: bool, want: (u8, u32, u8, Option<&str>)| {
        let ev = env.new_events();
        assert_eq!(ev.len(), 1);
        let e = ev[0];
        let got = (
            e.verdict,
            e.rule_id,
            e.audit_verdict,
            env.policy_of(e.audit_rule_id),
        );
        assert_eq!(got, (want.0, want.1, want.2, want.3.map(String::from)));
        assert_eq!(passed, want.0 != verdict::DENY);
    };
    let p = into_db(&env, &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN));
    check(
        &mut env,
        p,
        (verdict::ALLOW, allow, verdict::DENY, Some("staged")),
    );
    let p = into_db(&env, &Frame::tcp(web4(), db4(), 40000, 80, TCP_SYN));
    check(
        &mut env,
        p,
        (
            verdict::ALLOW,
            allow,
            verdict::DENY,
            Some(microseg_policy::DEFAULT_DENY),
        ),
    );
    let p = into_db(&env, &Frame::udp(web4(), db4(), 40000, 53));
    check(
        &mut env,
        p,
        (
            verdict::DENY,
            RULE_DEFAULT_DENY,
            verdict::LOG,
            Some("staged"),
        ),
    );
    // Egress: the audit policy has no egress section; it selects db, so its would-be
    // verdict is reported: open.
    let p = from_db(&env, &Frame::tcp(db4(), web4(), 40001, 80, TCP_SYN));
    check(
        &mut env,
        p,
        (verdict::ALLOW, RULE_NONE, verdict::ALLOW, None),
    );
    let s = env.dp.stats().unwrap();
    assert_eq!(
        (s.allowed(), s.denied(), s.logged(), s.audited()),
        (3, 1, 0, 0)
    );
}

#[test]
fn log_passes_counted_with_a_log_event() {
    let mut env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: watch}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: log, from: [{selector: {matchLabels: {app: web}}}]}]
"#,
        ),
        "db",
    );
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)
    ));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::LOG, env.rule_id("watch", Ingress, 0))
    );
    // The reply and the next packets pass with the session's log verdict.
    assert!(from_db(
        &env,
        &Frame::tcp(db4(), web4(), 5432, 40000, TCP_SYN | TCP_ACK)
    ));
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_ACK)
    ));
    let s = env.dp.stats().unwrap();
    assert_eq!((s.logged(), s.allowed(), s.denied()), (3, 0, 0));
    assert!(!into_db(
        &env,
        &Frame::tcp(ip("10.7.0.1"), db4(), 40000, 5432, TCP_SYN)
    ));
}

#[test]
fn cidr_peers_with_except() {
    let mut env = Env::new(
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
    let mut env = Env::new(
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
    let mut env = Env::new(
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
    let syn = Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN);
    let synack = Frame::tcp(db4(), web4(), 5432, 40000, TCP_SYN | TCP_ACK);
    let mut ack = Frame::tcp(web4(), db4(), 40000, 5432, TCP_ACK);
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

const ALLOW_WEB: &str = r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {app: web}}}], ports: [{protocol: TCP, port: 5432}]}]
"#;

const DENY_ALL: &str = r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress: []
"#;

#[test]
fn revoking_an_allow_cuts_an_established_connection() {
    let mut env = Env::new(&with(ALLOW_WEB), "db");
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)
    ));
    assert!(from_db(
        &env,
        &Frame::tcp(db4(), web4(), 5432, 40000, TCP_SYN | TCP_ACK)
    ));
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_ACK)
    ));
    let (_, s) = env
        .dp
        .session_for(LO, 6, web4(), 40000, db4(), 5432)
        .expect("session");
    assert_eq!(s.state, session_state::ESTABLISHED);
    env.dp.drain_events();
    assert_eq!(env.dp.stats().unwrap().rejudged, 0);

    env.reapply(&with(DENY_ALL));
    assert!(
        !into_db(&env, &Frame::tcp(web4(), db4(), 40000, 5432, TCP_ACK)),
        "revoked connection still passes"
    );
    assert_eq!(env.dp.stats().unwrap().rejudged, 1);
    assert_eq!(verdict_of(&mut env), (verdict::DENY, RULE_DEFAULT_DENY));
    // Both directions are cut, and the session stays judged: no second re-judgement.
    assert!(!from_db(
        &env,
        &Frame::tcp(db4(), web4(), 5432, 40000, TCP_ACK)
    ));
    assert_eq!(env.dp.stats().unwrap().rejudged, 1);
    let (_, s) = env
        .dp
        .session_for(LO, 6, web4(), 40000, db4(), 5432)
        .expect("session");
    assert_eq!(s.verdict, verdict::DENY);
}

#[test]
fn granting_an_allow_lets_a_denied_flow_through() {
    let mut env = Env::new(&with(DENY_ALL), "db");
    let syn = Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN);
    assert!(!into_db(&env, &syn));
    assert!(!into_db(&env, &syn), "retransmission of a denied SYN");
    env.reapply(&with(ALLOW_WEB));
    assert!(
        into_db(&env, &syn),
        "denied flow still dropped after the allow"
    );
    assert_eq!(env.dp.stats().unwrap().rejudged, 1);
    let ev = env.new_events();
    let last = ev.last().expect("event on re-judgement");
    assert_eq!(
        (last.verdict, last.rule_id),
        (verdict::ALLOW, env.rule_id("db-ingress", Ingress, 0))
    );
    // Re-applying an unchanged policy keeps the generation: nothing is judged again.
    let same = with(ALLOW_WEB);
    let generation = env.dp.config().unwrap().generation;
    env.reapply(&same);
    assert_eq!(env.dp.config().unwrap().generation, generation);
    assert!(from_db(
        &env,
        &Frame::tcp(db4(), web4(), 5432, 40000, TCP_SYN | TCP_ACK)
    ));
    assert_eq!(env.dp.stats().unwrap().rejudged, 1);
}

#[test]
fn replies_of_allowed_connections_pass_a_closed_direction() {
    let env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: allow, ports: [{protocol: TCP, port: 5432}, {protocol: UDP, port: 53}, {protocol: ICMP}, {protocol: ICMPv6}]}]
  egress: []
"#,
        ),
        "db",
    );
    assert!(
        !from_db(
            &env,
            &Frame::tcp(db4(), web4(), 5432, 40000, TCP_SYN | TCP_ACK)
        ),
        "egress is closed"
    );
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40001, 5432, TCP_SYN)
    ));
    assert!(
        from_db(
            &env,
            &Frame::tcp(db4(), web4(), 5432, 40001, TCP_SYN | TCP_ACK)
        ),
        "TCP reply"
    );
    assert!(into_db(&env, &Frame::udp(web6(), db6(), 40002, 53)));
    assert!(
        from_db(&env, &Frame::udp(db6(), web6(), 53, 40002)),
        "UDP reply"
    );
    assert!(
        !from_db(&env, &Frame::udp(db6(), web6(), 53, 40003)),
        "not a reply: other port"
    );
    assert!(into_db(&env, &Frame::echo_request(web4(), db4(), 77)));
    assert!(
        from_db(&env, &Frame::echo_reply(db4(), web4(), 77)),
        "echo reply"
    );
    assert!(
        !from_db(&env, &Frame::echo_reply(db4(), web4(), 78)),
        "echo reply of another id"
    );
    assert!(into_db(&env, &Frame::echo_request(web6(), db6(), 5)));
    assert!(
        from_db(&env, &Frame::echo_reply(db6(), web6(), 5)),
        "ICMPv6 echo reply"
    );
}

#[test]
fn icmp_errors_about_an_allowed_session_pass() {
    let env = Env::new(
        &with(
            r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  ingress: []
  egress: [{action: allow, ports: [{protocol: TCP, port: 443}, {protocol: UDP, port: 53}]}]
"#,
        ),
        "db",
    );
    let router4 = ip("10.1.0.1");
    let router6 = ip("fd00::1");
    let out4 = Frame::tcp(db4(), ip("192.0.2.10"), 40000, 443, TCP_SYN);
    let out6 = Frame::udp(db6(), ip("2001:db8::10"), 40000, 53);
    assert!(from_db(&env, &out4));
    assert!(from_db(&env, &out6));
    // Errors about them come in from someone else (a router): they pass with the session.
    assert!(
        into_db(&env, &Frame::icmp_unreachable(router4, db4(), &out4)),
        "ICMP unreachable"
    );
    assert!(
        into_db(&env, &Frame::icmp_unreachable(router6, db6(), &out6)),
        "ICMPv6 unreachable"
    );
    // Packet too big and time exceeded too.
    let mut ptb = Frame::icmp_unreachable(router6, db6(), &out6);
    ptb.l4[0] = 2;
    assert!(into_db(&env, &ptb), "ICMPv6 packet too big");
    let mut te = Frame::icmp_unreachable(router4, db4(), &out4);
    te.l4[0] = 11;
    assert!(into_db(&env, &te), "ICMP time exceeded");
    assert_eq!(env.dp.stats().unwrap().icmp_related, 4);
    // The same errors about connections that do not exist are judged by policy: ingress denies.
    let other4 = Frame::tcp(db4(), ip("192.0.2.10"), 40001, 443, TCP_SYN);
    let other6 = Frame::udp(db6(), ip("2001:db8::10"), 40001, 53);
    assert!(!into_db(
        &env,
        &Frame::icmp_unreachable(router4, db4(), &other4)
    ));
    assert!(!into_db(
        &env,
        &Frame::icmp_unreachable(router6, db6(), &other6)
    ));
    // And about a denied connection.
    let denied = Frame::tcp(db4(), ip("192.0.2.10"), 40002, 80, TCP_SYN);
    assert!(!from_db(&env, &denied));
    assert!(!into_db(
        &env,
        &Frame::icmp_unreachable(router4, db4(), &denied)
    ));
    assert_eq!(env.dp.stats().unwrap().icmp_related, 4);
}

#[test]
fn tcp_sessions_walk_the_state_machine_and_report_their_end() {
    let mut env = Env::new(&with(ALLOW_WEB), "db");
    let state = |env: &Env, sport| {
        env.dp
            .session_for(LO, 6, web4(), sport, db4(), 5432)
            .map(|(_, s)| s.state)
    };
    let c2s = |sport, flags| Frame::tcp(web4(), db4(), sport, 5432, flags);
    let s2c = |sport, flags| Frame::tcp(db4(), web4(), 5432, sport, flags);
    let mut bytes = 0u64;
    let mut send = |env: &Env, hook, f: Frame| {
        bytes += f.bytes().len() as u64;
        assert!(passes(env, hook, &f.bytes()));
    };
    send(&env, Hook::ToWorkload, c2s(40000, TCP_SYN));
    assert_eq!(state(&env, 40000), Some(session_state::SYN_SENT));
    send(&env, Hook::FromWorkload, s2c(40000, TCP_SYN | TCP_ACK));
    assert_eq!(state(&env, 40000), Some(session_state::SYN_RECV));
    send(&env, Hook::ToWorkload, c2s(40000, TCP_ACK));
    assert_eq!(state(&env, 40000), Some(session_state::ESTABLISHED));
    send(&env, Hook::FromWorkload, s2c(40000, TCP_ACK));
    send(&env, Hook::ToWorkload, c2s(40000, TCP_FIN | TCP_ACK));
    assert_eq!(state(&env, 40000), Some(session_state::CLOSING));
    assert!(env
        .dp
        .drain_events()
        .iter()
        .all(|e| e.kind == event_kind::NEW));
    send(&env, Hook::FromWorkload, s2c(40000, TCP_FIN | TCP_ACK));
    assert_eq!(state(&env, 40000), Some(session_state::CLOSED));
    let ev = env.dp.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let end = ev[0];
    assert_eq!(end.kind, event_kind::END);
    assert_eq!((end.packets, end.bytes), (6, bytes));
    assert_eq!(
        (end.src_port, end.dst_port, end.direction),
        (40000, 5432, direction::INGRESS)
    );
    assert_eq!(tables::words_addr(end.src_addr), web4());
    // The last ACK passes too, and does not end it twice.
    assert!(into_db(&env, &c2s(40000, TCP_ACK)));
    assert!(env.dp.drain_events().is_empty());

    // RST closes at once.
    assert!(into_db(&env, &c2s(40001, TCP_SYN)));
    assert!(from_db(&env, &s2c(40001, TCP_RST | TCP_ACK)));
    assert_eq!(state(&env, 40001), Some(session_state::CLOSED));
    let ev = env.dp.drain_events();
    let ends: Vec<_> = ev.iter().filter(|e| e.kind == event_kind::END).collect();
    assert_eq!(ends.len(), 1, "{ev:?}");
    assert_eq!(ends[0].packets, 2);
}

#[test]
fn udp_sessions_are_established_by_a_reply() {
    let env = Env::new(WORKLOADS, "db");
    assert!(from_db(&env, &Frame::udp(db4(), web4(), 40000, 53)));
    let st = |env: &Env| {
        env.dp
            .session_for(LO, 17, db4(), 40000, web4(), 53)
            .expect("session")
            .1
    };
    assert_eq!(st(&env).state, session_state::NEW);
    assert!(from_db(&env, &Frame::udp(db4(), web4(), 40000, 53)));
    assert_eq!(
        st(&env).state,
        session_state::NEW,
        "more requests keep it new"
    );
    assert!(into_db(&env, &Frame::udp(web4(), db4(), 53, 40000)));
    let s = st(&env);
    assert_eq!(s.state, session_state::ESTABLISHED);
    assert_eq!(s.packets, [2, 1]);
}

#[test]
fn a_syn_on_a_closed_session_is_judged_again() {
    let mut env = Env::new(&with(ALLOW_WEB), "db");
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)
    ));
    assert!(from_db(
        &env,
        &Frame::tcp(db4(), web4(), 5432, 40000, TCP_RST | TCP_ACK)
    ));
    env.dp.drain_events();
    let misses = env.dp.stats().unwrap().session_misses;
    assert!(into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)
    ));
    assert_eq!(
        env.dp.stats().unwrap().session_misses,
        misses + 1,
        "the SYN went to the policy"
    );
    assert_eq!(
        verdict_of(&mut env),
        (verdict::ALLOW, env.rule_id("db-ingress", Ingress, 0))
    );
    let (_, s) = env
        .dp
        .session_for(LO, 6, web4(), 40000, db4(), 5432)
        .expect("session");
    assert_eq!(
        (s.state, s.packets, s.flags & session_flags::ENDED),
        (session_state::SYN_SENT, [1, 0], 0)
    );
    // A closed session's ports reused after a policy change are judged by the new policy.
    assert!(from_db(
        &env,
        &Frame::tcp(db4(), web4(), 5432, 40000, TCP_RST | TCP_ACK)
    ));
    env.reapply(&with(DENY_ALL));
    assert!(!into_db(
        &env,
        &Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN)
    ));
}

#[test]
fn deny_events_of_a_session_are_rate_limited() {
    let mut env = Env::new(&with(DENY_ALL), "db");
    let syn = Frame::tcp(web4(), db4(), 40000, 5432, TCP_SYN);
    for _ in 0..5 {
        assert!(!into_db(&env, &syn));
    }
    let ev = env.dp.drain_events();
    assert_eq!(ev.len(), 1, "one event per session per second: {ev:?}");
    assert_eq!(
        (ev[0].kind, ev[0].verdict),
        (event_kind::NEW, verdict::DENY)
    );
    assert_eq!(env.dp.stats().unwrap().denied(), 5);
}
