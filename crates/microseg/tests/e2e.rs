//! End to end: the agent enforces policy on real traffic between network namespaces.

mod common;

use std::time::Duration;

use common::{addr, eventually, Topology};

const WEB_ONLY_FROM_CLIENT: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: web-ingress}
spec:
  selector: {matchLabels: {app: web}}
  ingress:
    - action: allow
      from: [{selector: {matchLabels: {app: client}}}]
      ports: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 5353}]
    - action: log
      from: [{selector: {matchLabels: {app: client}}}]
      ports: [{protocol: ICMP}]
"#;

fn start(test: &str, policy: &str) -> Topology {
    let mut t = Topology::new(test, &["client", "web", "other"]);
    t.write_policy("workloads.yaml", &t.workloads_yaml());
    t.write_policy("policy.yaml", policy);
    t.tcp_echo("web", 8080);
    t.tcp_echo("web", 9090);
    t.udp_echo("web", 5353);
    t.start_agent();
    t
}

#[test]
fn allowed_traffic_passes_and_everything_else_to_the_selected_workload_is_denied() {
    let t = start("verdicts", WEB_ONLY_FROM_CLIENT);
    let web = t.w("web");
    assert!(
        t.tcp_ok("client", addr(&web.v4, 8080)),
        "client → web:8080 is allowed"
    );
    assert!(t.tcp_ok("client", addr(&web.v6, 8080)), "over IPv6 too");
    assert!(
        !t.tcp_ok("client", addr(&web.v4, 9090)),
        "another port is denied by default"
    );
    assert!(
        !t.tcp_ok("other", addr(&web.v4, 8080)),
        "another peer is denied by default"
    );
    assert!(
        t.udp_ok("client", addr(&web.v4, 5353)),
        "UDP allowed with its reply"
    );
    assert!(
        !t.udp_ok("other", addr(&web.v4, 5353)),
        "UDP from another peer denied"
    );
    assert!(t.ping_ok("client", &web.v4), "log passes");
    assert!(
        !t.ping_ok("other", &web.v4),
        "ICMP from another peer denied"
    );

    let stats = t.stats();
    for key in [
        "allowed",
        "denied",
        "logged",
        "session_hits",
        "session_misses",
        "sessions",
    ] {
        assert!(stats[key].as_u64().unwrap() > 0, "{key} counted: {stats}");
    }
    let rules = stats["rules"].as_array().expect("per-rule counters");
    let hits = rules
        .iter()
        .find(|r| r["policy"] == "web-ingress" && r["rule"] == 0)
        .expect("rule 0");
    assert!(
        hits["packets"].as_u64().unwrap() > 0 && hits["bytes"].as_u64().unwrap() > 0,
        "{hits}"
    );
    let flows = t.flows();
    let denied = flows.iter().find(|f| {
        f["verdict"] == "deny"
            && f["dst_port"] == 9090
            && f["workload"] == "web"
            && f["direction"] == "ingress"
    });
    let denied = denied.unwrap_or_else(|| panic!("a deny flow for port 9090 in {flows:#?}"));
    assert_eq!(denied["policy"], "default-deny");
    assert_eq!(denied["src_ip"], t.w("client").v4.as_str());
    assert_eq!(denied["protocol"], "TCP");
    let allowed = flows
        .iter()
        .find(|f| f["verdict"] == "allow" && f["dst_port"] == 8080 && f["workload"] == "web");
    let allowed = allowed.expect("an allow flow for port 8080");
    assert_eq!(allowed["policy"], "web-ingress");
    assert_eq!(allowed["rule"], 0);
    assert!(flows
        .iter()
        .any(|f| f["verdict"] == "log" && f["protocol"] == "ICMP" && f["rule"] == 1));

    let sessions = t.cli(&["sessions", "-o", "json"]);
    let text = String::from_utf8_lossy(&sessions.stdout);
    assert!(text
        .lines()
        .any(|l| l.contains("\"dst_port\":8080") && l.contains("\"verdict\":\"allow\"")));
}

