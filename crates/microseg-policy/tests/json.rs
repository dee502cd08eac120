//! JSON is read by a fast path; it must mean exactly what the YAML path makes of the same
//! text, and errors must still carry their positions.

use microseg_policy::{parse_str, Resource};

const POLICY: &str = r#"{"apiVersion": "microseg.io/v1", "kind": "Policy",
 "metadata": {"name": "db-ingress"},
 "spec": {"selector": {"matchLabels": {"app": "db"},
                       "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "1"]}]},
          "priority": 100, "mode": "audit",
          "ingress": [{"action": "allow", "from": [{"selector": {"matchLabels": {"app": "web"}}},
                                                   {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
                       "ports": [{"protocol": "TCP", "port": 5432}, {"protocol": "UDP"}],
                       "sourcePorts": [{"port": 1000, "endPort": 2000}]}],
          "egress": []}}"#;

const WORKLOADS: &str = r#"[{"apiVersion": "microseg.io/v1", "kind": "Workload",
  "metadata": {"name": "db-1", "labels": {"app": "db", "tier": "true"}},
  "spec": {"interface": "veth-db1", "ips": ["10.210.0.3", "fd10::3"], "mode": "enforce"}}]"#;

/// The same text through the YAML path: a leading comment keeps it off the JSON one.
fn via_yaml(text: &str) -> (Vec<Resource>, Vec<microseg_policy::Diagnostic>) {
    via_json(&format!("# yaml path\n{text}"))
}

/// Parsed, with origins cleared (the two paths place them differently).
fn via_json(text: &str) -> (Vec<Resource>, Vec<microseg_policy::Diagnostic>) {
    let (mut res, diags) = parse_str("f.json", text);
    for r in &mut res {
        match r {
            Resource::Workload(w) => w.origin = Default::default(),
            Resource::Policy(p) => std::sync::Arc::make_mut(p).origin = Default::default(),
        }
    }
    (res, diags)
}

#[test]
fn json_means_what_the_yaml_path_says_it_means() {
    for text in [POLICY, WORKLOADS] {
        let (fast, d1) = via_json(text);
        let (slow, d2) = via_yaml(text);
        assert!(d1.is_empty() && d2.is_empty(), "{d1:?} {d2:?}");
        assert_eq!(fast, slow);
        assert!(!fast.is_empty());
    }
    let (res, _) = via_json(WORKLOADS);
    let Resource::Workload(w) = &res[0] else {
        panic!("a workload")
    };
    assert_eq!(w.labels["tier"], "true", "a quoted \"true\" stays a string");
}

#[test]
fn json_errors_are_reported_with_their_positions() {
    // A quoted port is a named port (refused), at line 3.
    let text = "{\"apiVersion\": \"microseg.io/v1\", \"kind\": \"Policy\", \"metadata\": {\"name\": \"p\"},\n \"spec\": {\"selector\": {},\n  \"ingress\": [{\"action\": \"allow\", \"ports\": [{\"protocol\": \"TCP\", \"port\": \"8080\"}]}]}}";
    let (res, diags) = parse_str("p.json", text);
    assert!(res.is_empty());
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(
        (diags[0].line, diags[0].file.as_str()),
        (3, "p.json"),
        "{diags:?}"
    );
}
