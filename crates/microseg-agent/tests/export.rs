//! The agent's flow export: its walk of the session table reports a connection that lasts
//! again within every active timeout, and under pressure (the table half full) it reports
//! every connection not yet reported and turns the kernel's start reports on, so that an
//! LRU eviction takes no connection unreported. Sessions are written into the pinned table
//! with the timestamps each case needs. Needs root (BPF, a veth).

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use aya::maps::{Array, HashMap, Map, MapData};
use microseg_common::tables::addr_words;
use microseg_common::{
    config_flags, direction, names, proto, session_state, verdict, Config, Session, SessionKey,
};
use microseg_dataplane::sessions::monotonic_ns;
use serde_json::Value;
use support::{one_rule, Agent, CLIENT_IP, SERVER_IP};

/// A UDP session from the client's `port` to the server's port 53, judged (allowed) on the
/// server's interface, begun at `created_ns` and seen just now.
fn udp_session(port: u16, server_ifindex: u32, created_ns: u64) -> (SessionKey, Session) {
    let client: IpAddr = CLIENT_IP.parse().unwrap();
    let server: IpAddr = SERVER_IP.parse().unwrap();
    let key = SessionKey {
        lo_addr: addr_words(server),
        hi_addr: addr_words(client),
        lo_port: 53,
        hi_port: port,
        protocol: proto::UDP,
        _pad: [0; 3],
    };
    let mut s = Session {
        created_ns,
        last_seen_ns: monotonic_ns(),
        packets: [3, 2],
        bytes: [300, 200],
        state: session_state::ESTABLISHED,
        ..Default::default()
    };
    let leg = &mut s.legs[direction::INGRESS as usize];
    leg.ifindex = server_ifindex;
    leg.verdict = verdict::ALLOW;
    (key, s)
}

fn table(agent: &Agent) -> HashMap<MapData, SessionKey, Session> {
    let pinned = MapData::from_pin(agent.opts.maps_dir().join(names::SESSIONS))
        .and_then(Map::from_map_data)
        .unwrap();
    HashMap::try_from(pinned).unwrap()
}

fn start_reports_on(agent: &Agent) -> bool {
    let pinned = MapData::from_pin(agent.opts.maps_dir().join(names::CONFIG))
        .and_then(Map::from_map_data)
        .unwrap();
    let config: Array<MapData, Config> = Array::try_from(pinned).unwrap();
    config.get(&0, 0).unwrap().flags & config_flags::REPORT_START != 0
}

/// The agent's kept flows.
fn flows(agent: &Agent) -> Vec<Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&agent.opts.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"{\"cmd\":\"flows\"}\n").unwrap();
    BufReader::new(s)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// The `active` reports of the client's `port`.
fn active_reports(agent: &Agent, port: u64) -> Vec<Value> {
    flows(agent)
        .into_iter()
        .filter(|f| f["event"] == "active" && f["src_port"] == port)
        .collect()
}

fn seconds(time: &Value) -> f64 {
    let text = time.as_str().unwrap();
    microseg_flowstore::Timestamp::parse(text).unwrap().0 as f64 / 1e6
}

#[test]
fn a_connection_that_lasts_is_reported_again_within_every_active_timeout() {
    let agent = Agent::start_with("exa", &one_rule(), |o| {
        o.flow_active_timeout = Duration::from_secs(2);
    });
    let ifindex = microseg_agent::interfaces::list()[&agent.iface];
    let (key, session) = udp_session(41_001, ifindex, monotonic_ns());
    table(&agent).insert(key, session, 0).unwrap();

    agent.wait_for("three reports of the lasting connection", |a| {
        active_reports(a, 41_001).len() >= 3
    });
    let reports = active_reports(&agent, 41_001);
    for pair in reports.windows(2) {
        let gap = seconds(&pair[1]["time"]) - seconds(&pair[0]["time"]);
        // Within the 2 s timeout, with a walk's scheduling to spare.
        assert!(
            gap > 0.5 && gap <= 2.5,
            "reports {gap:.2} s apart: {reports:?}"
        );
    }
    let first = &reports[0];
    assert_eq!(first["workload"], "server", "{first}");
    assert_eq!(first["verdict"], "allow", "{first}");
    assert_eq!(
        (first["packets"].as_u64(), first["bytes"].as_u64()),
        (Some(5), Some(500))
    );
    assert!(
        !flows(&agent).iter().any(|f| f["event"] == "new"),
        "an allowed connection is not reported at its start"
    );
}

#[test]
fn under_pressure_every_connection_is_reported_before_an_eviction_can_take_it() {
    const CAPACITY: u32 = 1024;
    let agent = Agent::start_with("exp", &one_rule(), |o| {
        o.session_capacity = CAPACITY;
        o.gc_interval = Duration::from_millis(200);
    });
    let ifindex = microseg_agent::interfaces::list()[&agent.iface];
    assert!(!start_reports_on(&agent));
    // 600 young connections: more than half the table, none old enough for an active
    // report (the timeout is 60 s).
    let ports: Vec<u16> = (42_000..42_600).collect();
    let mut sessions = table(&agent);
    let now = monotonic_ns();
    for &port in &ports {
        let (key, session) = udp_session(port, ifindex, now);
        sessions.insert(key, session, 0).unwrap();
    }

    agent.wait_for("start reports on", start_reports_on);
    agent.wait_for("every young connection reported", |a| {
        let seen: BTreeSet<u64> = flows(a)
            .iter()
            .filter(|f| f["event"] == "active")
            .filter_map(|f| f["src_port"].as_u64())
            .collect();
        ports.iter().all(|p| seen.contains(&u64::from(*p)))
    });

    // A flood of new sessions evicts the old ones from the LRU: each was reported.
    for port in 50_000..50_000 + 2 * CAPACITY as u16 {
        let (key, session) = udp_session(port, ifindex, monotonic_ns());
        sessions.insert(key, session, 0).unwrap();
    }
    assert!(
        sessions
            .get(&udp_session(42_000, ifindex, now).0, 0)
            .is_err(),
        "the flood evicted the first connection"
    );

    // Emptied below three eighths, the table is no longer under pressure.
    let keys: Vec<SessionKey> = sessions.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = sessions.remove(&k);
    }
    agent.wait_for("start reports off", |a| !start_reports_on(a));
}
