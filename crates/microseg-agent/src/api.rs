//! The agent's local API: one JSON request per connection on a Unix socket, answered with
//! JSON lines (one object per line), then the connection closes (`follow` keeps streaming).
//! A request line longer than [`MAX_REQUEST_BYTES`] is refused unread.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use microseg_common::tables::words_addr;
use microseg_common::{direction, Session, SessionKey};
use microseg_dataplane::sessions::{monotonic_ns, state_name};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::flows::{protocol_json, verdict_name, FlowFilter};
use crate::handle::{blocking, DataPlaneHandle, StatsReading};
use crate::owner::View;
use crate::stats::stats_json;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Stats,
    Sessions,
    Flows {
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        filter: FlowFilter,
    },
    Status,
}

/// The longest request line taken, newline included. The largest real request (`flows`
/// with a filter naming a workload) is well under 1 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

pub async fn serve(listener: UnixListener, state: DataPlaneHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, state).await {
                tracing::debug!(error = %e, "api connection failed");
            }
        });
    }
}

async fn handle(stream: UnixStream, state: DataPlaneHandle) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    // Read no further than the bound: what lies beyond it is never buffered.
    let mut line = Vec::new();
    AsyncBufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1))
        .read_until(b'\n', &mut line)
        .await?;
    let parsed = if line.len() > MAX_REQUEST_BYTES {
        Err(format!(
            "the request is longer than {MAX_REQUEST_BYTES} bytes"
        ))
    } else {
        serde_json::from_slice::<Request>(&line).map_err(|e| e.to_string())
    };
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            let msg = json!({ "error": format!("bad request: {e}") });
            // Dropping both halves then closes the connection, unread input and all.
            return write.write_all(format!("{msg}\n").as_bytes()).await;
        }
    };
    let (lines, follow) = answer(&req, &state).await;
    // A million sessions make a few hundred MB of JSON: written off the async workers.
    let out = blocking(move || {
        let mut out = String::new();
        for l in lines {
            out.push_str(&l.to_string());
            out.push('\n');
        }
        out
    })
    .await;
    write.write_all(out.as_bytes()).await?;
    if let Some((mut feed, filter)) = follow {
        loop {
            match feed.recv().await {
                Ok(r) if filter.matches(&r) => {
                    let l = format!("{}\n", serde_json::to_string(&r).unwrap_or_default());
                    write.write_all(l.as_bytes()).await?;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(flows = n, "flow follower lagged; flows skipped");
                }
                Err(_) => break,
            }
        }
    }
    Ok(())
}

type Follow = Option<(
    tokio::sync::broadcast::Receiver<crate::flows::FlowRecord>,
    FlowFilter,
)>;

/// The answer's lines. Nothing here waits for a compile: see [`DataPlaneHandle`].
async fn answer(req: &Request, state: &DataPlaneHandle) -> (Vec<Value>, Follow) {
    match req {
        Request::Stats => (vec![stats(state).await], None),
        Request::Status => (vec![status(state)], None),
        Request::Flows { follow, filter } => {
            let (kept, feed) = {
                let log = state.flows();
                let feed = follow.then(|| (log.subscribe(), filter.clone()));
                (log.copy(), feed)
            };
            let (flows, node) = kept;
            let lines = flows
                .iter()
                .map(|f| f.record(&node))
                .filter(|r| filter.matches(r))
                .filter_map(|r| serde_json::to_value(&r).ok())
                .collect();
            (lines, feed)
        }
        Request::Sessions => (sessions(state).await, None),
    }
}

