//! Kubernetes NetworkPolicy import, as docs/POLICY.md describes it.

use microseg_policy::*;
use std::collections::BTreeMap;

fn import_ok(text: &str) -> Vec<Policy> {
    let (p, d) = import_k8s("np.yaml", text);
    assert!(d.is_empty(), "{d:?}");
    p
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn exists(key: &str) -> Requirement {
    Requirement {
        key: key.into(),
        operator: Operator::Exists,
        values: vec![],
    }
}

const NP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from:
        - podSelector: {matchLabels: {app: web}}
        - namespaceSelector: {matchLabels: {team: ops}}
        - namespaceSelector: {}
          podSelector: {matchLabels: {role: admin}}
        - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
      ports:
        - {protocol: TCP, port: 5432}
        - {port: 8000, endPort: 8100}
        - {protocol: UDP}
"#;

#[test]
fn network_policy_becomes_a_namespaced_policy() {
    let p = &import_ok(NP)[0];
    assert_eq!(p.name, "shop.db");
    assert_eq!(
        p.selector.match_labels,
        labels(&[("app", "db"), ("k8s.namespace", "shop")])
    );
    assert_eq!((p.priority, p.mode), (1000, Mode::Enforce));
    assert_eq!(
        p.egress, None,
        "policyTypes default to Ingress only without an egress section"
    );
    let r = &p.ingress.as_ref().unwrap()[0];
    assert_eq!(r.action, Action::Allow);
    assert_eq!(
        r.peers,
        vec![
            Peer::Selector(LabelSelector {
                match_labels: labels(&[("app", "web"), ("k8s.namespace", "shop")]),
                match_expressions: vec![]
            }),
            Peer::Selector(LabelSelector {
                match_labels: labels(&[("k8s.namespace.labels/team", "ops")]),
                match_expressions: vec![exists("k8s.namespace")],
            }),
            Peer::Selector(LabelSelector {
                match_labels: labels(&[("role", "admin")]),
                match_expressions: vec![exists("k8s.namespace")]
            }),
            Peer::Cidr {
                cidr: "10.0.0.0/8".parse().unwrap(),
                except: vec!["10.1.0.0/16".parse().unwrap()]
            },
        ]
    );
    assert_eq!(
        r.ports,
        vec![
            PortMatch {
                protocol: PROTO_TCP,
                ports: Some(PortRange {
                    start: 5432,
                    end: 5432
                })
            },
            PortMatch {
                protocol: PROTO_TCP,
                ports: Some(PortRange {
                    start: 8000,
                    end: 8100
                })
            },
            PortMatch {
                protocol: PROTO_UDP,
                ports: None
            },
        ]
    );
}

#[test]
fn policy_types_decide_the_sections() {
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n";
    let p = &import_ok(text)[0];
    assert_eq!(p.name, "default.deny-all", "namespace defaults to default");
    assert_eq!(
        (p.ingress.clone(), p.egress.clone()),
        (Some(vec![]), Some(vec![]))
    );
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: n}\nspec:\n  podSelector: {}\n  egress: [{}]\n";
    let p = &import_ok(text)[0];
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(
        p.egress,
        Some(vec![Rule {
            action: Action::Allow,
            peers: vec![],
            ports: vec![],
            source_ports: vec![]
        }])
    );
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: n}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n";
    assert_eq!(import_ok(text)[0].ingress, None);
}

#[test]
fn named_ports_are_reported_and_the_rest_converted() {
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  podSelector: {}\n  ingress:\n    - ports: [{port: http}, {port: 443}]\n    - ports: [{port: metrics}]\n    - {}\n";
    let (p, d) = import_k8s("np.yaml", text);
    let msgs: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        msgs,
        vec![
            "np.yaml:7:22: NetworkPolicy shop/web: named port \"http\" cannot be expressed in microseg; left out",
            "np.yaml:8:7: NetworkPolicy shop/web: rule left out: it only has named ports",
            "np.yaml:8:22: NetworkPolicy shop/web: named port \"metrics\" cannot be expressed in microseg; left out",
        ]
    );
    let rules = p[0].ingress.as_ref().unwrap();
    assert_eq!(
        rules.len(),
        2,
        "the all-named-ports rule is dropped, not widened"
    );
    assert_eq!(
        rules[0].ports,
        vec![PortMatch {
            protocol: PROTO_TCP,
            ports: Some(PortRange {
                start: 443,
                end: 443
            })
        }]
    );
}

#[test]
fn imported_policies_round_trip_through_yaml() {
    let mut ps = import_ok(NP);
    let yaml = policies_to_yaml(&ps);
    let (res, d) = parse_str("out.yaml", &yaml);
    assert!(d.is_empty(), "{d:?}\n{yaml}");
    let Resource::Policy(back) = res.into_iter().next().unwrap() else {
        panic!()
    };
    let mut back = std::sync::Arc::unwrap_or_clone(back);
    back.origin = ps[0].origin.clone();
    assert_eq!(back, ps.remove(0));
}

