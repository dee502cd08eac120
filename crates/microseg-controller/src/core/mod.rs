//! What the controller does, independent of how it is asked: the stored resources as the
//! API and the agents see them (`resources.rs`; apply and delete: `apply.rs`), the
//! workloads agents report (`report.rs`), and what is known of the nodes: their sync
//! state, open streams and recent flows (`nodes.rs`).

mod nodes;
mod report;
mod resources;

pub use crate::flows::{parse_duration, FlowQuery, Flows};
pub use report::{MAX_REPORTED_WORKLOADS, MAX_WORKLOAD_ADDRESSES};
pub use resources::for_node;

use crate::store::{publish, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(unix: f64) -> String {
    let ms = (unix * 1000.0).round() as i64;
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

pub struct Core {
    pub store: Arc<dyn Store>,
    /// The newest revision known (local writes and, via the store, other controllers').
    pub rev: Arc<watch::Sender<u64>>,
    pub flows: Mutex<Flows>,
    /// Nodes with an open Sync stream to this controller, and how many.
    pub streams: Mutex<BTreeMap<String, usize>>,
    pub shutdown: watch::Receiver<bool>,
}

impl Core {
    pub fn new(
        store: Arc<dyn Store>,
        rev: Arc<watch::Sender<u64>>,
        flow_buffer: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Core {
        Core {
            store,
            rev,
            flows: Mutex::new(Flows::new(flow_buffer)),
            streams: Mutex::new(BTreeMap::new()),
            shutdown,
        }
    }

    pub(crate) fn published(&self, rev: u64) -> u64 {
        publish(&self.rev, rev);
        rev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000.5), "2026-11-18T11:06:40.500Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00.000Z");
    }
}
