//! Test harness: a controller running in this process on a loopback port and the REST
//! client; the throw-away PostgreSQL server and temp dirs are microseg-testsupport's.
#![allow(dead_code)]

pub mod pki;

use microseg_controller::client::{Client, Reply};
use microseg_controller::{Options, Running};
use serde_json::Value;
use std::time::Duration;

// Each test binary takes what it needs.
#[allow(unused_imports)]
pub use microseg_testsupport::{Postgres, TempDir};

/// A controller in this process, on its own runtime.
pub struct Ctl {
    pub rt: tokio::runtime::Runtime,
    pub running: Option<Running>,
    pub opts: Options,
}

impl Ctl {
    /// state_dir: where the token (and the SQLite file, without `db`) live.
    pub fn start(state_dir: &std::path::Path, db: Option<&str>) -> Ctl {
        let mut opts = Options::new(state_dir);
        opts.listen = "127.0.0.1:0".into();
        opts.db = db.map(str::to_string);
        Ctl::start_with(opts)
    }

    /// With options of the caller's (e.g. TLS).
    pub fn start_with(opts: Options) -> Ctl {
        Ctl::start_on_workers(opts, 2)
    }

    /// On a runtime of `workers` async worker threads (one: a request that held its
    /// worker would hold up every other).
    pub fn start_on_workers(opts: Options, workers: usize) -> Ctl {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        let running = rt
            .block_on(microseg_controller::start(&opts))
            .expect("start");
        Ctl {
            rt,
            running: Some(running),
            opts,
        }
    }

    pub fn url(&self) -> String {
        let r = self.running.as_ref().unwrap();
        let scheme = if r.tls { "https" } else { "http" };
        format!("{scheme}://{}", r.addr)
    }

    pub fn token(&self) -> String {
        self.running.as_ref().unwrap().token.clone()
    }

    pub fn agent_token(&self) -> String {
        self.running.as_ref().unwrap().agent_token.clone()
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url(), Some(self.token())).unwrap()
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.url(), None).unwrap()
    }

    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop());
        }
    }

    /// Stops and starts again with the same options (another port).
    pub fn restart(&mut self) {
        self.stop();
        let mut opts = self.opts.clone();
        opts.listen = "127.0.0.1:0".into();
        self.running = Some(
            self.rt
                .block_on(microseg_controller::start(&opts))
                .expect("restart"),
        );
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An answer read off the wire: status, head (lower-case names) and body.
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {:?}: not JSON: {e}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Writes `request` (a whole HTTP/1.1 request: head, then body) to the controller as is
/// and reads the answer, framed by its Content-Length.
pub fn raw(ctl: &Ctl, request: &[u8]) -> RawReply {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(ctl.running.as_ref().unwrap().addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    read_reply(&mut s)
}

pub fn read_reply(s: &mut impl std::io::Read) -> RawReply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).expect("read the answer");
        assert!(
            n > 0,
            "the answer ended in its head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = buf[end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk).expect("read the body");
        assert!(n > 0, "the body ended early");
        body.extend_from_slice(&chunk[..n]);
    }
    RawReply { status, head, body }
}

/// A request with the controller token, `content_type` (None: no Content-Type) and body.
pub fn request(
    ctl: &Ctl,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n",
        ctl.token(),
        body.len()
    );
    if let Some(t) = content_type {
        head.push_str(&format!("Content-Type: {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut r = head.into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn call(c: &Client, method: &str, path: &str, body: &str) -> Reply {
    c.call(method, path, Some(("application/yaml", body.as_bytes())))
        .expect("request")
}

pub fn get(c: &Client, path: &str) -> Reply {
    c.get(path).expect("request")
}

pub fn revision(c: &Client) -> u64 {
    get(c, "/v1/nodes").body["revision"].as_u64().unwrap()
}

pub fn names(r: &Reply) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

pub fn policy(name: &str, port: u16) -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: db}}}}\n  ingress:\n    - action: allow\n      from: [{{selector: {{matchLabels: {{app: web}}}}}}]\n      ports: [{{protocol: TCP, port: {port}}}]\n"
    )
}

pub fn workload(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec: {{interface: veth-{name}, ips: [\"{ip}\"]}}\n"
    )
}

pub fn annotation_revision(v: &Value) -> u64 {
    v["metadata"]["annotations"]["microseg.io/revision"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A flow as agents before the structured `Flow` upload it: the JSON of
/// `microseg flows -o json`.
pub fn legacy_flow(workload: &str, verdict: &str, dst_port: u16) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    serde_json::json!({
        "time": microseg_common::time::rfc3339(now), "node": "any", "workload": workload,
        "direction": "egress", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2",
        "src_port": 40000, "dst_port": dst_port, "protocol": "TCP", "verdict": verdict,
        "policy": null, "rule": null, "audit_verdict": null, "audit_policy": null,
        "packets": 1, "bytes": 60, "event": "new"
    })
    .to_string()
}

/// `GET /v1/flows/status` once at least `n` records are stored (10 s at most).
pub fn stored(c: &Client, n: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = get(c, "/v1/flows/status").body;
        if last["stored"].as_u64() >= Some(n) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{n} flow records not stored within 10 s: {last}");
}

/// The agent token on every call of an agent-link client (cloneable: one link per
/// spawned call).
#[derive(Clone)]
pub struct Bearer(pub String);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = format!("Bearer {}", self.0).parse().unwrap();
        r.metadata_mut().insert("authorization", value);
        Ok(r)
    }
}

/// A client of the agent link, as a node with the agent token.
pub type AgentLink = microseg_proto::v1::agent_link_client::AgentLinkClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// An agent link to `ctl`; `window`: the receive window of its streams and connection,
/// in bytes (the transport's default when None).
pub async fn agent_link_with(ctl: &Ctl, window: Option<u32>) -> AgentLink {
    let ch = tonic::transport::Channel::from_shared(ctl.url())
        .unwrap()
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .unwrap();
    microseg_proto::v1::agent_link_client::AgentLinkClient::with_interceptor(
        ch,
        Bearer(ctl.agent_token()),
    )
}

pub async fn agent_link(ctl: &Ctl) -> AgentLink {
    agent_link_with(ctl, None).await
}