/// The kernel's counters, session legs and rule hits, with the revision the rules are of.
async fn stats(state: &DataPlaneHandle) -> Value {
    match state.stats().await {
        Ok(reading) => {
            let mut v = stats_json(&reading.stats, reading.session_legs);
            v["rules"] = rule_hits(&reading);
            v["revision"] = reading.view.revision.into();
            // Managed mode: flows waiting for the controller, and those dropped for want
            // of room while the link was down or slow.
            if let Some(q) = state.flows().upload() {
                v["flows_upload_backlog"] = q.backlog().into();
                v["flows_upload_dropped"] = q.dropped().into();
            }
            v
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn status(state: &DataPlaneHandle) -> Value {
    let view = state.view();
    json!({
        "revision": view.revision,
        "controller_revision": view.controller_revision,
        "workloads": view.endpoints.values().collect::<Vec<_>>(),
        "rules": view.rules.len(),
        "errors": view.errors,
        "updating": state.updating(),
        "keys_written": view.keys_written,
        "keys_removed": view.keys_removed,
        "standby_behind": view.standby_behind,
    })
}

/// One line per judging interface: a connection between two local workloads shows on
/// both, as each one's policy decided it.
async fn sessions(state: &DataPlaneHandle) -> Vec<Value> {
    let sessions = state.sessions().await;
    let view = state.view();
    blocking(move || session_lines(&sessions, &view)).await
}

fn session_lines(sessions: &[(SessionKey, Session)], view: &View) -> Vec<Value> {
    let now = monotonic_ns();
    sessions
        .iter()
        .flat_map(|(k, s)| {
            s.present_legs().map(move |(direction, l)| {
                let (src, sport, dst, dport) = k.orig_tuple(s);
                json!({
                    "src_ip": words_addr(src).to_string(),
                    "dst_ip": words_addr(dst).to_string(),
                    "src_port": sport,
                    "dst_port": dport,
                    "protocol": protocol_json(k.protocol),
                    "state": state_name(s.state),
                    "verdict": verdict_name(l.verdict).unwrap_or("allow"),
                    "policy": microseg_policy::compile::rule_policy_name(&view.rules, l.rule_id),
                    "packets": s.packets[0] + s.packets[1],
                    "bytes": s.bytes[0] + s.bytes[1],
                    "age_s": now.saturating_sub(s.created_ns) / 1_000_000_000,
                    "workload": view.endpoints.get(&l.ifindex),
                    "direction": if direction == direction::EGRESS { "egress" } else { "ingress" },
                })
            })
        })
        .collect()
}

/// Packets and bytes each rule decided, summed over CPUs.
fn rule_hits(reading: &StatsReading) -> Value {
    let rules = &reading.view.rules;
    let hits: Vec<Value> = reading
        .rule_hits
        .iter()
        .filter_map(|(id, c)| {
            let r = rules.get(id)?;
            Some(json!({
                "policy": r.policy,
                "direction": r.direction.to_string(),
                "rule": r.index,
                "action": r.action.to_string(),
                "audit": r.audit,
                "packets": c.packets,
                "bytes": c.bytes,
            }))
        })
        .collect();
    Value::Array(hits)
}

/// Why a request to the local agent got no answer, or the agent refused it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot reach the agent at {}: {source} (is `microseg agent` running?)", .socket.display())]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the request or reading the answer broke off.
    #[error("{}: {source}", .socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding the request: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("bad answer from the agent: {0}")]
    BadAnswer(#[source] serde_json::Error),
    /// The agent's own error message.
    #[error("agent: {0}")]
    Refused(String),
}

/// Sends one request to the agent at `socket` and calls `each` for every line of the
/// answer until it returns false or the agent closes the connection.
pub fn request(
    socket: &Path,
    req: &Request,
    mut each: impl FnMut(Value) -> bool,
) -> Result<(), RequestError> {
    let io = |source| RequestError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream =
        StdUnixStream::connect(socket).map_err(|source| RequestError::Unreachable {
            socket: socket.to_path_buf(),
            source,
        })?;
    let line = serde_json::to_string(req).map_err(RequestError::Encode)?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io)?;
    for line in BufReader::new(stream).lines() {
        let v: Value = serde_json::from_str(&line.map_err(io)?).map_err(RequestError::BadAnswer)?;
        if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
            return Err(RequestError::Refused(err.to_string()));
        }
        if !each(v) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use microseg_testsupport::TempDir;
    use std::os::unix::net::UnixListener as StdUnixListener;

    /// An agent stand-in that reads one request and answers `answer`.
    fn answering(answer: &'static str) -> (TempDir, PathBuf, std::thread::JoinHandle<()>) {
        let dir = TempDir::new("api-request");
        let socket = dir.0.join("agent.sock");
        let listener = StdUnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            (&stream).write_all(answer.as_bytes()).unwrap();
        });
        (dir, socket, server)
    }

    #[test]
    fn tells_unreachable_refused_and_garbled_apart() {
        let dir = TempDir::new("api-request");
        let missing = dir.0.join("none.sock");
        let e = request(&missing, &Request::Stats, |_| true).unwrap_err();
        assert!(matches!(e, RequestError::Unreachable { .. }), "{e:?}");
        let text = e.to_string();
        let at = format!("cannot reach the agent at {}: ", missing.display());
        assert!(text.starts_with(&at), "{text}");
        assert!(text.ends_with(" (is `microseg agent` running?)"), "{text}");

        let (_dir, socket, server) = answering("{\"error\":\"unknown command\"}\n");
        let e = request(&socket, &Request::Stats, |_| true).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(&e, RequestError::Refused(m) if m == "unknown command"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "agent: unknown command");

        let (_dir, socket, server) = answering("{\"a\":1}\nnot json\n");
        let mut seen = Vec::new();
        let e = request(&socket, &Request::Stats, |v| {
            seen.push(v);
            true
        })
        .unwrap_err();
        server.join().unwrap();
        assert_eq!(seen, vec![json!({"a": 1})]);
        assert!(matches!(e, RequestError::BadAnswer(_)), "{e:?}");
        assert!(
            e.to_string().starts_with("bad answer from the agent: "),
            "{e}"
        );
    }
}
