//! The flow exporter's walk of the session table, as IPFIX exporters use active and idle
//! timeouts: the kernel reports an allowed connection once, when it ends (and anything
//! else at once); this walk reports every connection that lasts, again at least every
//! active timeout, ends the idle ones, and turns start reports on while the table is under
//! pressure, so that an LRU eviction cannot take a connection before it was reported.
//! docs/FLOWS.md says when records are made.

use std::time::Duration;

use microseg_common::{event_kind, FlowEvent, Session, SessionKey};
use microseg_dataplane::sessions::{end_event, monotonic_ns, Timeouts};

use crate::background::keep_flows;
use crate::handle::DataPlaneHandle;

type Sessions = Vec<(SessionKey, Session)>;

/// The exporter's settings.
#[derive(Clone, Copy, Debug)]
pub struct ExportOptions {
    /// A lasting connection is reported again at least this often.
    pub active_timeout: Duration,
    /// Report every connection at its start too (debugging; costs an event per leg).
    pub report_start: bool,
    /// How often the table is walked (idle expiry and active reports), at most.
    pub walk_interval: Duration,
    /// The session table's size, for the pressure check.
    pub capacity: usize,
}

impl ExportOptions {
    /// The walk runs at least four times per active timeout, and at most every `gc`.
    pub fn new(
        active_timeout: Duration,
        report_start: bool,
        gc: Duration,
        capacity: u32,
    ) -> ExportOptions {
        let walk_interval = (active_timeout / 4).min(gc).max(Duration::from_millis(100));
        ExportOptions {
            active_timeout,
            report_start,
            walk_interval,
            capacity: capacity as usize,
        }
    }

    /// Reports are made when a session's age crosses a multiple of this: the active
    /// timeout less one walk, so that two reports are never further apart than the timeout.
    fn report_period_ns(&self) -> u64 {
        let period = self.active_timeout.saturating_sub(self.walk_interval);
        period.max(self.walk_interval).as_nanos() as u64
    }

    /// Under pressure from half full: the kernel's LRU evicts only when fewer free entries
    /// are left than its per-CPU caches hold (128 each), far above half.
    fn pressure_on(&self) -> usize {
        self.capacity / 2
    }

    /// Pressure ends below three eighths, so that a table near half full does not flip it.
    fn pressure_off(&self) -> usize {
        self.capacity * 3 / 8
    }
}

/// The walk's state between two walks.
pub struct Exporter {
    opts: ExportOptions,
    timeouts: Timeouts,
    /// Monotonic time of the last walk.
    last_walk_ns: Option<u64>,
    /// Start reports are on because the table is under pressure.
    pressure: bool,
    /// Sessions in the table at the last walk, and the kernel's creations counter then:
    /// between walks, the table's fill is estimated from new creations.
    sessions_at_walk: usize,
    created_at_walk: u64,
}

impl Exporter {
    pub fn new(opts: ExportOptions) -> Exporter {
        Exporter {
            opts,
            timeouts: Timeouts::default(),
            last_walk_ns: None,
            pressure: false,
            sessions_at_walk: 0,
            created_at_walk: 0,
        }
    }

    /// Walks the table every walk interval, and at once when the sessions created since
    /// the last walk may have brought it under pressure. Start reports are set as
    /// configured first (a previous agent may have left them on).
    pub async fn run(mut self, state: DataPlaneHandle) {
        state.set_report_start(self.opts.report_start);
        let check = self.opts.walk_interval.min(Duration::from_secs(1));
        let mut tick = tokio::time::interval(check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = monotonic_ns();
            let due = self
                .last_walk_ns
                .is_none_or(|t| now.saturating_sub(t) >= self.opts.walk_interval.as_nanos() as u64);
            if due || self.may_be_pressed(&state).await {
                self.walk(&state, now).await;
            }
        }
    }

    /// Whether the sessions created since the last walk could have filled the table to the
    /// pressure mark (an upper bound: some have ended since).
    async fn may_be_pressed(&self, state: &DataPlaneHandle) -> bool {
        if self.pressure || self.opts.report_start {
            return false;
        }
        let Ok(stats) = state.kernel_stats().await else {
            return false;
        };
        let created = stats.sessions_created.saturating_sub(self.created_at_walk);
        self.sessions_at_walk + created as usize >= self.opts.pressure_on()
    }

    /// One walk at `now_ns`: ends the idle sessions, sets the pressure mode, reports the
    /// lasting ones. Returns how many sessions it expired. The table is read a batch at a
    /// time: only the expired sessions and the reports are kept, not a copy of it.
    pub async fn walk(&mut self, state: &DataPlaneHandle, now_ns: u64) -> usize {
        // Taken before the table is read: see `report_stamp`.
        let stamp = report_stamp(now_ns);
        if let Ok(stats) = state.kernel_stats().await {
            self.created_at_walk = stats.sessions_created;
        }
        let prev = self
            .last_walk_ns
            .unwrap_or(now_ns.saturating_sub(self.opts.walk_interval.as_nanos() as u64));
        let period = self.opts.report_period_ns();
        let timeouts = self.timeouts;
        let scan = state
            .scan_sessions(move |table| {
                let mut scan = Scan::default();
                table.for_each(|k, s| {
                    if is_idle(&timeouts, k, s, now_ns) {
                        scan.expired.push((*k, *s));
                        return;
                    }
                    scan.live += 1;
                    if !all_legs_ended(s) && crossed(s.created_ns, prev, now_ns, period) {
                        scan.reports.extend(active_event(k, s, stamp));
                    }
                });
                scan
            })
            .await;
        let removed = expire(state, &scan.expired).await;
        let mut reports = scan.reports;
        if self.update_pressure(state, scan.live).await {
            // Entering pressure (rare): every young connection not reported yet, in a second
            // pass, so that the first keeps no list of them.
            let young = state
                .scan_sessions(move |table| {
                    let mut events = Vec::new();
                    table.for_each(|k, s| {
                        let young = now_ns.saturating_sub(s.created_ns) < period;
                        if young
                            && !is_idle(&timeouts, k, s, now_ns)
                            && !all_legs_ended(s)
                            && !crossed(s.created_ns, prev, now_ns, period)
                        {
                            events.extend(active_event(k, s, stamp));
                        }
                    });
                    events
                })
                .await;
            reports.extend(young);
        }
        keep_flows(state, reports.into_iter());
        self.sessions_at_walk = scan.live;
        self.last_walk_ns = Some(now_ns);
        removed
    }

