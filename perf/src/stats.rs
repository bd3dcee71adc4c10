//! Job results and latency summaries.

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds with 3 significant digits.
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Largest latency the histogram holds (longer ones saturate here): 10 minutes.
pub const MAX_LATENCY_NS: u64 = 600 * 1_000_000_000;

/// The percentiles of the ladder (bdevperf prints these and more with `-l`).
pub const LADDER: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 99.99];

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            mean: h.mean() / 1000.0,
            min: us(h.min()),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }

    /// The ladder as (percent, microseconds).
    pub fn ladder(&self) -> [(f64, f64); 5] {
        [
            (LADDER[0], self.p50),
            (LADDER[1], self.p90),
            (LADDER[2], self.p99),
            (LADDER[3], self.p99_9),
            (LADDER[4], self.p99_99),
        ]
    }
}

/// What one job (one bdev on one core) measured.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub bdev: String,
    /// Reactor index (position in the core mask) and the CPU it runs on.
    pub core_index: usize,
    pub cpu: usize,
    /// Latency of every successful I/O completed inside the measurement window.
    pub histogram: Histogram<u64>,
    /// Successful I/Os and bytes inside the measurement window.
    pub ios: u64,
    /// How many of `ios` were reads (the rest were writes).
    pub reads: u64,
    pub bytes: u64,
    /// Failed I/Os (any phase).
    pub failed: u64,
    /// Verify: blocks read back with the wrong contents.
    pub mismatches: u64,
    /// Length of the measurement window.
    pub runtime_ns: u64,
    /// Verify: the LBA range this job covered (start, length in blocks).
    pub verify_range: Option<(u64, u64)>,
    /// The first few error messages (failed I/Os, mismatches), each naming its LBA.
    pub errors: Vec<String>,
}

impl JobResult {
    pub fn runtime_s(&self) -> f64 {
        self.runtime_ns as f64 / 1e9
    }

    fn per_second(&self, n: f64) -> f64 {
        if self.runtime_ns == 0 {
            0.0
        } else {
            n / self.runtime_s()
        }
    }

    pub fn iops(&self) -> f64 {
        self.per_second(self.ios as f64)
    }

    pub fn mib_s(&self) -> f64 {
        self.per_second(self.bytes as f64 / (1024.0 * 1024.0))
    }

    pub fn fail_s(&self) -> f64 {
        self.per_second(self.failed as f64)
    }

    pub fn latency(&self) -> LatencySummary {
        LatencySummary::from_histogram(&self.histogram)
    }
}

/// All jobs together.
#[derive(Debug, Clone)]
pub struct Totals {
    pub iops: f64,
    pub mib_s: f64,
    pub fail_s: f64,
    pub ios: u64,
    pub failed: u64,
    pub mismatches: u64,
    /// The longest job window.
    pub runtime_ns: u64,
    pub histogram: Histogram<u64>,
}

impl Totals {
    pub fn of(jobs: &[JobResult]) -> Totals {
        let mut histogram = new_histogram();
        for j in jobs {
            // Same bounds everywhere, so adding cannot fail; saturate just in case.
            if histogram.add(&j.histogram).is_err() {
                for v in j.histogram.iter_recorded() {
                    histogram.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                }
            }
        }
        Totals {
            iops: jobs.iter().map(JobResult::iops).sum(),
            mib_s: jobs.iter().map(JobResult::mib_s).sum(),
            fail_s: jobs.iter().map(JobResult::fail_s).sum(),
            ios: jobs.iter().map(|j| j.ios).sum(),
            failed: jobs.iter().map(|j| j.failed).sum(),
            mismatches: jobs.iter().map(|j| j.mismatches).sum(),
            runtime_ns: jobs.iter().map(|j| j.runtime_ns).max().unwrap_or(0),
            histogram,
        }
    }

    pub fn latency(&self) -> LatencySummary {
        LatencySummary::from_histogram(&self.histogram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(values: &[u64], runtime_ns: u64) -> JobResult {
        let mut h = new_histogram();
        for &v in values {
            h.record(v).unwrap();
        }
        JobResult {
            bdev: "x".into(),
            core_index: 0,
            cpu: 0,
            histogram: h,
            ios: values.len() as u64,
            reads: values.len() as u64,
            bytes: values.len() as u64 * 4096,
            failed: 0,
            mismatches: 0,
            runtime_ns,
            verify_range: None,
            errors: vec![],
        }
    }

    #[test]
    fn summary_and_totals() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 1000).collect(); // 1..1000 us
        let a = job(&values, 1_000_000_000);
        let s = a.latency();
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 1.0, "{s:?}");
        assert!(
            (s.min - 1.0).abs() < 0.01 && (s.max - 1000.0).abs() < 1.0,
            "{s:?}"
        );
        assert!((s.mean - 500.5).abs() < 1.0, "{s:?}");
        assert_eq!(a.iops(), 1000.0);

        let b = job(&[2_000_000], 500_000_000);
        let t = Totals::of(&[a, b]);
        assert_eq!(t.ios, 1001);
        assert_eq!(t.iops, 1002.0);
        assert!((t.latency().max - 2000.0).abs() < 2.0);
        assert_eq!(
            LatencySummary::from_histogram(&new_histogram()),
            LatencySummary::default()
        );
    }
}
