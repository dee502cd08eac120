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

mod common;
#[path = "../../microseg-controller/tests/common/pki.rs"]
mod pki;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{
    addr, eventually, local_api, ns_command, sh, succeeded, tcp_echo_in, tcp_ok_from, unique_name,
    NetNs, Server, BIN,
};

struct Cluster {
    prefix: String,
    dir: PathBuf,
    controller: Option<Child>,
    agents: Vec<(String, Option<Child>)>,
    servers: Vec<Server>,
    /// Mutual TLS between the agents (and the CLI) and the controller.
    tls: Option<pki::Pki>,
    // Dropped after `Drop::drop` stopped the daemons and cleaned up in the nodes.
    namespaces: Vec<NetNs>,
}

const CTL_URL: &str = "http://10.79.0.1:7070";
const CTL_TLS_URL: &str = "https://10.79.0.1:7070";

impl Cluster {
    fn new(test: &str) -> Cluster {
        let prefix = unique_name("mscl");
        let dir = std::env::temp_dir().join(format!("{prefix}-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Cluster {
            prefix: prefix.clone(),
            dir,
            namespaces: Vec::new(),
            controller: None,
            agents: Vec::new(),
            servers: Vec::new(),
            tls: None,
        };
        c.ns("ctl");
        let ctl = c.netns("ctl");
        ctl.ip(&["link", "add", "mgmt", "type", "bridge"]);
        ctl.ip(&["addr", "add", "10.79.0.1/24", "dev", "mgmt"]);
        ctl.ip(&["link", "set", "dev", "mgmt", "up"]);
        for (i, node) in ["a", "b"].iter().enumerate() {
            let short = format!("node{node}");
            c.ns(&short);
            let (n, ctl) = (c.netns(&short), c.netns("ctl"));
            n.ip(&["link", "add", "br0", "type", "bridge"]);
            n.ip(&["link", "set", "dev", "br0", "up"]);
            // The node's management address, towards the controller.
            let port = format!("to-node-{node}");
            n.veth_to("mgmt", ctl, &port);
            ctl.ip(&["link", "set", "dev", &port, "master", "mgmt", "up"]);
            n.ip(&[
                "addr",
                "add",
                &format!("10.79.0.{}/24", i + 2),
                "dev",
                "mgmt",
            ]);
            n.ip(&["link", "set", "dev", "mgmt", "up"]);
        }
        let (na, nb) = (c.netns("nodea"), c.netns("nodeb"));
        na.veth_to("trunk", nb, "trunk");
        for n in [na, nb] {
            n.ip(&["link", "set", "dev", "trunk", "master", "br0", "up"]);
        }
        c.workload("nodea", "web", "10.78.0.11");
        c.workload("nodeb", "db", "10.78.0.21");
        c.workload("nodeb", "cache", "10.78.0.22");
        std::fs::write(c.dir.join("token"), "cluster-test-token\n").unwrap();
        c
    }

    /// Certificates for mutual TLS: the controller's for 10.79.0.1, one client
    /// certificate shared by the agents and the CLI.
    fn with_tls(mut self) -> Cluster {
        self.tls = Some(pki::Pki::write(&self.dir.join("pki"), &["10.79.0.1"]));
        self
    }

    fn url(&self) -> &'static str {
        if self.tls.is_some() {
            CTL_TLS_URL
        } else {
            CTL_URL
        }
    }

    /// The client side's TLS flags (none without TLS): the CLI's certificate.
    fn client_tls(&self) -> Vec<PathBuf> {
        match &self.tls {
            None => Vec::new(),
            Some(p) => vec![
                "--tls-ca".into(),
                p.ca.clone(),
                "--tls-cert".into(),
                p.client_cert.clone(),
                "--tls-key".into(),
                p.client_key.clone(),
            ],
        }
    }

    /// An agent's TLS flags: its own node's certificate.
    fn agent_tls(&self, node: &str) -> Vec<PathBuf> {
        match &self.tls {
            None => Vec::new(),
            Some(p) => {
                let (_, cert, key) = p
                    .nodes
                    .iter()
                    .find(|(n, _, _)| n == node)
                    .expect("node certificate");
                vec![
                    "--tls-ca".into(),
                    p.ca.clone(),
                    "--tls-cert".into(),
                    cert.clone(),
                    "--tls-key".into(),
                    key.clone(),
                ]
            }
        }
    }

    fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    fn ns(&mut self, short: &str) {
        let ns = NetNs::named(&self.name(short));
        self.namespaces.push(ns);
    }

    fn netns(&self, short: &str) -> &NetNs {
        let name = self.name(short);
        self.namespaces
            .iter()
            .find(|n| n.name() == name)
            .expect("namespace")
    }

    fn workload(&mut self, node: &str, short: &str, ip: &str) {
        self.ns(short);
        let (n, w) = (self.netns(node), self.netns(short));
        let host_end = format!("veth-{short}");
        n.veth_to(&host_end, w, "eth0");
        n.ip(&["link", "set", "dev", &host_end, "master", "br0", "up"]);
        w.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        w.ip(&["link", "set", "dev", "eth0", "up"]);
    }

