//! How a verdict is reached (docs/POLICY.md), through the kernel: which verdict a packet
//! gets and which rule its event names. The lowest priority number wins, then deny over
//! log over allow; default deny needs a selecting policy with the section; audit workloads
//! and audit policies report what they would do and drop nothing; log passes, counted.

mod common;

use common::*;
use microseg_dataplane::{common::*, packet::*};
use microseg_policy::Direction::Ingress;

#[test]
fn lowest_priority_number_wins() {
    let mut env = Env::reporting(
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
        !into_db(&env, &web_to_db(TCP_SYN)),
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
    let mut env = Env::reporting(
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
    let mut env = Env::reporting(
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
    assert!(!into_db(&env, &web_to_db(TCP_SYN)));
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
    let mut env = Env::reporting(yaml, "db");
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
    assert!(into_db(&env, &web_to_db(TCP_SYN)));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::ALLOW, env.rule_id("db-ingress", Ingress, 1))
    );
    let s = env.dp.stats().unwrap();
    assert_eq!((s.audited(), s.denied(), s.allowed()), (2, 0, 1));
}

#[test]
fn audit_policies_report_their_verdict_and_change_nothing() {
    let mut env = Env::reporting(
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
    let p = into_db(&env, &web_to_db(TCP_SYN));
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
    assert!(into_db(&env, &web_to_db(TCP_SYN)));
    assert_eq!(
        verdict_of(&mut env),
        (verdict::LOG, env.rule_id("watch", Ingress, 0))
    );
    // The reply and the next packets pass with the session's log verdict.
    assert!(from_db(&env, &db_to_web(TCP_SYN | TCP_ACK)));
    assert!(into_db(&env, &web_to_db(TCP_ACK)));
    let s = env.dp.stats().unwrap();
    assert_eq!((s.logged(), s.allowed(), s.denied()), (3, 0, 0));
    assert!(!into_db(
        &env,
        &Frame::tcp(ip("10.7.0.1"), db4(), 40000, 5432, TCP_SYN)
    ));
}
