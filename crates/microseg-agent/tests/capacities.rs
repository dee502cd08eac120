//! The tables' sizes the agent is given are the sizes the kernel made: the session table
//! and the denied tuples' table apart from it (docs/AGENT.md, `--sessions`,
//! `--denied-sessions`).

mod support;

use aya::maps::MapInfo;
use microseg_common::names;
use support::{one_rule, Agent};

#[test]
fn the_session_and_denied_tables_have_the_capacities_asked_for() {
    let agent = Agent::start_with("cap", &one_rule(), |o| {
        o.session_capacity = 2048;
        o.denied_capacity = 512;
    });
    let max_entries = |name: &str| {
        MapInfo::from_pin(agent.opts.maps_dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .max_entries()
    };
    assert_eq!(max_entries(names::SESSIONS), 2048);
    assert_eq!(max_entries(names::DENIED), 512);
}