#[test]
fn imported_policy_selects_the_mapped_workloads() {
    let ps = import_ok(NP);
    let wl = |name: &str, ip: &str, l: &[(&str, &str)]| Workload {
        name: name.into(),
        labels: labels(l),
        interface: None,
        ips: vec![ip.parse().unwrap()],
        mode: Mode::Enforce,
        origin: Origin::default(),
    };
    let set = ResourceSet {
        workloads: vec![
            wl(
                "db",
                "192.168.0.1",
                &[("app", "db"), ("k8s.namespace", "shop")],
            ),
            wl(
                "web",
                "192.168.0.2",
                &[("app", "web"), ("k8s.namespace", "shop")],
            ),
            wl(
                "web-other",
                "192.168.0.3",
                &[("app", "web"), ("k8s.namespace", "other")],
            ),
            wl(
                "ops",
                "192.168.0.4",
                &[
                    ("k8s.namespace", "infra"),
                    ("k8s.namespace.labels/team", "ops"),
                ],
            ),
        ],
        policies: ps.into_iter().map(std::sync::Arc::new).collect(),
    };
    let db = set.workload("db").unwrap();
    let v = |src: &str| {
        let p = Packet {
            src: src.parse().unwrap(),
            dst: "192.168.0.1".parse().unwrap(),
            protocol: PROTO_TCP,
            src_port: 1,
            dst_port: 5432,
        };
        evaluate(&set, db, Direction::Ingress, &p).verdict
    };
    assert_eq!(v("192.168.0.2"), Verdict::Allow);
    assert_eq!(
        v("192.168.0.3"),
        Verdict::Deny,
        "podSelector alone stays in the policy's namespace"
    );
    assert_eq!(v("192.168.0.4"), Verdict::Allow);
}

#[test]
fn unsupported_objects_are_reported() {
    let (p, d) = import_k8s(
        "np.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
    );
    assert!(p.is_empty());
    assert_eq!(
        d[0].to_string(),
        "np.yaml:2:7: unsupported kind \"Deployment\"; allowed: NetworkPolicy, Namespace"
    );
}

#[test]
fn typed_lists_are_read_like_list() {
    // As `kubectl get networkpolicies,namespaces -o yaml` may write them.
    let kubectl = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicyList\nmetadata: {resourceVersion: \"1\"}\nitems:\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: a, namespace: shop}\n    spec: {podSelector: {}}\n  - apiVersion: networking.k8s.io/v1\n    kind: NetworkPolicy\n    metadata: {name: b, namespace: shop}\n    spec: {podSelector: {}}\n---\napiVersion: v1\nkind: NamespaceList\nitems:\n  - {apiVersion: v1, kind: Namespace, metadata: {name: shop}}\n";
    let names: Vec<String> = import_ok(kubectl).into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["shop.a", "shop.b"]);
    // As the API server writes them: the items leave out kind and apiVersion.
    let api = "{\"apiVersion\": \"networking.k8s.io/v1\", \"kind\": \"NetworkPolicyList\", \"items\": [{\"metadata\": {\"name\": \"c\"}, \"spec\": {\"podSelector\": {}, \"policyTypes\": [\"Egress\"]}}]}";
    let p = import_ok(api);
    assert_eq!((p[0].name.as_str(), &p[0].ingress), ("default.c", &None));
    let ns = "{\"apiVersion\": \"v1\", \"kind\": \"NamespaceList\", \"items\": [{\"metadata\": {\"name\": \"shop\"}}]}";
    assert!(import_ok(ns).is_empty());
    // An item still says what it is when it says it.
    let (p, d) = import_k8s(
        "np.yaml",
        "kind: NetworkPolicyList\napiVersion: networking.k8s.io/v1\nitems:\n  - {kind: Pod, metadata: {name: x}}\n",
    );
    assert!(p.is_empty());
    assert_eq!(
        d[0].to_string(),
        "np.yaml:4:12: unsupported kind \"Pod\"; allowed: NetworkPolicy, Namespace"
    );
}

#[test]
fn an_empty_egress_list_without_policy_types_leaves_egress_open() {
    // Kubernetes defaults policyTypes to Egress only when there are egress rules.
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: n}\nspec:\n  podSelector: {}\n  egress: []\n";
    let p = &import_ok(text)[0];
    assert_eq!((&p.ingress, &p.egress), (&Some(vec![]), &None));
    let yaml = policies_to_yaml(std::slice::from_ref(p));
    assert!(yaml.contains("ingress: []"), "{yaml}");
    assert!(!yaml.contains("egress"), "{yaml}");
}
