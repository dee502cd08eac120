//! One behaviour suite, run on every back end against a real server (SQLite in a temp
//! dir, a throw-away PostgreSQL, a throw-away ClickHouse), each test in a database of
//! its own.

mod common;

use common::TempDir;
use microseg_flowstore::{
    open, Cursor, Direction, EdgeWindow, Endpoint, Error, FlowFilter, FlowRecord, FlowStore,
    Labels, Protocol, Timestamp, Verdict,
};

/// Where a test's store lives, kept alive for the test.
pub struct Place {
    pub url: String,
    _dir: Option<TempDir>,
}

async fn sqlite_place() -> Place {
    let dir = TempDir::new("sqlite");
    Place {
        url: dir.0.join("flows.db").display().to_string(),
        _dir: Some(dir),
    }
}

async fn postgres_place() -> Place {
    Place {
        url: common::postgres_url().await,
        _dir: None,
    }
}

async fn clickhouse_place() -> Place {
    Place {
        url: common::clickhouse_url(),
        _dir: None,
    }
}

/// A day far enough from the epoch, at 10:00 UTC.
fn t(minutes: i64) -> Timestamp {
    Timestamp(Timestamp::parse("2026-12-07T10:00:00Z").unwrap().0 + minutes * 60_000_000)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A record of `src` (a workload on n1) to `dst`, identified in the tests by its
/// source port.
fn rec(id: u16, minute: i64, src: &str, dst: &str) -> FlowRecord {
    let end = |name: &str, n: u8| -> (Option<String>, String, Labels) {
        if name.contains('.') {
            (None, name.to_string(), Labels::new())
        } else {
            let app = name.split('-').next().unwrap();
            (
                Some(name.to_string()),
                format!("10.0.0.{n}"),
                labels(&[("app", app), ("netns", name)]),
            )
        }
    };
    let (src_workload, src_ip, src_labels) = end(src, 1);
    let (dst_workload, dst_ip, dst_labels) = end(dst, 2);
    FlowRecord {
        time: t(minute),
        node: "n1".into(),
        workload: src.into(),
        direction: Direction::Egress,
        src_ip,
        dst_ip,
        src_port: id,
        dst_port: 5432,
        protocol: Protocol::TCP,
        verdict: Verdict::Allow,
        policy: Some("db-access".into()),
        rule: Some(0),
        audit_verdict: None,
        audit_policy: None,
        packets: 10,
        bytes: 1000,
        src_workload,
        dst_workload,
        src_labels,
        dst_labels,
        start: t(minute),
        end: None,
    }
}

fn ids(records: &[FlowRecord]) -> Vec<u16> {
    records.iter().map(|r| r.src_port).collect()
}

async fn ids_of(store: &dyn FlowStore, params: &[(&str, &str)]) -> Vec<u16> {
    let f = FlowFilter::from_params(params.iter().copied(), t(600)).unwrap();
    let mut v = ids(&store.query(&f).await.unwrap().records);
    v.sort();
    v
}

/// Ten records that differ in one field each from the first.
fn varied() -> Vec<FlowRecord> {
    let mut v = Vec::new();
    v.push(rec(1, 0, "web-1", "db-1"));
    let mut r = rec(2, 1, "web-1", "db-1");
    r.verdict = Verdict::Deny;
    r.policy = None;
    r.rule = None;
    v.push(r);
    let mut r = rec(3, 2, "web-2", "db-1");
    r.node = "n2".into();
    v.push(r);
    let mut r = rec(4, 3, "api-1", "db-1");
    r.dst_port = 443;
    v.push(r);
    let mut r = rec(5, 4, "web-1", "dns-1");
    r.protocol = Protocol::UDP;
    r.dst_port = 53;
    r.policy = Some("dns".into());
    v.push(r);
    let mut r = rec(6, 5, "web-1", "192.0.2.7");
    r.verdict = Verdict::Audit;
    r.audit_verdict = Some("deny".into());
    r.audit_policy = Some("strict".into());
    v.push(r);
    let mut r = rec(7, 6, "10.9.9.9", "db-1");
    r.workload = "db-1".into();
    r.direction = Direction::Ingress;
    r.verdict = Verdict::Log;
    v.push(r);
    let mut r = rec(8, 7, "web-1", "db-1");
    r.protocol = Protocol(132);
    // Microseconds survive every back end.
    r.time = Timestamp(r.time.0 + 654_321);
    r.end = Some(Timestamp(t(8).0 + 123_457));
    v.push(r);
    v
}

pub async fn filters(place: Place) {
    let store = open(&place.url).await.unwrap();
    store.insert(&varied()).await.unwrap();
    let s = store.as_ref();
    assert_eq!(ids_of(s, &[]).await, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(ids_of(s, &[("verdict", "deny")]).await, [2]);
    assert_eq!(ids_of(s, &[("verdict", "audit")]).await, [6]);
    assert_eq!(ids_of(s, &[("direction", "ingress")]).await, [7]);
    // Either end's workload, or the reporting one.
    assert_eq!(ids_of(s, &[("workload", "web-2")]).await, [3]);
    assert_eq!(ids_of(s, &[("workload", "dns-1")]).await, [5]);
    assert_eq!(ids_of(s, &[("workload", "db-1")]).await, [1, 2, 3, 4, 7, 8]);
    assert_eq!(ids_of(s, &[("port", "443")]).await, [4]);
    assert_eq!(ids_of(s, &[("protocol", "udp")]).await, [5]);
    assert_eq!(ids_of(s, &[("protocol", "132")]).await, [8]);
    assert_eq!(ids_of(s, &[("policy", "dns")]).await, [5]);
    assert_eq!(ids_of(s, &[("node", "n2")]).await, [3]);
    assert_eq!(
        ids_of(
            s,
            &[
                ("since", "2026-12-07T10:02:00Z"),
                ("until", "2026-12-07T10:04:00Z")
            ]
        )
        .await,
        [3, 4, 5]
    );
    assert_eq!(
        ids_of(s, &[("verdict", "allow"), ("node", "n1"), ("port", "5432")]).await,
        [1, 8]
    );
    // Everything read back as written.
    let all = store.query(&FlowFilter::default()).await.unwrap().records;
    assert_eq!(all, varied());
}

pub async fn order_and_limit(place: Place) {
    let store = open(&place.url).await.unwrap();
    // Stored out of time order, across batches, two at the same time.
    let minutes = [5, 1, 9, 3, 7, 9, 2];
    let batch: Vec<FlowRecord> = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| rec(i as u16 + 1, *m, "web-1", "db-1"))
        .collect();
    store.insert(&batch[..4]).await.unwrap();
    store.insert(&batch[4..]).await.unwrap();
    let mut f = FlowFilter {
        limit: 3,
        ..FlowFilter::default()
    };
    // The newest three, oldest first; of equal times, the one stored first first.
    let page = store.query(&f).await.unwrap();
    assert_eq!(ids(&page.records), [5, 3, 6]);
    f.limit = 100;
    assert_eq!(
        ids(&store.query(&f).await.unwrap().records),
        [2, 7, 4, 1, 5, 3, 6]
    );
    f.limit = 2;
    f.until = Some(t(5));
    assert_eq!(ids(&store.query(&f).await.unwrap().records), [4, 1]);
}

pub async fn selectors(place: Place) {
    let store = open(&place.url).await.unwrap();
    let mut batch = vec![
        rec(1, 0, "web-1", "db-1"),
        rec(2, 1, "api-1", "db-1"),
        rec(3, 2, "web-2", "cache-1"),
    ];
    batch[1].dst_labels.insert("env".into(), "prod".into());
    batch[2].src_labels.insert("legacy".into(), "".into());
    // Look-alikes that must not match app=web: other keys ending in app (one with a
    // quote, whose JSON holds "app":"web" after the escape), a value holding a quote and
    // comma, a value that merely starts with web.
    let mut r = rec(4, 3, "x-1", "db-1");
    r.src_labels = labels(&[
        ("myapp", "web"),
        ("x\"app", "web"),
        ("note", "a\",\"app\":\"web"),
    ]);
    batch.push(r);
    let mut r = rec(5, 4, "y-1", "db-1");
    r.src_labels = labels(&[("app", "webby")]);
    batch.push(r);
    store.insert(&batch).await.unwrap();
    let s = store.as_ref();
    assert_eq!(ids_of(s, &[("from", "app=web")]).await, [1, 3]);
    assert_eq!(ids_of(s, &[("from", "app=web,netns=web-2")]).await, [3]);
    assert_eq!(ids_of(s, &[("from", "app!=web")]).await, [2, 4, 5]);
    assert_eq!(ids_of(s, &[("from", "legacy")]).await, [3]);
    assert_eq!(ids_of(s, &[("from", "app,!legacy")]).await, [1, 2, 5]);
    assert_eq!(ids_of(s, &[("to", "app=db,env!=prod")]).await, [1, 4, 5]);
    assert_eq!(ids_of(s, &[("to", "env=prod")]).await, [2]);
    assert_eq!(
        ids_of(s, &[("from", "app=web"), ("to", "app=cache")]).await,
        [3]
    );
}

fn workload(name: &str) -> Endpoint {
    let app = name.split('-').next().unwrap();
    Endpoint::Workload {
        workload: name.into(),
        labels: labels(&[("app", app), ("netns", name)]),
    }
}

pub async fn edges(place: Place) {
    let store = open(&place.url).await.unwrap();
    // One connection reported three times (every active timeout), growing.
    let mut batch = Vec::new();
    for (i, minute) in [0, 1, 2].into_iter().enumerate() {
        let mut r = rec(1000, minute, "web-1", "db-1");
        r.start = t(0);
        r.packets = 10 * (i as u64 + 1);
        r.bytes = 1000 * (i as u64 + 1);
        batch.push(r);
    }
    // Another connection on the same edge, once.
    let mut r = rec(1001, 3, "web-1", "db-1");
    r.packets = 5;
    r.bytes = 500;
    batch.push(r);
    // The same pair, denied: another edge.
    let mut r = rec(1002, 4, "web-1", "db-1");
    r.verdict = Verdict::Deny;
    r.policy = None;
    r.packets = 1;
    r.bytes = 60;
    batch.push(r);
    // To an address that is no workload, twice, and one outside the window.
    batch.push(rec(1003, 5, "web-1", "192.0.2.7"));
    batch.push(rec(1004, 6, "web-1", "192.0.2.7"));
    batch.push(rec(1005, 120, "web-1", "192.0.2.7"));
    // The labels changed: the edge shows the latest.
    let mut r = rec(1006, 7, "api-1", "db-1");
    r.src_labels.insert("version".into(), "2".into());
    batch.push(r);
    // ...in a later batch than the edge's first report.
    store
        .insert(&[rec(1007, 1, "api-1", "db-1")])
        .await
        .unwrap();
    store.insert(&batch).await.unwrap();

    let window = EdgeWindow {
        since: t(0),
        until: Some(t(60)),
    };
    let edges = store.edges(&window).await.unwrap();
    let found: Vec<_> = edges
        .iter()
        .map(|e| {
            (
                e.src.clone(),
                e.dst.clone(),
                e.verdict,
                e.policy.clone(),
                e.connections,
                e.packets,
                e.bytes,
                e.first_seen,
                e.last_seen,
            )
        })
        .collect();
    let mut api = workload("api-1");
    if let Endpoint::Workload { labels, .. } = &mut api {
        labels.insert("version".into(), "2".into());
    }
    let policy = Some("db-access".to_string());
    let ip = Endpoint::Address {
        ip: "192.0.2.7".into(),
    };
    let allow = Verdict::Allow;
    let expected = vec![
        (
            api,
            workload("db-1"),
            allow,
            policy.clone(),
            2,
            20,
            2000,
            t(1),
            t(7),
        ),
        (
            workload("web-1"),
            workload("db-1"),
            allow,
            policy.clone(),
            2,
            35,
            3500,
            t(0),
            t(3),
        ),
        (
            workload("web-1"),
            workload("db-1"),
            Verdict::Deny,
            None,
            1,
            1,
            60,
            t(4),
            t(4),
        ),
        (
            workload("web-1"),
            ip,
            allow,
            policy.clone(),
            2,
            20,
            2000,
            t(5),
            t(6),
        ),
    ];
    assert_eq!(found, expected);
    assert!(edges
        .iter()
        .all(|e| e.protocol == Protocol::TCP && e.dst_port == 5432));
    // The window cuts: only the last re-report of connection 1000 falls in it.
    let late = EdgeWindow {
        since: t(2),
        until: Some(t(3)),
    };
    let edges = store.edges(&late).await.unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!((edges[0].connections, edges[0].packets), (2, 35));
    // No until: up to now.
    let open_ended = EdgeWindow {
        since: t(100),
        until: None,
    };
    let edges = store.edges(&open_ended).await.unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].connections, 1);
}

