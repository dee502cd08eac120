//! `microseg`: one binary for the agent and the tools around it.
//!
//! Exit status: 0 success, 1 runtime failure, 2 bad input (usage or invalid resources).

/// `println!` to stdout, except that a reader that went away (`microseg flows | head -1`)
/// ends the command quietly instead of with a panic.
macro_rules! outln {
    () => {
        $crate::client::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::client::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to stdout, as `outln!`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::client::output::write_out(format_args!($($arg)*))
    };
}

mod client;
mod controller_cmd;
mod logger;
mod policy_cmd;
mod recommend_cmd;
mod sources;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

// Loading a large policy allocates and frees millions of small nodes, the pattern
// mimalloc is built for. (Not measured against the system allocator in this tree.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use client::output::esc;
use microseg_agent::{AgentError, AgentOptions};

#[derive(Parser)]
#[command(name = "microseg", version, about = "eBPF network microsegmentation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: enforce Workloads and Policies read from files.
    Agent(AgentArgs),
    /// Policies: check and convert files; apply, diff, list, get and delete them on the
    /// controller.
    Policy {
        #[command(subcommand)]
        command: policy_cmd::PolicyCommand,
    },
    /// Data-plane counters from the local agent.
    Stats(views::ViewArgs),
    /// Recent flows from the local agent, or with --server the flow records of every node.
    Flows(views::FlowArgs),
    /// The session table.
    Sessions(views::ViewArgs),
    /// Run the controller: REST API and agent gRPC on one address.
    Controller(controller_cmd::ControllerArgs),
    /// Workloads known to the controller and their labels.
    Workload {
        #[command(subcommand)]
        command: client::WorkloadCommand,
    },
    /// Nodes, the revision each enforces, and its lag.
    Status {
        #[command(flatten)]
        report: client::ReportArgs,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Print a node's own agent token (run where the controller's agent token is): with
    /// it, an agent speaks on the agent link for that node only.
    NodeToken(controller_cmd::NodeTokenArgs),
    /// Least-privilege policies from the observed flows of a window, or their preview.
    Recommend(recommend_cmd::RecommendArgs),
    /// Print a shell completion script: `source <(microseg completion bash)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// A file or directory of Workloads and Policies (repeatable).
    #[arg(long = "policy", value_name = "PATH")]
    policy: Vec<PathBuf>,
    /// Controller URL (managed mode).
    #[arg(long)]
    controller: Option<String>,
    /// Node name reported in flows (default: the hostname).
    #[arg(long)]
    node: Option<String>,
    /// Bearer token for the controller (else the MICROSEG_TOKEN variable).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// For an https:// controller: the CA certificates (PEM) that issued its certificate
    /// (default: the system's CA bundle).
    #[arg(long, value_name = "PATH", requires = "controller")]
    tls_ca: Option<PathBuf>,
    /// Mutual TLS: this agent's certificate chain (PEM), with --tls-key.
    #[arg(long, value_name = "PATH", requires_all = ["controller", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// Mutual TLS: this agent's private key (PEM), with --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Labels for discovered workloads: a JSON object {"<netns>": {"key": "value"}}.
    #[arg(long, value_name = "PATH")]
    labels_file: Option<PathBuf>,
    /// Where maps and links are pinned (on a BPF filesystem): enforcement outlives the
    /// agent, and a new agent adopts it.
    #[arg(long, default_value = "/sys/fs/bpf/microseg", value_name = "DIR")]
    bpffs: PathBuf,
    /// Where the agent keeps its state across restarts.
    #[arg(long, default_value = "/var/lib/microseg", value_name = "DIR")]
    state_dir: PathBuf,
    /// The local API's Unix socket (for `microseg stats`, `flows`, `sessions`).
    #[arg(long, default_value = "/run/microseg/agent.sock", value_name = "PATH")]
    socket: PathBuf,
    /// Drop non-IP frames other than ARP (they pass, counted, by default).
    #[arg(long)]
    drop_non_ip: bool,
    /// How many recent flows to keep for `microseg flows`.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    flow_buffer: usize,
    /// Session table capacity.
    #[arg(long, default_value_t = 1_048_576, value_name = "N")]
    sessions: u32,
    /// Capacity of the table of denied tuples, kept apart so that a flood of them cannot
    /// evict allowed sessions.
    #[arg(long, default_value_t = 65_536, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    denied_sessions: u32,
    /// A connection that lasts is reported again at least this often (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = positive_duration)]
    flow_active_timeout: std::time::Duration,
    /// Also report every connection when it starts (for debugging: one more event per
    /// connection and workload).
    #[arg(long)]
    flow_report_start: bool,
    /// Managed mode: flows waiting for the controller, at most; more are dropped and
    /// counted.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    flow_upload_buffer: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics, or `off` (docs/METRICS.md).
    #[arg(long, default_value = microseg_agent::metrics::DEFAULT_ADDR, value_name = "ADDR|off", value_parser = microseg_agent::metrics::parse_flag)]
    metrics: microseg_agent::metrics::Listen,
    /// Remove all pinned programs, links and maps, then exit.
    #[arg(long)]
    cleanup: bool,
    #[command(flatten)]
    log: logger::LogArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(match &cli.command {
        Command::Agent(a) => a.log.format,
        Command::Controller(c) => c.log.format,
        _ => logger::LogFormat::Text,
    });
    match cli.command {
        Command::Agent(a) => agent(a),
        Command::Policy { command } => policy_cmd::run(command),
        Command::Stats(v) => views::stats(&v),
        Command::Flows(f) => views::flows(&f),
        Command::Sessions(v) => views::sessions(&v),
        Command::Controller(c) => controller_cmd::run(c),
        Command::Workload { command } => client::workload(command),
        Command::Status { report, client: c } => client::status(&c, report.output),
        Command::NodeToken(a) => controller_cmd::node_token(a),
        Command::Recommend(r) => recommend_cmd::run(&r),
        Command::Completion { shell } => {
            // Written whole through the writer that ends quietly on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "microseg", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
            ExitCode::SUCCESS
        }
    }
}

