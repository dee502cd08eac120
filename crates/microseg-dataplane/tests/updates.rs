//! An edit next to a large policy is compiled and written as its own few keys, and the
//! kernel decides the next connection by it.

mod common;

use common::*;
use microseg_dataplane::{common::tables::TableChanges, packet::*, Error, Hook};
use microseg_policy::compile::LocalEndpoint;

/// `n` allow rules for other peers and ports, then one that allows web → db TCP 5432.
fn big_policy(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: big}\nspec:\n  selector: {matchLabels: {app: db}}\n  ingress:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "    - action: allow\n      from: [{{cidr: 172.16.{}.{}/32}}]\n      ports: [{{protocol: TCP, port: {}}}]\n",
            i / 256,
            i % 256,
            2000 + i
        ));
    }
    s.push_str("    - action: allow\n      from: [{cidr: 10.1.0.2/32}]\n      ports: [{protocol: TCP, port: 5432}]\n");
    s
}

const DENY_ONE: &str = "---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: deny-one}\nspec:\n  selector: {matchLabels: {app: db}}\n  priority: 10\n  ingress:\n    - action: deny\n      from: [{cidr: 10.1.0.2/32}]\n      ports: [{protocol: TCP, port: 5432}]\n";

#[test]
fn a_one_rule_edit_writes_one_key_and_decides_the_next_connection() {
    let base = with(&big_policy(500));
    let mut env = Env::new(&base, "db");
    let syn = |sport| Frame::tcp(web4(), db4(), sport, 5432, TCP_SYN).bytes();
    assert!(passes(&env, Hook::ToWorkload, &syn(40000)));
    // As the agent does when idle: from now on an update writes only its own keys.
    assert!(env.dp.catch_up_standby().unwrap() > 500);
    let local = [LocalEndpoint {
        workload: "db".into(),
        ifindex: LO,
    }];

    let edited = env
        .compiler
        .compile(&resources(&format!("{base}{DENY_ONE}")), &local);
    assert!(edited.incremental, "only the new policy is compiled");
    let changes = edited.changes.expect("changes of an incremental compile");
    assert_eq!(changes.len(), 1, "one key: web's TCP 5432 entry now denies");
    let report = env.dp.apply_changes(&changes).unwrap();
    assert_eq!((report.written, report.removed), (1, 0));
    assert!(!passes(&env, Hook::ToWorkload, &syn(40001)));

    env.dp.catch_up_standby().unwrap();
    let undone = env.compiler.compile(&resources(&base), &local);
    let changes = undone.changes.expect("incremental");
    let report = env.dp.apply_changes(&changes).unwrap();
    assert_eq!(report.written + report.removed, 1);
    assert!(passes(&env, Hook::ToWorkload, &syn(40002)));
}

#[test]
fn changes_without_a_state_to_apply_to_are_refused() {
    let mut dp = load();
    let err = dp.apply_changes(&TableChanges::default()).unwrap_err();
    assert!(matches!(err, Error::NoState), "{err}");
}

#[test]
fn changes_the_standby_slot_missed_are_written_with_the_next_update() {
    // Without a catch-up in between, the second update also writes the first one's key
    // into the slot that missed it; the kernel must see the second state exactly.
    let base = with(&big_policy(50));
    let mut env = Env::new(&base, "db");
    env.dp.catch_up_standby().unwrap();
    let local = [LocalEndpoint {
        workload: "db".into(),
        ifindex: LO,
    }];
    let syn = |sport| Frame::tcp(web4(), db4(), sport, 5432, TCP_SYN).bytes();
    for (round, (yaml, allowed)) in [(format!("{base}{DENY_ONE}"), false), (base.clone(), true)]
        .iter()
        .cycle()
        .take(4)
        .enumerate()
    {
        let c = env.compiler.compile(&resources(yaml), &local);
        env.dp
            .apply_changes(&c.changes.expect("incremental"))
            .unwrap();
        assert_eq!(
            passes(&env, Hook::ToWorkload, &syn(41000 + round as u16)),
            *allowed,
            "round {round}"
        );
    }
}
