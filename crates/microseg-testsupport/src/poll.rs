//! Waiting for a condition with a bounded poll.

use std::fmt;
use std::time::{Duration, Instant};

/// How often [`eventually`] looks again.
const INTERVAL: Duration = Duration::from_millis(50);

/// What a poll looks at: done (with a value), or not yet (with what was seen).
pub trait Probe {
    type Value;
    fn outcome(self) -> Result<Self::Value, String>;
}

impl Probe for bool {
    type Value = ();
    fn outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".into())
        }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

/// `Err(seen)`: not yet, and `seen` says what was there instead.
impl<T, E: fmt::Display> Probe for Result<T, E> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// The condition never held: for how long and how often it was looked at, and what the
/// last look saw.
#[derive(Debug, Clone)]
pub struct TimedOut {
    pub waited: Duration,
    pub tries: u32,
    pub last_seen: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not so after {:.1} s ({} looks); last seen: {}",
            self.waited.as_secs_f64(),
            self.tries,
            self.last_seen
        )
    }
}

impl std::error::Error for TimedOut {}

/// Looks at `probe` every 50 ms until it is done or `limit` has passed (it is looked at
/// once more after that). A `bool`, an `Option` or a `Result` whose error says what was
/// seen: `eventually(limit, || cond).expect("what should hold")`.
pub fn eventually<P: Probe>(
    limit: Duration,
    probe: impl FnMut() -> P,
) -> Result<P::Value, TimedOut> {
    eventually_every(INTERVAL, limit, probe)
}

/// [`eventually`], looking every `interval`: short, to catch a state that does not last.
pub fn eventually_every<P: Probe>(
    interval: Duration,
    limit: Duration,
    mut probe: impl FnMut() -> P,
) -> Result<P::Value, TimedOut> {
    let started = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let timed_out = started.elapsed() > limit;
        match probe().outcome() {
            Ok(v) => return Ok(v),
            Err(last_seen) if timed_out => {
                return Err(TimedOut {
                    waited: started.elapsed(),
                    tries,
                    last_seen,
                })
            }
            Err(_) => std::thread::sleep(interval),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_comes_true_is_returned_with_its_value() {
        let mut n = 0;
        let got = eventually(Duration::from_secs(10), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got.unwrap(), 3);
    }

    #[test]
    fn a_condition_that_never_holds_reports_what_was_last_seen() {
        let mut n = 0;
        let err = eventually(Duration::ZERO, || {
            n += 1;
            Err::<(), _>(format!("count {n}"))
        })
        .unwrap_err();
        assert_eq!(err.last_seen, format!("count {}", err.tries));
        assert!(err.to_string().contains("last seen: count"), "{err}");
    }
}
