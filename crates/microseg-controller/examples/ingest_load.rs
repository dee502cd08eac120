//! End-to-end flow ingest of the real controller binary: K simulated agents upload N
//! records over the agent link, and the controller stores them in each flow store
//! (docs/CONTROLLER.md, docs/FLOWS.md).
//!
//!   cargo build --release -p microseg
//!   cargo run --release -p microseg-controller --example ingest_load -- \
//!       [--backend sqlite|postgres|clickhouse|all] [--records N] [--agents K] \
//!       [--flow-queue N] [--timeout SECS]
//!
//! Per back end: a fresh state dir (and a throw-away PostgreSQL or ClickHouse, as the
//! tests start them), a few hundred Workloads applied through the REST API, then each
//! agent on its own gRPC connection with its node token sends batches of 5,000, each after
//! the answer to the last, as the agent does. Prints one line: wall time until
//! `/v1/flows/status` says every record is stored, records/s, the upload time alone, the
//! controller's peak and final RSS, and what it dropped. Loopback only; the servers and
//! dirs are removed at exit, also on Ctrl-C.

use microseg_controller::client::Client;
use microseg_controller::node_token::node_token;
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::FlowBatch;
use microseg_testsupport::{free_port, ClickHouse, Postgres, TempDir};
use serde_json::Value;
use std::any::Any;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "ingest_load_support/records.rs"]
mod records;
use records::{apply_body, node_name, owned, workloads, Gen, Rng, Workload, WORKLOADS};
use tonic::transport::Channel;

/// As the agent's upload (crates/microseg-agent/src/managed.rs).
const BATCH: usize = 5_000;
const POLL: Duration = Duration::from_millis(100);

struct Args {
    backends: Vec<String>,
    records: u64,
    agents: u64,
    flow_queue: Option<u64>,
    timeout: Duration,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "ingest_load: {msg}\nusage: ingest_load [--backend sqlite|postgres|clickhouse|all] \
         [--records N] [--agents K] [--flow-queue N] [--timeout SECS]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        backends: ["sqlite", "postgres", "clickhouse"]
            .map(String::from)
            .to_vec(),
        records: 1_000_000,
        agents: 4,
        flow_queue: None,
        timeout: Duration::from_secs(600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |what: &str| -> u64 {
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or_else(|| usage(&format!("{what}: a positive number")))
        };
        match flag.as_str() {
            "--backend" if v == "all" => {}
            "--backend" if a.backends.contains(&v) => a.backends = vec![v],
            "--records" => a.records = num("--records N"),
            "--agents" => a.agents = num("--agents K"),
            "--flow-queue" => a.flow_queue = Some(num("--flow-queue N")),
            "--timeout" => a.timeout = Duration::from_secs(num("--timeout SECS")),
            _ => usage(&format!("unknown {flag} {v}")),
        }
    }
    if a.agents > a.records {
        usage("--agents K must not exceed --records N");
    }
    a
}

/// What runs for the back end being measured (servers, the controller, dirs), dropped
/// last-in first-out after it, on a panic, or from the signal thread.
static HELD: Mutex<Vec<Box<dyn Any + Send>>> = Mutex::new(Vec::new());

fn hold<T: Any + Send>(t: T) {
    HELD.lock().unwrap().push(Box::new(t));
}

/// Set by the signal thread: the failure that follows is the interruption's.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Keeps the lock while dropping, so that whichever thread comes second (main, or the
/// signal thread) waits until the servers are stopped and the dirs removed.
fn release_all() {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    while let Some(h) = held.pop() {
        drop(h);
    }
}

/// The controller process: killed (and waited for) on drop.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_signal_clean_up() {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut int = signal(SignalKind::interrupt()).unwrap();
            let mut term = signal(SignalKind::terminate()).unwrap();
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        });
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("ingest_load: interrupted, cleaning up");
        release_all();
        std::process::exit(130);
    });
}

