//! `microseg stats`, `flows` and `sessions`: the local agent's views.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use microseg_agent::api::{request, Request, RequestError};
use microseg_agent::flows::FlowFilter;
use microseg_flowstore::{FilterError, Timestamp};
use serde_json::Value;

use crate::client::endpoint;
use crate::client::output::{esc, Report};
use crate::client::CommandError;

#[derive(Args)]
pub struct ViewArgs {
    /// Output format: a table, or the agent's JSON lines.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Report::Table, value_name = "FORMAT")]
    output: Report,
    /// The local agent's API socket (the agent's --socket).
    #[arg(long, default_value = "/run/microseg/agent.sock", value_name = "PATH")]
    socket: PathBuf,
}

#[derive(Args)]
pub struct FlowArgs {
    #[command(flatten)]
    view: ViewArgs,
    /// Keep printing new flows as they happen.
    #[arg(long)]
    follow: bool,
    /// Only the most recent N flows (with --server: 1 to 100000, default 1000, and with
    /// --follow how many to show before the new ones).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Only flows with this verdict (allow, deny, log, audit).
    #[arg(long)]
    verdict: Option<String>,
    /// Only flows of this workload (with --server: reported by it or at either end).
    #[arg(long)]
    workload: Option<String>,
    /// Only flows newer than this: an age (30s, 5m, 1h30m, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    since: Option<String>,
    /// Only flows older than this: an age or an RFC 3339 time. --server only.
    #[arg(long, value_name = "AGE|TIME")]
    until: Option<String>,
    /// Only flows judged in this direction (ingress, egress). --server only.
    #[arg(long)]
    direction: Option<String>,
    /// Only flows whose source's labels match this selector (app=web,!legacy). --server
    /// only.
    #[arg(long, value_name = "SELECTOR")]
    from: Option<String>,
    /// Only flows whose destination's labels match this selector. --server only.
    #[arg(long, value_name = "SELECTOR")]
    to: Option<String>,
    /// Only flows to this destination port. --server only.
    #[arg(long, value_name = "N")]
    port: Option<String>,
    /// Only flows of this protocol (TCP, UDP, ICMP, ICMPv6 or 0-255). --server only.
    #[arg(long)]
    protocol: Option<String>,
    /// Only flows decided by this policy. --server only.
    #[arg(long)]
    policy: Option<String>,
    /// Only flows reported by this node. --server only.
    #[arg(long)]
    node: Option<String>,
    /// Query the flow records the controller stores from every node instead (e.g.
    /// http://127.0.0.1:7070).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Bearer token for --server (else MICROSEG_TOKEN).
    #[arg(long, value_name = "PATH", requires = "server")]
    token_file: Option<PathBuf>,
    /// Certificates for an https:// --server.
    #[command(flatten)]
    tls: crate::client::TlsArgs,
}

impl FlowArgs {
    /// The filters by the names `GET /v1/flows` takes, which are the flags' names.
    fn server_params(&self) -> Vec<(&'static str, String)> {
        let limit = self.limit.map(|n| n.to_string());
        [
            ("since", &self.since),
            ("until", &self.until),
            ("verdict", &self.verdict),
            ("direction", &self.direction),
            ("workload", &self.workload),
            ("from", &self.from),
            ("to", &self.to),
            ("port", &self.port),
            ("protocol", &self.protocol),
            ("policy", &self.policy),
            ("node", &self.node),
            ("limit", &limit),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }

    /// The first filter flag given that only the controller's store can apply.
    fn server_only_flag(&self) -> Option<&'static str> {
        [
            ("--until", &self.until),
            ("--direction", &self.direction),
            ("--from", &self.from),
            ("--to", &self.to),
            ("--port", &self.port),
            ("--protocol", &self.protocol),
            ("--policy", &self.policy),
            ("--node", &self.node),
        ]
        .into_iter()
        .find_map(|(flag, v)| v.is_some().then_some(flag))
    }
}

/// --since for the local agent: seconds before now, from an age or a time, read as the
/// controller's store reads it.
fn since_seconds(since: &str) -> Result<f64, FilterError> {
    let now = Timestamp::now();
    let f = microseg_flowstore::FlowFilter::from_params([("since", since)], now)?;
    let at = f.since.unwrap_or(now);
    Ok(now.micros().saturating_sub(at.micros()) as f64 / 1e6)
}

