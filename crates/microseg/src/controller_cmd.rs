//! `microseg controller`: the control plane (REST and gRPC on one address).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use microseg_controller::{ControllerError, Options};

use crate::client::output::esc;

#[derive(Args)]
pub struct ControllerArgs {
    /// Address for REST and gRPC.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    listen: String,
    /// Storage: postgres://USER@HOST:PORT/DB for a database shared by several
    /// controllers, or sqlite:PATH (default: SQLite at <state-dir>/controller.db).
    #[arg(long, value_name = "URL")]
    db: Option<String>,
    /// The bearer token clients and agents must present (default: one created under
    /// the state dir, mode 0600).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// The bearer token of agents: it opens the agent link (gRPC) only, not the REST
    /// API (default: one created under the state dir as agent.token, mode 0600).
    #[arg(long, value_name = "PATH")]
    agent_token_file: Option<PathBuf>,
    /// Where the tokens and the SQLite database are kept.
    #[arg(long, default_value = "/var/lib/microseg", value_name = "DIR")]
    state_dir: PathBuf,
    /// PostgreSQL over TLS, required: the CA certificates (PEM) that issued the database
    /// server's certificate (its name is checked against the URL's host). A URL with
    /// sslmode=require alone uses the system's CA bundle.
    #[arg(long, value_name = "PATH")]
    db_ca: Option<PathBuf>,
    /// The flow record: a SQLite file path, postgres://USER@HOST:PORT/DB or
    /// clickhouse://HOST:PORT/DB (HTTP port) (default: SQLite at <state-dir>/flows.db).
    #[arg(long, value_name = "URL")]
    flow_db: Option<String>,
    /// How long flow records are kept: 30m, 12h, 7d...
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    flow_retention: String,
    /// How many uploaded flow records may wait to be stored; more are dropped (and
    /// counted in `microseg status`).
    #[arg(long, default_value_t = microseg_controller::DEFAULT_FLOW_QUEUE, value_name = "N")]
    flow_queue: usize,
    /// Serve REST and gRPC over TLS with this certificate chain (PEM), with --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require every client (agents, CLI) to present a certificate issued by
    /// one of these CAs (PEM). Needs --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// A recommended policy is stable once no new edge of its group has appeared for
    /// this long (30s, 10m, 1h; docs/RECOMMEND.md "Lifecycle").
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    recommend_quiet: String,
    /// The most workloads one node may report; a larger report is refused whole and the
    /// node's previous workloads stay (docs/CONTROLLER.md "Bad nodes").
    #[arg(long, default_value_t = microseg_controller::DEFAULT_MAX_WORKLOADS_PER_NODE as u32,
          value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_workloads_per_node: u32,
    /// A connected node that has not enforced the current revision for this long is
    /// behind (`microseg status`, microseg_controller_nodes_behind): 10s, 1m...
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    node_behind_after: String,
    #[command(flatten)]
    pub log: crate::logger::LogArgs,
}

#[derive(Args)]
pub struct NodeTokenArgs {
    /// The node, as its agent's --node names it.
    node: String,
    /// The controller's agent token (default: agent.token under the state dir).
    #[arg(long, value_name = "PATH")]
    agent_token_file: Option<PathBuf>,
    /// The controller's state dir, where its agent.token is.
    #[arg(long, default_value = "/var/lib/microseg", value_name = "DIR")]
    state_dir: PathBuf,
}

/// `microseg node-token NODE`: derived from the agent token, so nothing is stored, and a
/// new agent token revokes them all.
pub fn node_token(a: NodeTokenArgs) -> ExitCode {
    if let Some(e) = microseg_policy::check_name(&a.node) {
        eprintln!("error: node {:?}: {}", a.node, esc(&e));
        return ExitCode::from(2);
    }
    let mut opts = Options::new(a.state_dir);
    opts.agent_token_file = a.agent_token_file;
    match microseg_controller::existing_agent_token(&opts) {
        Ok(t) => {
            outln!(
                "{}",
                microseg_controller::node_token::node_token(&t, &a.node)
            );
            ExitCode::SUCCESS
        }
        Err(e) => exit_for(e),
    }
}

fn exit_for(e: ControllerError) -> ExitCode {
    match e {
        ControllerError::BadInput(e) => {
            eprintln!("error: {}", esc(&e.to_string()));
            ExitCode::from(2)
        }
        ControllerError::Runtime(e) => {
            eprintln!("error: {}", esc(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

pub fn run(a: ControllerArgs) -> ExitCode {
    let mut opts = Options::new(a.state_dir);
    opts.listen = a.listen;
    opts.db = a.db;
    opts.db_ca = a.db_ca;
    opts.token_file = a.token_file;
    opts.agent_token_file = a.agent_token_file;
    opts.flow_db = a.flow_db;
    opts.flow_queue = a.flow_queue;
    opts.flow_retention = match microseg_common::time::parse_duration(&a.flow_retention) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            eprintln!("error: --flow-retention 0: records must be kept for some time");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: --flow-retention: {}", esc(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    opts.recommend_quiet = match microseg_common::time::parse_duration(&a.recommend_quiet) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            eprintln!("error: --recommend-quiet 0: the quiet period must be more than 0");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: --recommend-quiet: {}", esc(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    opts.max_workloads_per_node = a.max_workloads_per_node as usize;
    opts.node_behind_after = match microseg_common::time::parse_duration(&a.node_behind_after) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --node-behind-after: {}", esc(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    opts.tls_cert = a.tls_cert;
    opts.tls_key = a.tls_key;
    opts.tls_client_ca = a.tls_client_ca;
    let rt = match crate::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(microseg_controller::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit_for(e),
    }
}
