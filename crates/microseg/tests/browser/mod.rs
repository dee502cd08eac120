//! Headless Chromium driven over the DevTools protocol for the web UI's tests (ui.rs):
//! `--remote-debugging-pipe` speaks JSON messages ending in NUL on the child's fds 3
//! (commands in) and 4 (answers and events out), so no websocket or driver is needed.
//! docs/UI.md says what the tests check.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use microseg_testsupport::{ns_command, unique_name};
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Any one DevTools call; a page's own waits have their own bounds.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// The flags the project runs Chromium with (docs/UI.md): nothing phones home.
pub fn base_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

pub struct Browser {
    child: Option<Child>,
    to_chrome: File,
    from_chrome: Receiver<Value>,
    next_id: u64,
    session: String,
    /// The profile directory, removed on drop.
    profile: PathBuf,
}

/// A pipe's two ends as files, both close-on-exec and numbered above the fds the child
/// gets, so that the dup2 calls below cannot clobber one another.
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two; the results are checked.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let high = |fd: RawFd| {
        // SAFETY: fd is open; the copy is close-on-exec.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(h >= 10);
        unsafe { libc::close(fd) };
        h
    };
    (high(fds[0]), high(fds[1]))
}

impl Browser {
    /// Chromium in network namespace `netns`, on a blank page, with a fresh profile.
    pub fn start(netns: &str) -> Browser {
        Browser::start_with(netns, &[])
    }

    /// The same with more flags.
    pub fn start_with(netns: &str, flags: &[&str]) -> Browser {
        let profile = std::env::temp_dir().join(unique_name("microseg-ui-chromium-"));
        std::fs::create_dir_all(&profile).unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
        let mut c = ns_command(netns, CHROMIUM);
        c.args(base_args(&profile))
            .args(flags)
            .arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(cmd_read, 3) < 0 || libc::dup2(out_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        // SAFETY: the parent's copies of the child's ends are closed; ours are owned once.
        let (to_chrome, from) = unsafe {
            libc::close(cmd_read);
            libc::close(out_write);
            (File::from_raw_fd(cmd_write), File::from_raw_fd(out_read))
        };
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from);
            let mut buf = Vec::new();
            while matches!(r.read_until(0, &mut buf), Ok(n) if n > 0) {
                buf.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child: Some(child),
            to_chrome,
            from_chrome: rx,
            next_id: 0,
            session: String::new(),
            profile,
        };
        let targets = b.call("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["type"] == "page"))
            .unwrap_or_else(|| panic!("no page target: {targets}"))["targetId"]
            .clone();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().expect("a session").into();
        b
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if session {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_chrome.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + CALL_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_chrome.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    if let Some(e) = v.get("error") {
                        panic!("{method}: {e}");
                    }
                    return v["result"].clone();
                }
                Ok(_) => {} // an event or an earlier answer
                Err(RecvTimeoutError::Timeout) => panic!("{method}: no answer in {CALL_LIMIT:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("{method}: chromium went away"),
            }
        }
    }

    /// A browser-level call.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false)
    }

    /// A call on the page.
    pub fn page_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true)
    }

    /// The value of a JavaScript expression in the page (promises awaited); panics on an
    /// exception, showing it.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.page_call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is true (truthy), at most `limit`; the last value on failure.
    pub fn wait_for(&mut self, expr: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(&format!("!!({expr})"));
            if v == json!(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not within {limit:?}: {expr}\n{}", self.text()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Loads `url` and waits for the UI to settle: a page rendered (`ready`) or the token
    /// form (`login`).
    pub fn open(&mut self, url: &str) {
        // A new fragment alone is no new document: mark the old one first.
        self.eval("document.body && (document.body.dataset.state = 'navigating')");
        self.page_call("Page.navigate", json!({"url": url}));
        self.settle();
    }

    /// Waits for the UI's state to be `ready` or `login`.
    pub fn settle(&mut self) {
        let done = "document.body && ['ready','login'].includes(document.body.dataset.state)";
        if let Err(e) = self.wait_for(done, Duration::from_secs(20)) {
            panic!("the UI did not settle: {e}");
        }
    }

    /// What the page shows, as text (for failure messages).
    pub fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A real mouse click at the element's centre, or for an SVG edge, at its path's
    /// midpoint; checks first that the point hits the element.
    pub fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let at = self.eval(&format!(
            r#"(() => {{
                const el = document.querySelector({sel});
                if (!el) return null;
                el.scrollIntoView({{block: 'center', inline: 'center'}});
                const line = el.querySelector('path.line');
                let x, y;
                if (line) {{
                    const p = line.getPointAtLength(line.getTotalLength() / 2);
                    const m = line.getScreenCTM();
                    x = p.x * m.a + p.y * m.c + m.e; y = p.x * m.b + p.y * m.d + m.f;
                }} else {{
                    const r = el.getBoundingClientRect();
                    x = r.left + r.width / 2; y = r.top + r.height / 2;
                }}
                const hit = document.elementFromPoint(x, y);
                return {{x, y, hits: !!hit && (hit === el || el.contains(hit))}};
            }})()"#
        ));
        assert!(!at.is_null(), "no element {selector}\n{}", self.text());
        assert_eq!(at["hits"], true, "{selector} is covered at {at}");
        let (x, y) = (at["x"].clone(), at["y"].clone());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.page_call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Sets a form field's value (an input or a select).
    pub fn fill(&mut self, selector: &str, value: &str) {
        let (sel, val) = (
            serde_json::to_string(selector).unwrap(),
            serde_json::to_string(value).unwrap(),
        );
        let ok = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.value = {val}; \
             e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()"
        ));
        assert_eq!(ok, json!(true), "no field {selector}");
    }

    /// The `attr` of every element matching `selector`.
    pub fn attrs(&mut self, selector: &str, attr: &str) -> Vec<String> {
        let (sel, a) = (
            serde_json::to_string(selector).unwrap(),
            serde_json::to_string(attr).unwrap(),
        );
        let v = self.eval(&format!(
            "[...document.querySelectorAll({sel})].map(e => e.getAttribute({a}))"
        ));
        serde_json::from_value(v).unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.page_call("Page.captureScreenshot", json!({"format": "png"}));
        let data = r["data"].as_str().expect("png data");
        std::fs::write(path, decode_base64(data)).unwrap();
    }
}

/// Standard base64, as DevTools sends binary data.
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, c)| acc | (val(*c) as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Asked to close, the browser ends its renderers itself; if it has not within
            // 5 s, the whole process group goes, by the group's id.
            let _ = self
                .to_chrome
                .write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0");
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[test]
fn base64_decodes() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}
