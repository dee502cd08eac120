//! Throw-away servers for the flow store's tests and benchmark: a PostgreSQL (initdb in a
//! temp dir, a free loopback port) and a ClickHouse (its own config, data and ports), each
//! started once per process and stopped and removed when the process exits, failed tests
//! included.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique name for this process: `prefix_PID_N`.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// A fresh dir under /tmp (reachable by the servers' users), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let p = Path::new("/tmp").join(unique(&format!("msflow-{what}")));
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

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not listen on 127.0.0.1:{port} within 60 s:\n{log}");
}

/// Servers this process started, stopped at exit.
static SERVERS: Mutex<Vec<Server>> = Mutex::new(Vec::new());

enum Server {
    Postgres { bin: PathBuf, dir: TempDir },
    ClickHouse { child: Child, dir: TempDir },
}

impl Server {
    fn stop(self) {
        match self {
            Server::Postgres { bin, dir } => {
                let _ = Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(dir.0.join("data"))
                    .args(["-m", "immediate", "-w", "-t", "20", "stop"])
                    .output();
            }
            Server::ClickHouse { mut child, dir } => {
                let _ = child.kill();
                let _ = child.wait();
                drop(dir);
            }
        }
    }
}

extern "C" fn stop_servers() {
    let servers = std::mem::take(&mut *SERVERS.lock().unwrap_or_else(|p| p.into_inner()));
    for s in servers {
        s.stop();
    }
}

fn keep(server: Server) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| unsafe {
        // SAFETY: registers a plain function with no arguments, run once at exit.
        libc::atexit(stop_servers);
    });
    SERVERS.lock().unwrap().push(server);
}

/// The process's PostgreSQL: host:port.
pub fn postgres() -> &'static str {
    static PG: OnceLock<String> = OnceLock::new();
    PG.get_or_init(start_postgres)
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

fn as_postgres(args: &[&str]) {
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
}

fn start_postgres() -> String {
    let bin = pg_bin();
    let dir = TempDir::new("pg");
    let st = Command::new("chown")
        .arg("postgres:postgres")
        .arg(&dir.0)
        .status()
        .unwrap();
    assert!(st.success());
    let data = dir.0.join("data");
    let port = free_port();
    as_postgres(&[
        bin.join("initdb").to_str().unwrap(),
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
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
        dir.0.display()
    );
    let log = dir.0.join("log");
    let started = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "30", "-o", &opts, "start"])
        .output()
        .unwrap();
    let ok = started.status.success();
    keep(Server::Postgres { bin, dir });
    assert!(
        ok,
        "pg_ctl start: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    format!("127.0.0.1:{port}")
}

/// A new, empty database on the process's PostgreSQL; its URL.
pub async fn postgres_url() -> String {
    let addr = postgres();
    let name = unique("flows");
    let admin = format!("postgres://postgres@{addr}/postgres");
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    format!("postgres://postgres@{addr}/{name}")
}

/// Debian puts the server at /usr/sbin/clickhouse-server (18.16); newer packages ship one
/// `clickhouse` binary in /usr/bin.
fn clickhouse_command() -> Command {
    for p in ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"] {
        if Path::new(p).exists() {
            return Command::new(p);
        }
    }
    if Path::new("/usr/bin/clickhouse").exists() {
        let mut c = Command::new("/usr/bin/clickhouse");
        c.arg("server");
        return c;
    }
    panic!("no clickhouse-server (scripts/setup.sh installs Debian's clickhouse-server)");
}

/// The process's ClickHouse: host:port of its HTTP interface.
pub fn clickhouse() -> &'static str {
    static CH: OnceLock<String> = OnceLock::new();
    CH.get_or_init(start_clickhouse)
}

fn start_clickhouse() -> String {
    let dir = TempDir::new("ch");
    let (http, tcp) = (free_port(), free_port());
    let d = dir.0.display();
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
</yandex>
"#
    );
    let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#;
    std::fs::write(dir.0.join("config.xml"), config).unwrap();
    std::fs::write(dir.0.join("users.xml"), users).unwrap();
    let out = std::fs::File::create(dir.0.join("stdout.log")).unwrap();
    let child = clickhouse_command()
        .arg(format!("--config-file={d}/config.xml"))
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("clickhouse-server starts");
    let log = dir.0.join("error.log");
    keep(Server::ClickHouse { child, dir });
    wait_for_port(http, "clickhouse-server", &log);
    format!("127.0.0.1:{http}")
}

/// A new database name on the process's ClickHouse (the store creates it); its URL.
pub fn clickhouse_url() -> String {
    format!("clickhouse://{}/{}", clickhouse(), unique("flows"))
}
