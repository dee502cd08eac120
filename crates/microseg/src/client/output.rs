//! What the client commands print: JSON, block YAML that `policy apply` takes back, and
//! tables. Every text from outside (names, labels, error messages) goes through [`esc`]
//! before it reaches a terminal: a name with an escape sequence or a newline would
//! otherwise repaint the screen or forge lines.

use std::borrow::Cow;

use clap::ValueEnum;
use serde_json::Value;

/// `-o` of the commands that show resources.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// A table with more columns.
    Wide,
    Json,
    /// Documents `policy apply -f` takes back.
    Yaml,
}

/// `-o` of the commands that report a change or a state.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Report {
    /// Text: a table, or a line per change.
    Table,
    Json,
}

/// Control characters escaped (`\e[31m`, `\n`): what a terminal or a log line may show.
pub fn esc(s: &str) -> Cow<'_, str> {
    microseg_policy::escape_control(s)
}

/// Writes to stdout. When the reader has gone (`| head -1`), the command ends quietly
/// with status 0, as it has nothing left to say to anyone: SIGPIPE's default action
/// would do the same for stdout, but it would also kill the command in the middle of a
/// request when the controller or the agent closes the connection (writes on a TLS or a
/// Unix socket raise it too), where the command should say why it failed.
pub fn write_out(args: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// JSON, or YAML for `Output::Yaml`.
pub(super) fn print(v: &Value, yaml: bool) {
    if yaml {
        out!("{}", to_yaml(v));
    } else {
        outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

/// A JSON value as block YAML, by the policy library's writer (the one `policy import`
/// uses), whose output its readers take back as the same value.
pub(super) fn to_yaml(v: &Value) -> String {
    microseg_policy::value_to_yaml(v)
}

// ---- tables ------------------------------------------------------------------------

/// Prints a table; cells are escaped here, so callers pass what they received.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    out!("{}", render_table(header, rows));
}

fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<Cow<str>>> = rows
        .iter()
        .map(|r| r.iter().map(|c| esc(c)).collect())
        .collect();
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(|c| c.as_ref()).collect());
    }
    out
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

/// Every rule of a Policy document in one line: `ingress allow from app=web TCP/80; ...`.
pub(super) fn rules_summary(spec: &Value) -> String {
    let mut out = Vec::new();
    for (section, peers_key) in [("ingress", "from"), ("egress", "to")] {
        for r in spec[section].as_array().into_iter().flatten() {
            let peers: Vec<String> = r[peers_key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match p.get("cidr") {
                    Some(c) => {
                        let except: Vec<String> = p["except"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text)
                            .collect();
                        if except.is_empty() {
                            text(c)
                        } else {
                            format!("{} except {}", text(c), except.join(","))
                        }
                    }
                    None => selector(&p["selector"]),
                })
                .collect();
            let ports: Vec<String> = r["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match (p.get("port"), p.get("endPort")) {
                    (Some(a), Some(b)) => {
                        format!("{}/{}-{}", text(&p["protocol"]), text(a), text(b))
                    }
                    (Some(a), None) => format!("{}/{}", text(&p["protocol"]), text(a)),
                    _ => text(&p["protocol"]),
                })
                .collect();
            out.push(format!(
                "{section} {} {peers_key} {} {}",
                text(&r["action"]),
                if peers.is_empty() {
                    "any".into()
                } else {
                    peers.join(",")
                },
                if ports.is_empty() {
                    "any port".into()
                } else {
                    ports.join(",")
                },
            ));
        }
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_are_escaped_and_aligned() {
        let rows = vec![
            vec!["a\x1b[31mred\nb".to_string(), "1".to_string()],
            vec!["é".to_string(), "2".to_string()],
        ];
        let t = render_table(&["NAME", "N"], &rows);
        assert_eq!(
            t,
            "NAME             N\na\\x1b[31mred\\nb  1\né                2\n"
        );
    }
}
