//! Bad nodes among the fleet (issue 23 item 5, docs/FLEETSIM.md "Bad nodes"): one that
//! never acks, one that reports 10,000 workloads, one that sends garbage. They are not
//! part of the fleet's figures; the run reports what each got and what the controller
//! says about it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use microseg_proto::prost::Message;
use microseg_proto::v1::{AckRequest, DiscoveredWorkload, SyncRequest, WorkloadReport};
use serde::Serialize;

use crate::sim::{self, SimConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadKind {
    /// Reports its workloads, syncs and reads every revision, never acks.
    NoAck,
    /// Reports 10,000 workloads, then syncs and acks as a good node.
    Huge,
    /// Sends malformed reports in a loop (invalid names and addresses, another node's
    /// name, over the message limit), ten a second.
    Garbage,
}

impl BadKind {
    pub fn parse(s: &str) -> Result<BadKind, String> {
        match s {
            "no-ack" => Ok(BadKind::NoAck),
            "huge" => Ok(BadKind::Huge),
            "garbage" => Ok(BadKind::Garbage),
            _ => Err(format!("--bad: no-ack, huge or garbage, not {s:?}")),
        }
    }

    pub fn node_name(self) -> &'static str {
        match self {
            BadKind::NoAck => "bad-no-ack",
            BadKind::Huge => "bad-huge",
            BadKind::Garbage => "bad-garbage",
        }
    }
}

/// What a bad node saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BadLog {
    /// "call: outcome" (ok, or the gRPC code) -> how many times.
    pub outcomes: BTreeMap<String, usize>,
    pub revisions_received: usize,
    pub bytes_received: u64,
    pub last_revision: u64,
}

impl BadLog {
    fn count(log: &Mutex<BadLog>, call: &str, r: Result<(), tonic::Status>) {
        let what = match r {
            Ok(()) => format!("{call}: ok"),
            Err(s) => format!("{call}: {:?}", s.code()),
        };
        *log.lock().unwrap().outcomes.entry(what).or_default() += 1;
    }
}

impl BadKind {
    /// Where its workloads' addresses start: a /16 each in 172.16.0.0/12, outside the
    /// fleet's addresses and each other's.
    fn first_address(self) -> u32 {
        match self {
            BadKind::NoAck => 0xac10_0000,
            BadKind::Huge => 0xac14_0000,
            BadKind::Garbage => 0xac1f_0000,
        }
    }
}

/// `m` workloads of a bad node (m < 65,535).
fn workloads(kind: BadKind, m: usize) -> Vec<DiscoveredWorkload> {
    let mut w = sim::workloads(0, m);
    for (j, x) in w.iter_mut().enumerate() {
        x.name = format!("w{j}");
        let ip = std::net::Ipv4Addr::from(kind.first_address() + j as u32 + 1);
        x.ips = vec![ip.to_string()];
    }
    w
}

