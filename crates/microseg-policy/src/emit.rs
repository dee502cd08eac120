//! Writes Policies as microseg YAML that `parse_str` reads back unchanged.

use crate::model::*;
use std::fmt::Write;

/// JSON string syntax is valid YAML double-quoted syntax, so it quotes safely.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn selector(out: &mut String, indent: &str, sel: &LabelSelector) {
    if sel.is_empty() {
        out.push_str(" {}\n");
        return;
    }
    out.push('\n');
    if !sel.match_labels.is_empty() {
        let _ = writeln!(out, "{indent}matchLabels:");
        for (k, v) in &sel.match_labels {
            let _ = writeln!(out, "{indent}  {}: {}", q(k), q(v));
        }
    }
    if !sel.match_expressions.is_empty() {
        let _ = writeln!(out, "{indent}matchExpressions:");
        for r in &sel.match_expressions {
            let _ = write!(
                out,
                "{indent}  - {{key: {}, operator: {}",
                q(&r.key),
                r.operator
            );
            if !r.values.is_empty() {
                let vals: Vec<String> = r.values.iter().map(|v| q(v)).collect();
                let _ = write!(out, ", values: [{}]", vals.join(", "));
            }
            out.push_str("}\n");
        }
    }
}

fn range(r: &PortRange) -> String {
    if r.start == r.end {
        format!("port: {}", r.start)
    } else {
        format!("port: {}, endPort: {}", r.start, r.end)
    }
}

fn rules(out: &mut String, name: &str, rules: &Option<Vec<Rule>>, peer_key: &str) {
    let Some(rules) = rules else { return };
    if rules.is_empty() {
        let _ = writeln!(out, "  {name}: []");
        return;
    }
    let _ = writeln!(out, "  {name}:");
    for r in rules {
        let _ = writeln!(out, "    - action: {}", r.action);
        if !r.peers.is_empty() {
            let _ = writeln!(out, "      {peer_key}:");
            for p in &r.peers {
                match p {
                    Peer::Selector(s) => {
                        out.push_str("        - selector:");
                        selector(out, "            ", s);
                    }
                    Peer::Cidr { cidr, except } => {
                        let _ = writeln!(out, "        - cidr: {}", q(&cidr.to_string()));
                        if !except.is_empty() {
                            let ex: Vec<String> =
                                except.iter().map(|e| q(&e.to_string())).collect();
                            let _ = writeln!(out, "          except: [{}]", ex.join(", "));
                        }
                    }
                }
            }
        }
        if !r.ports.is_empty() {
            out.push_str("      ports:\n");
            for pm in &r.ports {
                let proto = protocol_name(pm.protocol)
                    .map_or_else(|| pm.protocol.to_string(), str::to_string);
                match &pm.ports {
                    Some(pr) => {
                        let _ = writeln!(out, "        - {{protocol: {proto}, {}}}", range(pr));
                    }
                    None => {
                        let _ = writeln!(out, "        - {{protocol: {proto}}}");
                    }
                }
            }
        }
        if !r.source_ports.is_empty() {
            out.push_str("      sourcePorts:\n");
            for pr in &r.source_ports {
                let _ = writeln!(out, "        - {{{}}}", range(pr));
            }
        }
    }
}

/// Multi-document YAML, one Policy per document.
pub fn policies_to_yaml(policies: &[Policy]) -> String {
    let mut out = String::new();
    for (i, p) in policies.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = writeln!(
            out,
            "apiVersion: {}\nkind: Policy\nmetadata:\n  name: {}\nspec:",
            crate::API_VERSION,
            q(&p.name)
        );
        out.push_str("  selector:");
        selector(&mut out, "    ", &p.selector);
        let _ = writeln!(out, "  priority: {}\n  mode: {}", p.priority, p.mode);
        rules(&mut out, "ingress", &p.ingress, "from");
        rules(&mut out, "egress", &p.egress, "to");
    }
    out
}
