//! Workload churn (docs/CONTROLLER.md "Sizing", docs/FLEETSIM.md "Churn"): reports that
//! arrive over a short time are paced into a few revisions, each node's workloads all
//! stored; a stream that does not read holds up the reports for a bounded time only. A
//! real controller on SQLite over real gRPC.

mod common;

use common::*;
use microseg_proto::v1::{DiscoveredWorkload, SyncRequest, WorkloadReport};
use std::time::{Duration, Instant};

/// `n` workloads of node number `k`, each with its own address.
fn report(k: usize, n: usize) -> WorkloadReport {
    let node = format!("n{k}");
    WorkloadReport {
        workloads: (0..n)
            .map(|i| DiscoveredWorkload {
                name: format!("{node}-w{i}"),
                interface: format!("veth{i}"),
                ips: vec![format!("10.{k}.{}.{}", i / 250, 1 + i % 250)],
                labels: [("app".to_string(), "web".to_string())].into(),
            })
            .collect(),
        node,
    }
}

#[test]
fn reports_arriving_over_half_a_second_make_a_few_revisions_and_are_all_stored() {
    let state = TempDir::new("churn-paced");
    let ctl = Ctl::start(&state.0, None);
    let c = ctl.client();
    let before = revision(&c);
    ctl.rt.block_on(async {
        let l = agent_link(&ctl).await;
        let mut calls = Vec::new();
        // One report every 25 ms, as churn spread over the fleet sends them.
        for k in 0..24 {
            let mut l = l.clone();
            calls.push(tokio::spawn(async move {
                l.report_workloads(report(k, 5)).await.map(|_| ())
            }));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        for call in calls {
            call.await.unwrap().expect("report taken");
        }
    });
    let made = revision(&c) - before;
    // 600 ms of reports: one revision each without pacing, about six with it.
    assert!((1..=12).contains(&made), "{made} revisions for 24 reports");
    let stored = names(&get(&c, "/v1/workloads"));
    assert_eq!(stored.len(), 24 * 5, "{stored:?}");
}

#[test]
fn a_stream_that_does_not_read_holds_up_reports_for_a_second_at_most() {
    let state = TempDir::new("churn-stalled");
    let ctl = Ctl::start(&state.0, None);
    let c = ctl.client();
    ctl.rt.block_on(async {
        let mut l = agent_link(&ctl).await;
        // A full state (over 1 MB) that outgrows the buffers of a link with h2's smallest
        // window (the client's default is megabytes).
        for k in 10..13 {
            l.report_workloads(report(k, 2_000)).await.unwrap();
        }
        let mut other = agent_link_with(&ctl, Some(65_535)).await;
        let sync = SyncRequest {
            node: "stalled".into(),
            revision: 0,
            accepts_parts: true,
        };
        let stalled = other.sync(sync).await.unwrap().into_inner();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for k in 2..5 {
            let t = Instant::now();
            l.report_workloads(report(k, 5)).await.unwrap();
            let took = t.elapsed();
            assert!(took < Duration::from_secs(3), "report {k} took {took:?}");
        }
        drop(stalled);
    });
    assert_eq!(names(&get(&c, "/v1/workloads")).len(), 3 * 2_000 + 3 * 5);
}
