//! Latency summaries for `dyno bench`: nearest-rank percentiles over measured durations.
//!
//! Nearest rank: the p-th percentile of n sorted samples is the sample at 1-based rank
//! `ceil(p/100 × n)` (at least 1). It is always one of the measured values, never an
//! interpolation, so a p99 over 200 runs is the 198th fastest run.

use std::time::Duration;

/// Milliseconds, as `f64`, of a set of samples. `count` is the number of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub count: usize,
}

/// Summarises `samples` (in any order). An empty slice gives all zeros and `count: 0`: callers
/// that print ratios must check `count` (or a zero denominator) themselves.
pub fn summarize(samples: &[Duration]) -> Summary {
    if samples.is_empty() {
        return Summary {
            p50_ms: 0.0,
            p99_ms: 0.0,
            mean_ms: 0.0,
            max_ms: 0.0,
            count: 0,
        };
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let total: Duration = sorted.iter().sum();
    Summary {
        p50_ms: ms(nearest_rank(&sorted, 50)),
        p99_ms: ms(nearest_rank(&sorted, 99)),
        mean_ms: ms(total) / sorted.len() as f64,
        max_ms: ms(sorted[sorted.len() - 1]),
        count: sorted.len(),
    }
}

/// The median (nearest rank, as [`summarize`]'s p50), smallest and largest of `values` (all
/// zeros for none): for figures that are not durations, such as shares and ratios.
pub fn median_min_max(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    match (sorted.first(), sorted.last()) {
        (Some(&min), Some(&max)) => (sorted[sorted.len().div_ceil(2) - 1], min, max),
        _ => (0.0, 0.0, 0.0),
    }
}

/// Milliseconds as the `key=value` lines give them: three decimals.
pub fn ms_text(ms: f64) -> String {
    format!("{ms:.3}")
}

/// `a / b` as the `key=value` lines give ratios: two decimals, `nan` when `b` is not positive
/// (no samples).
pub fn ratio_text(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "nan".into()
    }
}

/// The `percent`-th percentile (1..=100) of non-empty, ascending `sorted`, by nearest rank.
/// Integer arithmetic: `ceil(percent × n / 100)` without floating-point rounding surprises.
fn nearest_rank(sorted: &[Duration], percent: usize) -> Duration {
    let n = sorted.len();
    let rank = (percent * n).div_ceil(100).clamp(1, n);
    sorted[rank - 1]
}

/// Nanoseconds divided by 1e6 (one correctly rounded division): whole and half milliseconds
/// come out exact, which `as_secs_f64() * 1e3` (two roundings) does not promise.
fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn empty_is_all_zeros() {
        assert_eq!(
            summarize(&[]),
            Summary {
                p50_ms: 0.0,
                p99_ms: 0.0,
                mean_ms: 0.0,
                max_ms: 0.0,
                count: 0
            }
        );
    }

    #[test]
    fn one_sample_is_every_statistic() {
        let s = summarize(&millis([7]));
        assert_eq!(
            (s.p50_ms, s.p99_ms, s.mean_ms, s.max_ms, s.count),
            (7.0, 7.0, 7.0, 7.0, 1)
        );
    }

    #[test]
    fn one_to_ten_shuffled() {
        // Ranks: p50 → ceil(5.0) = 5th, p99 → ceil(9.9) = 10th.
        let s = summarize(&millis([3, 9, 1, 10, 5, 7, 2, 8, 6, 4]));
        assert_eq!(s.p50_ms, 5.0);
        assert_eq!(s.p99_ms, 10.0);
        assert_eq!(s.mean_ms, 5.5);
        assert_eq!(s.max_ms, 10.0);
        assert_eq!(s.count, 10);
    }

    #[test]
    fn one_to_hundred_and_to_two_hundred() {
        // n = 100: p50 → 50th, p99 → 99th (not 100th: 0.99 × 100 must not round up).
        let s = summarize(&millis((1..=100).rev()));
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(s.mean_ms, 50.5);
        // n = 200: p50 → 100th, p99 → 198th.
        let s = summarize(&millis(1..=200));
        assert_eq!(
            (s.p50_ms, s.p99_ms, s.max_ms, s.count),
            (100.0, 198.0, 200.0, 200)
        );
    }

    #[test]
    fn odd_count_and_outlier() {
        // n = 3: p50 → ceil(1.5) = 2nd; p99 → ceil(2.97) = 3rd. The outlier moves the mean only.
        let s = summarize(&millis([1, 1000, 2]));
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (2.0, 1000.0, 1000.0));
        assert_eq!(s.mean_ms, 1003.0 / 3.0);
        // n = 101: p99 → ceil(99.99) = 100th.
        let s = summarize(&millis(1..=101));
        assert_eq!((s.p50_ms, s.p99_ms), (51.0, 100.0));
    }

    #[test]
    fn median_min_max_by_nearest_rank() {
        assert_eq!(median_min_max(&[]), (0.0, 0.0, 0.0));
        assert_eq!(median_min_max(&[2.5]), (2.5, 2.5, 2.5));
        // n = 4: the median is the 2nd (ceil(2.0)), as summarize's p50.
        assert_eq!(median_min_max(&[4.0, 1.0, 3.0, 2.0]), (2.0, 1.0, 4.0));
        assert_eq!(median_min_max(&[0.3, -1.0, 9.0]), (0.3, -1.0, 9.0));
    }

    #[test]
    fn texts_for_key_value_lines() {
        assert_eq!(ms_text(1.23456), "1.235");
        assert_eq!(ms_text(0.0), "0.000");
        assert_eq!(ratio_text(30.0, 2.5), "12.00");
        assert_eq!(ratio_text(1.0, 3.0), "0.33");
        assert_eq!(ratio_text(1.0, 0.0), "nan");
    }

    #[test]
    fn sub_millisecond_precision() {
        let s = summarize(&[Duration::from_micros(250), Duration::from_micros(1_500)]);
        assert_eq!((s.p50_ms, s.p99_ms, s.mean_ms), (0.25, 1.5, 0.875));
    }
}