fn binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("release/microseg");
    let bin = bin.canonicalize().unwrap_or(bin);
    if !bin.exists() {
        eprintln!(
            "ingest_load: {} is missing: build it first with `cargo build --release -p microseg`",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    git(&["rev-parse", "--short=12", "HEAD"])
}

fn main() {
    let a = args();
    let bin = binary();
    on_signal_clean_up();
    let modified = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .ok()
        .map(rfc3339_of)
        .unwrap_or_default();
    println!(
        "ingest_load: commit {} binary {} (built {modified}); records={} agents={} batch={BATCH} workloads={WORKLOADS} flow_queue={} timeout={}s",
        commit(),
        bin.display(),
        a.records,
        a.agents,
        a.flow_queue.map_or("default".into(), |q| q.to_string()),
        a.timeout.as_secs()
    );
    let mut failed = false;
    for backend in &a.backends {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&a, &bin, backend)));
        release_all();
        if INTERRUPTED.load(Ordering::SeqCst) {
            // The signal thread exits once it cleaned up.
            loop {
                std::thread::park();
            }
        }
        match r {
            Ok(Ok(line)) => println!("{line}"),
            Ok(Err(e)) => {
                failed = true;
                println!("backend={backend} FAILED: {e}");
            }
            Err(_) => {
                failed = true;
                println!("backend={backend} FAILED: panicked (above)");
            }
        }
    }
    std::process::exit(i32::from(failed));
}

fn rfc3339_of(t: SystemTime) -> String {
    let s = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    microseg_common::time::rfc3339(s)
}

