//! The maps hold what the issue promises: 1,000 local endpoints and 100,000 rules, and an
//! update of that state swaps in whole.

mod common;

use std::fmt::Write;

use microseg_dataplane::{packet::*, Hook};
use microseg_policy::compile::{Compiler, LocalEndpoint};

#[test]
fn a_thousand_endpoints_and_a_hundred_thousand_rules_fit_and_update() {
    let mut yaml = String::new();
    for i in 0..1000u32 {
        let _ = write!(
            yaml,
            "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: w{i}, labels: {{app: a{}}}}}\nspec: {{interface: if{i}, ips: [10.{}.{}.{}]}}\n---\n",
            i % 10,
            20 + i / 65536,
            (i / 256) % 256,
            i % 256
        );
    }
    // 100,000 rules: a policy per app label, each allowing 10,000 distinct /32s on a port.
    for app in 0..10u32 {
        let _ = write!(yaml, "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: p{app}}}\nspec:\n  selector: {{matchLabels: {{app: a{app}}}}}\n  ingress:\n");
        for r in 0..10_000u32 {
            let _ = write!(
                yaml,
                "    - action: allow\n      from: [{{cidr: 172.{}.{}.{}/32}}]\n      ports: [{{protocol: TCP, port: {}}}]\n",
                16 + app,
                r / 256,
                r % 256,
                1000 + r % 50
            );
        }
        yaml.push_str("---\n");
    }
    let set = common::resources(&yaml);
    let mut local: Vec<LocalEndpoint> = (0..1000u32)
        .map(|i| LocalEndpoint {
            workload: format!("w{i}"),
            ifindex: 1000 + i,
        })
        .collect();
    // w0 sits on lo so a packet can be run through it.
    local[0].ifindex = common::LO;
    let mut compiler = Compiler::new();
    let compiled = compiler.compile(&set, &local);
    assert!(compiled.problems.is_empty());
    assert_eq!(compiled.rules.len(), 100_000);
    assert_eq!(compiled.tables.endpoints.len(), 1000);
    assert_eq!(
        compiled.profiles, 10,
        "endpoints with the same policies share entries"
    );
    let mut dp = common::load();
    dp.apply(&compiled.tables)
        .expect("100,000 rules and 1,000 endpoints fit");

    let allowed = Frame::tcp(
        "172.16.0.5".parse().unwrap(),
        "10.20.0.0".parse().unwrap(),
        4000,
        1005,
        TCP_SYN,
    );
    assert!(dp
        .test_run(Hook::ToWorkload, &allowed.bytes(), common::LO, 1)
        .unwrap()
        .passed());
    let other_app = Frame::tcp(
        "172.17.0.5".parse().unwrap(),
        "10.20.0.0".parse().unwrap(),
        4001,
        1005,
        TCP_SYN,
    );
    assert!(!dp
        .test_run(Hook::ToWorkload, &other_app.bytes(), common::LO, 1)
        .unwrap()
        .passed());

    // Once both slots have been written whole (the first two updates), an update writes
    // one slot with only what changed there: dropping two policies removes their entries.
    let mut smaller = set.clone();
    smaller.policies.retain(|p| p.name != "p0");
    dp.apply(&compiler.compile(&smaller, &local).tables)
        .expect("apply");
    smaller.policies.retain(|p| p.name != "p1");
    let next = compiler.compile(&smaller, &local);
    let report = dp.apply(&next.tables).expect("apply");
    assert!(
        report.removed >= 20_000 && report.written <= 400,
        "{report:?}"
    );
    let again = Frame::tcp(
        "172.16.0.5".parse().unwrap(),
        "10.20.0.0".parse().unwrap(),
        4002,
        1005,
        TCP_SYN,
    );
    assert!(
        dp.test_run(Hook::ToWorkload, &again.bytes(), common::LO, 1)
            .unwrap()
            .passed(),
        "nothing selects w0 now: open"
    );
}
