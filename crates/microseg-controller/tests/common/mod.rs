//! Test harness: a controller running in this process on a loopback port, a throw-away
//! PostgreSQL server (initdb'd in a temp dir, started on a free loopback port, stopped
//! and removed on drop), and the REST client.
#![allow(dead_code)]

pub mod pki;

use microseg_controller::client::{Client, Reply};
use microseg_controller::{Options, Running};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), what)
    }

    /// Under `base` (PostgreSQL's dir must be reachable by the postgres user: /tmp).
    pub fn new_in(base: &std::path::Path, what: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = base.join(format!("msctl-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL server of its own.
pub struct Pg {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn pg_bin() -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/setup.sh installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    v.sort();
    v.pop().expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Pg {
    pub fn start() -> Pg {
        Pg::start_with(None)
    }

    /// A server that takes TCP connections over TLS only, with `cert` and `key` (PEM).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Pg {
        Pg::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&std::path::Path, &std::path::Path)>) -> Pg {
        let bin = pg_bin();
        let dir = TempDir::new_in(std::path::Path::new("/tmp"), "pg");
        let st = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir.0)
            .status()
            .unwrap();
        assert!(st.success());
        let data = dir.0.join("data");
        let pg = Pg {
            port: free_port(),
            dir,
            bin,
        };
        as_postgres(&[
            pg.bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            pg.port,
            pg.dir.0.display()
        );
        if let Some((cert, key)) = tls {
            // The key must belong to the server's user and be private to it.
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(name);
                std::fs::copy(from, &to).unwrap();
                let st = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&to)
                    .status()
                    .unwrap();
                assert!(st.success());
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .unwrap();
            }
            // TCP over TLS only: a plain connection finds no pg_hba.conf entry.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        as_postgres(&[
            pg.bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-l",
            pg.dir.0.join("log").to_str().unwrap(),
            "-w",
            "-t",
            "30",
            "-o",
            &opts,
            "start",
        ]);
        pg
    }

    /// Creates a database and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .output();
    }
}

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

pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