#[test]
fn a_policy_change_is_enforced_on_new_and_existing_connections_and_bad_input_keeps_the_last_good_policy(
) {
    let t = start("reload", WEB_ONLY_FROM_CLIENT);
    let web = addr(&t.w("web").v4, 8080);
    assert!(t.tcp_ok("client", web));

    // A long-lived connection opened under the allow.
    let ns = t.w("client").ns.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<bool>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let conn = std::thread::spawn(move || {
        common::in_netns(&ns, move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect_timeout(&web, Duration::from_secs(2))
                .expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
            let mut buf = [0u8; 2];
            s.write_all(b"ok").unwrap();
            s.read_exact(&mut buf).unwrap();
            ready_tx.send(()).unwrap();
            rx.recv().unwrap();
            // After the revoke: the next packets must not get through.
            let ok = s.write_all(b"no").is_ok() && s.read_exact(&mut buf).is_ok();
            done_tx.send(ok).unwrap();
        })
    });

    // The connection is up and has carried data before the policy changes.
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("long-lived connection established");

    // Revoke: web now only accepts traffic from `other`.
    t.write_policy(
        "policy.yaml",
        &WEB_ONLY_FROM_CLIENT.replace("app: client", "app: other"),
    );
    assert!(
        eventually(Duration::from_secs(5), || !t.tcp_ok("client", web)).is_ok(),
        "new connections cut"
    );
    tx.send(()).unwrap();
    assert!(
        !done_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "the existing connection is cut"
    );
    conn.join().unwrap();
    assert!(t.tcp_ok("other", web), "the new allow works");
    assert!(t.stats()["rejudged"].as_u64().unwrap() > 0);

    // Broken input: rejected with its position, and the last good policy stays.
    t.write_policy("policy.yaml", "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: x}\nspec:\n  selector: {}\n  priority: -5\n");
    t.await_log("policy.yaml:6:");
    assert!(
        t.tcp_ok("other", web),
        "still enforcing the last good policy"
    );
    assert!(!t.tcp_ok("client", web));
}

/// Keys the agent wrote for revision `rev`, from its "revision N: ... (K written" line,
/// once that line is logged.
/// The keys the apply of local revision `rev` wrote, from the agent's status.
fn keys_written(t: &Topology, rev: u64) -> u64 {
    let applied = || {
        let status = t.local_status();
        (status["revision"].as_u64() == Some(rev) && status["updating"] == false)
            .then(|| status["keys_written"].as_u64())
            .flatten()
            .ok_or(status)
    };
    eventually(Duration::from_secs(5), applied)
        .unwrap_or_else(|e| panic!("no revision {rev} ({e}): {}", t.agent_log()))
}

#[test]
fn after_an_update_the_standby_slot_catches_up_so_the_next_change_writes_only_itself() {
    let mut t = Topology::new("standby", &["client", "web", "other"]);
    t.write_policy("workloads.yaml", &t.workloads_yaml());
    t.write_policy("policy.yaml", WEB_ONLY_FROM_CLIENT);
    t.start_agent();
    let everything = keys_written(&t, 1);
    // The agent catches the standby slot up 200 ms after an apply, without polling.
    let caught_up = || {
        let status = t.local_status();
        (status["standby_behind"] == false)
            .then_some(())
            .ok_or(status)
    };
    eventually(Duration::from_secs(5), caught_up)
        .unwrap_or_else(|e| panic!("the standby slot stays behind ({e}): {}", t.agent_log()));
    t.write_policy(
        "deny-other.yaml",
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: deny-other}\nspec:\n  selector: {matchLabels: {app: web}}\n  priority: 10\n  ingress:\n    - action: deny\n      from: [{selector: {matchLabels: {app: other}}}]\n      ports: [{protocol: TCP, port: 9090}]\n",
    );
    let change = keys_written(&t, 2);
    // Behind, the standby slot would take the whole state again with this change.
    assert!(
        change < everything,
        "the change wrote {change} keys, the first apply {everything}: {}",
        t.agent_log()
    );
}

