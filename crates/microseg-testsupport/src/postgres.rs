//! A throw-away PostgreSQL server: initdb'd in a temp dir, listening on a free loopback
//! port, stopped (and its files removed) on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::temp::{free_port, TempDir};

#[derive(Debug)]
pub struct Postgres {
    /// Declared first: dropped after `Drop::drop` stopped the server.
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// A server taking plain connections on 127.0.0.1.
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// A server that takes TCP connections over TLS only, with `cert` and `key` (PEM).
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        Postgres::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Postgres {
        let bin = pg_bin();
        // The server runs as postgres, which must reach its dir: /tmp, not a private one.
        let dir = TempDir::new_in(Path::new("/tmp"), "pg");
        chown_postgres(dir.path());
        let pg = Postgres {
            dir,
            bin,
            port: free_port(),
        };
        let data = pg.dir.join("data");
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
            pg.dir.path().display()
        );
        if let Some((cert, key)) = tls {
            // The key must belong to the server's user and be private to it.
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(name);
                std::fs::copy(from, &to).unwrap();
                chown_postgres(&to);
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
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
            pg.dir.join("log").to_str().unwrap(),
            "-w",
            "-t",
            "30",
            "-o",
            &opts,
            "start",
        ]);
        pg
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", name])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@{}/{name}", self.addr())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .output();
    }
}

/// The newest server binaries Debian installed.
fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/setup.sh installs Debian's postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn chown_postgres(path: &Path) {
    let st = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("run chown");
    assert!(st.success(), "chown postgres {}", path.display());
}

fn as_postgres(args: &[&str]) -> Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("run runuser");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
