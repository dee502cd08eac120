//! Two nodes and a controller, end to end: agents in their own network namespaces discover
//! the workloads behind them, get policy from the controller, and enforce it on real
//! traffic between workloads on different nodes.
//!
//! ```text
//!   ctl netns: controller on 10.79.0.1 (bridge mgmt)
//!        |                      |
//!   node-a netns (agent)     node-b netns (agent)      each: bridge br0, mgmt veth
//!     br0 ---------- trunk ---------- br0
//!      |                               |    \
//!     web (10.78.0.11)               db (10.78.0.21)  cache (10.78.0.22)
//! ```

mod cluster_support;
mod common;

use std::time::Duration;

use cluster_support::{Cluster, CTL_TLS_URL};
use common::{eventually, local_api, tcp_echo_in, BIN};

const DB_FROM_CACHE_ONLY: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - action: allow
      from: [{selector: {matchLabels: {app: cache}}}]
      ports: [{protocol: TCP, port: 5432}]
"#;

#[test]
fn a_policy_applied_through_the_cli_is_enforced_on_both_nodes_and_survives_restarts() {
    let mut c = Cluster::new("policy");
    c.start_controller();
    c.start_agent("nodea");
    c.start_agent("nodeb");
    c.servers.push(tcp_echo_in(c.name("db"), 5432));
    c.await_sync(Duration::from_secs(20), "nodes in sync");
    // Discovered workloads of both nodes, labelled from the labels files.
    let workloads =
        String::from_utf8_lossy(&c.cli(&["workload", "list", "-o", "json"]).stdout).into_owned();
    assert!(
        workloads.contains("\"app\":\"db\"") || workloads.contains("\"app\": \"db\""),
        "{workloads}"
    );
    assert!(
        c.tcp_ok("web", "10.78.0.21", 5432),
        "open before any policy\n{}",
        c.logs()
    );

    // web (node a) → db (node b): cut on node b, whose policy names a peer on node b only.
    let before = c.status()["revision"].as_u64().expect("a revision");
    c.apply(DB_FROM_CACHE_ONLY);
    let revision = c.status()["revision"].as_u64().expect("a revision");
    assert_eq!(revision, before + 1, "one apply, one revision");
    c.await_sync(
        Duration::from_secs(20),
        "both nodes enforce the new revision",
    );
    // Each agent itself says it enforces that revision, not only the controller's record.
    for node in ["nodea", "nodeb"] {
        let status = local_api(
            &c.dir.join(format!("agent-{node}.sock")),
            r#"{"cmd":"status"}"#,
        );
        assert_eq!(
            status["controller_revision"].as_u64(),
            Some(revision),
            "{node}: {status}"
        );
    }
    assert!(
        !c.tcp_ok("web", "10.78.0.21", 5432),
        "web on node a is denied\n{}",
        c.logs()
    );
    assert!(
        c.tcp_ok("cache", "10.78.0.21", 5432),
        "cache on node b is allowed"
    );

    // An egress policy on node a that names a workload of node b by its labels.
    c.apply(&format!(
        "{DB_FROM_CACHE_ONLY}\n---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: web-egress}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  egress:\n    - action: deny\n      to: [{{selector: {{matchLabels: {{app: db}}}}}}]\n    - action: allow\n"
    ));
    c.await_sync(Duration::from_secs(5), "nodes in sync");
    let flows = String::from_utf8_lossy(
        &c.in_ns("nodea", &[BIN, "flows", "-o", "json", "--socket"])
            .arg(c.dir.join("agent-nodea.sock"))
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!c.tcp_ok("web", "10.78.0.21", 5432));
    let flows_after = String::from_utf8_lossy(
        &c.in_ns("nodea", &[BIN, "flows", "-o", "json", "--socket"])
            .arg(c.dir.join("agent-nodea.sock"))
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        flows_after.lines().count() > flows.lines().count()
            && flows_after.contains("\"policy\":\"web-egress\""),
        "node a denies web's egress to db by its labels:\n{flows_after}"
    );

    // Controller restart (SQLite): nothing lost, agents resync.
    Cluster::stop(&mut c.controller, libc::SIGTERM);
    assert!(
        !c.tcp_ok("web", "10.78.0.21", 5432),
        "enforcement continues without the controller"
    );
    c.start_controller();
    let list =
        String::from_utf8_lossy(&c.cli(&["policy", "list", "-o", "json"]).stdout).into_owned();
    assert!(
        list.contains("db-ingress") && list.contains("web-egress"),
        "{list}"
    );
    c.await_sync(Duration::from_secs(20), "agents resync");

    // Agent killed: enforcement stays; a change made meanwhile arrives when it returns.
    c.kill_agent("nodeb");
    c.apply("apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: db-ingress}\nspec:\n  selector: {matchLabels: {app: db}}\n  ingress:\n    - action: allow\n      from: [{selector: {matchLabels: {app: web}}}]\n");
    assert!(
        c.tcp_ok("cache", "10.78.0.21", 5432),
        "node b still enforces its last revision (cache allowed)"
    );
    c.start_agent("nodeb");
    c.await_sync(Duration::from_secs(20), "restarted agent resyncs");
    assert!(
        !c.tcp_ok("cache", "10.78.0.21", 5432),
        "the new revision is enforced after the resync"
    );
    let _ = c.cli(&["policy", "delete", "web-egress"]);
    c.await_sync(Duration::from_secs(5), "nodes in sync");
    assert!(
        c.tcp_ok("web", "10.78.0.21", 5432),
        "web allowed by the new db-ingress"
    );
}

