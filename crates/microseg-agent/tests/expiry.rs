//! The agent removes sessions idle past their timeout, by the kernel's clock and each
//! session's own timestamps, and reports each as an ended flow; the others stay. The
//! sessions are written into the pinned table with timestamps in the past, so nothing
//! waits for a timeout to pass. Needs root (BPF, a veth).

mod support;

use std::net::IpAddr;
use std::time::Duration;

use aya::maps::{HashMap, Map, MapData};
use microseg_common::tables::addr_words;
use microseg_common::{direction, names, proto, session_state, verdict, Session, SessionKey};
use microseg_dataplane::sessions::monotonic_ns;
use support::{one_rule, Agent, CLIENT_IP, SERVER_IP};

const MINUTE_NS: u64 = 60 * 1_000_000_000;

/// A UDP session from the client's `port` to the server's port 53, judged on the server's
/// interface, last seen at `last_seen_ns`.
fn udp_session(port: u16, server_ifindex: u32, last_seen_ns: u64) -> (SessionKey, Session) {
    let client: IpAddr = CLIENT_IP.parse().unwrap();
    let server: IpAddr = SERVER_IP.parse().unwrap();
    // The lower address first, as the kernel keys them.
    let key = SessionKey {
        lo_addr: addr_words(server),
        hi_addr: addr_words(client),
        lo_port: 53,
        hi_port: port,
        protocol: proto::UDP,
        _pad: [0; 3],
    };
    let mut s = Session {
        created_ns: last_seen_ns,
        last_seen_ns,
        state: session_state::ESTABLISHED,
        ..Default::default()
    };
    let leg = &mut s.legs[direction::INGRESS as usize];
    leg.ifindex = server_ifindex;
    leg.verdict = verdict::ALLOW;
    (key, s)
}

fn ports_of(sessions: &serde_json::Value) -> Vec<u64> {
    let mut ports: Vec<u64> = sessions
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["src_port"].as_u64().max(s["dst_port"].as_u64()))
        .collect();
    ports.sort();
    ports
}

/// Every line of one request's answer.
fn lines(agent: &Agent, request: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&agent.opts.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let all: Vec<serde_json::Value> = BufReader::new(s)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    serde_json::Value::Array(all)
}

#[test]
fn sessions_idle_past_their_timeout_by_the_kernels_clock_end_and_the_rest_stay() {
    let agent = Agent::start_with("ex", &one_rule(), |o| {
        o.gc_interval = Duration::from_millis(50);
    });
    let ifindex = microseg_agent::interfaces::list()[&agent.iface];
    let pinned = MapData::from_pin(agent.opts.maps_dir().join(names::SESSIONS))
        .and_then(Map::from_map_data)
        .unwrap();
    let mut table: HashMap<MapData, SessionKey, Session> = HashMap::try_from(pinned).unwrap();
    let now = monotonic_ns();
    // UDP times out after 60 s idle: five minutes ago is past it (the clock counts from
    // boot), a moment ago is not.
    let long_ago = now.saturating_sub(5 * MINUTE_NS);
    assert!(
        now - long_ago > 2 * MINUTE_NS,
        "booted too recently for this test"
    );
    for (port, last_seen) in [(40_001, long_ago), (40_002, now)] {
        let (key, session) = udp_session(port, ifindex, last_seen);
        table.insert(key, session, 0).unwrap();
    }

    agent.wait_for("the idle session to go", |a| {
        !ports_of(&lines(a, r#"{"cmd":"sessions"}"#)).contains(&40_001)
    });
    assert_eq!(
        ports_of(&lines(&agent, r#"{"cmd":"sessions"}"#)),
        [40_002],
        "the session seen a moment ago stays"
    );
    let flows = lines(&agent, r#"{"cmd":"flows"}"#);
    let ended: Vec<&serde_json::Value> = flows
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["event"] == "end")
        .collect();
    assert_eq!(ended.len(), 1, "one ended flow: {flows}");
    assert_eq!(ended[0]["workload"], "server", "{}", ended[0]);
    assert_eq!(ended[0]["dst_port"], 53, "{}", ended[0]);
    assert_eq!(ended[0]["protocol"], "UDP", "{}", ended[0]);
}