/// Why a view could not be shown.
#[derive(Debug, thiserror::Error)]
enum ViewError {
    /// The local agent could not be asked, or refused: its message says why.
    #[error(transparent)]
    Agent(RequestError),
    /// A filter value the store would refuse: the flag, and what it accepts.
    #[error("--{}: {}", .0.field, .0.message)]
    Filter(FilterError),
    #[error("{0} needs --server: the local agent's flows cannot be filtered by it")]
    NeedsServer(&'static str),
    #[error(
        "--limit with --follow needs --server: the local agent's flows have no end to count from"
    )]
    LimitWithFollow,
    #[error(transparent)]
    Controller(#[from] CommandError),
}

impl ViewError {
    fn exit_code(&self) -> u8 {
        match self {
            ViewError::Agent(_) => 1,
            ViewError::Filter(_) | ViewError::NeedsServer(_) | ViewError::LimitWithFollow => 2,
            ViewError::Controller(e) => e.exit_code(),
        }
    }

    fn report(&self) -> String {
        match self {
            ViewError::Controller(e) => e.report(),
            other => format!("error: {}", esc(&other.to_string())),
        }
    }
}

/// A request to the local agent, as the views report its failure.
fn ask_agent(
    socket: &Path,
    req: &Request,
    each: impl FnMut(Value) -> bool,
) -> Result<(), ViewError> {
    request(socket, req, each).map_err(ViewError::Agent)
}

fn finish(r: Result<(), ViewError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}

pub fn stats(v: &ViewArgs) -> ExitCode {
    let json = v.output == Report::Json;
    finish(ask_agent(&v.socket, &Request::Stats, |obj| {
        if json {
            outln!("{obj}");
        } else if let Value::Object(m) = obj {
            for (k, val) in m.iter().filter(|(k, _)| *k != "rules") {
                outln!("{:<20} {}", esc(k), esc(&val.to_string()));
            }
            if let Some(Value::Array(rules)) = m.get("rules") {
                outln!();
                outln!(
                    "{:<32} {:<8} {:>4} {:<6} {:>10} {:>12}",
                    "POLICY",
                    "DIR",
                    "RULE",
                    "ACTION",
                    "PACKETS",
                    "BYTES"
                );
                for r in rules {
                    outln!(
                        "{:<32} {:<8} {:>4} {:<6} {:>10} {:>12}",
                        s(r, "policy"),
                        s(r, "direction"),
                        s(r, "rule"),
                        s(r, "action"),
                        s(r, "packets"),
                        s(r, "bytes")
                    );
                }
            }
        }
        true
    }))
}

/// A field as a table cell, escaped.
fn s(v: &Value, k: &str) -> String {
    let cell = match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    esc(&cell).into_owned()
}

/// "src:port -> dst:port" of a flow or session object.
fn flow_text(r: &Value) -> String {
    let src = endpoint(&s(r, "src_ip"), &s(r, "src_port"));
    format!("{src} -> {}", endpoint(&s(r, "dst_ip"), &s(r, "dst_port")))
}

/// Prints a table's header before its first row, or at the end of an empty table, so
/// that a command that fails prints no header.
struct Table {
    header: String,
    shown: bool,
}

impl Table {
    fn new(header: String) -> Table {
        Table {
            header,
            shown: false,
        }
    }

    fn row(&mut self, line: &str) {
        self.head();
        outln!("{line}");
    }

    fn head(&mut self) {
        if !self.shown {
            self.shown = true;
            outln!("{}", self.header);
        }
    }
}

fn flow_line(r: &Value) -> String {
    let mut policy = s(r, "policy");
    if let Some(rule) = r.get("rule").and_then(Value::as_u64) {
        policy = format!("{policy}[{rule}]");
    }
    if r.get("audit_verdict").and_then(Value::as_str).is_some() {
        policy = format!(
            "{policy} (audit: {} {})",
            s(r, "audit_verdict"),
            s(r, "audit_policy")
        );
    }
    format!(
        "{:<24} {:<12} {:<7} {:<6} {:<44} {:<7} {:<6} {policy}",
        s(r, "time"),
        s(r, "workload"),
        s(r, "direction"),
        s(r, "event"),
        flow_text(r),
        s(r, "protocol"),
        s(r, "verdict"),
    )
}

pub fn flows(f: &FlowArgs) -> ExitCode {
    match &f.server {
        Some(server) => server_flows(f, server),
        None => local_flows(f),
    }
}

