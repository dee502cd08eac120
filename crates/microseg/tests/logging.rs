//! The daemons' log lines on stderr: a UTC timestamp, the level, the message and
//! key=value fields in text, one JSON object a line with `--log-format json` (no root
//! needed: the controller runs on a loopback port).

mod ctl;

use std::process::Command;
use std::time::Duration;

use ctl::{json, policy, run, Controller, BIN};
use microseg_testsupport::eventually;

/// The complete lines of the controller's log once one holds `what`.
fn lines_once(c: &Controller, what: &str) -> Vec<String> {
    let complete = |log: String| -> Vec<String> {
        log.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| l.trim_end_matches('\n').to_string())
            .collect()
    };
    eventually(Duration::from_secs(20), || {
        let lines = complete(c.log());
        if lines.iter().any(|l| l.contains(what)) {
            Ok(lines)
        } else {
            Err(format!("no {what:?} in the log yet:\n{}", c.log()))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `2026-01-02T03:04:05.123456Z`: RFC 3339 in UTC, to the microsecond.
fn is_utc_timestamp(s: &str) -> bool {
    let pattern = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            p => c == p,
        })
}

fn apply_one_policy(c: &Controller) -> String {
    let file = c.file("p.yaml", &policy("p", 80));
    let (code, _, err) = c.cli(&["policy", "apply", "-f", &file]);
    assert_eq!(code, 0, "{err}");
    file
}

#[test]
fn text_lines_have_a_timestamp_the_level_the_message_and_key_value_fields() {
    let c = Controller::start("log-text");
    let file = apply_one_policy(&c);
    let lines = lines_once(&c, "applied");
    for line in &lines {
        let (timestamp, rest) = line.split_once(' ').unwrap_or((line, ""));
        assert!(is_utc_timestamp(timestamp), "{line}");
        assert!(rest.starts_with("INFO  "), "{line}");
    }
    let port = c.url.rsplit(':').next().unwrap();
    let listening = lines.iter().find(|l| l.contains("listening")).unwrap();
    assert!(
        listening.contains(&format!(" addr=127.0.0.1:{port} "))
            && listening.contains(" mode=\"plain HTTP\" ")
            && listening.ends_with(" revision=0"),
        "{listening}"
    );
    let applied = lines.iter().find(|l| l.contains("applied")).unwrap();
    assert!(
        applied.contains(&format!(" files={file} revision=1 resources=1 changed=1")),
        "{applied}"
    );
}

#[test]
fn json_lines_are_one_object_each_with_the_fields_as_members() {
    // A state dir whose name holds a newline and a terminal escape: still one line each.
    let c = Controller::start_with("log-json\u{1b}[31m\nFAKE", |_| {
        ["--log-format", "json"].map(String::from).to_vec()
    });
    apply_one_policy(&c);
    let lines: Vec<serde_json::Value> = lines_once(&c, "applied").iter().map(|l| json(l)).collect();
    for line in &lines {
        let timestamp = line["timestamp"].as_str().unwrap_or_default();
        assert!(is_utc_timestamp(timestamp), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["message"].is_string(), "{line}");
    }
    let token = lines
        .iter()
        .find(|l| l["message"] == "token created")
        .unwrap();
    let path = token["path"].as_str().unwrap();
    assert!(path.contains("log-json\u{1b}[31m\nFAKE/"), "{token}");
    let listening = lines
        .iter()
        .find(|l| l["message"] == "controller listening (REST and gRPC)")
        .unwrap();
    let port = c.url.rsplit(':').next().unwrap();
    assert_eq!(
        listening["addr"],
        format!("127.0.0.1:{port}"),
        "{listening}"
    );
    assert_eq!(listening["revision"], 0, "{listening}");
    let applied = lines.iter().find(|l| l["message"] == "applied").unwrap();
    let files = applied["files"].as_str().unwrap();
    assert!(files.ends_with("/p.yaml"), "{applied}");
    assert_eq!(applied["revision"], 1, "{applied}");
}

#[test]
fn both_daemons_take_text_or_json_and_nothing_else() {
    for daemon in ["agent", "controller"] {
        let (code, _, err) = run(Command::new(BIN)
            .args([daemon, "--log-format", "xml"])
            .output()
            .unwrap());
        assert_eq!(code, 2, "{daemon}: {err}");
        assert!(
            err.contains("text") && err.contains("json"),
            "{daemon}: {err}"
        );
    }
}