/// The same link over mutual TLS: the agents connect with their client certificate, the
/// CLI too, and a policy applied through the CLI is enforced on both nodes.
#[test]
fn agents_link_to_the_controller_over_mutual_tls() {
    let mut c = Cluster::new("mtls").with_tls();
    c.start_controller();
    c.start_agent("nodea");
    c.start_agent("nodeb");
    c.servers.push(tcp_echo_in(c.name("db"), 5432));
    c.await_sync(Duration::from_secs(20), "nodes in sync over mutual TLS");
    assert!(
        c.tcp_ok("web", "10.78.0.21", 5432),
        "open before any policy"
    );
    c.apply(DB_FROM_CACHE_ONLY);
    c.await_sync(
        Duration::from_secs(5),
        "both nodes enforce the new revision",
    );
    assert!(
        !c.tcp_ok("web", "10.78.0.21", 5432),
        "web denied\n{}",
        c.logs()
    );
    assert!(c.tcp_ok("cache", "10.78.0.21", 5432), "cache allowed");
    // The CLI without a client certificate is refused.
    let out = c
        .in_ns(
            "ctl",
            &[BIN, "status", "--server", CTL_TLS_URL, "--token-file"],
        )
        .arg(c.dir.join("token"))
        .arg("--tls-ca")
        .arg(&c.tls.as_ref().unwrap().ca)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// 100 policies of 1,000 rules each (about 11 MB of YAML, more than tonic's default
/// 4 MiB message). Only `big-0` selects a workload: db, reachable from cache on ports
/// 20000-20999.
fn hundred_thousand_rules() -> String {
    let mut y = String::with_capacity(12 << 20);
    for p in 0..100 {
        let (selected, peer) = match p {
            0 => ("db".to_string(), "cache"),
            _ => (format!("nothing-{p}"), "web"),
        };
        y.push_str(&format!(
            "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: big-{p}}}\nspec:\n  selector: {{matchLabels: {{app: {selected}}}}}\n  ingress:\n"
        ));
        for port in 20_000..21_000 {
            y.push_str(&format!(
                "    - action: allow\n      from: [{{selector: {{matchLabels: {{app: {peer}}}}}}}]\n      ports: [{{protocol: TCP, port: {port}}}]\n"
            ));
        }
        y.push_str("---\n");
    }
    y
}

/// One request to an agent's local API; its first answer line.
#[test]
fn a_policy_set_of_100000_rules_reaches_the_agents_and_is_enforced() {
    let mut c = Cluster::new("bigstate");
    c.start_controller();
    c.start_agent("nodea");
    c.start_agent("nodeb");
    c.servers.push(tcp_echo_in(c.name("db"), 20_500));
    c.await_sync(Duration::from_secs(20), "nodes in sync");
    assert!(
        c.tcp_ok("web", "10.78.0.21", 20_500),
        "open before any policy"
    );

    c.apply(&hundred_thousand_rules());
    let revision = c.status()["revision"].as_u64().expect("a revision");
    c.await_sync(
        Duration::from_secs(300),
        &format!("both nodes acknowledge revision {revision}"),
    );
    for n in c.status()["items"].as_array().unwrap() {
        assert_eq!(n["revision"].as_u64(), Some(revision), "{n}");
    }
    let node_b = local_api(&c.dir.join("agent-nodeb.sock"), r#"{"cmd":"status"}"#);
    assert_eq!(
        node_b["controller_revision"].as_u64(),
        Some(revision),
        "{node_b}"
    );
    assert!(
        node_b["rules"].as_u64() >= Some(100_000),
        "{}",
        node_b["rules"]
    );
    // A rule from the middle of big-0 decides: cache in, web (named by no rule) out.
    assert!(
        c.tcp_ok("cache", "10.78.0.21", 20_500),
        "cache allowed by big-0\n{}",
        c.logs()
    );
    assert!(!c.tcp_ok("web", "10.78.0.21", 20_500), "web denied");

    // A restarted agent says which revision it adopted.
    c.kill_agent("nodeb");
    c.start_agent("nodeb");
    let adopted = format!("adopted a previous agent's policy and sessions revision={revision} ");
    if let Err(e) = eventually(Duration::from_secs(20), || c.logs().contains(&adopted)) {
        panic!("{adopted:?} not logged ({e})\n{}", c.logs());
    }
    c.await_sync(Duration::from_secs(300), "node b resyncs");
}

/// A node whose workload report the controller refuses (here: over its per-node limit)
/// keeps its link: it still gets and enforces every revision, and says why in its log.
#[test]
fn a_node_whose_report_is_refused_still_syncs_policy() {
    let mut c = Cluster::new("refused").with_controller_args(&["--max-workloads-per-node", "1"]);
    c.start_controller();
    c.start_agent("nodea");
    c.start_agent("nodeb"); // db and cache: one over the limit
    c.await_sync(Duration::from_secs(20), "nodes in sync");
    c.apply(DB_FROM_CACHE_ONLY);
    let revision = c.status()["revision"].as_u64().expect("a revision");
    c.await_sync(
        Duration::from_secs(20),
        &format!("both nodes acknowledge revision {revision}"),
    );
    let node_b = local_api(&c.dir.join("agent-nodeb.sock"), r#"{"cmd":"status"}"#);
    assert_eq!(
        node_b["controller_revision"].as_u64(),
        Some(revision),
        "{node_b}"
    );
    let refused = "the controller refused this node's workload report";
    assert!(c.logs().contains(refused), "{}", c.logs());
}