/// Why the agent's TLS flags cannot be used with its --controller.
#[derive(Debug, thiserror::Error)]
enum AgentTlsError {
    #[error("--controller {url}: --tls-ca, --tls-cert and --tls-key need an https:// URL")]
    NeedsHttps { url: String },
    #[error("{}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--controller {url}: no system CA bundle found; give --tls-ca PATH")]
    NoSystemCa { url: String },
}

/// Checks the agent's TLS flags against the controller URL; the CA file to trust (for
/// https: --tls-ca, else the system bundle).
fn controller_tls(
    url: &str,
    files: [&Option<PathBuf>; 3],
) -> Result<Option<PathBuf>, AgentTlsError> {
    let ca = files[0];
    if !url.starts_with("https://") {
        if files.iter().any(|f| f.is_some()) {
            return Err(AgentTlsError::NeedsHttps { url: url.into() });
        }
        return Ok(None);
    }
    // Readable now, so a typo fails at start rather than at every reconnect.
    for p in files.into_iter().flatten() {
        std::fs::read(p).map_err(|source| AgentTlsError::Unreadable {
            path: p.clone(),
            source,
        })?;
    }
    match ca {
        Some(p) => Ok(Some(p.clone())),
        None => microseg_controller::tls::system_ca_file()
            .map(|p| Some(p.to_path_buf()))
            .ok_or_else(|| AgentTlsError::NoSystemCa { url: url.into() }),
    }
}

/// A duration above zero ("1s", "5m"), read by the one strict duration parser.
fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match microseg_common::time::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn agent(a: AgentArgs) -> ExitCode {
    let mut opts = AgentOptions::new(a.policy.clone());
    opts.bpffs = a.bpffs;
    opts.state_dir = a.state_dir;
    opts.socket = a.socket;
    opts.drop_non_ip = a.drop_non_ip;
    opts.flow_buffer = a.flow_buffer;
    opts.session_capacity = a.sessions;
    opts.denied_capacity = a.denied_sessions;
    opts.flow_active_timeout = a.flow_active_timeout;
    opts.flow_report_start = a.flow_report_start;
    opts.flow_upload_buffer = a.flow_upload_buffer;
    opts.metrics = a.metrics.0;
    if let Some(node) = a.node {
        opts.node = node;
    }
    if a.cleanup {
        return match microseg_agent::cleanup(&opts) {
            Ok(()) => {
                tracing::info!(path = %opts.bpffs.display(), "removed the pinned enforcement");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", esc(&e.to_string()));
                ExitCode::from(1)
            }
        };
    }
    let source = match (&a.controller, a.policy.is_empty()) {
        (Some(_), false) => {
            eprintln!("error: use either --policy PATH or --controller URL, not both");
            return ExitCode::from(2);
        }
        (None, true) => {
            eprintln!("error: the agent needs --policy PATH (files or directories of Workloads and Policies) or --controller URL");
            return ExitCode::from(2);
        }
        (None, false) => microseg_agent::Source::Files,
        (Some(url), true) => {
            let token = match &a.token_file {
                Some(p) => match std::fs::read_to_string(p) {
                    Ok(t) => t.trim().to_string(),
                    Err(e) => {
                        let msg = format!("error: --token-file {}: {e}", p.display());
                        eprintln!("{}", esc(&msg));
                        return ExitCode::from(2);
                    }
                },
                None => std::env::var("MICROSEG_TOKEN").unwrap_or_default(),
            };
            if token.is_empty() {
                eprintln!(
                    "error: the controller needs a token: --token-file PATH or MICROSEG_TOKEN"
                );
                return ExitCode::from(2);
            }
            let tls_ca = match controller_tls(url, [&a.tls_ca, &a.tls_cert, &a.tls_key]) {
                Ok(ca) => ca,
                Err(e) => {
                    eprintln!("error: {}", esc(&e.to_string()));
                    return ExitCode::from(2);
                }
            };
            microseg_agent::Source::Controller(microseg_agent::ControllerLink {
                url: url.clone(),
                token,
                labels_file: a.labels_file.clone(),
                tls_ca,
                tls_cert: a.tls_cert.clone(),
                tls_key: a.tls_key.clone(),
            })
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(microseg_agent::run(opts, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(AgentError::BadInput(errors)) => {
            for e in errors {
                eprintln!("{}", esc(&e.to_string()));
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {}", esc(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

/// The async runtime of the long-running commands (agent, controller): two workers.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(1)
        })
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every flag and argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}: no about", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "microseg", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