/// Runs one bad node until aborted (after a failure it starts again in 1 s).
pub async fn run(cfg: Arc<SimConfig>, kind: BadKind, token: String, log: Arc<Mutex<BadLog>>) {
    let name = kind.node_name().to_string();
    loop {
        let r = match kind {
            BadKind::Garbage => garbage(&cfg, &name, &token, &log).await,
            _ => session(&cfg, kind, &name, &token, &log).await,
        };
        if let Err(e) = r {
            *log.lock().unwrap().outcomes.entry(e).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn session(
    cfg: &SimConfig,
    kind: BadKind,
    name: &str,
    token: &str,
    log: &Mutex<BadLog>,
) -> Result<(), String> {
    let mut client = sim::connect_token(cfg, token).await?;
    let m = if kind == BadKind::Huge { 10_000 } else { 100 };
    let report = WorkloadReport {
        node: name.into(),
        workloads: workloads(kind, m),
    };
    let r = client.report_workloads(report).await.map(|_| ());
    BadLog::count(log, "report", r.clone());
    r.map_err(|s| format!("report: {:?}", s.code()))?;
    let sync = SyncRequest {
        node: name.into(),
        revision: 0,
        accepts_parts: true,
    };
    let answer = client.sync(sync).await;
    BadLog::count(
        log,
        "sync",
        answer.as_ref().map(|_| ()).map_err(Clone::clone),
    );
    let mut stream = answer
        .map_err(|s| format!("sync: {:?}", s.code()))?
        .into_inner();
    let mut joiner = microseg_proto::parts::Joiner::default();
    loop {
        let part = match stream.message().await {
            Ok(Some(p)) => p,
            Ok(None) => return Err("stream: ended".into()),
            Err(s) => return Err(format!("stream: {:?}", s.code())),
        };
        log.lock().unwrap().bytes_received += part.encoded_len() as u64;
        let Some(state) = joiner.push(part).map_err(|e| format!("parts: {e}"))? else {
            continue;
        };
        {
            let mut l = log.lock().unwrap();
            l.revisions_received += 1;
            l.last_revision = state.revision;
        }
        if kind == BadKind::NoAck {
            continue;
        }
        let ack = AckRequest {
            node: name.into(),
            revision: state.revision,
            error: String::new(),
        };
        let r = client.ack(ack).await.map(|_| ());
        BadLog::count(log, "ack", r.clone());
        r.map_err(|s| format!("ack: {:?}", s.code()))?;
    }
}

/// The malformed reports, in turn: (what, report).
fn garbage_reports(name: &str) -> Vec<(&'static str, WorkloadReport)> {
    let good = workloads(BadKind::Garbage, 3);
    let with = |f: &dyn Fn(&mut DiscoveredWorkload)| {
        let mut w = good.clone();
        f(&mut w[0]);
        WorkloadReport {
            node: name.into(),
            workloads: w,
        }
    };
    // Under the message limit (80 MiB) but far over a label's; and over the limit.
    let big_label = "x".repeat(5 << 20);
    let huge_label = "x".repeat(microseg_proto::MAX_MESSAGE_BYTES + (1 << 20));
    vec![
        ("empty-name", with(&|w| w.name = String::new())),
        (
            "bad-name",
            with(&|w| w.name = "../../etc/passwd\n\0".into()),
        ),
        ("long-name", with(&|w| w.name = "n".repeat(100_000))),
        ("bad-address", with(&|w| w.ips = vec!["999.1.2.3".into()])),
        ("not-an-address", with(&|w| w.ips = vec!["garbage".into()])),
        (
            "duplicate-address",
            with(&|w| w.ips = vec!["10.0.0.1".into()]),
        ),
        (
            "bad-label",
            with(&|w| {
                w.labels.insert("bad key!".into(), "v\u{0}".into());
            }),
        ),
        (
            "other-node",
            WorkloadReport {
                node: "sim-0".into(),
                workloads: good.clone(),
            },
        ),
        (
            "big-label",
            with(&|w| {
                w.labels.insert("big".into(), big_label.clone());
            }),
        ),
        (
            "oversize",
            with(&|w| {
                w.labels.insert("big".into(), huge_label.clone());
            }),
        ),
    ]
}

async fn garbage(
    cfg: &SimConfig,
    name: &str,
    token: &str,
    log: &Mutex<BadLog>,
) -> Result<(), String> {
    // Over the limit too: the controller, not this client, must refuse the oversize one.
    let mut client = sim::connect_token(cfg, token)
        .await?
        .max_encoding_message_size(usize::MAX);
    let reports = garbage_reports(name);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        for (what, report) in &reports {
            tick.tick().await;
            let r = client.report_workloads(report.clone()).await.map(|_| ());
            BadLog::count(log, &format!("report {what}"), r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_workloads_are_unique_and_outside_the_fleet() {
        let w = workloads(BadKind::Huge, 10_000);
        let others: std::collections::HashSet<_> = [BadKind::NoAck, BadKind::Garbage]
            .iter()
            .flat_map(|k| workloads(*k, 100))
            .map(|x| x.ips[0].clone())
            .collect();
        let ips: std::collections::HashSet<_> = w.iter().map(|x| x.ips[0].clone()).collect();
        let names: std::collections::HashSet<_> = w.iter().map(|x| x.name.clone()).collect();
        assert_eq!(ips.len(), 10_000);
        assert_eq!(names.len(), 10_000);
        assert!(ips.iter().all(|ip| ip.starts_with("172.")));
        assert!(ips.is_disjoint(&others));
    }

    #[test]
    fn the_oversize_report_is_over_the_message_limit() {
        let r = garbage_reports("n");
        let (_, big) = r.iter().find(|(w, _)| *w == "oversize").unwrap();
        assert!(big.encoded_len() > microseg_proto::MAX_MESSAGE_BYTES);
    }
}
