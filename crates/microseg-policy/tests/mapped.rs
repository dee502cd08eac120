//! IPv4-mapped IPv6 addresses would alias IPv4 in the data plane: they are refused.

use microseg_policy::{import_k8s, parse_str};

#[test]
fn v4_mapped_workload_addresses_and_cidrs_are_refused_with_their_position() {
    let yaml = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: w}\nspec: {ips: [\"::ffff:10.0.0.1\"]}\n---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {}\n  ingress:\n    - action: allow\n      from: [{cidr: \"::ffff:10.0.0.0/104\"}, {cidr: \"::/0\"}]\n";
    let (_, diags) = parse_str("m.yaml", yaml);
    let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(diags.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with("m.yaml:4:") && text[0].contains("IPv4-mapped"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("m.yaml:13:") && text[1].contains("::ffff:0:0/96"),
        "{text:?}"
    );
}

#[test]
fn an_empty_egress_list_does_not_isolate_egress_without_policy_types() {
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: n}\nspec:\n  podSelector: {}\n  ingress: []\n  egress: []\n";
    let (policies, diags) = import_k8s("np.yaml", np);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(policies.len(), 1);
    assert!(policies[0].ingress.is_some(), "ingress is always isolated");
    assert!(
        policies[0].egress.is_none(),
        "egress only with egress rules or policyTypes"
    );
}
