//! Counters and latency histograms per function, rendered in the Prometheus
//! text format for `GET /metrics`.

use crate::store::Status;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 14] = [0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += s;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, function: &str) {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{function=\"{function}\",le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{function=\"{function}\",le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{function=\"{function}\"}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{function=\"{function}\"}} {}", self.count);
    }
}

#[derive(Default, Clone)]
struct FnMetrics {
    succeeded: u64,
    failed: u64,
    timeouts: u64,
    rejected: u64,
    cold: u64,
    warm: u64,
    /// Request (or dequeue) to answer.
    latency: Histogram,
    /// The function's own run, start to exit.
    run: Histogram,
}

/// A per-function counter: its name, help text and value.
type Counter = (&'static str, &'static str, fn(&FnMetrics) -> u64);

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<HashMap<String, FnMetrics>>,
    /// Requests refused by the access control, by reason.
    denied: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one invocation of `function` that ended with `status`.
    pub fn observe(&self, function: &str, status: Status, warm: bool, latency: Duration, run: Duration) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let f = m.entry(function.to_string()).or_default();
        match status {
            Status::Succeeded => f.succeeded += 1,
            Status::Timeout => f.timeouts += 1,
            _ => f.failed += 1,
        }
        if warm {
            f.warm += 1
        } else {
            f.cold += 1
        }
        f.latency.observe(latency);
        f.run.observe(run);
    }

    /// Counts a call refused with 429.
    /// Counts a request the access control refused (`reason`: missing,
    /// invalid, revoked, forbidden, throttled; never the credentials).
    pub fn denied(&self, reason: &'static str) {
        *self.denied.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
    }

    pub fn rejected(&self, function: &str) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).entry(function.to_string()).or_default().rejected += 1;
    }

    pub fn render(&self, pools: &[(String, usize)], queued: usize, running: u32, cleanup: usize) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut names: Vec<&String> = m.keys().collect();
        names.sort();
        let mut out = String::new();
        out.push_str(
            "# HELP strata_fn_invocations_total Invocations by outcome.\n# TYPE strata_fn_invocations_total counter\n",
        );
        for n in &names {
            let f = &m[*n];
            for (outcome, v) in
                [("success", f.succeeded), ("error", f.failed), ("timeout", f.timeouts), ("rejected", f.rejected)]
            {
                let _ = writeln!(out, "strata_fn_invocations_total{{function=\"{n}\",outcome=\"{outcome}\"}} {v}");
            }
        }
        let counters: [Counter; 4] = [
            ("strata_fn_errors_total", "Invocations that failed (non-zero exit or no run).", |f| f.failed),
            ("strata_fn_timeouts_total", "Invocations stopped at their timeout.", |f| f.timeouts),
            ("strata_fn_cold_starts_total", "Invocations that had to create their container.", |f| f.cold),
            ("strata_fn_warm_starts_total", "Invocations that took a container from the warm pool.", |f| f.warm),
        ];
        for (metric, help, value) in counters {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for n in &names {
                let _ = writeln!(out, "{metric}{{function=\"{n}\"}} {}", value(&m[*n]));
            }
        }
        out.push_str("# HELP strata_fn_latency_seconds From request received to answer ready.\n# TYPE strata_fn_latency_seconds histogram\n");
        for n in &names {
            m[*n].latency.render(&mut out, "strata_fn_latency_seconds", n);
        }
        out.push_str("# HELP strata_fn_run_seconds The function's process, start to exit.\n# TYPE strata_fn_run_seconds histogram\n");
        for n in &names {
            m[*n].run.render(&mut out, "strata_fn_run_seconds", n);
        }
        out.push_str("# HELP strata_fn_warm_pool_size Containers created and waiting for an event.\n# TYPE strata_fn_warm_pool_size gauge\n");
        for (n, size) in pools {
            let _ = writeln!(out, "strata_fn_warm_pool_size{{function=\"{n}\"}} {size}");
        }
        out.push_str("# HELP strata_fn_running Invocations running now.\n# TYPE strata_fn_running gauge\n");
        let _ = writeln!(out, "strata_fn_running {running}");
        out.push_str("# HELP strata_fn_async_queued Asynchronous events waiting (retries included).\n# TYPE strata_fn_async_queued gauge\n");
        let _ = writeln!(out, "strata_fn_async_queued {queued}");
        out.push_str("# HELP strata_fn_cleanup_backlog Used containers waiting to be deleted.\n# TYPE strata_fn_cleanup_backlog gauge\n");
        let _ = writeln!(out, "strata_fn_cleanup_backlog {cleanup}");
        out.push_str("# HELP strata_fn_auth_denied_total Requests refused by the access control.\n# TYPE strata_fn_auth_denied_total counter\n");
        for (reason, n) in self.denied.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "strata_fn_auth_denied_total{{reason=\"{reason}\"}} {n}");
        }
        out
    }
}
