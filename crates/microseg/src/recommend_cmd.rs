//! `microseg recommend`: least-privilege Policies from the flows of a window, from the
//! controller's flow record (`--server`) or a standalone agent's own flows (`--socket`),
//! and `--preview` of what they would allow and deny (docs/RECOMMEND.md).
//!
//! Exit status: 0 success, 1 runtime failure (or a preview that would deny an observed
//! connection), 2 bad input with the reason.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use microseg_agent::api::{request, Request};
use microseg_agent::flows::FlowFilter;
use microseg_controller::api_types::{EdgeList, List, Stored};
use microseg_controller::client::{encode, Client, TlsFiles};
use microseg_flowstore::{Edge, EdgeWindow, Protocol, Selector, Timestamp, Verdict};
use microseg_policy::{Mode, Policy, Workload};
use microseg_recommend::{Input, Leg, Options, Preview};
use serde_json::Value;

use crate::client::output::esc;
use crate::client::TlsArgs;

const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Audit,
    Enforce,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Args)]
pub struct RecommendArgs {
    /// Controller URL: recommend from the flow record of every node (default
    /// http://127.0.0.1:7070).
    #[arg(long, value_name = "URL", conflicts_with = "socket")]
    server: Option<String>,
    /// A standalone agent's local API socket: recommend from its own recent flows.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// With --socket: the agent's Workload and Policy files (labels, addresses and the
    /// current policies, which the local API does not serve). Repeatable.
    #[arg(long = "policy", value_name = "PATH", requires = "socket")]
    policy: Vec<PathBuf>,
    /// The window: flows newer than this age (30m, 24h, 7d) or RFC 3339 time.
    #[arg(long, default_value = "1h", value_name = "AGE|TIME")]
    since: String,
    /// Label keys whose values make a group (comma-separated).
    #[arg(
        long,
        default_value = "app",
        value_delimiter = ',',
        value_name = "KEY[,KEY...]"
    )]
    group_by: Vec<String>,
    /// Only groups with a workload whose labels match (app=web,!legacy).
    #[arg(long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// The proposed policies' mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Audit)]
    mode: ModeArg,
    /// Per proposed policy, how many observed connections it allows and would deny.
    #[arg(long)]
    preview: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml, value_name = "FORMAT")]
    output: Format,
    /// File holding the controller's bearer token (default: $MICROSEG_TOKEN, else the
    /// local controller's token for a loopback --server).
    #[arg(long, value_name = "PATH", conflicts_with = "socket")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Why nothing was recommended: bad input (2) or a failure to read the flows (1).
enum Failure {
    Input(String),
    Runtime(String),
}

type Gathered = (Vec<Edge>, Vec<Workload>, Vec<Arc<Policy>>);

pub fn run(a: &RecommendArgs) -> ExitCode {
    match recommend(a) {
        Ok(code) => code,
        Err(Failure::Input(m)) => {
            eprintln!("error: {}", esc(&m));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("error: {}", esc(&m));
            ExitCode::from(1)
        }
    }
}