/// Measures one back end; everything it starts is held until `release_all`.
fn run(a: &Args, bin: &Path, backend: &str) -> Result<String, String> {
    let dir = TempDir::new("ingest-load");
    let state = dir.path().to_path_buf();
    hold(dir);
    let flow_db = match backend {
        "sqlite" => state.join("flows.db").display().to_string(),
        "postgres" => {
            let pg = Postgres::start();
            let url = pg.database("flows");
            hold(pg);
            url
        }
        _ => {
            let ch = ClickHouse::start();
            let url = ch.url("flows");
            hold(ch);
            url
        }
    };
    let port = free_port();
    let log = std::fs::File::create(state.join("controller.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.arg("controller")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(&state)
        .args(["--flow-db", &flow_db])
        .env("MICROSEG_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    if let Some(q) = a.flow_queue {
        cmd.args(["--flow-queue", &q.to_string()]);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    let pid = child.id();
    hold(Controller(child));
    let log_tail = || {
        let text = std::fs::read_to_string(state.join("controller.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    };
    let url = format!("http://127.0.0.1:{port}");
    let client = ready(&url, &state, pid).map_err(|e| format!("{e}\n{}", log_tail()))?;
    let workloads = workloads(a.agents as usize);
    let r = client
        .call(
            "POST",
            "/v1/apply",
            Some(("application/yaml", apply_body(&workloads).as_bytes())),
        )
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("apply: {} {}", r.status, r.body));
    }
    let agent_token = std::fs::read_to_string(state.join("agent.token"))
        .map_err(|e| format!("agent.token: {e}"))?
        .trim()
        .to_string();

    let deadline = Instant::now() + a.timeout;
    let start = Instant::now();
    let accepted = upload_all(a, &url, &agent_token, &workloads, deadline)?;
    let upload = start.elapsed();
    let status = loop {
        let s = status(&client)?;
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        let settled = n("queued") == 0 && n("stored") + n("dropped") >= n("received");
        if n("stored") >= a.records || (n("dropped") > 0 && settled) {
            break s;
        }
        if !alive(pid) {
            return Err(format!("the controller exited\n{}", log_tail()));
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {:?}: {s}", a.timeout));
        }
        std::thread::sleep(POLL);
    };
    let wall = start.elapsed();
    let (hwm, rss) = (proc_kib(pid, "VmHWM:"), proc_kib(pid, "VmRSS:"));
    let n = |k: &str| status[k].as_u64().unwrap_or(0);
    let named = named_share(&client)?;
    let overflow = if n("dropped") > 0 {
        " QUEUE OVERFLOWED: the controller dropped records (raise --flow-queue)"
    } else {
        ""
    };
    Ok(format!(
        "backend={backend} records={} agents={} batch={BATCH} workloads={WORKLOADS} flow_queue={} \
         wall={:.2}s rate={:.0}/s upload={:.2}s peak_rss={:.1}MiB end_rss={:.1}MiB \
         stored={} accepted={accepted} received={} dropped={} rejected={} \
         both_ends_named={named:.0}% (of the newest 1000){overflow}",
        a.records,
        a.agents,
        n("queue_bound"),
        wall.as_secs_f64(),
        n("stored") as f64 / wall.as_secs_f64(),
        upload.as_secs_f64(),
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0,
        n("stored"),
        n("received"),
        n("dropped"),
        n("rejected"),
    ))
}

/// The REST client once the controller answers `/v1/flows/status` (30 s at most).
fn ready(url: &str, state: &Path, pid: u32) -> Result<Client, String> {
    let until = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < until {
        if !alive(pid) {
            return Err("the controller exited at start".into());
        }
        if let Ok(t) = std::fs::read_to_string(state.join("controller.token")) {
            let c = Client::new(url, Some(t.trim().to_string())).map_err(|e| e.to_string())?;
            match c.get("/v1/flows/status") {
                Ok(r) if r.status == 200 => return Ok(c),
                Ok(r) => last = format!("{} {}", r.status, r.body),
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(POLL);
    }
    Err(format!("the controller did not answer within 30 s: {last}"))
}

/// The share of stored records whose two ends the controller named from the Workloads
/// (85% of the generated peers are workloads).
fn named_share(c: &Client) -> Result<f64, String> {
    let r = c.get("/v1/flows?limit=1000").map_err(|e| e.to_string())?;
    let items = r.body["items"].as_array().cloned().unwrap_or_default();
    let named = items
        .iter()
        .filter(|f| f["src_workload"].is_string() && f["dst_workload"].is_string())
        .filter(|f| f["src_labels"]["app"].is_string() && f["dst_labels"]["env"].is_string())
        .count();
    Ok(100.0 * named as f64 / items.len().max(1) as f64)
}

fn status(c: &Client) -> Result<Value, String> {
    let r = c.get("/v1/flows/status").map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("/v1/flows/status: {} {}", r.status, r.body));
    }
    Ok(r.body)
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet waited for) still has a /proc entry: check its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Uploads from all agents at once; returns how many records the controller accepted.
fn upload_all(
    a: &Args,
    url: &str,
    agent_token: &str,
    workloads: &[Workload],
    deadline: Instant,
) -> Result<u64, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.agents.min(4) as usize)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..a.agents {
            let share = a.records / a.agents + u64::from(i < a.records % a.agents);
            let node = node_name(i as usize);
            let token = node_token(agent_token, &node);
            let (url, mine, all) = (url.to_string(), owned(workloads, &node), workloads.to_vec());
            tasks.push(tokio::spawn(async move {
                agent(&url, node, token, share, mine, all, i + 1).await
            }));
        }
        let budget = deadline.saturating_duration_since(Instant::now());
        let mut accepted = 0;
        for t in tasks {
            match tokio::time::timeout(budget, t).await {
                Ok(Ok(r)) => accepted += r?,
                Ok(Err(e)) => return Err(format!("an agent task failed: {e}")),
                Err(_) => return Err("timed out uploading".to_string()),
            }
        }
        Ok(accepted)
    })
}

/// One simulated agent: one connection, its node token, batch after batch.
async fn agent(
    url: &str,
    node: String,
    token: String,
    records: u64,
    mine: Vec<Workload>,
    all: Vec<Workload>,
    seed: u64,
) -> Result<u64, String> {
    let ch = Channel::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{node}: connect: {e}"))?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| "token".to_string())?;
    let mut link = AgentLinkClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });
    let mut gen = Gen {
        rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        mine,
        all,
    };
    let (mut left, mut accepted) = (records, 0);
    while left > 0 {
        let n = left.min(BATCH as u64) as usize;
        let batch = FlowBatch {
            node: node.clone(),
            flows: (0..n).map(|_| gen.flow()).collect(),
            ..FlowBatch::default()
        };
        let r = link
            .upload_flows(tokio_stream::iter([batch]))
            .await
            .map_err(|e| format!("{node}: upload: {e}"))?;
        accepted += r.into_inner().accepted;
        left -= n as u64;
    }
    Ok(accepted)
}
