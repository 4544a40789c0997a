//! Counters, gauges and latency histograms per function, kept and rendered
//! by `prometheus-client` (OpenMetrics text) for `GET /metrics`.

use crate::store::Status;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 14] = [0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Function {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    function: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Check {
    result: &'static str,
}

type Histograms = Family<Function, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    invocations: Family<Outcome, Counter>,
    errors: Family<Function, Counter>,
    timeouts: Family<Function, Counter>,
    cold: Family<Function, Counter>,
    warm: Family<Function, Counter>,
    /// Request (or dequeue) to answer.
    latency: Histograms,
    /// The function's own run, start to exit.
    run: Histograms,
    pool: Family<Function, Gauge>,
    running: Gauge,
    queued: Gauge,
    cleanup: Gauge,
    cluster_queued: Gauge,
    /// Requests refused by the access control, by reason.
    denied: Family<Reason, Counter>,
    netns_reused: Counter,
    netns_checked: Family<Check, Counter>,
    netns_ready: Gauge,
    /// Scrapes that catch the namespace counters up, one at a time.
    netns_catch_up: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            invocations: Family::default(),
            errors: Family::default(),
            timeouts: Family::default(),
            cold: Family::default(),
            warm: Family::default(),
            latency: Family::new_with_constructor(histogram),
            run: Family::new_with_constructor(histogram),
            pool: Family::default(),
            running: Gauge::default(),
            queued: Gauge::default(),
            cleanup: Gauge::default(),
            cluster_queued: Gauge::default(),
            denied: Family::default(),
            netns_reused: Counter::default(),
            netns_checked: Family::default(),
            netns_ready: Gauge::default(),
            netns_catch_up: Default::default(),
        };
        // (The library ends each help text with a period itself.)
        let r = &mut m.registry;
        r.register("strata_fn_invocations", "Invocations by outcome", m.invocations.clone());
        r.register("strata_fn_errors", "Invocations that failed (non-zero exit or no run)", m.errors.clone());
        r.register("strata_fn_timeouts", "Invocations stopped at their timeout", m.timeouts.clone());
        r.register("strata_fn_cold_starts", "Invocations that had to create their container", m.cold.clone());
        r.register("strata_fn_warm_starts", "Invocations that took a container from the warm pool", m.warm.clone());
        r.register("strata_fn_latency_seconds", "From request received to answer ready", m.latency.clone());
        r.register("strata_fn_run_seconds", "The function's process, start to exit", m.run.clone());
        r.register("strata_fn_warm_pool_size", "Containers created and waiting for an event", m.pool.clone());
        r.register("strata_fn_running", "Invocations running now", m.running.clone());
        r.register("strata_fn_async_queued", "Asynchronous events waiting (retries included)", m.queued.clone());
        r.register("strata_fn_cleanup_backlog", "Used containers waiting to be deleted", m.cleanup.clone());
        r.register(
            "strata_fn_cluster_queued",
            "Events of the functions served here that JetStream has still to deliver or see acknowledged (cluster mode; 0 otherwise)",
            m.cluster_queued.clone(),
        );
        r.register("strata_fn_auth_denied", "Requests refused by the access control", m.denied.clone());
        r.register(
            "strata_fn_netns_reused",
            "Invocations whose container joined a reused network namespace",
            m.netns_reused.clone(),
        );
        r.register(
            "strata_fn_netns_checked",
            "Network namespaces checked after their invocation: clean (kept for reuse) or dropped (something was left in them)",
            m.netns_checked.clone(),
        );
        r.register("strata_fn_netns_ready", "Network namespaces checked and ready for reuse", m.netns_ready.clone());
        m
    }
}

fn function(name: &str) -> Function {
    Function { function: name.to_string() }
}

impl Metrics {
    /// Counts one invocation of `function` that ended with `status`.
    pub fn observe(&self, name: &str, status: Status, warm: bool, latency: Duration, run: Duration) {
        let f = function(name);
        let outcome = match status {
            Status::Succeeded => "success",
            Status::Timeout => {
                self.timeouts.get_or_create(&f).inc();
                "timeout"
            }
            _ => {
                self.errors.get_or_create(&f).inc();
                "error"
            }
        };
        self.invocations.get_or_create(&Outcome { function: name.to_string(), outcome }).inc();
        if warm { &self.warm } else { &self.cold }.get_or_create(&f).inc();
        self.latency.get_or_create(&f).observe(latency.as_secs_f64());
        self.run.get_or_create(&f).observe(run.as_secs_f64());
    }

