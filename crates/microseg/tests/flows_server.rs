//! `microseg flows --server` against a real controller holding flow records that a real
//! agent-link client uploaded: every filter flag, the table, JSON Lines and --follow
//! (docs/FLOWS.md "Queries"; no root needed).

mod ctl;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ctl::{run, Controller, BIN};
use microseg_proto::v1::agent_link_client::AgentLinkClient;
use microseg_proto::v1::{Flow, FlowBatch};
use microseg_testsupport::eventually;
use serde_json::Value;

const WORKLOADS: &str = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: web, labels: {app: web}}\nspec: {ips: [10.91.0.10]}\n---\napiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: db, labels: {app: db, env: prod}}\nspec: {ips: [10.91.0.20]}\n";
const WEB: &str = "10.91.0.10";
const DB: &str = "10.91.0.20";
/// No workload's address.
const OUTSIDE: &str = "10.99.9.9";

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A flow reported `age_s` ago; its source port names it in the assertions.
#[allow(clippy::too_many_arguments)]
fn flow(
    id: u32,
    age_s: i64,
    workload: &str,
    direction: &str,
    (src, dst, dst_port): (&str, &str, u32),
    protocol: u32,
    verdict: &str,
    policy: &str,
    open: bool,
) -> Flow {
    let time_us = now_us() - age_s * 1_000_000;
    Flow {
        time_us,
        start_us: time_us - 1_000_000,
        end_us: (!open).then_some(time_us),
        workload: workload.into(),
        direction: direction.into(),
        src_ip: src.into(),
        dst_ip: dst.into(),
        src_port: id,
        dst_port,
        protocol,
        verdict: verdict.into(),
        policy: Some(policy.into()),
        rule: Some(0),
        packets: 3,
        bytes: 180,
        ..Default::default()
    }
}

/// Uploads the batches over the agent link, as an agent does, with the agent token.
fn upload(c: &Controller, batches: Vec<FlowBatch>) {
    let token = std::fs::read_to_string(c.dir.join("state/agent.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Channel::from_shared(c.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut link = AgentLinkClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", auth.parse().unwrap());
            Ok(r)
        });
        let n: usize = batches.iter().map(|b| b.flows.len()).sum();
        let r = link
            .upload_flows(tokio_stream::iter(batches))
            .await
            .unwrap();
        assert_eq!(r.into_inner().accepted, n as u64);
    });
}

fn batch(node: &str, flows: Vec<Flow>) -> FlowBatch {
    FlowBatch {
        node: node.into(),
        flows,
        ..Default::default()
    }
}

/// The records' ids (source ports) of `flows -o json ARGS`, in the order printed.
fn ids(c: &Controller, args: &[&str]) -> Vec<u64> {
    let mut all = vec!["flows", "-o", "json"];
    all.extend(args);
    let (code, out, err) = c.cli(&all);
    assert_eq!(code, 0, "{args:?}: {err}");
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["src_port"].as_u64().unwrap()
        })
        .collect()
}

/// web -> db allowed at node-a (closed), web -> db:22 denied at node-b (open), and db -> an
/// outside address over UDP two hours ago, logged at node-a.
const ALLOW: u64 = 40001;
const DENY: u64 = 40002;
const OLD_UDP: u64 = 40003;

fn controller_with_flows(test: &str) -> Controller {
    let c = Controller::start(test);
    let f = c.file("workloads.yaml", WORKLOADS);
    let (code, out, err) = c.cli(&["policy", "apply", "-f", &f]);
    assert_eq!(code, 0, "{out}{err}");
    upload(
        &c,
        vec![
            batch(
                "node-a",
                vec![
                    flow(
                        40003,
                        7200,
                        "db",
                        "egress",
                        (DB, OUTSIDE, 53),
                        17,
                        "log",
                        "dns-log",
                        false,
                    ),
                    flow(
                        40001,
                        10,
                        "web",
                        "egress",
                        (WEB, DB, 5432),
                        6,
                        "allow",
                        "db-allow",
                        false,
                    ),
                ],
            ),
            batch(
                "node-b",
                vec![flow(
                    40002,
                    5,
                    "db",
                    "ingress",
                    (WEB, DB, 22),
                    6,
                    "deny",
                    "default-deny",
                    true,
                )],
            ),
        ],
    );
    eventually(Duration::from_secs(10), || ids(&c, &[]).len() == 3)
        .unwrap_or_else(|e| panic!("the records were not stored: {e}\n{}", c.log()));
    c
}

