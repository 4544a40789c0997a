//! A task's statistics as containerd's cgroup v2 `Metrics`: read from its
//! cgroup's files, or converted from runc's `events --stats` shape (what the
//! guest reports for a task that joined a VM).

use containerd_shim::protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};
use serde_json::Value;
use std::path::Path;

/// The metrics of the cgroup at `dir`: the core `cpu.stat` every cgroup has,
/// and the pids and memory controllers' files where they are enabled.
pub fn of_cgroup(dir: &Path) -> Metrics {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let num = |f: &str| read(f).and_then(|s| s.trim().parse::<u64>().ok());
    let mut m = Metrics::new();
    if let Some(text) = read("cpu.stat") {
        let f = strata_runtime::cgroups::stats::flat_keyed(&text);
        let g = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
        let mut cpu = CPUStat::new();
        (cpu.usage_usec, cpu.user_usec, cpu.system_usec) = (g("usage_usec"), g("user_usec"), g("system_usec"));
        (cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec) =
            (g("nr_periods"), g("nr_throttled"), g("throttled_usec"));
        m.cpu = Some(cpu).into();
    }
    if let Some(current) = num("pids.current") {
        let mut pids = PidsStat::new();
        pids.current = current;
        pids.limit = num("pids.max").unwrap_or(0);
        m.pids = Some(pids).into();
    }
    if let Some(usage) = num("memory.current") {
        let mut mem = MemoryStat::new();
        mem.usage = usage;
        mem.usage_limit = num("memory.max").unwrap_or(u64::MAX);
        mem.swap_usage = num("memory.swap.current").unwrap_or(0);
        mem.swap_limit = num("memory.swap.max").unwrap_or(0);
        m.memory = Some(mem).into();
    }
    m
}

/// The metrics in runc's `events --stats` data: nanoseconds become
/// microseconds, and swap, which runc counts with memory (as cgroup v1 did),
/// is swap alone again.
pub fn of_events(data: &Value) -> Metrics {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut m = Metrics::new();
    let usage = &data["cpu"]["usage"];
    let throttling = &data["cpu"]["throttling"];
    let mut cpu = CPUStat::new();
    (cpu.usage_usec, cpu.user_usec, cpu.system_usec) =
        (n(&usage["total"]) / 1000, n(&usage["user"]) / 1000, n(&usage["kernel"]) / 1000);
    (cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec) =
        (n(&throttling["periods"]), n(&throttling["throttledPeriods"]), n(&throttling["throttledTime"]) / 1000);
    m.cpu = Some(cpu).into();
    if data["pids"].is_object() {
        let mut pids = PidsStat::new();
        (pids.current, pids.limit) = (n(&data["pids"]["current"]), n(&data["pids"]["limit"]));
        m.pids = Some(pids).into();
    }
    let memory = &data["memory"];
    if memory["usage"].is_object() {
        let mut mem = MemoryStat::new();
        mem.usage = n(&memory["usage"]["usage"]);
        mem.usage_limit = n(&memory["usage"]["limit"]);
        mem.swap_usage = n(&memory["swap"]["usage"]).saturating_sub(mem.usage);
        mem.swap_limit = match n(&memory["swap"]["limit"]) {
            u64::MAX => u64::MAX,
            l => l.saturating_sub(mem.usage_limit),
        };
        let raw = |k: &str| n(&memory["raw"][k]);
        (mem.anon, mem.file, mem.kernel_stack, mem.slab, mem.sock, mem.shmem) =
            (raw("anon"), raw("file"), raw("kernel_stack"), raw("slab"), raw("sock"), raw("shmem"));
        (mem.active_anon, mem.inactive_anon, mem.active_file, mem.inactive_file) =
            (raw("active_anon"), raw("inactive_anon"), raw("active_file"), raw("inactive_file"));
        (mem.pgfault, mem.pgmajfault) = (raw("pgfault"), raw("pgmajfault"));
        m.memory = Some(mem).into();
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_shaped_statistics_become_cgroup_v2_metrics() {
        let data = serde_json::json!({
            "cpu": {
                "usage": { "total": 5_000_000, "kernel": 2_000_000, "user": 3_000_000 },
                "throttling": { "periods": 10, "throttledPeriods": 2, "throttledTime": 7_000 },
            },
            "memory": {
                "usage": { "limit": 268_435_456, "usage": 1_048_576, "failcnt": 0 },
                "swap": { "limit": u64::MAX, "usage": 1_114_112, "failcnt": 0 },
                "raw": { "anon": 4096, "file": 8192, "inactive_file": 2048, "pgfault": 99 },
            },
            "pids": { "current": 3, "limit": 64 },
        });
        let m = of_events(&data);
        let cpu = m.cpu.as_ref().expect("cpu");
        assert_eq!((cpu.usage_usec, cpu.user_usec, cpu.system_usec), (5000, 3000, 2000));
        assert_eq!((cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec), (10, 2, 7));
        let mem = m.memory.as_ref().expect("memory");
        assert_eq!((mem.usage, mem.usage_limit), (1_048_576, 268_435_456));
        assert_eq!((mem.swap_usage, mem.swap_limit), (65_536, u64::MAX));
        assert_eq!((mem.anon, mem.file, mem.inactive_file, mem.pgfault), (4096, 8192, 2048, 99));
        let pids = m.pids.as_ref().expect("pids");
        assert_eq!((pids.current, pids.limit), (3, 64));
    }

    #[test]
    fn a_swap_limit_counted_with_memory_is_swap_alone_again() {
        let data = serde_json::json!({
            "memory": {
                "usage": { "limit": 1000, "usage": 400 },
                "swap": { "limit": 1500, "usage": 450 },
            },
        });
        let mem = of_events(&data).memory.into_option().expect("memory");
        assert_eq!((mem.swap_usage, mem.swap_limit), (50, 500));
        assert!(of_events(&serde_json::json!({})).memory.is_none(), "no memory section, no memory metrics");
    }

    #[test]
    fn a_cgroups_files_are_read_as_they_are() {
        let dir = std::env::temp_dir().join(format!("strata-shim-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let write = |f: &str, v: &str| std::fs::write(dir.join(f), v).expect("write");
        write("cpu.stat", "usage_usec 70\nuser_usec 50\nsystem_usec 20\n");
        write("pids.current", "2\n");
        write("pids.max", "max\n");
        write("memory.current", "8192\n");
        write("memory.max", "max\n");
        let m = of_cgroup(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let cpu = m.cpu.as_ref().expect("cpu");
        assert_eq!((cpu.usage_usec, cpu.user_usec, cpu.system_usec), (70, 50, 20));
        assert_eq!(m.pids.as_ref().map(|p| (p.current, p.limit)), Some((2, 0)));
        assert_eq!(m.memory.as_ref().map(|m| (m.usage, m.usage_limit)), Some((8192, u64::MAX)));
    }
}
