use std::path::PathBuf;
use std::time::Duration;

/// Everything `microseg agent` can be told.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Files or directories of Workloads and Policies.
    pub policy_paths: Vec<PathBuf>,
    /// bpffs directory for pinned maps (`maps/`) and links (`links/`).
    pub bpffs: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Name reported in flows.
    pub node: String,
    /// Drop non-IP frames other than ARP.
    pub drop_non_ip: bool,
    /// How many recent flows the agent keeps for `microseg flows`.
    pub flow_buffer: usize,
    pub session_capacity: u32,
    /// Entries of the denied tuples' table (docs/SECURITY.md, "Floods of new tuples").
    pub denied_capacity: u32,
    /// How often the files and interfaces are checked for changes.
    pub reload_interval: Duration,
    /// How often expired sessions are removed, at most (the flow export may walk the
    /// table more often).
    pub gc_interval: Duration,
    /// A lasting connection is reported again at least this often.
    pub flow_active_timeout: Duration,
    /// Report every connection at its start too (debugging, at an event per leg).
    pub flow_report_start: bool,
    /// Managed mode: flows waiting for the controller, at most (more are dropped, counted).
    pub flow_upload_buffer: usize,
    /// Where Prometheus metrics are served (`--metrics`); None: not served.
    pub metrics: Option<std::net::SocketAddr>,
}

impl AgentOptions {
    pub fn new(policy_paths: Vec<PathBuf>) -> AgentOptions {
        AgentOptions {
            policy_paths,
            bpffs: PathBuf::from("/sys/fs/bpf/microseg"),
            state_dir: PathBuf::from("/var/lib/microseg"),
            socket: PathBuf::from("/run/microseg/agent.sock"),
            node: hostname(),
            drop_non_ip: false,
            flow_buffer: 10_000,
            session_capacity: microseg_common::capacity::SESSIONS,
            denied_capacity: microseg_common::capacity::DENIED,
            reload_interval: Duration::from_millis(100),
            gc_interval: Duration::from_secs(10),
            flow_active_timeout: Duration::from_secs(60),
            flow_report_start: false,
            flow_upload_buffer: 100_000,
            // The command line's default is DEFAULT_ADDR; embedded agents opt in.
            metrics: None,
        }
    }

    pub fn export(&self) -> crate::export::ExportOptions {
        crate::export::ExportOptions::new(
            self.flow_active_timeout,
            self.flow_report_start,
            self.gc_interval,
            self.session_capacity,
        )
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.bpffs.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.bpffs.join("links")
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
