//! Two nodes and a controller, each in its own network namespace, for the tests that need
//! a cluster (cluster.rs, flow_record.rs, prometheus.rs, recommend_app.rs, ui.rs): agents
//! discover the workloads behind them and get policy from the controller;
//! docs/CONTROLLER.md describes the link.
//!
//! ```text
//!   ctl netns: controller on 10.79.0.1 (bridge mgmt)
//!        |                      |
//!   node-a netns (agent)     node-b netns (agent)      each: bridge br0, mgmt veth
//!     br0 ---------- trunk ---------- br0
//!      |                               |    \
//!     web (10.78.0.11)               db (10.78.0.21)  cache (10.78.0.22)
//! ```
#![allow(dead_code)] // each test binary uses part of it

#[path = "../../../microseg-controller/tests/common/pki.rs"]
pub mod pki;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::{
    addr, eventually, ns_command, sh, succeeded, tcp_ok_from, unique_name, NetNs, Server, BIN,
};

pub struct Cluster {
    pub prefix: String,
    pub dir: PathBuf,
    pub controller: Option<Child>,
    agents: Vec<(String, Option<Child>)>,
    pub servers: Vec<Server>,
    /// Mutual TLS between the agents (and the CLI) and the controller.
    pub tls: Option<pki::Pki>,
    /// More flags for the controller and for every agent.
    controller_args: Vec<String>,
    agent_args: Vec<String>,
    /// Labels of the workloads added with [`Cluster::add_workload`], by short name.
    extra_labels: Vec<(String, serde_json::Value)>,
    // Dropped after `Drop::drop` stopped the daemons and cleaned up in the nodes.
    namespaces: Vec<NetNs>,
}

pub const CTL_URL: &str = "http://10.79.0.1:7070";
pub const CTL_TLS_URL: &str = "https://10.79.0.1:7070";

impl Cluster {
    pub fn new(test: &str) -> Cluster {
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
            controller_args: Vec::new(),
            agent_args: Vec::new(),
            extra_labels: Vec::new(),
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
    pub fn with_tls(mut self) -> Cluster {
        self.tls = Some(pki::Pki::write(&self.dir.join("pki"), &["10.79.0.1"]));
        self
    }

    /// The controller starts with `args` too (e.g. `--flow-db URL`).
    pub fn with_controller_args(mut self, args: &[&str]) -> Cluster {
        self.controller_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Every agent starts with `args` too (e.g. `--flow-active-timeout 2s`).
    pub fn with_agent_args(mut self, args: &[&str]) -> Cluster {
        self.agent_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn url(&self) -> &'static str {
        if self.tls.is_some() {
            CTL_TLS_URL
        } else {
            CTL_URL
        }
    }

    /// The client side's TLS flags (none without TLS): the CLI's certificate.
    pub fn client_tls(&self) -> Vec<PathBuf> {
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
    pub fn agent_tls(&self, node: &str) -> Vec<PathBuf> {
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

    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    fn ns(&mut self, short: &str) {
        let ns = NetNs::named(&self.name(short));
        self.namespaces.push(ns);
    }

    pub fn netns(&self, short: &str) -> &NetNs {
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

    /// Another workload: namespace `short` behind `node`'s bridge at `ip` (in
    /// 10.78.0.0/24), labelled `labels` by the agents' labels file.
    pub fn add_workload(&mut self, node: &str, short: &str, ip: &str, labels: &[(&str, &str)]) {
        self.workload(node, short, ip);
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        self.extra_labels.push((short.to_string(), labels.into()));
    }

    /// A host at `ip` on `node`'s bridge that is no workload: its namespace's end of the
    /// veth is a bridge port (the address sits on that bridge), which discovery leaves
    /// alone (docs/AGENT.md).
    pub fn add_host(&mut self, node: &str, short: &str, ip: &str) {
        self.ns(short);
        let (n, h) = (self.netns(node), self.netns(short));
        let host_end = format!("veth-{short}");
        n.veth_to(&host_end, h, "eth0");
        n.ip(&["link", "set", "dev", &host_end, "master", "br0", "up"]);
        h.ip(&["link", "add", "br-host", "type", "bridge"]);
        h.ip(&["link", "set", "dev", "eth0", "master", "br-host", "up"]);
        h.ip(&["addr", "add", &format!("{ip}/24"), "dev", "br-host"]);
        h.ip(&["link", "set", "dev", "br-host", "up"]);
    }

    pub fn in_ns(&self, short: &str, args: &[&str]) -> Command {
        let mut c = ns_command(&self.name(short), args[0]);
        c.args(&args[1..]);
        c
    }

    pub fn start_controller(&mut self) {
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
            .args(&self.controller_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controller = Some(child);
        if let Err(e) = eventually(Duration::from_secs(20), || succeeded(self.cli(&["status"]))) {
            panic!("controller up: {e}\n{}", self.logs());
        }
    }

    pub fn stop(child: &mut Option<Child>, signal: i32) {
        if let Some(mut c) = child.take() {
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
    }

    pub fn start_agent(&mut self, node: &str) {
        let labels = self.dir.join(format!("labels-{node}.json"));
        let mut all = serde_json::Map::new();
        for app in ["web", "db", "cache"] {
            all.insert(self.name(app), serde_json::json!({ "app": app }));
        }
        for (short, l) in &self.extra_labels {
            all.insert(self.name(short), l.clone());
        }
        std::fs::write(&labels, serde_json::Value::from(all).to_string()).unwrap();
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
            .args(&self.agent_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        match self.agents.iter_mut().find(|(n, _)| n == node) {
            Some(slot) => slot.1 = Some(child),
            None => self.agents.push((node.to_string(), Some(child))),
        }
    }

    pub fn kill_agent(&mut self, node: &str) {
        let slot = self
            .agents
            .iter_mut()
            .find(|(n, _)| n == node)
            .expect("agent");
        Cluster::stop(&mut slot.1, libc::SIGKILL);
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.in_ns("ctl", &[BIN])
            .args(args)
            .args(["--server", self.url(), "--token-file"])
            .arg(self.dir.join("token"))
            .args(self.client_tls())
            .output()
            .unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Both nodes connected and enforcing the controller's current revision; else the
    /// status that says otherwise.
    pub fn in_sync(&self) -> Result<(), serde_json::Value> {
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
    pub fn await_sync(&self, limit: Duration, what: &str) {
        if let Err(e) = eventually(limit, || self.in_sync()) {
            panic!("{what}: {e}\n{}", self.logs());
        }
    }

    pub fn apply(&self, yaml: &str) {
        let f = self.dir.join("apply.yaml");
        std::fs::write(&f, yaml).unwrap();
        let out = self.cli(&["policy", "apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn tcp_ok(&self, from: &str, ip: &str, port: u16) -> bool {
        tcp_ok_from(&self.name(from), addr(ip, port))
    }

    pub fn logs(&self) -> String {
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
