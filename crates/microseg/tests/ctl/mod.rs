//! A `microseg controller` on a random loopback port and the client commands run
//! against it, shared by the controller and client command tests (no root needed).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use microseg_testsupport::free_port;
use microseg_testsupport::{eventually, unique_name};

pub const BIN: &str = env!("CARGO_BIN_EXE_microseg");

pub struct Controller {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub url: String,
}

impl Controller {
    pub fn start(test: &str) -> Controller {
        Controller::start_with(test, |_| Vec::new())
    }

    /// `extra(dir)`: more controller flags; any `--tls-cert` makes the URL https.
    pub fn start_with(test: &str, extra: impl FnOnce(&Path) -> Vec<String>) -> Controller {
        let dir = std::env::temp_dir().join(format!("{}-{test}", unique_name("msctl-cli")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("controller.log")).unwrap();
        let extra = extra(&dir);
        let scheme = if extra.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        let child = Command::new(BIN)
            .args([
                "controller",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--state-dir",
            ])
            .arg(dir.join("state"))
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Controller {
            child: Some(child),
            dir,
            url: format!("{scheme}://127.0.0.1:{port}"),
        };
        let up = eventually(Duration::from_secs(20), || {
            if !c.token_file().exists() {
                return Err("no token file yet".to_string());
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())
        });
        if let Err(e) = up {
            panic!("controller did not start: {e}\n{}", c.log());
        }
        c
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("state/controller.token")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    /// Runs `microseg ARGS --server URL --token-file TOKEN`.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let tf = self.token_file();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &self.url, "--token-file", tf.to_str().unwrap()]);
        run(Command::new(BIN)
            .args(&all)
            .env_remove("MICROSEG_TOKEN")
            .output()
            .unwrap())
    }

    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn run(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn demo() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo").to_string()
}

pub fn policy(name: &str, port: u16) -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: db}}}}\n  ingress:\n    - action: allow\n      ports: [{{protocol: TCP, port: {port}}}]\n"
    )
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The controller's revision, from `status -o json`.
pub fn revision(c: &Controller) -> u64 {
    let (code, out, err) = c.cli(&["status", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    json(&out)["revision"].as_u64().unwrap()
}

/// Runs `microseg ARGS --server URL --token-file TOKEN` with `input` on stdin.
pub fn cli_stdin(c: &Controller, args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write;
    let tf = c.token_file();
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--server", &c.url, "--token-file", tf.to_str().unwrap()])
        .env_remove("MICROSEG_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    run(child.wait_with_output().unwrap())
}