pub async fn retention(place: Place) {
    let store = open(&place.url).await.unwrap();
    const DAY: i64 = 24 * 60;
    let batch = vec![
        rec(1, -10 * DAY, "web-1", "db-1"),
        rec(2, -8 * DAY, "web-1", "db-1"),
        // The morning of the cut's day: kept (whole days go).
        rec(3, -7 * DAY - 60, "web-1", "db-1"),
        rec(4, -DAY, "web-1", "db-1"),
        rec(5, 0, "web-1", "db-1"),
    ];
    store.insert(&batch).await.unwrap();
    store.expire(t(-7 * DAY)).await.unwrap();
    let left = store.query(&FlowFilter::default()).await.unwrap().records;
    assert_eq!(ids(&left), [3, 4, 5]);
    let edges = store
        .edges(&EdgeWindow {
            since: t(-30 * DAY),
            until: None,
        })
        .await
        .unwrap();
    assert_eq!(edges[0].connections, 3);
    // Again, nothing more to drop.
    store.expire(t(-7 * DAY)).await.unwrap();
    assert_eq!(
        ids(&store.query(&FlowFilter::default()).await.unwrap().records),
        [3, 4, 5]
    );
}

pub async fn follow(place: Place) {
    let store = open(&place.url).await.unwrap();
    store
        .insert(&[rec(1, 0, "web-1", "db-1"), rec(2, 1, "web-1", "db-1")])
        .await
        .unwrap();
    let all = FlowFilter::default();
    let page = store.query(&all).await.unwrap();
    assert_eq!(ids(&page.records), [1, 2]);
    let cursor = page.cursor;
    // Nothing new: nothing, and the cursor stays put.
    let page = store.after(cursor, &all).await.unwrap();
    assert!(page.records.is_empty());
    assert_eq!(page.cursor, cursor);
    // New records come in the order they were stored, even an older time.
    let mut late = rec(4, -5, "web-1", "db-1");
    late.verdict = Verdict::Deny;
    store
        .insert(&[rec(3, 2, "web-1", "db-1"), late, rec(5, 3, "web-1", "db-1")])
        .await
        .unwrap();
    let page = store.after(cursor, &all).await.unwrap();
    assert_eq!(ids(&page.records), [3, 4, 5]);
    let page2 = store.after(page.cursor, &all).await.unwrap();
    assert!(page2.records.is_empty());
    // Filtered, and in pages of the limit.
    let denied = FlowFilter::from_params([("verdict", "deny")], t(0)).unwrap();
    assert_eq!(
        ids(&store.after(cursor, &denied).await.unwrap().records),
        [4]
    );
    let two = FlowFilter {
        limit: 2,
        ..FlowFilter::default()
    };
    let p1 = store.after(cursor, &two).await.unwrap();
    assert_eq!(ids(&p1.records), [3, 4]);
    let p2 = store.after(p1.cursor, &two).await.unwrap();
    assert_eq!(ids(&p2.records), [5]);
    // From the very start.
    let p0 = store.after(Cursor(0), &all).await.unwrap();
    assert_eq!(ids(&p0.records), [1, 2, 3, 4, 5]);
    // The cursor as text round-trips.
    assert_eq!(Cursor::parse(&p2.cursor.to_string()).unwrap(), p2.cursor);
}