fn local_flows(f: &FlowArgs) -> ExitCode {
    if let Some(flag) = f.server_only_flag() {
        return finish(Err(ViewError::NeedsServer(flag)));
    }
    if f.follow && f.limit.is_some() {
        return finish(Err(ViewError::LimitWithFollow));
    }
    let since_s = match f.since.as_deref().map(since_seconds).transpose() {
        Ok(s) => s,
        Err(e) => return finish(Err(ViewError::Filter(e))),
    };
    let json = f.view.output == Report::Json;
    let mut table = Table::new(format!(
        "{:<24} {:<12} {:<7} {:<6} {:<44} {:<7} {:<6} POLICY",
        "TIME", "WORKLOAD", "DIR", "EVENT", "FLOW", "PROTO", "VERDICT"
    ));
    let mut print = |r: &Value| {
        if json {
            outln!("{r}");
        } else {
            table.row(&flow_line(r));
        }
    };
    let req = Request::Flows {
        follow: f.follow,
        filter: FlowFilter {
            verdict: f.verdict.clone(),
            workload: f.workload.clone(),
            since_s,
        },
    };
    // Without --limit (and so with --follow), each flow is printed as it comes.
    let mut recent = std::collections::VecDeque::new();
    let r = ask_agent(&f.view.socket, &req, |r| {
        match f.limit {
            Some(n) => {
                recent.push_back(r);
                if recent.len() > n {
                    recent.pop_front();
                }
            }
            None => print(&r),
        }
        true
    });
    if let Err(e) = r {
        return finish(Err(e));
    }
    for r in &recent {
        print(r);
    }
    if !json {
        table.head();
    }
    ExitCode::SUCCESS
}

/// The controller's flow records: the newest matching ones, newest last, then with
/// --follow those stored after them (docs/FLOWS.md "Queries").
fn server_flows(f: &FlowArgs, server: &str) -> ExitCode {
    let params = f.server_params();
    if let Err(e) = crate::client::check_filters(&params) {
        return finish(Err(ViewError::Filter(e)));
    }
    let q = crate::client::RemoteFlows {
        client: crate::client::ClientArgs {
            server: server.to_string(),
            token_file: f.token_file.clone(),
            tls: f.tls.clone(),
        },
        params,
    };
    let json = f.view.output == Report::Json;
    let mut table = Table::new(crate::client::record_header());
    let r = crate::client::remote_flows(&q, f.follow, |r| {
        if json {
            outln!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            table.row(&crate::client::record_line(r));
        }
    });
    if r.is_ok() && !json {
        table.head();
    }
    finish(r.map_err(ViewError::from))
}

pub fn sessions(v: &ViewArgs) -> ExitCode {
    let json = v.output == Report::Json;
    let mut table = Table::new(format!(
        "{:<12} {:<44} {:<6} {:<12} {:<7} {:<20} {:>8} {:>10} {:>6}",
        "WORKLOAD", "FLOW", "PROTO", "STATE", "VERDICT", "POLICY", "PACKETS", "BYTES", "AGE"
    ));
    let r = ask_agent(&v.socket, &Request::Sessions, |r| {
        if json {
            outln!("{r}");
        } else {
            table.row(&format!(
                "{:<12} {:<44} {:<6} {:<12} {:<7} {:<20} {:>8} {:>10} {:>5}s",
                s(&r, "workload"),
                flow_text(&r),
                s(&r, "protocol"),
                s(&r, "state"),
                s(&r, "verdict"),
                s(&r, "policy"),
                s(&r, "packets"),
                s(&r, "bytes"),
                s(&r, "age_s"),
            ));
        }
        true
    });
    if r.is_ok() && !json {
        table.head();
    }
    finish(r)
}

#[cfg(test)]
mod tests {
    use super::{flow_line, flow_text, since_seconds};

    #[test]
    fn flow_lines_bracket_ipv6_and_escape_what_the_agent_sent() {
        let v6 = serde_json::json!({"src_ip": "fd19::10", "src_port": 46542, "dst_ip": "fd19::20", "dst_port": 80});
        assert_eq!(flow_text(&v6), "[fd19::10]:46542 -> [fd19::20]:80");
        let v4 = serde_json::json!({"src_ip": "10.0.0.1", "src_port": 1, "dst_ip": "10.0.0.2", "dst_port": 2});
        assert_eq!(flow_text(&v4), "10.0.0.1:1 -> 10.0.0.2:2");
        let evil = serde_json::json!({"workload": "w\x1b[2J", "policy": "p\nFAKE LINE", "verdict": "deny"});
        let line = flow_line(&evil);
        assert!(!line.contains('\x1b') && !line.contains('\n'), "{line:?}");
        assert!(
            line.contains("w\\x1b[2J") && line.contains("p\\nFAKE LINE"),
            "{line}"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(since_seconds("90s"), Ok(90.0));
        assert_eq!(since_seconds("1h30m"), Ok(5400.0));
        let e = since_seconds("10").unwrap_err();
        assert_eq!(e.field, "since");
        assert!(since_seconds("5x").is_err());
        let age = since_seconds("2000-01-01T00:00:00Z").unwrap();
        assert!(age > 20.0 * 365.0 * 86_400.0, "{age}");
    }
}
