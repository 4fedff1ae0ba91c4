//! Percentiles and summaries of latency samples.

use std::time::Duration;

use serde_json::{Value, json};

/// The `p`th percentile (0..=100) of an ascending slice by the nearest-rank method: the
/// smallest sample such that at least `p`% of the samples are less than or equal to it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Latencies of one measurement, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Self {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let at = |p: f64| percentile(&us, p).unwrap_or(0.0);
        let mean = if us.is_empty() { 0.0 } else { us.iter().sum::<f64>() / us.len() as f64 };
        Summary {
            count: us.len(),
            min: us.first().copied().unwrap_or(0.0),
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: us.last().copied().unwrap_or(0.0),
            mean,
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "min_us": round2(self.min),
            "p50_us": round2(self.p50),
            "p90_us": round2(self.p90),
            "p99_us": round2(self.p99),
            "max_us": round2(self.max),
            "mean_us": round2(self.mean),
        })
    }
}

/// Rounded to two decimals, for JSON that stays readable.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 99.0), Some(10.0));
        assert_eq!(percentile(&ten, 50.0), Some(5.0));
        assert_eq!(percentile(&ten, 51.0), Some(6.0));
    }

    #[test]
    fn percentile_clamps_out_of_range() {
        let v = [1.0, 2.0, 3.0];
        assert_eq!(percentile(&v, -5.0), Some(1.0));
        assert_eq!(percentile(&v, 500.0), Some(3.0));
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let samples: Vec<Duration> = [300u64, 100, 200, 400].iter().map(|us| Duration::from_micros(*us)).collect();
        let s = Summary::of(&samples);
        assert_eq!(s.count, 4);
        assert!((s.min - 100.0).abs() < 1e-6);
        assert!((s.p50 - 200.0).abs() < 1e-6);
        assert!((s.p99 - 400.0).abs() < 1e-6);
        assert!((s.max - 400.0).abs() < 1e-6);
        assert!((s.mean - 250.0).abs() < 1e-6);
    }

    #[test]
    fn summary_of_nothing_is_zero() {
        assert_eq!(Summary::of(&[]), Summary::default());
    }
}
