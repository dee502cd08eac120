//! A stored row that does not read back names the field and its stored value, as a
//! typed error a caller can tell from an unreachable store. SQLite, written to behind
//! the store's back.

use microseg_flowstore::{
    open, Direction, EdgeWindow, Error, FlowFilter, FlowRecord, Labels, Protocol, RowError,
    Timestamp, Verdict,
};
use microseg_testsupport::TempDir;

fn record(start: Timestamp) -> FlowRecord {
    let labels: Labels = [("app".to_string(), "web".to_string())].into();
    FlowRecord {
        time: start,
        node: "n1".into(),
        workload: "web-1".into(),
        direction: Direction::Egress,
        src_ip: "10.0.0.1".into(),
        dst_ip: "10.0.0.2".into(),
        src_port: 40000,
        dst_port: 5432,
        protocol: Protocol(6),
        verdict: Verdict::Allow,
        policy: Some("db".into()),
        rule: Some(0),
        audit_verdict: None,
        audit_policy: None,
        packets: 3,
        bytes: 180,
        src_workload: Some("web-1".into()),
        dst_workload: Some("db-1".into()),
        src_labels: labels.clone(),
        dst_labels: labels,
        start,
        end: None,
    }
}

/// Stores one good record, then breaks its row with `update` (SQL) and reads it back.
async fn read_after(update: &str) -> (Error, Error) {
    let dir = TempDir::new("corrupt-rows");
    let path = dir.0.join("flows.db").display().to_string();
    let start = Timestamp::parse("2026-12-07T10:00:00Z").unwrap();
    let store = open(&path).await.unwrap();
    store.insert(&[record(start)]).await.unwrap();
    let window = EdgeWindow {
        since: start,
        until: None,
    };
    assert_eq!(store.edges(&window).await.unwrap().len(), 1);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(update, [])
        .unwrap();
    let query = store.query(&FlowFilter::default()).await.unwrap_err();
    let edges = store.edges(&window).await.unwrap_err();
    (query, edges)
}

#[tokio::test]
async fn an_unknown_verdict() {
    let (query, edges) = read_after("UPDATE flows SET verdict = 'maybe'").await;
    for e in [query, edges] {
        assert_eq!(
            e.to_string(),
            "sqlite flow store: stored row verdict \"maybe\""
        );
        assert!(!e.is_unavailable());
        let Error::BadRow {
            source: RowError::Unknown { field, value },
            ..
        } = e
        else {
            panic!("{e:?}");
        };
        assert_eq!((field, value.as_str()), ("verdict", "maybe"));
    }
}

#[tokio::test]
async fn a_port_out_of_range() {
    let (query, edges) = read_after("UPDATE flows SET dst_port = 70000").await;
    for e in [query, edges] {
        assert_eq!(
            e.to_string(),
            "sqlite flow store: stored row dst_port 70000 out of range"
        );
        assert!(
            matches!(
                e,
                Error::BadRow {
                    source: RowError::OutOfRange {
                        field: "dst_port",
                        value: 70000
                    },
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn labels_that_are_not_json() {
    let (query, edges) = read_after("UPDATE flows SET src_labels = '{app'").await;
    for e in [query, edges] {
        let Error::BadRow {
            source: RowError::Labels { field, text, .. },
            ..
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!((*field, text.as_str()), ("src_labels", "{app"));
        assert!(
            e.to_string()
                .starts_with("sqlite flow store: stored row src_labels \"{app\": "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
