//! What the client commands print: JSON, block YAML that `policy apply` takes back, and
//! tables. Every text from outside (names, labels, error messages) goes through [`esc`]
//! before it reaches a terminal: a name with an escape sequence or a newline would
//! otherwise repaint the screen or forge lines.

use std::borrow::Cow;
use std::collections::BTreeMap;

use clap::ValueEnum;
use microseg_policy::{protocol_name, LabelSelector, Operator, Peer, Policy, PortMatch};
use serde::Serialize;
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

/// An answer as JSON, or as YAML for `Output::Yaml`. Through a JSON value, whose keys are
/// in order: as the controller's answers have them.
pub(super) fn print(answer: &impl Serialize, yaml: bool) {
    let v = serde_json::to_value(answer).unwrap_or_default();
    if yaml {
        out!("{}", to_yaml(&v));
    } else {
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
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

/// A table cell: "-" for an empty text.
pub(super) fn cell(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// `key=value,...`, or "-" for none.
pub(super) fn labels(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    let pairs: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// A selector as `-l` takes it (`app=web,!legacy`), `(all)` for the empty one.
pub(super) fn selector(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in &s.match_expressions {
        let key = cell(&e.key);
        parts.push(match e.operator {
            Operator::Exists => key,
            Operator::DoesNotExist => format!("!{key}"),
            op => {
                let values: Vec<String> = e.values.iter().map(|v| cell(v)).collect();
                format!("{key} {op} ({})", values.join(","))
            }
        });
    }
    if parts.is_empty() {
        "(all)".into()
    } else {
        parts.join(",")
    }
}

fn peer(p: &Peer) -> String {
    match p {
        Peer::Cidr { cidr, except } if except.is_empty() => cidr.to_string(),
        Peer::Cidr { cidr, except } => {
            let except: Vec<String> = except.iter().map(ToString::to_string).collect();
            format!("{cidr} except {}", except.join(","))
        }
        Peer::Selector(s) => selector(s),
    }
}

fn ports(p: &PortMatch) -> String {
    let protocol = match protocol_name(p.protocol) {
        Some(name) => name.to_string(),
        None => p.protocol.to_string(),
    };
    match p.ports {
        Some(r) if r.end != r.start => format!("{protocol}/{}-{}", r.start, r.end),
        Some(r) => format!("{protocol}/{}", r.start),
        None => protocol,
    }
}

/// Every rule of a Policy in one line: `ingress allow from app=web TCP/80; ...`.
pub(super) fn rules_summary(p: &Policy) -> String {
    let mut out = Vec::new();
    for (section, peers_key, rules) in
        [("ingress", "from", &p.ingress), ("egress", "to", &p.egress)]
    {
        for r in rules.iter().flatten() {
            let peers: Vec<String> = r.peers.iter().map(peer).collect();
            let ports: Vec<String> = r.ports.iter().map(ports).collect();
            out.push(format!(
                "{section} {} {peers_key} {} {}",
                r.action,
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

    /// The selector and rule summary of `policy list -o wide`, from the parsed Policy.
    #[test]
    fn a_policy_reads_as_one_line_of_rules() {
        let text = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: wide}
spec:
  selector: {matchLabels: {app: v6}, matchExpressions: [{key: env, operator: In, values: [a, b]}, {key: x, operator: Exists}, {key: y, operator: DoesNotExist}, {key: z, operator: NotIn, values: [q]}]}
  ingress:
    - action: log
      from: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.0.0/16]}, {selector: {}}, {cidr: "fd00::/8"}]
      ports: [{protocol: TCP, port: 8000, endPort: 8100}, {protocol: 47}, {protocol: ICMPv6}, {protocol: UDP, port: 53}]
    - action: deny
  egress:
    - action: allow
      to: [{selector: {matchLabels: {app: peer}}}]
      ports: [{protocol: SCTP, port: 9}]
"#;
        let (parsed, diags) = microseg_policy::parse_str("wide.yaml", text);
        assert!(diags.is_empty(), "{diags:?}");
        let Some(microseg_policy::Resource::Policy(p)) = parsed.first() else {
            panic!("no policy in {parsed:?}");
        };
        assert_eq!(
            selector(&p.selector),
            "app=v6,env In (a,b),x,!y,z NotIn (q)"
        );
        assert_eq!(selector(&LabelSelector::default()), "(all)");
        assert_eq!(
            rules_summary(p),
            "ingress log from 10.0.0.0/8 except 10.1.0.0/16,10.2.0.0/16,(all),fd00::/8 \
             TCP/8000-8100,47,ICMPv6,UDP/53; ingress deny from any any port; \
             egress allow to app=peer SCTP/9"
        );
        let labels_of = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(labels(&labels_of(&[("a", "1"), ("e", "")])), "a=1,e=");
        assert_eq!(labels(&BTreeMap::new()), "-");
    }
}
