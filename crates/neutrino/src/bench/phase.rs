//! One timed phase: the latencies of what succeeded, what failed, the CPU
//! spent, and the statistics the reports print.

use std::fmt::Display;
use std::time::{Duration, Instant};

use super::machine::CpuSample;

/// A phase gives up after this many failed requests.
pub(super) const MAX_ERRORS: usize = 10;

/// The outcome of one timed phase.
pub(super) struct Phase {
    pub(super) name: String,
    /// Successful requests.
    pub(super) count: usize,
    pub(super) wall: Duration,
    /// Latencies of the successful requests, sorted.
    latencies: Vec<Duration>,
    pub(super) errors: usize,
    pub(super) first_error: Option<String>,
    /// Stopped by the time limit or by errors before its count.
    pub(super) cut_short: bool,
    /// Process CPU time spent during the phase (server and client when the
    /// server runs in this process).
    process_cpu: Duration,
    /// CPU time of the `--server-pid` process during the phase.
    server_cpu: Option<Duration>,
    /// CPU time of the PostgreSQL cluster's processes during the phase.
    database_cpu: Option<Duration>,
    /// Share of the whole machine's CPU that was busy during the phase.
    pub(super) machine_busy: f64,
    /// Response size and item count (list phases).
    pub(super) bytes: Option<usize>,
    pub(super) items: Option<usize>,
}

impl Phase {
    fn new(name: &str, mut latencies: Vec<Duration>, wall: Duration, before: CpuSample) -> Self {
        let after = CpuSample::now();
        latencies.sort();
        let total = after.total_ticks.saturating_sub(before.total_ticks);
        let busy = after.busy_ticks.saturating_sub(before.busy_ticks);
        Phase {
            name: name.to_string(),
            count: latencies.len(),
            wall,
            latencies,
            errors: 0,
            first_error: None,
            cut_short: false,
            process_cpu: after.process.saturating_sub(before.process),
            server_cpu: after.server.zip(before.server).map(|(a, b)| a.saturating_sub(b)),
            database_cpu: after.database.zip(before.database).map(|(a, b)| a.saturating_sub(b)),
            machine_busy: if total == 0 { 0.0 } else { busy as f64 / total as f64 },
            bytes: None,
            items: None,
        }
    }

    pub(super) fn rate(&self) -> f64 {
        if self.wall.is_zero() { 0.0 } else { self.count as f64 / self.wall.as_secs_f64() }
    }

    /// Nearest-rank percentile.
    pub(super) fn pct(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    pub(super) fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    pub(super) fn mean(&self) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }

    /// CPU per successful request: of the `--server-pid` process when
    /// given, else of this process.
    pub(super) fn cpu_per_request(&self) -> Duration {
        let cpu = self.server_cpu.unwrap_or(self.process_cpu);
        if self.count == 0 { Duration::ZERO } else { cpu / self.count as u32 }
    }

    /// CPU of the PostgreSQL cluster per successful request, when measured.
    pub(super) fn database_cpu_per_request(&self) -> Option<Duration> {
        self.database_cpu.map(|cpu| if self.count == 0 { Duration::ZERO } else { cpu / self.count as u32 })
    }
}

/// A phase while it runs: every phase stops at the deadline or after
/// `MAX_ERRORS` failures, and keeps the first error for the report.
#[derive(Default)]
pub(super) struct Tally {
    latencies: Vec<Duration>,
    pub(super) errors: usize,
    first_error: Option<String>,
    cut_short: bool,
}

impl Tally {
    /// Whether the phase must stop before its next request; it then counts
    /// as cut short.
    pub(super) fn must_stop(&mut self, deadline: Instant) -> bool {
        self.must_stop_after(deadline, self.errors)
    }

    /// `must_stop` where the failures are counted elsewhere (shared by
    /// concurrent clients).
    pub(super) fn must_stop_after(&mut self, deadline: Instant, errors: usize) -> bool {
        if Instant::now() > deadline || errors >= MAX_ERRORS {
            self.cut_short = true;
        }
        self.cut_short
    }

    pub(super) fn succeeded(&mut self, latency: Duration) {
        self.latencies.push(latency);
    }

    pub(super) fn failed(&mut self, error: impl Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| error.to_string());
    }

    /// Adds another client's tally to this one; the first error seen first stays.
    pub(super) fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.cut_short |= other.cut_short;
    }

    /// The finished phase; `wall` is taken by the caller before the CPU is
    /// sampled again here.
    pub(super) fn finish(self, name: &str, wall: Duration, before: CpuSample) -> Phase {
        let mut p = Phase::new(name, self.latencies, wall, before);
        (p.errors, p.first_error, p.cut_short) = (self.errors, self.first_error, self.cut_short);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Phase::new("x", lat, Duration::from_secs(1), CpuSample::now());
        assert_eq!(p.pct(50.0), Duration::from_millis(50));
        assert_eq!(p.pct(99.0), Duration::from_millis(99));
        assert_eq!(p.pct(100.0), Duration::from_millis(100));
        assert_eq!(p.max(), Duration::from_millis(100));
    }

    #[test]
    fn a_tally_stops_at_the_error_limit_and_keeps_the_first_error() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut t = Tally::default();
        t.succeeded(Duration::from_millis(2));
        for i in 0..MAX_ERRORS - 1 {
            assert!(!t.must_stop(far));
            t.failed(format!("error {i}"));
        }
        assert!(!t.must_stop(far));
        t.failed("the last straw");
        assert!(t.must_stop(far));
        let mut other = Tally::default();
        other.failed("from another client");
        t.merge(other);
        let p = t.finish("x", Duration::from_secs(1), CpuSample::now());
        assert_eq!((p.count, p.errors, p.cut_short), (1, MAX_ERRORS + 1, true));
        assert_eq!(p.first_error.as_deref(), Some("error 0"));
    }

    #[test]
    fn a_tally_stops_at_the_deadline() {
        let mut t = Tally::default();
        assert!(t.must_stop(Instant::now() - Duration::from_millis(1)));
        let p = t.finish("x", Duration::ZERO, CpuSample::now());
        assert!(p.cut_short);
        assert_eq!(p.rate(), 0.0);
    }
}
