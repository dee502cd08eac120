//! `microseg stats`, `flows` and `sessions`: the local agent's views.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use microseg_agent::api::{request, Request};
use microseg_agent::flows::FlowFilter;
use serde_json::Value;

#[derive(Args)]
pub struct ViewArgs {
    /// Output format: table (default) or json.
    #[arg(
        short = 'o',
        long = "output",
        default_value = "table",
        value_name = "FORMAT"
    )]
    output: String,
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
    /// Only flows with this verdict (allow, deny, log, audit).
    #[arg(long)]
    verdict: Option<String>,
    /// Only flows of this workload.
    #[arg(long)]
    workload: Option<String>,
    /// Only flows newer than this (e.g. 30s, 5m, 2h).
    #[arg(long, value_parser = parse_duration)]
    since: Option<f64>,
    /// Fetch the flows the controller collected from its agents instead (e.g.
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

/// "90s", "5m", "1h30m", "2d" → seconds.
fn parse_duration(s: &str) -> Result<f64, String> {
    let mut total = 0.0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        total += n * match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return Err(format!("invalid duration {s:?}: units are s, m, h, d")),
        };
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("invalid duration {s:?}: missing unit (s, m, h, d)"));
    }
    Ok(total)
}

fn json_output(v: &ViewArgs) -> Result<bool, ExitCode> {
    match v.output.as_str() {
        "json" => Ok(true),
        "table" | "wide" => Ok(false),
        o => {
            eprintln!("error: -o {o}: use table or json");
            Err(ExitCode::from(2))
        }
    }
}

fn finish(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn stats(v: &ViewArgs) -> ExitCode {
    let json = match json_output(v) {
        Ok(j) => j,
        Err(c) => return c,
    };
    finish(request(&v.socket, &Request::Stats, |obj| {
        if json {
            println!("{obj}");
        } else if let Value::Object(m) = obj {
            for (k, val) in m.iter().filter(|(k, _)| *k != "rules") {
                println!("{k:<20} {val}");
            }
            if let Some(Value::Array(rules)) = m.get("rules") {
                println!();
                println!(
                    "{:<32} {:<8} {:>4} {:<6} {:>10} {:>12}",
                    "POLICY", "DIR", "RULE", "ACTION", "PACKETS", "BYTES"
                );
                for r in rules {
                    println!(
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

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// "src:port -> dst:port" of a flow or session object.
fn flow_text(r: &Value) -> String {
    let (sp, dp) = (s(r, "src_port"), s(r, "dst_port"));
    format!("{}:{sp} -> {}:{dp}", s(r, "src_ip"), s(r, "dst_ip"))
}

pub fn flows(f: &FlowArgs) -> ExitCode {
    let json = match json_output(&f.view) {
        Ok(j) => j,
        Err(c) => return c,
    };
    let req = Request::Flows {
        follow: f.follow,
        filter: FlowFilter {
            verdict: f.verdict.clone(),
            workload: f.workload.clone(),
            since_s: f.since,
        },
    };
    if !json {
        println!(
            "{:<24} {:<12} {:<7} {:<6} {:<44} {:<7} {:<6} POLICY",
            "TIME", "WORKLOAD", "DIR", "EVENT", "FLOW", "PROTO", "VERDICT"
        );
    }
    let print = |r: Value| {
        if json {
            println!("{r}");
        } else {
            let flow = flow_text(&r);
            let mut policy = s(&r, "policy");
            if let Some(rule) = r.get("rule").and_then(Value::as_u64) {
                policy = format!("{policy}[{rule}]");
            }
            if let Some(av) = r.get("audit_verdict").and_then(Value::as_str) {
                policy = format!("{policy} (audit: {av} {})", s(&r, "audit_policy"));
            }
            println!(
                "{:<24} {:<12} {:<7} {:<6} {:<44} {:<7} {:<6} {policy}",
                s(&r, "time"),
                s(&r, "workload"),
                s(&r, "direction"),
                s(&r, "event"),
                flow,
                s(&r, "protocol"),
                s(&r, "verdict"),
            );
        }
    };
    if let Some(server) = &f.server {
        if f.follow {
            eprintln!("error: --follow works with the local agent only, not with --server");
            return ExitCode::from(2);
        }
        return crate::client::remote_flows(
            server,
            f.token_file.as_deref(),
            f.tls.clone(),
            f.verdict.as_deref(),
            f.workload.as_deref(),
            f.since,
            print,
        );
    }
    finish(request(&f.view.socket, &req, |r| {
        print(r);
        true
    }))
}

pub fn sessions(v: &ViewArgs) -> ExitCode {
    let json = match json_output(v) {
        Ok(j) => j,
        Err(c) => return c,
    };
    if !json {
        println!(
            "{:<12} {:<44} {:<6} {:<12} {:<7} {:<20} {:>8} {:>10} {:>6}",
            "WORKLOAD", "FLOW", "PROTO", "STATE", "VERDICT", "POLICY", "PACKETS", "BYTES", "AGE"
        );
    }
    finish(request(&v.socket, &Request::Sessions, |r| {
        if json {
            println!("{r}");
        } else {
            let flow = flow_text(&r);
            println!(
                "{:<12} {:<44} {:<6} {:<12} {:<7} {:<20} {:>8} {:>10} {:>5}s",
                s(&r, "workload"),
                flow,
                s(&r, "protocol"),
                s(&r, "state"),
                s(&r, "verdict"),
                s(&r, "policy"),
                s(&r, "packets"),
                s(&r, "bytes"),
                s(&r, "age_s"),
            );
        }
        true
    }))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(90.0));
        assert_eq!(parse_duration("1h30m"), Ok(5400.0));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
