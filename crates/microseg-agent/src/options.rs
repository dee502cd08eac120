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
    /// How often the files and interfaces are checked for changes.
    pub reload_interval: Duration,
    /// How often expired sessions are removed.
    pub gc_interval: Duration,
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
            reload_interval: Duration::from_millis(100),
            gc_interval: Duration::from_secs(10),
        }
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
