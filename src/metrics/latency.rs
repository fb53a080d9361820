//! One latency distribution: an HdrHistogram at microsecond resolution (1 µs .. 60 s, 3 significant
//! digits) for quantiles, plus exact counts for fixed Prometheus buckets and an exact sum.
//!
//! Everything sits behind one `Mutex` so that a render sees bucket counts, sum and count that agree
//! (`le="+Inf"` == `_count`). Recording is one uncontended lock, a binary search over ~16 bounds and
//! one HdrHistogram increment (tens of ns); render copies the state out under the lock and does the
//! expensive quantile walk outside it.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest trackable value: 60 s in µs. Larger values are clamped into the top (HDR) but still
/// counted exactly in `+Inf` and `_sum`.
pub const MAX_MICROS: u64 = 60_000_000;

/// Prometheus bucket upper bounds for call-setup latency, in ns, and their `le` label text.
pub const SETUP_BUCKETS: &[(u64, &str)] = &[
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
];

/// Buckets for the media pacer's send lateness: a 20 ms frame clock, so the interesting range is
/// tens of µs to a frame or two.
pub const LATENESS_BUCKETS: &[(u64, &str)] = &[
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_000_000, "0.002"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (20_000_000, "0.02"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
];

pub(crate) struct Latency {
    bounds: &'static [(u64, &'static str)],
    inner: Mutex<Inner>,
}

#[derive(Clone)]
pub(crate) struct Inner {
    pub hist: Histogram<u64>,
    /// Non-cumulative; `bounds.len() + 1` entries, the last is `+Inf`.
    pub buckets: Vec<u64>,
    pub sum_ns: u128,
    pub count: u64,
}

impl Latency {
    pub fn new(bounds: &'static [(u64, &'static str)]) -> Latency {
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid HdrHistogram bounds");
        Latency {
            bounds,
            inner: Mutex::new(Inner { hist, buckets: vec![0; bounds.len() + 1], sum_ns: 0, count: 0 }),
        }
    }

    #[inline]
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let us = (ns / 1_000).min(MAX_MICROS);
        let idx = self.bounds.partition_point(|&(b, _)| b < ns);
        // A poisoned lock only means another thread panicked mid-record; the data is still counts.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.hist.saturating_record(us);
        g.buckets[idx] += 1;
        g.sum_ns += ns as u128;
        g.count += 1;
    }

    /// A consistent copy, taken under the lock.
    pub fn snapshot(&self) -> Inner {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Quantiles of a snapshot, in µs (`None` if empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Inner {
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.count == 0 {
            return None;
        }
        let q = |q: f64| self.hist.value_at_quantile(q);
        Some(LatencySummary {
            count: self.count,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: self.hist.max(),
        })
    }
}
