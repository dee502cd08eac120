//! Medians and how sure a run is of them.
//!
//! A rate here moves ±10 % from one repetition to the next, so a median of 8 ratios can land
//! on either side of a 0.9x line by chance. The targets therefore print, beside each median,
//! a distribution-free confidence interval for it: two order statistics of the sample,
//! chosen so that the true median lies between them with a known probability, whatever the
//! distribution of the ratios (the sign test's binomial argument).

/// The median of the finite values, NaN when there are none.
pub(crate) fn median(v: &[f64]) -> f64 {
    let v = sorted_finite(v);
    let n = v.len();
    match n {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A confidence interval for a median: `[low, high]` holds the true median with
/// probability `coverage`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MedianInterval {
    pub(crate) low: f64,
    pub(crate) high: f64,
    pub(crate) coverage: f64,
}

impl MedianInterval {
    /// Whether the interval lies wholly on one side of `line`: the run resolves a target
    /// there, whichever side its median is on.
    pub(crate) fn excludes(&self, line: f64) -> bool {
        line < self.low || line > self.high
    }
}

/// The narrowest interval between order statistics `x(k)` and `x(n+1-k)` that covers the
/// median with probability at least `min_coverage`; None with fewer than 2 values or when
/// even the full range covers less.
pub(crate) fn median_interval(v: &[f64], min_coverage: f64) -> Option<MedianInterval> {
    let v = sorted_finite(v);
    let n = v.len();
    if n < 2 {
        return None;
    }
    // P(the median lies outside [x(k), x(n+1-k)]) = 2 P(Binomial(n, 1/2) <= k-1).
    let mut best = None;
    let mut below = 0.0; // P(Binomial(n, 1/2) <= k-1), built up term by term
    for k in 1..=n / 2 {
        below += binomial_half(n, k - 1);
        let coverage = 1.0 - 2.0 * below;
        if coverage < min_coverage {
            break;
        }
        best = Some(MedianInterval {
            low: v[k - 1],
            high: v[n - k],
            coverage,
        });
    }
    best
}

/// P(Binomial(n, 1/2) = k), in floating point (n is a few hundred at most here).
fn binomial_half(n: usize, k: usize) -> f64 {
    let mut ln = -(n as f64) * std::f64::consts::LN_2;
    for i in 0..k {
        ln += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    ln.exp()
}

fn sorted_finite(v: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_ignores_failed_measurements() {
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[f64::NAN]).is_nan());
    }

    #[test]
    fn eight_repetitions_give_the_second_lowest_to_the_second_highest_at_93_percent() {
        // Outside [x(2), x(7)]: 2 (C(8,0) + C(8,1)) / 256 = 18/256.
        let v = [0.84, 0.77, 0.94, 0.88, 0.81, 0.90, 0.86, 0.79];
        let i = median_interval(&v, 0.9).unwrap();
        assert_eq!((i.low, i.high), (0.79, 0.90));
        assert!((i.coverage - (1.0 - 18.0 / 256.0)).abs() < 1e-12);
        assert!(!i.excludes(0.9) && i.excludes(0.95) && i.excludes(0.78));
    }

    #[test]
    fn more_repetitions_narrow_the_interval() {
        let many: Vec<f64> = (0..64).map(|i| 0.80 + 0.0025 * i as f64).collect();
        let few = &many[..8];
        let wide = median_interval(few, 0.9).unwrap();
        let narrow = median_interval(&many, 0.9).unwrap();
        assert!(narrow.coverage >= 0.9 && narrow.coverage < 0.95);
        // Relative to each sample's own range, 64 values pin the median down far better.
        let rel = |i: MedianInterval, v: &[f64]| (i.high - i.low) / (v[v.len() - 1] - v[0]);
        assert!(rel(narrow, &many) < 0.3 && rel(wide, few) > 0.7);
    }

    #[test]
    fn too_few_values_have_no_interval() {
        assert_eq!(median_interval(&[1.0], 0.9), None);
        // Two values: the full range covers the median only half the time.
        assert_eq!(median_interval(&[1.0, 2.0], 0.9), None);
        let i = median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.9).unwrap();
        assert_eq!((i.low, i.high, i.coverage), (1.0, 5.0, 1.0 - 2.0 / 32.0));
    }
}
