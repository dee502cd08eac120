//! `microseg flows --server`: the flow records the controller stores, queried and followed
//! with the store's filters (docs/FLOWS.md "Queries"), and their table rows.

use std::time::Duration;

use microseg_controller::api_types::FlowPage;
use microseg_controller::client::{encode, Client};
use microseg_flowstore::{FilterError, FlowFilter, FlowRecord, Timestamp, DEFAULT_LIMIT};

use super::output::esc;
use super::{call, client, ClientArgs, CommandError};

/// What `flows --server` asks the controller for.
pub struct RemoteFlows {
    pub client: ClientArgs,
    /// The filters as query parameters, by the names `GET /v1/flows` takes (the flags'
    /// names too).
    pub params: Vec<(&'static str, String)>,
}

/// Checks the filters as the controller's store will, so that a bad value fails before
/// any request: the error names the parameter, which is also the flag.
pub fn check_filters(params: &[(&'static str, String)]) -> Result<(), FilterError> {
    let pairs = params.iter().map(|(k, v)| (*k, v.as_str()));
    FlowFilter::from_params(pairs, Timestamp::now()).map(|_| ())
}

/// Longest pause between attempts while following a controller that fails.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_secs(1);

/// The query's records, oldest first, each given to `each`; with `follow`, then every
/// record stored after them that matches, as it comes, until the reader of stdout goes
/// away. While following, a failure that may pass (unreachable, 5xx) is reported on
/// stderr and retried; a refusal (4xx) ends the command.
pub fn remote_flows(
    q: &RemoteFlows,
    follow: bool,
    mut each: impl FnMut(&FlowRecord),
) -> Result<(), CommandError> {
    let cl = client(&q.client)?;
    let page = fetch(&cl, &q.params, None)?;
    page.items.iter().for_each(&mut each);
    if !follow {
        return Ok(());
    }
    // The first query's limit bounds the backlog only; pages after the cursor have the
    // default size, and a full one is followed at once by the next.
    let params: Vec<_> = q
        .params
        .iter()
        .filter(|(k, _)| *k != "limit")
        .cloned()
        .collect();
    let mut cursor = page.cursor;
    let mut backoff = POLL;
    let mut full = false;
    loop {
        if !full && !pause_unless_reader_gone(backoff) {
            return Ok(());
        }
        match fetch(&cl, &params, Some(&cursor)) {
            Ok(page) => {
                if backoff != POLL {
                    eprintln!("following again");
                    backoff = POLL;
                }
                page.items.iter().for_each(&mut each);
                full = page.items.len() >= DEFAULT_LIMIT;
                cursor = page.cursor;
            }
            Err(e) if e.exit_code() == 2 => return Err(e),
            Err(e) => {
                backoff = (backoff * 2).min(MAX_BACKOFF);
                full = false;
                eprintln!("{} (retrying in {} s)", e.report(), backoff.as_secs());
            }
        }
    }
}

fn fetch(
    cl: &Client,
    params: &[(&'static str, String)],
    after: Option<&str>,
) -> Result<FlowPage, CommandError> {
    let mut query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if let Some(c) = after {
        query.push(format!("after={}", encode(c)));
    }
    let path = if query.is_empty() {
        "/v1/flows".to_string()
    } else {
        format!("/v1/flows?{}", query.join("&"))
    };
    call(cl, "GET", &path, None)
}

/// Waits `d`; false when stdout's reader has gone meanwhile (a closed pipe), which a
/// follow that has nothing new to write would otherwise never notice.
fn pause_unless_reader_gone(d: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        // None asked for: poll reports only an error, a hang-up or a bad descriptor.
        events: 0,
        revents: 0,
    };
    let timeout = d.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, timeout) };
    if n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
        return false;
    }
    if n < 0 {
        // Interrupted: the pause may be short, which is harmless.
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// An address and port as a table shows them: `[fd10::20]:80` for IPv6.
pub fn endpoint(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The header of [`record_line`]'s table.
pub fn record_header() -> String {
    format!(
        "{:<27} {:<12} {:<12} {:<7} {:<44} {:<6} {:<7} {:<20} {:>8} {:>10} END",
        "TIME",
        "NODE",
        "WORKLOAD",
        "DIR",
        "SOURCE -> DESTINATION",
        "PROTO",
        "VERDICT",
        "POLICY/RULE",
        "PACKETS",
        "BYTES"
    )
}

/// One stored record as a table row; every text from the controller escaped.
pub fn record_line(r: &FlowRecord) -> String {
    let text = |s: &str| esc(s).into_owned();
    let mut policy = r.policy.as_deref().map_or("-".into(), text);
    if let Some(rule) = r.rule {
        policy = format!("{policy}[{rule}]");
    }
    if let Some(v) = &r.audit_verdict {
        let p = r.audit_policy.as_deref().map_or("-".into(), text);
        policy = format!("{policy} (audit: {} {p})", text(v));
    }
    let src = endpoint(&text(&r.src_ip), &r.src_port.to_string());
    let dst = endpoint(&text(&r.dst_ip), &r.dst_port.to_string());
    let end = r.end.map_or("open".into(), |t| t.to_string());
    format!(
        "{:<27} {:<12} {:<12} {:<7} {:<44} {:<6} {:<7} {:<20} {:>8} {:>10} {end}",
        r.time.to_string(),
        text(&r.node),
        text(&r.workload),
        r.direction.as_str(),
        format!("{src} -> {dst}"),
        r.protocol.to_string(),
        r.verdict.as_str(),
        policy,
        r.packets,
        r.bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn filters_are_checked_by_the_stores_rules() {
        let ok = params(&[
            ("since", "1h"),
            ("until", "2099-01-01T00:00:00Z"),
            ("verdict", "deny"),
            ("from", "app=web,!legacy"),
            ("port", "5432"),
            ("protocol", "udp"),
            ("limit", "5"),
        ]);
        assert_eq!(check_filters(&ok), Ok(()));
        let e = check_filters(&params(&[("verdict", "maybe")])).unwrap_err();
        assert_eq!(e.field, "verdict");
        assert_eq!(e.message, "\"maybe\": one of allow, deny, log, audit");
        for (k, v) in [
            ("since", "yesterday"),
            ("port", "65536"),
            ("protocol", "tcpx"),
            ("to", "a=b c"),
            ("limit", "0"),
            ("direction", "sideways"),
        ] {
            assert_eq!(check_filters(&params(&[(k, v)])).unwrap_err().field, k);
        }
    }

    #[test]
    fn record_rows_say_open_bracket_ipv6_and_escape_the_controllers_text() {
        let text = r#"{"time":"2026-12-07T10:00:00.000000Z","node":"n\u001b[2J1","workload":"web-1",
            "direction":"egress","src_ip":"fd19::10","dst_ip":"fd19::20","src_port":40000,
            "dst_port":5432,"protocol":"TCP","verdict":"deny","policy":"db\nFAKE","rule":2,
            "audit_verdict":null,"audit_policy":null,"packets":3,"bytes":180,
            "src_workload":"web-1","dst_workload":null,"src_labels":{"app":"web"},
            "dst_labels":{},"start":"2026-12-07T09:59:59.500000Z","end":null}"#;
        let mut r: microseg_flowstore::FlowRecord = serde_json::from_str(text).unwrap();
        let line = record_line(&r);
        assert!(!line.contains('\x1b') && !line.contains('\n'), "{line:?}");
        assert!(
            line.contains("n\\x1b[2J1") && line.contains("db\\nFAKE[2]"),
            "{line}"
        );
        assert!(
            line.contains("[fd19::10]:40000 -> [fd19::20]:5432"),
            "{line}"
        );
        assert!(line.ends_with(" open"), "{line}");
        r.end = Some(r.time);
        assert!(record_line(&r).ends_with(" 2026-12-07T10:00:00.000000Z"));
    }
}