#[test]
fn enforcement_outlives_the_agent_and_a_new_agent_adopts_it_without_dropping_sessions() {
    let mut t = start("restart", WEB_ONLY_FROM_CLIENT);
    let web = addr(&t.w("web").v4, 8080);
    let ns = t.w("client").ns.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (res_tx, res_rx) = std::sync::mpsc::channel::<bool>();
    let conn = std::thread::spawn(move || {
        common::in_netns(&ns, move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect_timeout(&web, Duration::from_secs(2))
                .expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 2];
            s.write_all(b"ok").unwrap();
            s.read_exact(&mut buf).unwrap();
            for _ in 0..2 {
                rx.recv().unwrap();
                let ok = s.write_all(b"ok").is_ok() && s.read_exact(&mut buf).is_ok();
                res_tx.send(ok).unwrap();
            }
        })
    });

    // Killed outright: the pinned programs keep enforcing.
    t.stop_agent(libc::SIGKILL);
    assert!(!t.tcp_ok("other", web), "still denied with no agent");
    assert!(t.tcp_ok("client", web), "still allowed with no agent");
    tx.send(()).unwrap();
    assert!(
        res_rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        "existing connection survives the agent's death"
    );

    // A new agent adopts the pins; the session table is kept: the new agent's API counts
    // the sessions the old one left.
    t.start_agent();
    let stats = t.stats();
    assert!(
        stats["sessions"].as_u64() >= Some(1),
        "the sessions kept, in the new agent's stats: {stats}"
    );
    let sessions = String::from_utf8_lossy(&t.cli(&["sessions", "-o", "json"]).stdout).into_owned();
    assert!(
        sessions.contains("\"dst_port\":8080"),
        "sessions kept: {sessions}"
    );
    tx.send(()).unwrap();
    assert!(
        res_rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        "existing connection survives the restart"
    );
    conn.join().unwrap();
    assert!(!t.tcp_ok("other", web));

    // A clean stop leaves enforcement in place too; --cleanup removes it.
    assert!(t.stop_agent(libc::SIGTERM).success());
    assert!(!t.tcp_ok("other", web));
    let out = t.agent_cmd(&["--cleanup"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.bpffs.exists(), "pins removed");
    assert!(
        t.tcp_ok("other", web),
        "no enforcement left after --cleanup"
    );
}

#[test]
fn a_workload_interface_made_again_is_enforced_again() {
    // A restarted pod gets a new veth of the same name and a new ifindex: the agent hears
    // of the link (or its slow safety poll finds it) and attaches to it.
    let t = start("relink", WEB_ONLY_FROM_CLIENT);
    let web = addr(&t.w("web").v4, 8080);
    assert!(!t.tcp_ok("other", web));
    t.recreate_interface("web");
    assert!(
        eventually(Duration::from_secs(10), || t.tcp_ok("client", web)
            && !t.tcp_ok("other", web))
        .is_ok(),
        "the new interface is enforced: {}",
        t.agent_log()
    );
}

#[test]
fn big_tcp_packets_of_an_allowed_connection_pass() {
    // BIG TCP (Linux 5.19+ for IPv6, 6.3+ for IPv4): the client's stack sends GSO packets
    // over 64 KiB, whose IP length is 0. They must be judged like any other, not dropped as
    // malformed.
    let t = start("bigtcp", WEB_ONLY_FROM_CLIENT);
    t.big_tcp("client", 196_608);
    let web = t.w("web");
    assert!(
        t.tcp_bulk_ok("client", addr(&web.v4, 8080), 8 << 20),
        "8 MiB echoed over IPv4 with BIG TCP"
    );
    // IPv6 BIG TCP packets carry a payload length of 0 instead.
    assert!(
        t.tcp_bulk_ok("client", addr(&web.v6, 8080), 8 << 20),
        "and over IPv6"
    );
    assert!(
        !t.tcp_ok("client", addr(&web.v4, 9090)),
        "and the policy still holds"
    );
    assert_eq!(t.stats()["parse_errors"], 0);
}

