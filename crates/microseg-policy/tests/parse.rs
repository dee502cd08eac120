//! Parsing the documented example resources and the accepted input shapes.

use microseg_policy::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

const EXAMPLE: &str = r#"apiVersion: microseg.io/v1
kind: Workload
metadata:
  name: db-1
  labels: {app: db, env: prod}
spec:
  interface: veth-db1
  ips: [10.210.0.3, "fd10::3"]
  mode: enforce
---
apiVersion: microseg.io/v1
kind: Policy
metadata:
  name: db-ingress
spec:
  selector:
    matchLabels: {app: db}
    matchExpressions:
      - {key: env, operator: In, values: [prod, staging]}
  priority: 100
  mode: enforce
  ingress:
    - action: allow
      from:
        - selector: {matchLabels: {app: web}}
        - cidr: 10.0.0.0/8
          except: [10.1.0.0/16]
      ports:
        - {protocol: TCP, port: 5432}
        - {protocol: TCP, port: 8000, endPort: 8100}
        - {protocol: UDP}
        - {protocol: ICMP}
  egress:
    - action: deny
      to:
        - cidr: 0.0.0.0/0
        - cidr: "::/0"
      ports:
        - {protocol: UDP, port: 53}
"#;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn parse_ok(text: &str) -> Vec<Resource> {
    let (res, diags) = parse_str("t.yaml", text);
    assert!(diags.is_empty(), "unexpected errors: {diags:?}");
    res
}

#[test]
fn contract_workload_example() {
    let res = parse_ok(EXAMPLE);
    assert_eq!(res.len(), 2);
    let Resource::Workload(w) = &res[0] else {
        panic!("not a workload")
    };
    assert_eq!(w.name, "db-1");
    assert_eq!(w.labels, labels(&[("app", "db"), ("env", "prod")]));
    assert_eq!(w.interface.as_deref(), Some("veth-db1"));
    assert_eq!(
        w.ips,
        vec![
            "10.210.0.3".parse::<IpAddr>().unwrap(),
            "fd10::3".parse().unwrap()
        ]
    );
    assert_eq!(w.mode, Mode::Enforce);
    assert_eq!(
        (w.origin.file.as_str(), w.origin.line, w.origin.col),
        ("t.yaml", 1, 1)
    );
}

#[test]
fn contract_policy_example() {
    let res = parse_ok(EXAMPLE);
    let Resource::Policy(p) = &res[1] else {
        panic!("not a policy")
    };
    assert_eq!(p.name, "db-ingress");
    assert_eq!((p.origin.line, p.origin.col), (11, 1));
    assert_eq!(p.priority, 100);
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.selector.match_labels, labels(&[("app", "db")]));
    assert_eq!(
        p.selector.match_expressions,
        vec![Requirement {
            key: "env".into(),
            operator: Operator::In,
            values: vec!["prod".into(), "staging".into()]
        }]
    );
    let ingress = p.ingress.as_ref().unwrap();
    assert_eq!(ingress.len(), 1);
    let r = &ingress[0];
    assert_eq!(r.action, Action::Allow);
    assert_eq!(
        r.peers,
        vec![
            Peer::Selector(LabelSelector {
                match_labels: labels(&[("app", "web")]),
                match_expressions: vec![]
            }),
            Peer::Cidr {
                cidr: net("10.0.0.0/8"),
                except: vec![net("10.1.0.0/16")]
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
            PortMatch {
                protocol: PROTO_ICMP,
                ports: None
            },
        ]
    );
    let egress = p.egress.as_ref().unwrap();
    assert_eq!(egress[0].action, Action::Deny);
    assert_eq!(
        egress[0].peers,
        vec![
            Peer::Cidr {
                cidr: net("0.0.0.0/0"),
                except: vec![]
            },
            Peer::Cidr {
                cidr: net("::/0"),
                except: vec![]
            },
        ]
    );
}