fn recommend(a: &RecommendArgs) -> Result<ExitCode, Failure> {
    let now = Timestamp::now();
    let window = EdgeWindow::from_params([("since", a.since.as_str())], now)
        .map_err(|e| Failure::Input(format!("--{}: {}", e.field, e.message)))?;
    let selector = a
        .selector
        .as_deref()
        .map(Selector::parse)
        .transpose()
        .map_err(|e| Failure::Input(format!("--selector: {e}")))?;
    let opts = Options {
        group_by: a.group_by.iter().map(|k| k.trim().to_string()).collect(),
        selector,
        mode: match a.mode {
            ModeArg::Audit => Mode::Audit,
            ModeArg::Enforce => Mode::Enforce,
        },
    };
    let (edges, workloads, policies) = match &a.socket {
        Some(socket) => from_agent(a, socket, now, window)?,
        None => from_controller(a)?,
    };
    let input = Input {
        edges: &edges,
        workloads: &workloads,
        policies: &policies,
    };
    let rec =
        microseg_recommend::recommend(input, &opts).map_err(|e| Failure::Input(e.to_string()))?;
    for n in &rec.notes {
        eprintln!("note: {}", esc(n));
    }
    if !a.preview {
        match a.output {
            Format::Yaml => out!("{}", microseg_recommend::to_yaml(&rec)),
            Format::Json => {
                let list = microseg_recommend::to_json_list(&rec);
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let p = microseg_recommend::preview(&rec, &edges, &policies);
    match a.output {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&p).unwrap_or_default()),
        Format::Yaml => show_preview(&p),
    }
    if p.would_deny() > 0 {
        return Err(Failure::Runtime(format!(
            "the recommendation would deny {} observed connections: a defect of the recommendation (docs/RECOMMEND.md)",
            p.would_deny()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn show_preview(p: &Preview) {
    for pol in &p.policies {
        outln!(
            "{}: allows {} observed connections ({} edges), would deny {} ({} edges; {} that the current policies allow)",
            esc(&pol.name),
            pol.allowed_connections,
            pol.allowed_edges,
            pol.would_deny_connections,
            pol.would_deny_edges,
            pol.newly_denied_edges
        );
        for ex in &pol.examples {
            outln!("  would deny {}", esc(ex));
        }
    }
    outln!(
        "denied in the window, left out: {} edges ({} connections)",
        p.denied_edges,
        p.denied_connections
    );
}

// ---- the controller -------------------------------------------------------------------

/// The token as the other client commands find it.
fn token(a: &RecommendArgs, url: &str) -> Result<Option<String>, Failure> {
    crate::client::token_for(url, a.token_file.as_deref())
        .map_err(|e| Failure::Input(e.to_string()))
}

fn get<T: serde::de::DeserializeOwned>(cl: &Client, path: &str) -> Result<T, Failure> {
    let r = cl.get(path).map_err(|e| Failure::Runtime(e.to_string()))?;
    if !r.ok() {
        let mut m = format!("{path}: {}", r.error_text());
        if r.status == 401 {
            m.push_str("\n(give the controller's token with --token-file PATH or MICROSEG_TOKEN)");
        }
        return Err(if r.status < 500 {
            Failure::Input(m)
        } else {
            Failure::Runtime(m)
        });
    }
    r.parse()
        .map_err(|e| Failure::Runtime(format!("{}{path}: bad answer: {e}", cl.url())))
}

fn from_controller(a: &RecommendArgs) -> Result<Gathered, Failure> {
    let url = a.server.as_deref().unwrap_or(DEFAULT_SERVER);
    let tls = TlsFiles {
        ca: a.tls.tls_ca.as_deref(),
        cert: a.tls.tls_cert.as_deref(),
        key: a.tls.tls_key.as_deref(),
    };
    let cl =
        Client::with_tls(url, token(a, url)?, tls).map_err(|e| Failure::Input(e.to_string()))?;
    let edges: EdgeList = get(&cl, &format!("/v1/flows/edges?since={}", encode(&a.since)))?;
    let workloads: List<Stored<Workload>> = get(&cl, "/v1/workloads")?;
    let policies: List<Stored<Arc<Policy>>> = get(&cl, "/v1/policies")?;
    Ok((
        edges.items,
        workloads.items.into_iter().map(|s| s.resource).collect(),
        policies.items.into_iter().map(|s| s.resource).collect(),
    ))
}

// ---- a standalone agent ---------------------------------------------------------------

fn from_agent(
    a: &RecommendArgs,
    socket: &std::path::Path,
    now: Timestamp,
    window: EdgeWindow,
) -> Result<Gathered, Failure> {
    let (workloads, policies) = if a.policy.is_empty() {
        eprintln!("note: without --policy, the workloads are those of the agent's flows, without labels or the addresses of other nodes, and the preview knows no current policy: give --policy PATH (the agent's files)");
        (Vec::new(), Vec::new())
    } else {
        let set = microseg_policy::load_paths(&a.policy).map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            Failure::Input(lines.join("\n"))
        })?;
        (set.workloads, set.policies)
    };
    let since_s = now.micros().saturating_sub(window.since.micros()) as f64 / 1e6;
    let req = Request::Flows {
        follow: false,
        filter: FlowFilter {
            since_s: Some(since_s),
            ..Default::default()
        },
    };
    let mut legs = Vec::new();
    let mut unreadable = 0usize;
    request(socket, &req, |v| {
        match leg(&v) {
            Some(l) => legs.push(l),
            None => unreadable += 1,
        }
        true
    })
    .map_err(|e| Failure::Runtime(e.to_string()))?;
    if unreadable > 0 {
        eprintln!("note: {unreadable} flows of the agent could not be read and were left out");
    }
    let edges = microseg_recommend::edges_from_legs(&legs, &workloads);
    Ok((edges, workloads, policies))
}

/// One line of the agent's flows (crates/microseg-agent/src/flows.rs `FlowRecord`).
fn leg(v: &Value) -> Option<Leg> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let protocol = match v.get("protocol")? {
        Value::String(p) => Protocol::parse(p)?.0,
        other => u8::try_from(other.as_u64()?).ok()?,
    };
    Some(Leg {
        time: Timestamp::parse(s("time")?)?,
        workload: s("workload")?.to_string(),
        egress: s("direction")? == "egress",
        src_ip: s("src_ip")?.to_string(),
        dst_ip: s("dst_ip")?.to_string(),
        src_port: u16::try_from(n("src_port")?).ok()?,
        dst_port: u16::try_from(n("dst_port")?).ok()?,
        protocol,
        verdict: Verdict::parse(s("verdict")?)?,
        policy: s("policy").map(str::to_string),
        packets: n("packets").unwrap_or(0),
        bytes: n("bytes").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as the agent writes it (its own record type, serialized) reads as a leg.
    #[test]
    fn agent_flow_lines_read_as_legs() {
        let record = microseg_agent::flows::FlowRecord {
            time: "2026-12-07T10:00:00.250000Z".into(),
            node: "n1".into(),
            workload: "web-1".into(),
            direction: "egress".into(),
            src_ip: "10.0.0.1".into(),
            dst_ip: "192.0.2.7".into(),
            src_port: 40000,
            dst_port: 443,
            protocol: microseg_agent::flows::protocol_json(6),
            verdict: "audit".into(),
            policy: Some("p".into()),
            rule: Some(0),
            audit_verdict: None,
            audit_policy: None,
            packets: 3,
            bytes: 300,
            event: "new".into(),
            unix_time: 0.0,
        };
        let l = leg(&serde_json::to_value(&record).unwrap()).unwrap();
        assert_eq!(l.time, Timestamp::parse("2026-12-07T10:00:00.25Z").unwrap());
        assert!(l.egress);
        assert_eq!(
            (l.protocol, l.dst_port, l.verdict),
            (6, 443, Verdict::Audit)
        );
        let mut other = serde_json::to_value(&record).unwrap();
        other["protocol"] = 47.into();
        assert_eq!(leg(&other).unwrap().protocol, 47);
        other["verdict"] = "maybe".into();
        assert!(leg(&other).is_none());
    }
}