#[test]
fn every_filter_flag_narrows_the_records() {
    let c = controller_with_flows("filters");
    // Newest last.
    assert_eq!(ids(&c, &[]), [OLD_UDP, ALLOW, DENY]);
    assert_eq!(ids(&c, &["--since", "1h"]), [ALLOW, DENY]);
    assert_eq!(ids(&c, &["--until", "1h"]), [OLD_UDP]);
    assert_eq!(ids(&c, &["--verdict", "deny"]), [DENY]);
    assert_eq!(ids(&c, &["--direction", "ingress"]), [DENY]);
    // The reporting workload or either end.
    assert_eq!(ids(&c, &["--workload", "web"]), [ALLOW, DENY]);
    assert_eq!(ids(&c, &["--from", "app=db"]), [OLD_UDP]);
    assert_eq!(ids(&c, &["--to", "app=db,env=prod"]), [ALLOW, DENY]);
    assert_eq!(ids(&c, &["--port", "22"]), [DENY]);
    assert_eq!(ids(&c, &["--protocol", "udp"]), [OLD_UDP]);
    assert_eq!(ids(&c, &["--policy", "db-allow"]), [ALLOW]);
    assert_eq!(ids(&c, &["--node", "node-b"]), [DENY]);
    assert_eq!(ids(&c, &["--limit", "2"]), [ALLOW, DENY]);
    // Together, all must hold.
    assert_eq!(ids(&c, &["--node", "node-a", "--to", "!app"]), [OLD_UDP]);

    // JSON Lines: the records as the controller has them, with both ends named.
    let (_, out, _) = c.cli(&["flows", "-o", "json", "--verdict", "deny"]);
    let deny: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(deny["node"], "node-b");
    assert_eq!(deny["src_workload"], "web");
    assert_eq!(deny["dst_labels"]["env"], "prod");
    assert_eq!(deny["end"], Value::Null);
    let (_, out, _) = c.cli(&["flows", "-o", "json", "--protocol", "17"]);
    let udp: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(udp["dst_workload"], Value::Null);
    assert_eq!(udp["dst_labels"], serde_json::json!({}));
}

