//! The agent's Prometheus metrics (docs/METRICS.md): scraped over HTTP, accepted by
//! `promtool check metrics`, and counting the denies and rule hits of real packets sent
//! through the workload's veth. Runs in network namespaces of its own. Needs root.

mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use microseg_testsupport::{free_port, ip, on_own_netns, PrivateNetns};
use support::{one_rule, Agent, CLIENT_IP, SERVER_IP};

/// The families docs/METRICS.md promises, each with its type.
const FAMILIES: &[(&str, &str)] = &[
    ("microseg_packets_total", "counter"),
    ("microseg_verdicts_total", "counter"),
    ("microseg_drops_total", "counter"),
    ("microseg_sessions", "gauge"),
    ("microseg_sessions_max", "gauge"),
    ("microseg_events_lost_total", "counter"),
    ("microseg_policy_revision", "gauge"),
    ("microseg_policy_rule_packets_total", "counter"),
    ("microseg_map_entries", "gauge"),
    ("microseg_map_capacity", "gauge"),
    ("microseg_policy_compile_seconds", "gauge"),
    ("microseg_policy_apply_seconds", "gauge"),
    ("microseg_policy_update_failures_total", "counter"),
];

/// The body of `GET /metrics`, after checking the status and content type.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the metrics port answers");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// The value of the sample written exactly `series` (name and labels), if any.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup.sh installs prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the output:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_are_valid_and_count_denies_and_rule_hits() {
    on_own_netns(|| {
        ip(&["link", "set", "lo", "up"]);
        let port = free_port();
        let agent = Agent::start_with("mt", &one_rule(), |o| {
            o.metrics = Some(([127, 0, 0, 1], port).into());
        });
        // The server's side of the veth in a namespace of its own; this one is the client.
        let server = PrivateNetns::new();
        let peer = format!("{}p", agent.iface);
        ip(&["link", "set", &peer, "netns", &server.tid.to_string()]);
        server.run(move || {
            ip(&["addr", "add", &format!("{SERVER_IP}/24"), "dev", &peer]);
            ip(&["link", "set", &peer, "up"]);
        });
        ip(&[
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            &agent.iface,
        ]);

        let before = scrape(port);
        promtool_accepts(&before);
        let framed = format!("\n{before}");
        for (family, kind) in FAMILIES {
            assert!(
                framed.contains(&format!("\n# TYPE {family} {kind}\n")),
                "no {kind} {family}:\n{before}"
            );
            assert!(framed.contains(&format!("\n# HELP {family} ")), "{family}");
        }
        // Revision 1, or later: the reload loop enforces again when interfaces change.
        assert!(value(&before, "microseg_policy_revision").unwrap() >= 1.0);
        assert!(value(&before, "microseg_policy_compile_seconds").unwrap() > 0.0);
        assert_eq!(value(&before, "microseg_sessions_max"), Some(4096.0));
        let deny = r#"microseg_verdicts_total{verdict="deny"}"#;
        let policy_drops = r#"microseg_drops_total{reason="policy"}"#;
        let rule = r#"microseg_policy_rule_packets_total{policy="web",direction="ingress",rule="0",action="allow"}"#;
        let denied_before = value(&before, deny).expect("a deny series");
        let hits_before = value(&before, rule).expect("a series for the one rule");

        // UDP to port 81: no rule allows it. TCP to port 80: the rule does (nothing
        // listens, so the server resets it; the SYN is what counts).
        let udp = UdpSocket::bind((CLIENT_IP, 0)).unwrap();
        for _ in 0..5 {
            udp.send_to(b"denied", (SERVER_IP, 81)).unwrap();
        }
        let addr = (SERVER_IP.parse::<std::net::IpAddr>().unwrap(), 80).into();
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(2));

        let mut after = String::new();
        let seen = microseg_testsupport::eventually(Duration::from_secs(10), || {
            after = scrape(port);
            value(&after, deny).unwrap() >= denied_before + 5.0
                && value(&after, rule).unwrap() > hits_before
        });
        assert!(seen.is_ok(), "denies or rule hits not counted:\n{after}");
        promtool_accepts(&after);
        assert!(value(&after, policy_drops).unwrap() >= 5.0, "{after}");
        assert!(value(&after, "microseg_packets_total").unwrap() >= 6.0);
        // The compiled rule is in the policy map (both slots once the standby caught up).
        assert!(value(&after, r#"microseg_map_entries{map="policy"}"#).unwrap() >= 1.0);
        assert!(
            !after.contains(SERVER_IP) && !after.contains(CLIENT_IP),
            "no per-IP labels"
        );
        drop(server);
        drop(agent);
    });
}

#[test]
fn metrics_off_and_bad_addresses_are_told_apart() {
    use microseg_agent::metrics::parse_flag;
    assert!(parse_flag("off").unwrap().0.is_none());
    assert_eq!(
        parse_flag("0.0.0.0:9970").unwrap().0,
        Some(([0, 0, 0, 0], 9970).into())
    );
    let e = parse_flag("localhost").unwrap_err();
    assert!(e.contains("neither `off` nor an address"), "{e}");
}
