//! What the client commands print: JSON, block YAML that `policy apply` takes back, and
//! tables.

use serde_json::Value;

use super::Format;

pub(super) fn print(v: &Value, f: Format) {
    match f {
        Format::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        _ => print!("{}", to_yaml(v)),
    }
}

// ---- YAML output -------------------------------------------------------------------

fn plain(s: &str) -> bool {
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~" | "y" | "n"
    );
    !s.is_empty()
        && !reserved
        && s.parse::<f64>().is_err()
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if plain(s) => s.clone(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn yaml_into(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 || !out.ends_with("- ") {
                    out.push_str(&pad);
                }
                out.push_str(&scalar(&Value::String(k.clone())));
                out.push(':');
                match val {
                    Value::Object(x) if !x.is_empty() => {
                        out.push('\n');
                        yaml_into(val, indent + 2, out);
                    }
                    Value::Array(x) if !x.is_empty() => {
                        out.push('\n');
                        yaml_into(val, indent, out);
                    }
                    _ => {
                        out.push(' ');
                        yaml_into(val, 0, out);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    Value::Object(x) if !x.is_empty() => yaml_into(item, indent + 2, out),
                    Value::Array(x) if !x.is_empty() => {
                        out.push('\n');
                        yaml_into(item, indent + 2, out)
                    }
                    _ => yaml_into(item, 0, out),
                }
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        _ => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

/// A JSON value as block YAML (a list of resources as several documents).
fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    yaml_into(v, 0, &mut out);
    out
}

// ---- tables ------------------------------------------------------------------------

pub(super) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn labels(v: &Value) -> String {
    let l: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if l.is_empty() {
        "-".into()
    } else {
        l.join(",")
    }
}

pub(super) fn selector(v: &Value) -> String {
    let mut parts = Vec::new();
    for (k, val) in v["matchLabels"].as_object().into_iter().flatten() {
        parts.push(format!("{k}={}", val.as_str().unwrap_or_default()));
    }
    for e in v["matchExpressions"].as_array().into_iter().flatten() {
        let vals: Vec<String> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "Exists" => text(&e["key"]),
            "DoesNotExist" => format!("!{}", text(&e["key"])),
            op => format!("{} {op} ({})", text(&e["key"]), vals.join(",")),
        });
    }
    if parts.is_empty() {
        "(all)".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_output_reads_back_as_the_same_resource() {
        let doc = serde_json::json!({
            "apiVersion": "microseg.io/v1", "kind": "Policy",
            "metadata": {"name": "p", "annotations": {"microseg.io/revision": "3"}},
            "spec": {"selector": {}, "priority": 10, "mode": "enforce",
                "ingress": [{"action": "allow", "from": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]},
                    {"selector": {"matchLabels": {"app": "web", "k8s.io/x": ""}}}],
                    "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}]}],
                "egress": []}
        });
        let y = to_yaml(&doc);
        let (res, d) = microseg_policy::parse_str("out.yaml", &y);
        assert!(d.is_empty(), "{y}\n{d:?}");
        let (res2, _) = microseg_policy::parse_str("in.json", &doc.to_string());
        let strip = |r: &microseg_policy::Resource| {
            format!("{r:?}").split("origin").next().map(str::to_string)
        };
        assert_eq!(strip(&res[0]), strip(&res2[0]), "{y}");
        assert!(
            y.contains("metadata:\n  annotations:\n") && y.contains("\n  name: p\n"),
            "{y}"
        );
        assert!(y.contains("  - action: allow\n"), "{y}");
    }
}