#[test]
fn the_table_shows_each_record_on_a_line() {
    let c = controller_with_flows("table");
    let (code, out, err) = c.cli(&["flows"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for col in [
        "TIME",
        "NODE",
        "WORKLOAD",
        "DIR",
        "SOURCE -> DESTINATION",
        "PROTO",
        "VERDICT",
        "POLICY/RULE",
        "PACKETS",
        "BYTES",
        "END",
    ] {
        assert!(lines[0].contains(col), "{col}: {}", lines[0]);
    }
    let deny = lines[3];
    for cell in [
        "node-b",
        "db",
        "ingress",
        "10.91.0.10:40002 -> 10.91.0.20:22",
        "TCP",
        "deny",
        "default-deny[0]",
        " 3 ",
        " 180 ",
    ] {
        assert!(deny.contains(cell), "{cell}: {deny}");
    }
    assert!(deny.ends_with(" open"), "{deny}");
    assert!(
        lines[1].contains("UDP") && lines[1].contains("dns-log"),
        "{out}"
    );
    assert!(
        !lines[1].ends_with("open"),
        "a closed one shows its end: {out}"
    );
    // Nothing matches: the header alone.
    let (code, out, _) = c.cli(&["flows", "--node", "nowhere"]);
    assert_eq!((code, out.lines().count()), (0, 1), "{out}");
}

/// Each bad value is refused before any request, naming its flag: the server's URL
/// listens nowhere, so a request would exit 1 (unreachable).
#[test]
fn a_bad_filter_exits_2_naming_its_flag() {
    let nowhere = format!("http://127.0.0.1:{}", ctl::free_port());
    for (flag, value, says) in [
        (
            "--verdict",
            "maybe",
            "--verdict: \"maybe\": one of allow, deny, log, audit",
        ),
        (
            "--since",
            "yesterday",
            "--since: \"yesterday\": an RFC 3339 time",
        ),
        ("--until", "5x", "--until: \"5x\""),
        ("--port", "70000", "--port: \"70000\": a port number"),
        ("--protocol", "tcpx", "--protocol: \"tcpx\": TCP, UDP"),
        ("--from", "app=we b", "--from: label value \"we b\""),
        ("--to", "a,,b", "--to: "),
        (
            "--direction",
            "up",
            "--direction: \"up\": ingress or egress",
        ),
        ("--limit", "0", "--limit: \"0\": a number from 1 to 100000"),
        ("--node", "", "--node: \"\": a name"),
    ] {
        let (code, out, err) = run(Command::new(BIN)
            .args(["flows", "--server", &nowhere, flag, value])
            .env("MICROSEG_TOKEN", "t")
            .output()
            .unwrap());
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
        assert!(out.is_empty(), "{out}");
    }
    // Not a number at all: refused by the flag's own parser.
    let (code, _, err) = run(Command::new(BIN)
        .args(["flows", "--server", &nowhere, "--limit", "many"])
        .output()
        .unwrap());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--limit"), "{err}");
}

/// Filters only the store can apply, asked of the local agent: exit 2 before the agent
/// is asked (its socket is missing, which would exit 1).
#[test]
fn server_only_filters_without_server_exit_2() {
    for (flag, value) in [
        ("--until", "1h"),
        ("--direction", "ingress"),
        ("--from", "app=web"),
        ("--to", "app=db"),
        ("--port", "22"),
        ("--protocol", "tcp"),
        ("--policy", "p"),
        ("--node", "n"),
    ] {
        let (code, _, err) = run(Command::new(BIN)
            .args(["flows", "--socket", "/nonexistent/agent.sock", flag, value])
            .output()
            .unwrap());
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(err.contains(&format!("{flag} needs --server")), "{err}");
    }
    // The local form's own filters still reach the agent.
    let (code, _, err) = run(Command::new(BIN)
        .args([
            "flows",
            "--socket",
            "/nonexistent/agent.sock",
            "--since",
            "5m",
        ])
        .output()
        .unwrap());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the agent"), "{err}");
}

#[test]
fn the_servers_refusal_is_shown() {
    let c = Controller::start("refusal");
    let (code, out, err) = run(Command::new(BIN)
        .args(["flows", "--server", &c.url])
        .env("MICROSEG_TOKEN", "not-the-token")
        .output()
        .unwrap());
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "no header before a failure: {out}");
    assert!(err.contains("--token-file"), "{err}");
}

/// `flows --server URL ARGS --follow`, its stdout's lines arriving on the channel.
fn follow(c: &Controller, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["flows", "--follow", "--server", &c.url, "--token-file"])
        .arg(c.token_file())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn next_id(rx: &mpsc::Receiver<String>) -> Option<u64> {
    let line = rx.recv_timeout(Duration::from_secs(10)).ok()?;
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    v["src_port"].as_u64()
}

#[test]
fn follow_prints_what_is_stored_after_it_started() {
    let c = controller_with_flows("follow");
    let (mut child, rx) = follow(&c, &["-o", "json", "--verdict", "deny"]);
    assert_eq!(next_id(&rx), Some(DENY), "the query's answer first");
    // An allow (filtered out) then a deny, uploaded while it follows.
    upload(
        &c,
        vec![batch(
            "node-a",
            vec![
                flow(
                    40010,
                    0,
                    "web",
                    "egress",
                    (WEB, DB, 5432),
                    6,
                    "allow",
                    "db-allow",
                    true,
                ),
                flow(
                    40011,
                    0,
                    "web",
                    "egress",
                    (WEB, DB, 23),
                    6,
                    "deny",
                    "default-deny",
                    true,
                ),
            ],
        )],
    );
    let got = next_id(&rx);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        got,
        Some(40011),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn follow_outlives_a_controller_that_fails_and_ends_when_its_reader_goes() {
    let mut c = controller_with_flows("follow-fail");
    let mut child = Command::new(BIN)
        .args([
            "flows",
            "--follow",
            "--limit",
            "1",
            "--server",
            &c.url,
            "--token-file",
        ])
        .arg(c.token_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reads below block: should the command hang, it is killed and they end.
    let pid = child.id() as libc::pid_t;
    let (done, watchdog) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watchdog.recv_timeout(Duration::from_secs(40)).is_err() {
            // SAFETY: our own child, not yet reaped (the test waits for it below).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("TIME"), "{line}");
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains(":40002 ->"), "the newest only: {line}");
    // The controller goes away: the follower says so and keeps trying.
    let mut ctl = c.child.take().unwrap();
    ctl.kill().unwrap();
    ctl.wait().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    line.clear();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.contains("cannot reach the controller") && line.contains("retrying"),
        "{line}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "it keeps following");
    // The reader goes away while nothing new comes: it ends, quietly.
    drop(stdout);
    let ended = eventually(Duration::from_secs(5), || {
        child.try_wait().unwrap().map(|s| s.code())
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = done.send(());
    assert_eq!(ended.unwrap(), Some(0));
}