    /// Turns start reports on at the pressure mark and off below the lower one; true when
    /// they were just turned on (the sessions not yet reported are then reported at once).
    async fn update_pressure(&mut self, state: &DataPlaneHandle, sessions: usize) -> bool {
        if self.opts.report_start {
            return false;
        }
        if !self.pressure && sessions >= self.opts.pressure_on() {
            self.pressure = true;
            tracing::warn!(
                sessions,
                capacity = self.opts.capacity,
                "the session table is half full: connections are reported at their start until it is below three eighths"
            );
            state.set_report_start(true);
            return true;
        }
        if self.pressure && sessions < self.opts.pressure_off() {
            self.pressure = false;
            tracing::info!(sessions, "the session table has room again");
            state.set_report_start(false);
        }
        false
    }
}

/// Whether the session's age crossed a multiple of `period` between `prev` and `now`: a
/// connection is reported once per period, without the walk remembering which it reported.
fn crossed(start: u64, prev: u64, now: u64, period: u64) -> bool {
    now.saturating_sub(start) / period > prev.saturating_sub(start) / period
}

fn all_legs_ended(s: &Session) -> bool {
    s.present_legs().all(|(_, l)| l.has_ended())
}

/// What one pass over the table found.
#[derive(Default)]
struct Scan {
    /// Sessions idle past their timeout: removed, and reported as ended.
    expired: Sessions,
    /// How many sessions are left.
    live: usize,
    /// Active reports due.
    reports: Vec<FlowEvent>,
}

fn is_idle(timeouts: &Timeouts, key: &SessionKey, s: &Session, now_ns: u64) -> bool {
    now_ns.saturating_sub(s.last_seen_ns) > timeouts.for_session(key, s).as_nanos() as u64
}

/// A report of the whole connection (both local legs) as of `now_ns`.
/// When a walk's reports say they were made: a microsecond before the coarse clock's
/// reading as the walk begins (and never after `now_ns`). The kernel stamps a connection's
/// end with that coarse clock, which lags the precise one by up to a tick: stamped with the
/// precise clock, a report read just before a connection closed could sort after its end.
fn report_stamp(now_ns: u64) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let coarse = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    now_ns.min(coarse).saturating_sub(1_000)
}

fn active_event(key: &SessionKey, s: &Session, now_ns: u64) -> Option<FlowEvent> {
    let (leg, _) = s.present_legs().next()?;
    let mut e = FlowEvent::default();
    e.fill_from_session(event_kind::ACTIVE, key, s, leg as usize, now_ns);
    Some(e)
}

/// Removes idle sessions, reporting each as ended. Returns how many went.
async fn expire(state: &DataPlaneHandle, expired: &[(SessionKey, Session)]) -> usize {
    if expired.is_empty() {
        return 0;
    }
    let keys = expired.iter().map(|(k, _)| *k).collect();
    match state.remove_sessions(keys).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            tracing::warn!(error = %e, "session expiry failed");
            return 0;
        }
        None => return 0, // the owner has stopped: the agent is ending
    }
    let ended = expired.iter().filter_map(|(k, s)| end_event(k, s));
    keep_flows(state, ended);
    expired.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_connection_is_reported_once_per_period_whatever_the_walks() {
        // Walks every 10 s from t = 0, period 50 s, session started at t = 3 s.
        let reports: Vec<u64> = (1..=20)
            .filter(|w| crossed(3 * S, (w - 1) * 10 * S, w * 10 * S, 50 * S))
            .map(|w| w * 10)
            .collect();
        assert_eq!(reports, [60, 110, 160]);
        // A session that began after the previous walk is never reported by the next.
        assert!(!crossed(15 * S, 10 * S, 20 * S, 50 * S));
    }

    #[test]
    fn two_reports_are_never_further_apart_than_the_active_timeout() {
        let o = ExportOptions::new(
            Duration::from_secs(60),
            false,
            Duration::from_secs(10),
            1024,
        );
        assert_eq!(o.walk_interval, Duration::from_secs(10));
        assert_eq!(o.report_period_ns(), 50 * S);
        let short =
            ExportOptions::new(Duration::from_secs(2), false, Duration::from_secs(10), 1024);
        assert_eq!(short.walk_interval, Duration::from_millis(500));
        assert_eq!(short.report_period_ns(), 1_500_000_000);
        assert_eq!((o.pressure_on(), o.pressure_off()), (512, 384));
    }
}