pub async fn bad_filters(place: Place) {
    let now = t(0);
    let cases: &[(&str, &str, &str)] = &[
        ("verdict", "maybe", "allow, deny, log, audit"),
        ("direction", "up", "ingress or egress"),
        ("port", "70000", "0-65535"),
        ("protocol", "SCTPX", "TCP, UDP"),
        ("since", "yesterday", "RFC 3339"),
        ("until", "5x", "RFC 3339"),
        ("limit", "0", "1 to"),
        ("limit", "many", "1 to"),
        ("from", "app=we b", "label value"),
        ("to", "a\"pp=web", "label key"),
        ("workload", "", "name"),
        ("colour", "red", "unknown filter"),
    ];
    for (field, value, accepted) in cases {
        let e = FlowFilter::from_params([(*field, *value)], now).unwrap_err();
        assert_eq!(e.field, *field, "{field}={value}: {e}");
        assert!(e.message.contains(accepted), "{field}={value}: {e}");
        assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
    }
    let e = FlowFilter::from_params([("since", "1m"), ("until", "1h")], now).unwrap_err();
    assert_eq!(e.field, "until");
    assert!(Cursor::parse("-1").is_err() && Cursor::parse("x").is_err());
    // A filter built in code is checked by the store too.
    let store = open(&place.url).await.unwrap();
    let f = FlowFilter {
        limit: 0,
        ..FlowFilter::default()
    };
    match store.query(&f).await {
        Err(Error::BadFilter(e)) => assert_eq!(e.field, "limit"),
        other => panic!("limit 0 accepted: {other:?}"),
    }
}

