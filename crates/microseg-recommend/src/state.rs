//! Where a recommended policy stands in its lifecycle, from when its evidence first
//! appeared (docs/RECOMMEND.md "Lifecycle"): new paths still appearing (learning), none
//! for half the quiet period (stabilizing), none for the whole of it (stable).

use std::time::Duration;

use microseg_flowstore::Timestamp;

use crate::Recommendation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Learning,
    Stabilizing,
    Stable,
}

/// Per proposed policy (in name order), its state at `now`: by the last time a path it
/// allows was first observed (the newest `first_seen` of its edges).
pub fn policy_states(
    rec: &Recommendation,
    now: Timestamp,
    quiet: Duration,
) -> Vec<(String, State)> {
    let quiet_us = i64::try_from(quiet.as_micros()).unwrap_or(i64::MAX);
    rec.policies
        .iter()
        .map(|p| {
            let newest = p
                .ingress
                .iter()
                .chain(&p.egress)
                .map(|e| e.newest)
                .max()
                .unwrap_or(Timestamp(i64::MIN));
            let age = now.0.saturating_sub(newest.0);
            let state = if age >= quiet_us {
                State::Stable
            } else if age >= quiet_us / 2 {
                State::Stabilizing
            } else {
                State::Learning
            };
            (p.policy.name.clone(), state)
        })
        .collect()
}