    /// Counts a request the access control refused (`reason`: missing,
    /// invalid, revoked, forbidden, throttled; never the credentials).
    pub fn denied(&self, reason: &'static str) {
        self.denied.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a call refused with 429.
    pub fn rejected(&self, name: &str) {
        self.invocations.get_or_create(&Outcome { function: name.to_string(), outcome: "rejected" }).inc();
    }

    /// The exposition, with the gauges set to the values given.
    pub fn render(
        &self,
        pools: &[(String, usize)],
        queued: usize,
        running: u32,
        cleanup: usize,
        cluster: u64,
        netns: Option<(usize, crate::netns::Counts)>,
    ) -> String {
        // Functions removed since the last scrape leave the pool gauge.
        self.pool.clear();
        for (name, size) in pools {
            self.pool.get_or_create(&function(name)).set(*size as i64);
        }
        self.queued.set(queued as i64);
        self.running.set(i64::from(running));
        self.cleanup.set(cleanup as i64);
        self.cluster_queued.set(cluster.min(i64::MAX as u64) as i64);
        if let Some((ready, c)) = netns {
            // The pool counts; the counters catch up with them.
            let _one = self.netns_catch_up.lock().unwrap_or_else(|e| e.into_inner());
            let catch_up = |counter: &Counter, to: u64| {
                counter.inc_by(to.saturating_sub(counter.get()));
            };
            catch_up(&self.netns_reused, c.reused);
            catch_up(&self.netns_checked.get_or_create(&Check { result: "clean" }), c.clean);
            catch_up(&self.netns_checked.get_or_create(&Check { result: "dropped" }), c.dropped);
            self.netns_ready.set(ready as i64);
        }
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_openmetrics() {
        let m = Metrics::default();
        let ms = Duration::from_millis(4);
        m.observe("echo", Status::Succeeded, true, ms, ms);
        m.observe("echo", Status::Timeout, false, ms, ms);
        m.rejected("echo");
        m.denied("invalid");
        let netns = crate::netns::Counts { reused: 4, clean: 5, dropped: 1 };
        let out = m.render(&[("echo".into(), 3)], 5, 2, 1, 7, Some((2, netns)));
        for line in [
            "strata_fn_invocations_total{function=\"echo\",outcome=\"success\"} 1",
            "strata_fn_invocations_total{function=\"echo\",outcome=\"timeout\"} 1",
            "strata_fn_invocations_total{function=\"echo\",outcome=\"rejected\"} 1",
            "strata_fn_timeouts_total{function=\"echo\"} 1",
            "strata_fn_warm_starts_total{function=\"echo\"} 1",
            "strata_fn_cold_starts_total{function=\"echo\"} 1",
            "strata_fn_netns_reused_total 4",
            "strata_fn_netns_checked_total{result=\"clean\"} 5",
            "strata_fn_netns_checked_total{result=\"dropped\"} 1",
            "strata_fn_netns_ready 2",
            "strata_fn_latency_seconds_bucket{le=\"0.005\",function=\"echo\"} 2",
            "strata_fn_latency_seconds_bucket{le=\"0.003\",function=\"echo\"} 0",
            "strata_fn_latency_seconds_count{function=\"echo\"} 2",
            "strata_fn_warm_pool_size{function=\"echo\"} 3",
            "strata_fn_running 2",
            "strata_fn_async_queued 5",
            "strata_fn_cleanup_backlog 1",
            "strata_fn_cluster_queued 7",
            "strata_fn_auth_denied_total{reason=\"invalid\"} 1",
            "# HELP strata_fn_running Invocations running now.",
            "# EOF",
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
        }
        assert!(!out.contains(".."), "a help text ends with two periods:\n{out}");
        let out = m.render(&[], 0, 0, 0, 0, None);
        assert!(!out.contains("strata_fn_warm_pool_size{"), "a gone function's pool gauge stays:\n{out}");
    }
}
