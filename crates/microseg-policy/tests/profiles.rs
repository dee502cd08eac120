//! Adding a policy that selects the same workloads keeps their profile, so only the new
//! rules' entries change: a one-rule change costs one rule's entries.

use microseg_policy::compile::{Compiler, LocalEndpoint};
use microseg_policy::{parse_str, ResourceSet};

fn set(yaml: &str) -> ResourceSet {
    let (res, diags) = parse_str("t.yaml", yaml);
    assert!(diags.is_empty(), "{diags:?}");
    res.into_iter().collect()
}

const BASE: &str = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: srv, labels: {app: srv}}\nspec: {interface: s0, ips: [10.0.0.2]}\n---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: big}\nspec:\n  selector: {matchLabels: {app: srv}}\n  ingress:\n";

#[test]
fn a_policy_added_next_to_a_large_one_changes_only_its_own_entries() {
    let mut big = BASE.to_string();
    for i in 0..500 {
        big.push_str(&format!("    - action: allow\n      from: [{{cidr: 172.16.{}.{}/32}}]\n      ports: [{{protocol: TCP, port: 80}}]\n", i / 256, i % 256));
    }
    let one_more = format!("{big}---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: deny-one}}\nspec:\n  selector: {{matchLabels: {{app: srv}}}}\n  priority: 10\n  ingress:\n    - action: deny\n      from: [{{cidr: 172.16.0.7/32}}]\n");
    let local = [LocalEndpoint {
        workload: "srv".into(),
        ifindex: 3,
    }];
    let mut c = Compiler::new();
    let before = c.compile(&set(&big), &local);
    let after = c.compile(&set(&one_more), &local);
    assert_eq!(
        before.tables.endpoints[&3].profile,
        after.tables.endpoints[&3].profile
    );
    let changed = after
        .tables
        .policy
        .iter()
        .filter(|(k, v)| before.tables.policy.get(k) != Some(v))
        .count();
    let removed = before
        .tables
        .policy
        .keys()
        .filter(|k| !after.tables.policy.contains_key(k))
        .count();
    assert!(
        changed <= 2 && removed == 0,
        "{changed} entries changed, {removed} removed"
    );
    // And back: removing it restores the first tables exactly.
    let again = c.compile(&set(&big), &local);
    assert_eq!(again.tables, before.tables);
}
