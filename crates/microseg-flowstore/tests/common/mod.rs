//! Throw-away servers for the flow store's tests and benchmark: a PostgreSQL
//! (microseg-testsupport's) and a ClickHouse (its own config, data and ports), each
//! started once per process and stopped and removed when the process exits, failed tests
//! included.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use microseg_testsupport::{eventually, unique_name, Postgres};
pub use microseg_testsupport::{free_port, TempDir};

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let listening = eventually(Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())
    });
    if let Err(e) = listening {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("{what} did not listen on 127.0.0.1:{port}: {e}\n{log}");
    }
}

/// Servers this process started, stopped at exit.
static SERVERS: Mutex<Vec<Server>> = Mutex::new(Vec::new());

enum Server {
    /// Stopped when dropped.
    Postgres(Postgres),
    ClickHouse {
        child: Child,
        dir: TempDir,
    },
}

impl Server {
    fn stop(self) {
        match self {
            Server::Postgres(pg) => drop(pg),
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
    PG.get_or_init(|| {
        let pg = Postgres::start();
        let addr = pg.addr();
        keep(Server::Postgres(pg));
        addr
    })
}

/// A new, empty database on the process's PostgreSQL; its URL.
pub async fn postgres_url() -> String {
    let addr = postgres();
    let name = unique_name("flows");
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
    // Under /tmp: reachable by the server whatever TMPDIR says.
    let dir = TempDir::new_in(Path::new("/tmp"), "ch");
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
    format!("clickhouse://{}/{}", clickhouse(), unique_name("flows"))
}
