//! The local API answers `stats` while a 100,000-rule compile is under way: reads of the
//! counters never wait for the data plane's owner. Needs root (BPF, a veth).

mod support;

use support::{hundred_thousand_rules, one_rule, Agent};

const STATS: &str = r#"{"cmd":"stats"}"#;
const STATUS: &str = r#"{"cmd":"status"}"#;

#[test]
fn stats_are_answered_while_a_100000_rule_compile_is_under_way() {
    let agent = Agent::start("st", &one_rule());
    let idle = agent.request(STATS);
    assert_eq!(idle["revision"], 1, "{idle}");
    assert_eq!(idle["rules"].as_array().map(Vec::len), Some(1), "{idle}");

    agent.write_policy("policy.yaml", &hundred_thousand_rules());
    // The files are read first; then the owner compiles, and `status` says so.
    agent.wait_for("the 100,000-rule update to be under way", |a| {
        let status = a.request(STATUS);
        assert_eq!(
            status["revision"], 1,
            "the update ended before it was seen under way: {status}"
        );
        status["updating"] == true
    });
    let during = agent.request(STATS);
    assert!(during.get("error").is_none(), "{during}");
    // Taken with revision 1 in force: answered before the compile's apply.
    assert_eq!(
        during["revision"],
        1,
        "stats waited for the compile: {}",
        agent.request(STATUS)
    );
    assert_eq!(during["rules"].as_array().map(Vec::len), Some(1));

    // The compile did end, after that answer, and enforced all of it.
    agent.wait_for("revision 2", |a| a.request(STATUS)["revision"] == 2);
    let status = agent.request(STATUS);
    assert_eq!(status["rules"], 100_000, "{status}");
    assert_eq!(status["updating"], false, "{status}");
    assert_eq!(status["workloads"], serde_json::json!(["server"]));
    let after = agent.request(STATS);
    assert_eq!(after["revision"], 2);
    assert_eq!(after["rules"].as_array().map(Vec::len), Some(100_000));
}