#[test]
fn the_classic_tc_path_for_older_kernels_enforces_and_cleans_up_too() {
    let mut t = Topology::new("netlink", &["client", "web", "other"]);
    t.write_policy("workloads.yaml", &t.workloads_yaml());
    t.write_policy("policy.yaml", WEB_ONLY_FROM_CLIENT);
    t.tcp_echo("web", 8080);
    t.start_agent_with_env(&[("MICROSEG_TC_MODE", "netlink")]);
    let web = addr(&t.w("web").v4, 8080);
    assert!(t.tcp_ok("client", web));
    assert!(!t.tcp_ok("other", web));
    let node = t.node.clone();
    let filters = |dir: &str| {
        let out = std::process::Command::new("tc")
            .args(["-n", &node, "filter", "show", "dev", "veth-web", dir])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        filters("egress").contains("microseg_to_workload"),
        "{}",
        filters("egress")
    );
    assert!(
        filters("ingress").contains("microseg_from_workload"),
        "{}",
        filters("ingress")
    );

    // The filters outlive the agent, and --cleanup removes them, even when the record of
    // where they are is gone with the pins (a bpffs private to an ended mount namespace).
    t.stop_agent(libc::SIGKILL);
    assert!(!t.tcp_ok("other", web));
    std::fs::remove_dir_all(t.bpffs.join("links")).unwrap();
    let out = t.agent_cmd(&["--cleanup"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for dir in ["egress", "ingress"] {
        assert!(!filters(dir).contains("microseg"), "{}", filters(dir));
    }
    assert!(t.tcp_ok("other", web));
}

/// The flow table: IPv6 endpoints in brackets, `--limit`, and `flows --follow | head -1`
/// ending quietly at the next flow once its reader has gone.
#[test]
fn the_flow_table_brackets_ipv6_keeps_a_limit_and_ends_quietly_when_its_reader_goes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let t = start("flowviews", WEB_ONLY_FROM_CLIENT);
    let web = t.w("web");
    assert!(t.tcp_ok("client", addr(&web.v6, 8080)));
    assert!(t.tcp_ok("client", addr(&web.v4, 8080)));
    let v6_flow = format!(" -> [{}]:8080 ", web.v6);
    let v4_flow = format!(" -> {}:8080 ", web.v4);
    // Both connections' events may arrive in different reads of the ring: wait for both.
    let table = eventually(Duration::from_secs(5), || {
        let table = String::from_utf8_lossy(&t.cli(&["flows"]).stdout).into_owned();
        if table.contains(&v6_flow) && table.contains(&v4_flow) {
            Ok(table)
        } else {
            Err(table)
        }
    })
    .unwrap_or_else(|e| panic!("no {v6_flow:?} and {v4_flow:?} in the flow table: {e}"));
    assert!(table.starts_with("TIME"), "{table}");

    assert!(t.flows().len() > 2);
    let out = t.cli(&["flows", "--limit", "1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let out = t.cli(&["flows", "-o", "json", "--limit", "2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    let mut follow = Command::new(common::BIN)
        .args(["flows", "--follow", "--socket"])
        .arg(&t.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut header = String::new();
    BufReader::new(follow.stdout.take().unwrap())
        .read_line(&mut header)
        .unwrap();
    assert!(header.starts_with("TIME"), "{header}");
    // The reader is gone; the next flows meet a closed pipe.
    let mut status = None;
    for _ in 0..50 {
        t.tcp_ok("client", addr(&web.v4, 8080));
        status = follow.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if status.is_none() {
        let _ = follow.kill();
    }
    let out = follow.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

/// A user without a controller: `microseg recommend --socket` from a standalone agent's own
/// flows (with its files for labels and addresses), then the recommendation enforced by the
/// same agent keeps the observed path and denies one never seen.
#[test]
fn a_standalone_agent_recommends_from_its_own_flows() {
    let t = start("recommend", "");
    let web = t.w("web");
    // No policy selects anything yet: open. Closed TCP connections are reported at once.
    for _ in 0..3 {
        assert!(t.tcp_ok("client", addr(&web.v4, 8080)));
    }
    eventually(Duration::from_secs(10), || {
        t.flows()
            .iter()
            .filter(|f| f["dst_port"] == 8080 && f["event"] == "end")
            .count()
            >= 2
    })
    .expect("the connections' end records");
    let policy_dir = t.dir.join("policy");
    let policy_dir = policy_dir.to_str().unwrap();
    let out = t.cli(&[
        "recommend",
        "--since",
        "5m",
        "--mode",
        "enforce",
        "--policy",
        policy_dir,
    ]);
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{yaml}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "name: recommended.web",
        "name: recommended.client",
        "port: 8080",
    ] {
        assert!(yaml.contains(expected), "{expected} in:\n{yaml}");
    }
    assert!(
        !yaml.contains("9090"),
        "an unseen port is never allowed:\n{yaml}"
    );

    // Enforced by the same agent: the observed path works, an unseen one does not.
    t.write_policy("policy.yaml", &yaml);
    eventually(Duration::from_secs(20), || {
        !t.tcp_ok("client", addr(&web.v4, 9090))
    })
    .expect("the recommendation enforced");
    assert!(t.tcp_ok("client", addr(&web.v4, 8080)), "the observed path");
    assert!(
        !t.tcp_ok("other", addr(&web.v4, 8080)),
        "a peer never seen talking to web"
    );
}
