//! A scenario rendered as the YAML resources the agent reads.

use std::fmt::Write as _;

use microseg_policy::IpNet;

use crate::scenario::*;

fn selector_yaml(s: &SelectorSpec) -> String {
    let labels = |l: &[(usize, usize)]| {
        // Later duplicates of a key override earlier ones, as in a YAML map: keep one.
        let mut m = std::collections::BTreeMap::new();
        for (k, v) in l {
            m.insert(LABEL_KEYS[*k], LABEL_VALUES[*v]);
        }
        m.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match s {
        SelectorSpec::Labels(l) if l.is_empty() => "{}".into(),
        SelectorSpec::Labels(l) => format!("{{matchLabels: {{{}}}}}", labels(l)),
        SelectorSpec::Expr(l, exprs) => {
            let exprs: Vec<String> = exprs
                .iter()
                .map(|(k, op, vals)| {
                    let key = LABEL_KEYS[*k];
                    let vals: Vec<&str> = vals.iter().map(|v| LABEL_VALUES[*v]).collect();
                    match op {
                        0 => format!(
                            "{{key: {key}, operator: In, values: [{}]}}",
                            vals.join(", ")
                        ),
                        1 => format!(
                            "{{key: {key}, operator: NotIn, values: [{}]}}",
                            vals.join(", ")
                        ),
                        2 => format!("{{key: {key}, operator: Exists}}"),
                        _ => format!("{{key: {key}, operator: DoesNotExist}}"),
                    }
                })
                .collect();
            if l.is_empty() {
                format!("{{matchExpressions: [{}]}}", exprs.join(", "))
            } else {
                format!(
                    "{{matchLabels: {{{}}}, matchExpressions: [{}]}}",
                    labels(l),
                    exprs.join(", ")
                )
            }
        }
    }
}

fn net(s: &str) -> IpNet {
    let (a, l) = s.split_once('/').expect("cidr");
    IpNet::new(a.parse().expect("address"), l.parse().expect("length")).expect("prefix")
}

fn peer_yaml(p: &PeerSpec) -> String {
    match p {
        PeerSpec::Selector(s) => format!("{{selector: {}}}", selector_yaml(s)),
        PeerSpec::Cidr { v6, cidr, excepts } => {
            let pool: &[&str] = if *v6 { &V6_CIDRS } else { &V4_CIDRS };
            let c = pool[cidr % pool.len()];
            let outer = net(c);
            let mut ex: Vec<&str> = excepts
                .iter()
                .map(|e| pool[e % pool.len()])
                .filter(|e| {
                    let n = net(e);
                    n.prefix_len > outer.prefix_len && outer.contains_net(&n)
                })
                .collect();
            ex.sort();
            ex.dedup();
            if ex.is_empty() {
                format!("{{cidr: \"{c}\"}}")
            } else {
                let ex: Vec<String> = ex.iter().map(|e| format!("\"{e}\"")).collect();
                format!("{{cidr: \"{c}\", except: [{}]}}", ex.join(", "))
            }
        }
    }
}

fn port_yaml(p: &PortSpec) -> String {
    match p {
        PortSpec::L4(proto, range) => {
            let name = ["TCP", "UDP", "SCTP"][*proto as usize];
            match range.map(|i| RULE_PORTS[i]) {
                None => format!("{{protocol: {name}}}"),
                Some((port, None)) => format!("{{protocol: {name}, port: {port}}}"),
                Some((port, Some(end))) => {
                    format!("{{protocol: {name}, port: {port}, endPort: {end}}}")
                }
            }
        }
        PortSpec::Icmp => "{protocol: ICMP}".into(),
        PortSpec::Icmpv6 => "{protocol: ICMPv6}".into(),
        PortSpec::Number(n) => format!("{{protocol: {n}}}"),
    }
}

fn section_yaml(out: &mut String, name: &str, peer_key: &str, rules: &Option<Vec<RuleSpec>>) {
    let Some(rules) = rules else { return };
    if rules.is_empty() {
        let _ = writeln!(out, "  {name}: []");
        return;
    }
    let _ = writeln!(out, "  {name}:");
    for r in rules {
        let _ = writeln!(
            out,
            "    - action: {}",
            ["allow", "deny", "log"][r.action as usize]
        );
        if !r.peers.is_empty() {
            let peers: Vec<String> = r.peers.iter().map(peer_yaml).collect();
            let _ = writeln!(out, "      {peer_key}: [{}]", peers.join(", "));
        }
        if !r.ports.is_empty() {
            let ports: Vec<String> = r.ports.iter().map(port_yaml).collect();
            let _ = writeln!(out, "      ports: [{}]", ports.join(", "));
        }
        if !r.source_ports.is_empty() {
            let sports: Vec<String> = r
                .source_ports
                .iter()
                .map(|i| match RULE_PORTS[*i] {
                    (port, None) => format!("{{port: {port}}}"),
                    (port, Some(end)) => format!("{{port: {port}, endPort: {end}}}"),
                })
                .collect();
            let _ = writeln!(out, "      sourcePorts: [{}]", sports.join(", "));
        }
    }
}

/// The workloads' addresses: workload i gets pool entry (i + offset) of each family it has.
fn workload_ips(sc: &Scenario, i: usize) -> Vec<&'static str> {
    let w = &sc.workloads[i];
    let mut ips = Vec::new();
    if w.v4 {
        ips.push(V4_HOSTS[(i + sc.ip_offset) % V4_HOSTS.len()]);
    }
    if w.v6 {
        ips.push(V6_HOSTS[(i + sc.ip_offset * 3) % V6_HOSTS.len()]);
    }
    ips
}

pub fn yaml(sc: &Scenario) -> String {
    let mut out = String::new();
    for (i, w) in sc.workloads.iter().enumerate() {
        let mut labels = std::collections::BTreeMap::new();
        for (k, v) in &w.labels {
            labels.insert(LABEL_KEYS[*k], LABEL_VALUES[*v]);
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let ips: Vec<String> = workload_ips(sc, i)
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        let iface = if i == 0 {
            "lo".to_string()
        } else {
            format!("veth{i}")
        };
        let _ = write!(
            out,
            "---\napiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: w{i}, labels: {{{}}}}}\nspec: {{interface: {iface}, ips: [{}]{}}}\n",
            labels.join(", "),
            ips.join(", "),
            if w.audit && i == 0 { ", mode: audit" } else { "" }
        );
    }
    for (i, p) in sc.policies.iter().enumerate() {
        let _ = write!(
            out,
            "---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: p{i}}}\nspec:\n  selector: {}\n",
            selector_yaml(&p.selector)
        );
        if let Some(prio) = p.priority {
            let _ = writeln!(out, "  priority: {prio}");
        }
        if p.audit {
            let _ = writeln!(out, "  mode: audit");
        }
        section_yaml(&mut out, "ingress", "from", &p.ingress);
        section_yaml(&mut out, "egress", "to", &p.egress);
    }
    out
}
