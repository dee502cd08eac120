//! The controller under test: started with a fresh state dir (killed at exit, and by the
//! kernel if this process dies first) or attached by URL and pid; its RSS and CPU sampled
//! from /proc; policy changes sent through the REST API (docs/FLEETSIM.md).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Controller {
    child: Mutex<Option<Child>>,
    pub pid: Option<u32>,
    /// The pid now (a restart changes it): what the sampler reads.
    pub pid_now: Arc<AtomicU32>,
    /// How it was started (binary, --db), for a restart.
    started: Option<(PathBuf, Option<String>)>,
    /// Where its tokens are: its own state dir, or the first controller's when several
    /// share one database (they must take the same node tokens).
    token_dir: Option<PathBuf>,
    /// host:port of REST and gRPC.
    pub addr: String,
    pub token: String,
    pub agent_token: String,
    pub state_dir: Option<PathBuf>,
    remove_state: bool,
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(c) = self.child.get_mut().unwrap_or_else(|e| e.into_inner()) {
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
    /// Starts `bin controller` on a free loopback port with a new state dir under /tmp;
    /// `index` > 0 names a further controller on the same database, which takes the
    /// tokens in `tokens_of` (the first controller's state dir).
    pub fn start(
        bin: &Path,
        db: Option<&str>,
        keep: bool,
        index: usize,
        tokens_of: Option<&Path>,
    ) -> Result<Controller, String> {
        let name = match index {
            0 => format!("fleetsim-{}", std::process::id()),
            k => format!("fleetsim-{}-c{k}", std::process::id()),
        };
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let token_dir = tokens_of.unwrap_or(&dir).to_path_buf();
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = spawn(bin, &dir, &addr, db, &token_dir)?;
        let mut c = Controller {
            pid: Some(child.id()),
            pid_now: Arc::new(AtomicU32::new(child.id())),
            child: Mutex::new(Some(child)),
            started: Some((bin.to_path_buf(), db.map(String::from))),
            token_dir: Some(token_dir),
            addr: addr.clone(),
            token: String::new(),
            agent_token: String::new(),
            state_dir: Some(dir.clone()),
            remove_state: !keep,
        };
        let (t, a) = c.wait_listening()?;
        c.token = t;
        c.agent_token = a;
        Ok(c)
    }

    /// Waits until the started controller listens; its tokens.
    fn wait_listening(&self) -> Result<(String, String), String> {
        let dir = self.state_dir.clone().ok_or("not started here")?;
        let tokens = self.token_dir.clone().ok_or("not started here")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|ch| ch.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "the controller exited ({status}); see {}",
                    dir.join("controller.log").display()
                ));
            }
            let read = (
                read_token(&tokens.join("controller.token")),
                read_token(&tokens.join("agent.token")),
            );
            if let (Ok(t), Ok(a)) = read {
                if !t.is_empty()
                    && !a.is_empty()
                    && std::net::TcpStream::connect(&self.addr).is_ok()
                {
                    return Ok((t, a));
                }
            }
            if Instant::now() > deadline {
                return Err("the controller did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the started controller (SIGTERM; SIGKILL after 10 s) and starts it again on
    /// the same address and state: how long it was away (stop and start).
    pub fn restart(&self) -> Result<Duration, String> {
        let (bin, db) = self
            .started
            .clone()
            .ok_or("only a started controller restarts")?;
        let dir = self.state_dir.clone().ok_or("no state dir")?;
        let tokens = self.token_dir.clone().ok_or("no state dir")?;
        let t = Instant::now();
        if let Some(mut old) = self.child.lock().unwrap().take() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(old.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while old.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = old.kill();
            let _ = old.wait();
        }
        let child = spawn(&bin, &dir, &self.addr, db.as_deref(), &tokens)?;
        self.pid_now.store(child.id(), Ordering::Relaxed);
        *self.child.lock().unwrap() = Some(child);
        self.wait_listening()?;
        Ok(t.elapsed())
    }

    pub fn attach(
        addr: String,
        token: &Path,
        agent_token: &Path,
        pid: Option<u32>,
    ) -> Result<Controller, String> {
        Ok(Controller {
            child: Mutex::new(None),
            pid,
            pid_now: Arc::new(AtomicU32::new(pid.unwrap_or(0))),
            started: None,
            token_dir: None,
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

    /// One REST call (HTTP/1.1, the admin token): the answer's head and body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(String, String), String> {
        let mut s = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("REST: {e}"))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
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
            return Err(format!("{method} {path}: {head} {body}"));
        }
        Ok((head.to_string(), body.to_string()))
    }

    /// `GET path`: the body (de-chunked when it came chunked).
    pub async fn get(&self, path: &str) -> Result<String, String> {
        let (head, body) = self.request("GET", path, "").await?;
        if !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Ok(body);
        }
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| format!("chunk: {e}"))?;
            let (Some(chunk), Some(after)) = (tail.get(..n), tail.get(n..)) else {
                break;
            };
            if n == 0 {
                break;
            }
            out.push_str(chunk);
            rest = after.trim_start_matches("\r\n");
        }
        Ok(out)
    }

    /// Bytes of the started controller's log.
    pub fn log_bytes(&self) -> Option<u64> {
        let d = self.state_dir.as_ref()?;
        std::fs::metadata(d.join("controller.log"))
            .map(|m| m.len())
            .ok()
    }

    /// `POST /v1/apply` with `body` (JSON): the revision it made.
    pub async fn apply(&self, body: &str) -> Result<u64, String> {
        let (_, body) = self.request("POST", "/v1/apply", body).await?;
        // The JSON object, whether or not the body came chunked.
        let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("apply: {e}: {body}"))?;
        v["revision"]
            .as_u64()
            .ok_or_else(|| format!("apply: no revision in {body}"))
    }
}

/// `bin controller` on `addr` with state in `dir` (its log appended to `controller.log`)
/// and its tokens in `tokens` (created there by the first controller).
fn spawn(
    bin: &Path,
    dir: &Path,
    addr: &str,
    db: Option<&str>,
    tokens: &Path,
) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("controller.log"))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(["controller", "--listen", addr, "--state-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    if let Some(db) = db {
        cmd.args(["--db", db]);
    }
    if tokens != dir {
        cmd.arg("--token-file")
            .arg(tokens.join("controller.token"))
            .arg("--agent-token-file")
            .arg(tokens.join("agent.token"));
    }
    // SAFETY: prctl only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))
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

/// Samples the process `pid` names (it changes with a restart) every 200 ms into the
/// returned list until the task is aborted.
pub fn sampler(pid: Arc<AtomicU32>) -> (Arc<Mutex<Vec<Sample>>>, tokio::task::JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let s = samples.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            if let Some(x) = sample(pid.load(Ordering::Relaxed)) {
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
    // After a restart the new process counts from 0: its own CPU then.
    let cpu = last.cpu_secs - first.cpu_secs;
    Some((peak, if cpu < 0.0 { last.cpu_secs } else { cpu }))
}
