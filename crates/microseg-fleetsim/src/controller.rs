//! The controller under test: started with a fresh state dir (killed at exit, and by the
//! kernel if this process dies first) or attached by URL and pid; its RSS and CPU sampled
//! from /proc; policy changes sent through the REST API (docs/FLEETSIM.md).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Controller {
    child: Option<Child>,
    pub pid: Option<u32>,
    /// host:port of REST and gRPC.
    pub addr: String,
    pub token: String,
    pub agent_token: String,
    pub state_dir: Option<PathBuf>,
    remove_state: bool,
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let (true, Some(d)) = (self.remove_state, &self.state_dir) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn read_token(p: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(t.trim().to_string())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Controller {
    /// Starts `bin controller` on a free loopback port with a new state dir under /tmp.
    pub fn start(bin: &Path, db: Option<&str>, keep: bool) -> Result<Controller, String> {
        let dir = std::env::temp_dir().join(format!("fleetsim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.join("controller.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.args(["controller", "--listen", &addr, "--state-dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if let Some(db) = db {
            cmd.args(["--db", db]);
        }
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut c = Controller {
            pid: Some(child.id()),
            child: Some(child),
            addr: addr.clone(),
            token: String::new(),
            agent_token: String::new(),
            state_dir: Some(dir.clone()),
            remove_state: !keep,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Some(status)) = c.child.as_mut().map(|ch| ch.try_wait().ok().flatten()) {
                return Err(format!(
                    "the controller exited ({status}); see {}",
                    dir.join("controller.log").display()
                ));
            }
            let tokens = (
                read_token(&dir.join("controller.token")),
                read_token(&dir.join("agent.token")),
            );
            if let (Ok(t), Ok(a)) = tokens {
                if !t.is_empty() && !a.is_empty() && std::net::TcpStream::connect(&addr).is_ok() {
                    c.token = t;
                    c.agent_token = a;
                    return Ok(c);
                }
            }
            if Instant::now() > deadline {
                return Err("the controller did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn attach(
        addr: String,
        token: &Path,
        agent_token: &Path,
        pid: Option<u32>,
    ) -> Result<Controller, String> {
        Ok(Controller {
            child: None,
            pid,
            addr,
            token: read_token(token)?,
            agent_token: read_token(agent_token)?,
            state_dir: None,
            remove_state: false,
        })
    }

    /// Bytes of the SQLite database in the state dir (with its WAL), when there is one.
    pub fn db_bytes(&self) -> Option<u64> {
        let d = self.state_dir.as_ref()?;
        let size = |n: &str| std::fs::metadata(d.join(n)).map(|m| m.len()).ok();
        Some(size("controller.db")? + size("controller.db-wal").unwrap_or(0))
    }

    /// `POST /v1/apply` with `body` (JSON): the revision it made.
    pub async fn apply(&self, body: &str) -> Result<u64, String> {
        let mut s = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("REST: {e}"))?;
        let req = format!(
            "POST /v1/apply HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("REST: no HTTP answer")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("apply: {head} {body}"));
        }
        // The JSON object, whether or not the body came chunked.
        let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("apply: {e}: {body}"))?;
        v["revision"]
            .as_u64()
            .ok_or_else(|| format!("apply: no revision in {body}"))
    }
}

/// One sample of the controller process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub rss_bytes: u64,
    /// user + system CPU seconds since it started.
    pub cpu_secs: f64,
}

pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Sample {
        at: Instant::now(),
        rss_bytes: rss_kb * 1024,
        cpu_secs: ticks as f64 / hz,
    })
}

/// Samples `pid` every 200 ms into the returned list until the task is aborted.
pub fn sampler(pid: u32) -> (Arc<Mutex<Vec<Sample>>>, tokio::task::JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let s = samples.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            if let Some(x) = sample(pid) {
                s.lock().unwrap().push(x);
            }
        }
    });
    (samples, task)
}

/// Peak RSS and CPU seconds used between `from` and `to`.
pub fn usage(samples: &[Sample], from: Instant, to: Instant) -> Option<(u64, f64)> {
    let mut inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .collect();
    // A stretch shorter than the sampling period: the next sample stands for it.
    if inside.is_empty() {
        inside.extend(samples.iter().find(|s| s.at > to));
    }
    let first = samples
        .iter()
        .rev()
        .find(|s| s.at <= from)
        .or(inside.first().copied())?;
    let last = inside.last()?;
    let peak = inside.iter().map(|s| s.rss_bytes).max()?;
    Some((peak, last.cpu_secs - first.cpu_secs))
}
