//! The microseg agent in NODE: its policy directory, log, start and stop, and its pinned
//! BPF maps.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cleanup::{register, run_quiet, unregister_kill, Undo};
use crate::contender::Ctx;
use crate::rules::{microseg_policy, microseg_workloads};
use crate::tools::sh;

/// The agent's default poll interval for policy files (`reload_interval`).
pub(crate) const AGENT_POLL: Duration = Duration::from_millis(100);
pub(crate) const DENY_ONE_FILE: &str = "deny-one.yaml";

/// `bpftool map show pinned PATH -j`, parsed.
pub(crate) fn map_show(pinned: &str) -> Option<serde_json::Value> {
    let out = sh(&["bpftool", "map", "show", "pinned", pinned, "-j"]).ok()?;
    serde_json::from_str(&out).ok()
}

impl Ctx {
    fn agent_log(&self) -> PathBuf {
        self.t.dir.join("agent.log")
    }
    fn socket(&self) -> PathBuf {
        self.t.dir.join("agent.sock")
    }
    fn nsenter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.t.node));
        c
    }
    pub(crate) fn agent_cleanup_cmd(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", self.t.node),
            self.bin.display().to_string(),
            "agent".into(),
            "--cleanup".into(),
            "--bpffs".into(),
            self.t.bpffs.display().to_string(),
            "--socket".into(),
            self.socket().display().to_string(),
            "--state-dir".into(),
            self.t.dir.display().to_string(),
        ]
    }

    /// Waits until the agent log reports `revision N:`; ms since `t0`, or NaN.
    pub(crate) fn wait_revision(&mut self, t0: Instant, limit: Duration) -> f64 {
        let want = self.revision_seen + 1;
        let needle = format!("revision {want}:");
        while t0.elapsed() < limit {
            let log = std::fs::read_to_string(self.agent_log()).unwrap_or_default();
            if log.contains(&needle) {
                self.revision_seen = want;
                return t0.elapsed().as_secs_f64() * 1e3;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        f64::NAN
    }

    /// Puts `name` in the policy directory atomically: `fill` writes a temporary file that is
    /// then renamed, so the agent never reads half a file.
    fn put_policy_file(&self, name: &str, fill: impl FnOnce(&Path) -> std::io::Result<()>) {
        let tmp = self.t.dir.join(format!(".{name}.tmp"));
        fill(&tmp).unwrap();
        std::fs::rename(&tmp, self.t.dir.join("policy").join(name)).unwrap();
    }

    pub(crate) fn write_policy_file(&self, name: &str, text: &str) {
        self.put_policy_file(name, |tmp| std::fs::write(tmp, text));
    }

    /// The rule sets are written once per rule count and copied in for each turn.
    pub(crate) fn copy_policy_file(&self, name: &str, src: &Path) {
        self.put_policy_file(name, |tmp| std::fs::copy(src, tmp).map(|_| ()));
    }

    /// Starts the agent in NODE with an empty ingress section (default deny for the server)
    /// and waits until it enforces.
    pub(crate) fn start_agent(&mut self) -> Result<(), String> {
        std::fs::write(
            self.t.dir.join("policy").join("workloads.yaml"),
            microseg_workloads(),
        )
        .unwrap();
        self.write_policy_file("bench.yaml", &microseg_policy(None, true));
        let log = File::create(self.agent_log()).unwrap();
        let mut c = self.nsenter();
        c.arg(&self.bin)
            .arg("agent")
            .arg("--policy")
            .arg(self.t.dir.join("policy"))
            .arg("--bpffs")
            .arg(&self.t.bpffs)
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(&self.t.dir)
            .arg("--node")
            .arg("compare")
            .stdout(Stdio::null())
            .stderr(log);
        let child = c.spawn().map_err(|e| format!("agent: {e}"))?;
        register(Undo::Kill(child.id()));
        self.agent = Some(child);
        self.revision_seen = 0;
        let t0 = Instant::now();
        if self.wait_revision(t0, Duration::from_secs(60)).is_nan() {
            return Err(format!(
                "agent did not enforce: {}",
                std::fs::read_to_string(self.agent_log()).unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// Stops the agent, runs its `--cleanup` and removes its bpffs directory and the policy
    /// files the turns wrote.
    pub(crate) fn stop_agent(&mut self) {
        let ran = self.agent.is_some();
        if let Some(mut a) = self.agent.take() {
            unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = a.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = a.kill();
            let _ = a.wait();
            unregister_kill(a.id());
        }
        if let (true, Some(dir)) = (ran, &self.agent_logs) {
            self.agents_started += 1;
            let kept = dir.join(format!("agent-{}.log", self.agents_started));
            let copied =
                std::fs::create_dir_all(dir).and_then(|()| std::fs::copy(self.agent_log(), &kept));
            if let Err(e) = copied {
                eprintln!("  agent log not kept at {}: {e}", kept.display());
            }
        }
        run_quiet(&self.agent_cleanup_cmd());
        let _ = std::fs::remove_dir_all(&self.t.bpffs);
        let _ = std::fs::remove_file(self.t.dir.join("policy").join("bench.yaml"));
        let _ = std::fs::remove_file(self.t.dir.join("policy").join(DENY_ONE_FILE));
    }

    pub(crate) fn agent_cpu_ticks(&self) -> Option<f64> {
        let a = self.agent.as_ref()?;
        let st = std::fs::read_to_string(format!("/proc/{}/stat", a.id())).ok()?;
        let rest = &st[st.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // fields 14 and 15 of stat (utime, stime) are 11 and 12 after the comm.
        Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
    }
}
