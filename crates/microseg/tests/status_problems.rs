//! `microseg status` lists the nodes with problems (docs/CONTROLLER.md "Bad nodes"): one
//! that never acks, one whose report is over `--max-workloads-per-node`, one that sends
//! invalid workloads; a node in sync is not listed, and nothing is listed while no node
//! has a problem. A real `microseg controller` driven over the agent link (no root).

mod ctl;

use std::time::Duration;

use ctl::{json, policy, revision, Controller};
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{
    AckRequest, DesiredState, DiscoveredWorkload, SyncRequest, WorkloadReport,
};
use microseg_testsupport::eventually;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

type Auth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;
type Link = AgentLinkClient<InterceptedService<Channel, Auth>>;

async fn link(c: &Controller) -> Link {
    let token = std::fs::read_to_string(c.dir.join("state/agent.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let ch = Channel::from_shared(c.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let f: Auth = Box::new(move |mut r: Request<()>| {
        r.metadata_mut()
            .insert("authorization", auth.parse().unwrap());
        Ok(r)
    });
    AgentLinkClient::with_interceptor(ch, f)
}

fn workloads(node: &str, n: usize, net: u8) -> Vec<DiscoveredWorkload> {
    (0..n)
        .map(|i| DiscoveredWorkload {
            name: format!("{node}-w{i}"),
            interface: format!("veth{i}"),
            ips: vec![format!("10.{net}.0.{}", i + 1)],
            labels: Default::default(),
        })
        .collect()
}

async fn report(
    l: &mut Link,
    node: &str,
    workloads: Vec<DiscoveredWorkload>,
) -> Result<(), Status> {
    let r = WorkloadReport {
        node: node.into(),
        workloads,
    };
    l.report_workloads(r).await.map(|_| ())
}

async fn sync(l: &mut Link, node: &str) -> Streaming<DesiredState> {
    let r = SyncRequest {
        node: node.into(),
        revision: 0,
        accepts_parts: true,
    };
    l.sync(r).await.unwrap().into_inner()
}

/// Reads the stream until the last part of `revision`.
async fn read_to(s: &mut Streaming<DesiredState>, revision: u64) {
    loop {
        let d = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("a message within 5 s")
            .unwrap()
            .expect("stream open");
        if d.revision >= revision && !d.more {
            return;
        }
    }
}

/// The lines of the "nodes with problems" table that name `node`.
fn problem_lines<'a>(status: &'a str, node: &str) -> Vec<&'a str> {
    let Some((_, table)) = status.split_once("nodes with problems:") else {
        return Vec::new();
    };
    table
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(node))
        .collect()
}

#[test]
fn status_lists_the_nodes_with_problems() {
    let c = Controller::start_with("problems", |_| {
        ["--max-workloads-per-node", "5", "--node-behind-after", "1s"]
            .map(String::from)
            .to_vec()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut good = rt.block_on(async {
        let mut l = link(&c).await;
        report(&mut l, "good", workloads("good", 2, 1))
            .await
            .unwrap();
        let mut s = sync(&mut l, "good").await;
        read_to(&mut s, revision(&c)).await;
        let ack = AckRequest {
            node: "good".into(),
            revision: revision(&c),
            error: String::new(),
        };
        l.ack(ack).await.unwrap();
        (l, s)
    });
    let (code, out, err) = c.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("nodes with problems"), "{out}");

    let (_silent, _silent_stream) = rt.block_on(async {
        let mut l = link(&c).await;
        let e = report(&mut l, "huge", workloads("huge", 6, 2))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        let mut bad = workloads("garbage", 2, 3);
        bad[0].ips = vec!["999.1.2.3".into()];
        report(&mut l, "garbage", bad).await.unwrap();
        let s = sync(&mut l, "silent").await;
        (l, s)
    });
    let f = c.file("p.yaml", &policy("p", 80));
    assert_eq!(c.cli(&["policy", "apply", "-f", &f]).0, 0);
    let rev = revision(&c);
    rt.block_on(async {
        read_to(&mut good.1, rev).await;
        let ack = AckRequest {
            node: "good".into(),
            revision: rev,
            error: String::new(),
        };
        good.0.ack(ack).await.unwrap();
    });
    // silent: connected, reads nothing, acks nothing.

    let out = eventually(Duration::from_secs(10), || {
        let (code, out, err) = c.cli(&["status"]);
        assert_eq!(code, 0, "{err}");
        match problem_lines(&out, "silent").is_empty() {
            true => Err(out),
            false => Ok(out),
        }
    })
    .unwrap_or_else(|e| panic!("silent never listed as behind: {e}"));
    let silent = problem_lines(&out, "silent").join("\n");
    assert!(
        silent.contains("behind") && silent.contains(&format!("of {rev}")),
        "{out}"
    );
    let huge = problem_lines(&out, "huge").join("\n");
    assert!(
        huge.contains("report refused")
            && huge.contains("1 of 1 report(s)")
            && huge.contains("over_limit")
            && huge.contains("6 workloads, more than the 5"),
        "{out}"
    );
    let garbage = problem_lines(&out, "garbage").join("\n");
    assert!(
        garbage.contains("report partly refused")
            && garbage.contains("1 workload(s) skipped")
            && garbage.contains("invalid address"),
        "{out}"
    );
    assert!(problem_lines(&out, "good").is_empty(), "{out}");

    // The same in -o json, as GET /v1/nodes has it.
    let (_, out, _) = c.cli(&["status", "-o", "json"]);
    let nodes = json(&out);
    let item = |name: &str| {
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(item("silent")["behind"], true, "{out}");
    assert_eq!(item("huge")["reports"]["refused"], 1, "{out}");
    assert_eq!(item("good")["behind"], false, "{out}");
}