pub async fn reopen(place: Place) {
    let store = open(&place.url).await.unwrap();
    store.insert(&varied()).await.unwrap();
    let before = store.query(&FlowFilter::default()).await.unwrap();
    store.health().await.unwrap();
    drop(store);
    let store = open(&place.url).await.unwrap();
    let again = store.query(&FlowFilter::default()).await.unwrap();
    assert_eq!(again.records, before.records);
    // The sequence goes on past what was stored: a cursor from before still works.
    store.insert(&[rec(99, 30, "web-1", "db-1")]).await.unwrap();
    let page = store
        .after(before.cursor, &FlowFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(&page.records), [99]);
}

macro_rules! suite {
    ($backend:ident, $place:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn filters() {
                super::filters($place().await).await
            }

            #[tokio::test]
            async fn order_and_limit() {
                super::order_and_limit($place().await).await
            }

            #[tokio::test]
            async fn selectors() {
                super::selectors($place().await).await
            }

            #[tokio::test]
            async fn edges() {
                super::edges($place().await).await
            }

            #[tokio::test]
            async fn retention() {
                super::retention($place().await).await
            }

            #[tokio::test]
            async fn follow() {
                super::follow($place().await).await
            }

            #[tokio::test]
            async fn bad_filters() {
                super::bad_filters($place().await).await
            }

            #[tokio::test]
            async fn reopen() {
                super::reopen($place().await).await
            }
        }
    };
}

suite!(sqlite, sqlite_place);
suite!(postgres, postgres_place);
suite!(clickhouse, clickhouse_place);

/// A store that cannot be reached says so, as `Unavailable`, naming where.
#[tokio::test]
async fn unreachable_stores_are_unavailable() {
    let port = common::free_port();
    for url in [
        format!("postgres://postgres@127.0.0.1:{port}/flows"),
        format!("clickhouse://127.0.0.1:{port}/flows"),
        "/nonexistent-dir-for-microseg/flows.db".to_string(),
    ] {
        match open(&url).await {
            Err(e) => {
                assert!(e.is_unavailable(), "{url}: {e}");
                assert!(e.to_string().contains("unavailable"), "{url}: {e}");
            }
            Ok(_) => panic!("{url}: opened"),
        }
    }
    // A URL that names no store is refused as such.
    let e = open("clickhouse://no-port/flows").await.err().unwrap();
    assert!(matches!(e, Error::BadUrl { .. }), "{e}");
    let e = open("mysql://127.0.0.1/flows").await.err().unwrap();
    assert!(matches!(e, Error::BadUrl { .. }), "{e}");
}