#[test]
fn defaults_apply_when_fields_are_omitted() {
    let res = parse_ok(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {}\n  egress:\n",
    );
    let Resource::Policy(p) = &res[0] else {
        panic!()
    };
    assert_eq!(p.priority, 1000);
    assert_eq!(p.mode, Mode::Enforce);
    assert!(p.selector.is_empty());
    assert_eq!(p.ingress, None, "no ingress section");
    assert_eq!(
        p.egress,
        Some(vec![]),
        "an empty egress section still exists"
    );
    let res = parse_ok("apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: w}\n");
    let Resource::Workload(w) = &res[0] else {
        panic!()
    };
    assert_eq!(
        (w.mode, w.interface.clone(), w.ips.len()),
        (Mode::Enforce, None, 0)
    );
}

#[test]
fn rule_options_source_ports_protocol_numbers_and_case() {
    let res = parse_ok(
        r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: p}
spec:
  selector: {}
  mode: audit
  ingress:
    - action: LOG
      ports: [{protocol: icmpv6}, {protocol: 47}, {protocol: sctp, port: 9}, {port: 22}]
      sourcePorts: [{port: 1024, endPort: 65535}]
"#,
    );
    let Resource::Policy(p) = &res[0] else {
        panic!()
    };
    assert_eq!(p.mode, Mode::Audit);
    let r = &p.ingress.as_ref().unwrap()[0];
    assert_eq!(r.action, Action::Log);
    assert_eq!(
        r.ports,
        vec![
            PortMatch {
                protocol: PROTO_ICMPV6,
                ports: None
            },
            PortMatch {
                protocol: 47,
                ports: None
            },
            PortMatch {
                protocol: PROTO_SCTP,
                ports: Some(PortRange { start: 9, end: 9 })
            },
            PortMatch {
                protocol: PROTO_TCP,
                ports: Some(PortRange { start: 22, end: 22 })
            },
        ]
    );
    assert_eq!(
        r.source_ports,
        vec![PortRange {
            start: 1024,
            end: 65535
        }]
    );
}

