//! microseg-fleetsim: N simulated agents against a real controller; measures start-up,
//! one-rule policy changes and a reconnect storm. See docs/FLEETSIM.md.

mod bad;
mod changes;
mod churn;
mod controller;
mod phases;
mod report;
mod sim;
mod storm;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::controller::Controller;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "microseg-fleetsim",
    about = "Simulated agents against a real controller (docs/FLEETSIM.md)"
)]
pub struct Args {
    /// Simulated nodes, each with its own gRPC link and node token.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Workloads each node reports.
    #[arg(long, default_value_t = 100)]
    pub workloads: usize,
    /// One-rule policy changes applied through the REST API.
    #[arg(long, default_value_t = 20)]
    pub changes: usize,
    /// Flow records per second per node (0: no uploads).
    #[arg(long, default_value_t = 0)]
    pub flow_rate: u32,
    /// Drop and reopen every link at once this many seconds after the start (or once the
    /// changes are done, if later).
    #[arg(long)]
    pub reconnect_storm_at: Option<f64>,
    /// Start this controller binary (`microseg`) with a fresh state dir.
    #[arg(long)]
    pub start_controller: Option<PathBuf>,
    /// With --start-controller: its --db (default: SQLite in the state dir).
    #[arg(long)]
    pub db: Option<String>,
    /// With --start-controller and a PostgreSQL --db: start this many controllers on it,
    /// node i linked to controller i mod K; changes are applied through controller 0.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub controllers: u16,
    /// With --start-controller: keep its state dir (and log) after the run.
    #[arg(long)]
    pub keep_state: bool,
    /// A running controller's address (host:port), with the two token files.
    #[arg(long, conflicts_with = "start_controller")]
    pub controller: Option<String>,
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    #[arg(long)]
    pub agent_token_file: Option<PathBuf>,
    /// The running controller's pid, for its RSS and CPU.
    #[arg(long)]
    pub controller_pid: Option<u32>,
    /// How long to wait for the fleet to get its first states.
    #[arg(long, default_value_t = 120.0)]
    pub startup_timeout: f64,
    /// How long to wait for every node to ack one change.
    #[arg(long, default_value_t = 30.0)]
    pub change_timeout: f64,
    /// Deadline of each gRPC call of a node (report, sync, ack, upload); 0: none, as the
    /// agent (the run's --timeout still bounds it).
    #[arg(long, default_value_t = 0.0)]
    pub call_timeout: f64,
    /// The storm is a controller restart (SIGTERM, then started again on the same address
    /// and state; --start-controller only): the links break as it stops.
    #[arg(long)]
    pub storm_restart: bool,
    /// Resync with a full state every time (as agents before resuming did), not from the
    /// revision held.
    #[arg(long)]
    pub no_resume: bool,
    /// Bad nodes besides the fleet (repeat or comma-separate): no-ack, huge (10,000
    /// workloads), garbage (malformed reports). See docs/FLEETSIM.md "Bad nodes".
    #[arg(long, value_delimiter = ',', value_parser = bad::BadKind::parse)]
    pub bad: Vec<bad::BadKind>,
    /// Percent of the fleet's workloads replaced per second while the changes run (each
    /// step re-reports a node with a tenth of its workloads renamed and re-addressed).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// The whole run's limit: then it reports what it has and stops.
    #[arg(long, default_value_t = 900.0)]
    pub timeout: f64,
    /// Output: text (one line per measurement) or json.
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
}

/// Raises the soft open-files limit to the hard one: every node holds a socket.
fn raise_nofile() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let before = r.rlim_cur;
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        (before, r.rlim_cur)
    }
}

fn main() {
    let args = Args::parse();
    if args.output != "text" && args.output != "json" {
        eprintln!("-o: text or json");
        std::process::exit(2);
    }
    let (before, after) = raise_nofile();
    if before != after {
        eprintln!("fleetsim: open-files limit raised from {before} to {after}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(args));
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

/// The controllers under test: started (K of them on one PostgreSQL) or the one attached.
fn controllers(args: &Args) -> Result<Vec<Arc<Controller>>, String> {
    let k = usize::from(args.controllers);
    let Some(bin) = &args.start_controller else {
        if k > 1 {
            return Err("--controllers needs --start-controller".into());
        }
        return match (&args.controller, &args.token_file, &args.agent_token_file) {
            (Some(addr), Some(t), Some(a)) => Ok(vec![Arc::new(Controller::attach(
                addr.clone(),
                t,
                a,
                args.controller_pid,
            )?)]),
            (Some(_), _, _) => Err("--controller needs --token-file and --agent-token-file".into()),
            _ => Err("give --start-controller BIN or --controller ADDR".into()),
        };
    };
    let db = args.db.as_deref();
    if k > 1 && !db.is_some_and(|d| d.starts_with("postgres")) {
        return Err("--controllers K > 1 shares one database: give --db postgres://...".into());
    }
    let mut ctls: Vec<Arc<Controller>> = Vec::new();
    for i in 0..k {
        let tokens = ctls.first().and_then(|c| c.state_dir.clone());
        let c = Controller::start(bin, db, args.keep_state, i, tokens.as_deref())?;
        if let Some(d) = &c.state_dir {
            eprintln!(
                "fleetsim: controller {i} pid {:?} at {} (state dir {})",
                c.pid,
                c.addr,
                d.display()
            );
        }
        ctls.push(Arc::new(c));
    }
    Ok(ctls)
}

async fn run(args: Args) -> i32 {
    let ctls = match controllers(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleetsim: {e}");
            return 1;
        }
    };
    let report = Arc::new(std::sync::Mutex::new(report::Report::new(&args)));
    let limit = Duration::from_secs_f64(args.timeout);
    let outcome = tokio::time::timeout(limit, phases::run(&args, ctls, report.clone())).await;
    let mut r = report.lock().unwrap().clone();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => r.failure = Some(e),
        Err(_) => r.failure = Some(format!("run timed out after {limit:?}")),
    }
    r.print(&args.output);
    i32::from(r.failure.is_some())
}
