//! Two controllers on one PostgreSQL, the simulated nodes split between them
//! (docs/FLEETSIM.md "Several controllers"): every node on either controller acks every
//! change applied through controller 0, and after controller 0 restarts its nodes resync
//! while controller 1's keep their links.
//!
//! Runs the `microseg` binary of this target dir (`cargo build -p microseg` first) or the
//! one `MICROSEG_BIN` names, and a throw-away PostgreSQL (Debian's `postgresql`).

use std::path::PathBuf;
use std::process::Command;

use microseg_testsupport::Postgres;
use serde_json::Value;

const NODES: u64 = 6;
const CHANGES: usize = 3;

fn microseg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MICROSEG_BIN") {
        return PathBuf::from(p);
    }
    // This test runs from target/<profile>/deps.
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .join("microseg");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p microseg` first, or set MICROSEG_BIN",
        bin.display()
    );
    bin
}

#[test]
fn both_controllers_nodes_ack_every_change_and_resync_after_a_restart() {
    let pg = Postgres::start();
    let db = pg.database("fleet");
    let out = Command::new(env!("CARGO_BIN_EXE_microseg-fleetsim"))
        .arg("--start-controller")
        .arg(microseg_bin())
        .args(["--db", &db, "--controllers", "2"])
        .args(["--nodes", &NODES.to_string(), "--workloads", "5"])
        .args(["--changes", &CHANGES.to_string(), "--change-timeout", "20"])
        .args(["--startup-timeout", "60", "--timeout", "240"])
        .args(["--reconnect-storm-at", "0", "--storm-restart", "-o", "json"])
        .output()
        .expect("run microseg-fleetsim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout}\nstderr {stderr}"));
    let show = || format!("{r:#}\nstderr: {stderr}");
    assert!(r["failure"].is_null(), "failed: {}", show());
    assert!(out.status.success(), "{}", show());
    assert!(r["startup"]["all_in_sync_s"].is_number(), "{}", show());

    let items = r["changes"]["items"].as_array().expect("changes");
    assert_eq!(items.len(), CHANGES, "{}", show());
    for c in items {
        // Controller 1's nodes hear of a change only through the database (NOTIFY or
        // its poll): without that they never ack it and this fails.
        assert_eq!(c["nodes_acked"], NODES, "{}", show());
        assert_eq!(
            c["nodes_acked_by_controller"],
            serde_json::json!([3, 3]),
            "{c}"
        );
        let each = c["last_ack_by_controller_ms"]
            .as_array()
            .expect("per controller");
        assert!(each.iter().all(Value::is_number), "{c}");
    }
    let ctls = r["controllers"].as_array().expect("per-controller figures");
    assert_eq!(ctls.len(), 2, "{}", show());
    for c in ctls {
        assert_eq!(c["nodes"], 3, "{c}");
        assert!(c["last_ack_p99_ms"].is_number(), "{c}");
        assert!(c["peak_rss_bytes"].as_u64().unwrap_or(0) > 0, "{c}");
    }
    assert_ne!(ctls[0]["addr"], ctls[1]["addr"]);

    let storm = &r["storm"];
    assert_eq!(storm["restarted_controller"], 0, "{}", show());
    assert_eq!(storm["nodes_dropped"], NODES / 2, "{}", show());
    assert_eq!(storm["nodes_resynced"], NODES / 2, "{}", show());
    assert!(storm["all_in_sync_s"].is_number(), "{}", show());
    assert_eq!(storm["errors_after_restart"], 0, "{}", show());
}
