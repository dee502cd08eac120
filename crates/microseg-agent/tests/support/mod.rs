//! An agent run in this process, in files mode, enforcing on a veth of its own (deleting it deletes its peer);
//! everything it made (the interface, its pins, its files) goes when it is dropped.
//! Shared by the agent's tests and its stats benchmark. Needs root.

#![allow(dead_code)] // each user takes what it needs

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use microseg_agent::{AgentError, AgentOptions, Source};
use microseg_testsupport::{eventually_every, Veth};
use serde_json::Value;

/// The served workload's interface address, and a client's.
pub const SERVER_IP: &str = "10.251.0.2";
pub const CLIENT_IP: &str = "10.251.0.3";

pub struct Agent {
    pub opts: AgentOptions,
    pub iface: String,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), AgentError>>>,
    // Deleted after `Drop::drop` stopped the agent and cleaned up.
    _veth: Veth,
}

impl Agent {
    /// Starts an agent enforcing `policy` (and the workloads "server", on the veth,
    /// and "client"); returns once it answers with revision 1.
    pub fn start(name: &str, policy: &str) -> Agent {
        Agent::start_with(name, policy, |_| {})
    }

    /// [`Agent::start`] with options of the test's.
    pub fn start_with(
        name: &str,
        policy: &str,
        configure: impl FnOnce(&mut AgentOptions),
    ) -> Agent {
        let tag = format!("{name}{}", std::process::id());
        let iface = format!("ms{tag}");
        assert!(iface.len() < 15, "interface name {iface} too long");
        let dir = std::env::temp_dir().join(format!("microseg-agent-{tag}"));
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        let mut opts = AgentOptions::new(vec![dir.join("policy")]);
        opts.bpffs = PathBuf::from(format!("/sys/fs/bpf/microseg-test-{tag}"));
        opts.state_dir = dir.join("state");
        opts.socket = dir.join("agent.sock");
        opts.node = "test-node".into();
        opts.session_capacity = 4096;
        configure(&mut opts);
        let veth = Veth::new(&iface, &format!("{iface}p"));
        microseg_testsupport::ip(&["link", "set", &iface, "up"]);
        let mut agent = Agent {
            opts,
            iface,
            dir,
            stop: None,
            thread: None,
            _veth: veth,
        };
        agent.write_policy("workloads.yaml", &agent.workloads());
        agent.write_policy("policy.yaml", policy);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let opts = agent.opts.clone();
        agent.stop = Some(stop);
        agent.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(microseg_agent::run_until(opts, Source::Files, async {
                let _ = stopped.await;
            }))
        }));
        agent.wait_for("revision 1", |a| {
            a.try_request(r#"{"cmd":"status"}"#)
                .is_some_and(|s| s["revision"] == 1)
        });
        agent
    }

    fn workloads(&self) -> String {
        format!(
            "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: server, labels: {{app: server}}}}\nspec: {{interface: {}, ips: [{SERVER_IP}]}}\n---\napiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: client, labels: {{app: client}}}}\nspec: {{ips: [{CLIENT_IP}]}}\n",
            self.iface
        )
    }

    /// Writes a policy file whole, under a temporary name first, so the agent never reads
    /// half of it.
    pub fn write_policy(&self, file: &str, text: &str) {
        let tmp = self.dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.join("policy").join(file)).unwrap();
    }

    /// One request to the local API: its first line, or None when there is no answer.
    pub fn try_request(&self, request: &str) -> Option<Value> {
        let mut s = UnixStream::connect(&self.opts.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        s.write_all(format!("{request}\n").as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        serde_json::from_str(&line).ok()
    }

    pub fn request(&self, request: &str) -> Value {
        self.try_request(request)
            .unwrap_or_else(|| panic!("no answer to {request}"))
    }

    /// Polls every millisecond (a state may not last) until `ready`, for at most 5 minutes
    /// (a 100,000-rule compile on a loaded machine); panics naming `what` after that.
    pub fn wait_for(&self, what: &str, mut ready: impl FnMut(&Agent) -> bool) {
        let limit = Duration::from_secs(300);
        if let Err(e) = eventually_every(Duration::from_millis(1), limit, || ready(self)) {
            panic!("waited in vain for {what}: {e}");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = microseg_agent::cleanup(&self.opts);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One policy allowing the client to reach the server on port 80.
pub fn one_rule() -> String {
    "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: server}}\n  ingress:\n    - action: allow\n      from: [{selector: {matchLabels: {app: client}}}]\n      ports: [{protocol: TCP, port: 80}]\n".into()
}

/// 100 policies of 1,000 rules each, all selecting the server: the client on ports
/// 20000-20999, each policy at its own priority.
pub fn hundred_thousand_rules() -> String {
    let mut y = String::with_capacity(12 << 20);
    for p in 0..100 {
        y.push_str(&format!(
            "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: big-{p}}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  priority: {}\n  ingress:\n",
            p + 1
        ));
        for port in 20_000..21_000 {
            y.push_str(&format!(
                "    - action: allow\n      from: [{{selector: {{matchLabels: {{app: client}}}}}}]\n      ports: [{{protocol: TCP, port: {port}}}]\n"
            ));
        }
        y.push_str("---\n");
    }
    y
}