#[test]
fn cidr_host_bits_are_masked() {
    let res = parse_ok(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {}\n  egress:\n    - action: allow\n      to: [{cidr: 10.1.2.3/8}, {cidr: \"fd00::1/64\"}]\n",
    );
    let Resource::Policy(p) = &res[0] else {
        panic!()
    };
    let r = &p.egress.as_ref().unwrap()[0];
    assert_eq!(
        r.peers[0],
        Peer::Cidr {
            cidr: net("10.0.0.0/8"),
            except: vec![]
        }
    );
    assert_eq!(
        r.peers[1],
        Peer::Cidr {
            cidr: net("fd00::/64"),
            except: vec![]
        }
    );
    assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
}

#[test]
fn ipnet_containment() {
    let n = net("10.0.0.0/8");
    assert!(n.contains(&"10.255.1.1".parse().unwrap()));
    assert!(!n.contains(&"11.0.0.1".parse().unwrap()));
    assert!(
        !n.contains(&"::a00:1".parse().unwrap()),
        "IPv4 prefix never matches IPv6"
    );
    assert!(net("0.0.0.0/0").contains(&"1.2.3.4".parse().unwrap()));
    assert!(!net("::/0").contains(&"1.2.3.4".parse().unwrap()));
    assert!(n.contains_net(&net("10.1.0.0/16")));
    assert!(!net("10.1.0.0/16").contains_net(&n));
}

#[test]
fn json_object_array_and_list() {
    let one = r#"{"apiVersion": "microseg.io/v1", "kind": "Workload", "metadata": {"name": "a"}, "spec": {"ips": ["10.0.0.1"]}}"#;
    assert_eq!(parse_ok(one).len(), 1);
    let arr = format!(
        "[{one}, {}]",
        one.replace("\"a\"", "\"b\"")
            .replace("10.0.0.1", "10.0.0.2")
    );
    assert_eq!(parse_ok(&arr).len(), 2);
    let list = format!(r#"{{"kind": "List", "items": {arr}}}"#);
    assert_eq!(parse_ok(&list).len(), 2);
}

#[test]
fn empty_documents_are_skipped() {
    let text = "---\n# only a comment\n---\n\n---\napiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: w}\n---\n";
    let res = parse_ok(text);
    assert_eq!(res.len(), 1);
    let Resource::Workload(w) = &res[0] else {
        panic!()
    };
    assert_eq!(
        w.origin.line, 6,
        "positions count lines of earlier documents"
    );
    assert!(parse_ok("").is_empty());
}

#[test]
fn emitted_yaml_reads_back_into_equal_policies() {
    let Resource::Policy(p) = parse_ok(EXAMPLE).remove(1) else {
        panic!()
    };
    let mut p = std::sync::Arc::unwrap_or_clone(p);
    p.selector
        .match_labels
        .insert("odd key/x:y".replace(' ', "_"), "".into());
    p.ingress.as_mut().unwrap()[0]
        .source_ports
        .push(PortRange { start: 1, end: 2 });
    let mut q = p.clone();
    q.name = "second".into();
    q.ingress = None;
    q.egress = Some(vec![]);
    let yaml = policies_to_yaml(&[p.clone(), q.clone()]);
    let back: Vec<Policy> = parse_ok(&yaml)
        .into_iter()
        .map(|r| match r {
            Resource::Policy(x) => {
                let mut x = std::sync::Arc::unwrap_or_clone(x);
                x.origin = p.origin.clone();
                x
            }
            _ => panic!(),
        })
        .collect();
    q.origin = p.origin.clone();
    assert_eq!(back, vec![p, q], "yaml was:\n{yaml}");
}

#[test]
fn load_paths_reads_directories_and_checks_across_files() {
    let dir = std::env::temp_dir().join(format!("microseg-policy-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(".hidden")).unwrap();
    std::fs::write(dir.join("a.yaml"), EXAMPLE).unwrap();
    std::fs::write(
        dir.join("b.json"),
        r#"{"apiVersion":"microseg.io/v1","kind":"Workload","metadata":{"name":"w2"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml").unwrap();
    std::fs::write(dir.join(".hidden/x.yaml"), "garbage: [").unwrap();
    let set = load_paths(&[&dir]).unwrap();
    assert_eq!(set.workloads.len(), 2);
    assert_eq!(set.policies.len(), 1);

    std::fs::write(dir.join("c.yml"), EXAMPLE).unwrap();
    let errs = load_paths(&[&dir]).unwrap_err();
    let c = dir.join("c.yml").display().to_string();
    let a = dir.join("a.yaml").display().to_string();
    let msgs: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
    assert!(
        msgs.contains(&format!(
            "{c}:1:1: duplicate Workload name \"db-1\" (first defined at {a}:1:1)"
        )),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&format!(
            "{c}:11:1: duplicate Policy name \"db-ingress\" (first defined at {a}:11:1)"
        )),
        "{msgs:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validate_set_finds_shared_addresses_and_interfaces() {
    let text = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: a}\nspec: {interface: veth0, ips: [10.0.0.1]}\n---\napiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: b}\nspec: {interface: veth0, ips: [10.0.0.1]}\n";
    let res = parse_ok(text);
    let set = ResourceSet {
        workloads: res
            .into_iter()
            .filter_map(|r| {
                if let Resource::Workload(w) = r {
                    Some(w)
                } else {
                    None
                }
            })
            .collect(),
        policies: vec![],
    };
    let d: Vec<String> = validate_set(&set).iter().map(|d| d.to_string()).collect();
    assert_eq!(
        d,
        vec![
            "t.yaml:6:1: address 10.0.0.1 of workload \"b\" is already used by workload \"a\" (t.yaml:1:1)",
            "t.yaml:6:1: interface veth0 of workload \"b\" is already used by workload \"a\" (t.yaml:1:1)",
        ]
    );
}

#[test]
fn tab_indented_json_and_crlf_yaml_are_accepted() {
    let json = "{\n\t\"apiVersion\": \"microseg.io/v1\",\n\t\"kind\": \"Workload\",\n\t\"metadata\": {\"name\": \"w\"}\n}\n";
    assert_eq!(parse_ok(json).len(), 1);
    let crlf = "apiVersion: microseg.io/v1\r\nkind: Workload\r\nmetadata: {name: w}\r\n---\r\napiVersion: microseg.io/v1\r\nkind: Workload\r\nmetadata: {name: v}\r\n";
    assert_eq!(parse_ok(crlf).len(), 2);
}
