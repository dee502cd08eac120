//! A throw-away ClickHouse server: its own config, data and loopback ports in a temp dir,
//! killed (and its files removed) on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::command::unique_name;
use crate::poll::eventually;
use crate::temp::{free_port, TempDir};

#[derive(Debug)]
pub struct ClickHouse {
    child: Child,
    /// Removed after `Drop::drop` killed the server.
    dir: TempDir,
    /// The HTTP interface's port (the one the flow store speaks).
    pub http_port: u16,
}

/// Debian puts the server at /usr/sbin/clickhouse-server (18.16); newer packages ship one
/// `clickhouse` binary in /usr/bin.
fn command() -> Command {
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

impl ClickHouse {
    /// Starts a server on 127.0.0.1 and waits (up to a minute) until it listens.
    pub fn start() -> ClickHouse {
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
        let child = command()
            .arg(format!("--config-file={d}/config.xml"))
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("clickhouse-server starts");
        let ch = ClickHouse {
            child,
            dir,
            http_port: http,
        };
        let listening = eventually(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", http)).map_err(|e| e.to_string())
        });
        if let Err(e) = listening {
            let log = std::fs::read_to_string(ch.dir.join("error.log")).unwrap_or_default();
            panic!("clickhouse-server did not listen on 127.0.0.1:{http}: {e}\n{log}");
        }
        ch
    }

    /// `host:port` of the HTTP interface.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// The URL of a new database name (the flow store creates it) starting with `what`
    /// (letters, digits and '_').
    pub fn url(&self, what: &str) -> String {
        format!("clickhouse://{}/{}", self.addr(), unique_name(what))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