    fn in_ns(&self, short: &str, args: &[&str]) -> Command {
        let mut c = ns_command(&self.name(short), args[0]);
        c.args(&args[1..]);
        c
    }

    fn start_controller(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("controller.log"))
            .unwrap();
        let token = self.dir.join("token");
        let state = self.dir.join("ctl-state");
        let tls: Vec<PathBuf> = match &self.tls {
            None => Vec::new(),
            Some(p) => vec![
                "--tls-cert".into(),
                p.server_cert.clone(),
                "--tls-key".into(),
                p.server_key.clone(),
                "--tls-client-ca".into(),
                p.ca.clone(),
            ],
        };
        let child = self
            .in_ns("ctl", &[BIN, "controller", "--listen", "10.79.0.1:7070"])
            .args(&tls)
            .arg("--token-file")
            .arg(&token)
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controller = Some(child);
        if let Err(e) = eventually(Duration::from_secs(20), || succeeded(self.cli(&["status"]))) {
            panic!("controller up: {e}\n{}", self.logs());
        }
    }

    fn stop(child: &mut Option<Child>, signal: i32) {
        if let Some(mut c) = child.take() {
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
    }

    fn start_agent(&mut self, node: &str) {
        let labels = self.dir.join(format!("labels-{node}.json"));
        let (web, db, cache) = (self.name("web"), self.name("db"), self.name("cache"));
        std::fs::write(
            &labels,
            format!(r#"{{"{web}": {{"app": "web"}}, "{db}": {{"app": "db"}}, "{cache}": {{"app": "cache"}}}}"#),
        )
        .unwrap();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("agent-{node}.log")))
            .unwrap();
        let bpffs = format!("/sys/fs/bpf/{}-{node}", self.prefix);
        let socket = self.dir.join(format!("agent-{node}.sock"));
        // Each node its own token: it speaks on the agent link for that node only.
        let token = self.dir.join(format!("token-{node}"));
        let state = self.dir.join("ctl-state");
        let out = sh(&[
            BIN,
            "node-token",
            node,
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        std::fs::write(&token, &out.stdout).unwrap();
        let child = self
            .in_ns(
                node,
                &[
                    BIN,
                    "agent",
                    "--controller",
                    self.url(),
                    "--node",
                    node,
                    "--bpffs",
                    &bpffs,
                ],
            )
            .arg("--token-file")
            .arg(&token)
            .arg("--labels-file")
            .arg(&labels)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&self.dir)
            .args(self.agent_tls(node))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        match self.agents.iter_mut().find(|(n, _)| n == node) {
            Some(slot) => slot.1 = Some(child),
            None => self.agents.push((node.to_string(), Some(child))),
        }
    }

    fn kill_agent(&mut self, node: &str) {
        let slot = self
            .agents
            .iter_mut()
            .find(|(n, _)| n == node)
            .expect("agent");
        Cluster::stop(&mut slot.1, libc::SIGKILL);
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.in_ns("ctl", &[BIN])
            .args(args)
            .args(["--server", self.url(), "--token-file"])
            .arg(self.dir.join("token"))
            .args(self.client_tls())
            .output()
            .unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Both nodes connected and enforcing the controller's current revision; else the
    /// status that says otherwise.
    fn in_sync(&self) -> Result<(), serde_json::Value> {
        let s = self.status();
        let items = s["items"].as_array().cloned().unwrap_or_default();
        let synced = items.len() == 2
            && items.iter().all(|n| {
                n["lag"] == 0
                    && n["connected"] == true
                    && n["error"].as_str().unwrap_or("").is_empty()
            });
        if synced {
            Ok(())
        } else {
            Err(s)
        }
    }

    /// Waits up to `limit` for [`Cluster::in_sync`]; fails the test saying `what`.
    fn await_sync(&self, limit: Duration, what: &str) {
        if let Err(e) = eventually(limit, || self.in_sync()) {
            panic!("{what}: {e}\n{}", self.logs());
        }
    }

    fn apply(&self, yaml: &str) {
        let f = self.dir.join("apply.yaml");
        std::fs::write(&f, yaml).unwrap();
        let out = self.cli(&["policy", "apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn tcp_ok(&self, from: &str, ip: &str, port: u16) -> bool {
        tcp_ok_from(&self.name(from), addr(ip, port))
    }

    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "controller:\n{}\nagent a:\n{}\nagent b:\n{}",
            read("controller.log"),
            read("agent-nodea.log"),
            read("agent-nodeb.log")
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.servers.clear();
        let mut agents = std::mem::take(&mut self.agents);
        for (node, child) in &mut agents {
            Cluster::stop(child, libc::SIGKILL);
            let bpffs = format!("/sys/fs/bpf/{}-{node}", self.prefix);
            let _ = self
                .in_ns(node, &[BIN, "agent", "--cleanup", "--bpffs", &bpffs])
                .output();
        }
        Cluster::stop(&mut self.controller, libc::SIGKILL);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

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
