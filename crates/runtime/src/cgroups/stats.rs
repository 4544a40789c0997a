//! Container statistics from cgroup v2 files, in the shape of runc's `events --stats`.

use serde_json::{json, Map, Value};
use std::path::Path;

/// Parses a flat-keyed file ("key value" per line).
pub fn flat_keyed(text: &str) -> Map<String, Value> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), json!(v.trim().parse::<u64>().ok()?)))
        })
        .collect()
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join(file)).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// Inserts `key` only when `v` is non-zero (Go's `omitempty`, which runc's
/// statistics types use on most fields).
fn put_nonzero(m: &mut Map<String, Value>, key: &str, v: u64) {
    if v != 0 {
        m.insert(key.into(), json!(v));
    }
}

/// One memory counter in runc's shape: `limit`, `usage`, `max`, `failcnt`.
fn memory_entry(limit: u64, usage: u64, max: u64, failcnt: u64) -> Value {
    let mut m = Map::new();
    m.insert("limit".into(), json!(limit));
    put_nonzero(&mut m, "usage", usage);
    put_nonzero(&mut m, "max", max);
    m.insert("failcnt".into(), json!(failcnt));
    Value::Object(m)
}

/// The statistics of the cgroup at `dir` in the shape and key order of runc's
/// `events --stats` data on cgroup v2 (which tools parse): every section is
/// there; a controller that is not enabled leaves its section at zero.
pub fn collect(dir: &Path) -> Value {
    let mut out = Map::new();

    let cpu = std::fs::read_to_string(dir.join("cpu.stat")).map(|s| flat_keyed(&s)).unwrap_or_default();
    let us = |k: &str| cpu.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut usage = Map::new();
    put_nonzero(&mut usage, "total", us("usage_usec") * 1000);
    usage.insert("kernel".into(), json!(us("system_usec") * 1000));
    usage.insert("user".into(), json!(us("user_usec") * 1000));
    let mut throttling = Map::new();
    put_nonzero(&mut throttling, "periods", us("nr_periods"));
    put_nonzero(&mut throttling, "throttledPeriods", us("nr_throttled"));
    put_nonzero(&mut throttling, "throttledTime", us("throttled_usec") * 1000);
    out.insert("cpu".into(), json!({ "usage": usage, "throttling": throttling }));

    let mut cpuset = Map::new();
    for (key, file) in [("cpus", "cpuset.cpus.effective"), ("mems", "cpuset.mems.effective")] {
        if let Ok(list) = std::fs::read_to_string(dir.join(file)) {
            if let Ok(ids) = crate::process::plan::parse_cpu_list(list.trim()) {
                cpuset.insert(key.into(), json!(ids));
            }
        }
    }
    for key in [
        "cpu_exclusive",
        "mem_hardwall",
        "mem_exclusive",
        "memory_migrate",
        "memory_spread_page",
        "memory_spread_slab",
        "memory_pressure",
        "sched_load_balance",
        "sched_relax_domain_level",
    ] {
        cpuset.insert(key.into(), json!(0));
    }
    out.insert("cpuset".into(), Value::Object(cpuset));

    let stat = std::fs::read_to_string(dir.join("memory.stat")).map(|s| flat_keyed(&s)).unwrap_or_default();
    let events = std::fs::read_to_string(dir.join("memory.events")).map(|s| flat_keyed(&s)).unwrap_or_default();
    let mem_usage = read_u64(dir, "memory.current").unwrap_or(0);
    let mem_limit = read_u64(dir, "memory.max").unwrap_or(0);
    let mem_failcnt = events.get("max").and_then(Value::as_u64).unwrap_or(0);
    let mut memory = Map::new();
    put_nonzero(&mut memory, "cache", stat.get("file").and_then(Value::as_u64).unwrap_or(0));
    memory.insert(
        "usage".into(),
        memory_entry(mem_limit, mem_usage, read_u64(dir, "memory.peak").unwrap_or(0), mem_failcnt),
    );
    // As runc: swap reads as memory + swap, the way cgroup v1 counted it.
    let swap_limit = match read_u64(dir, "memory.swap.max") {
        Some(u64::MAX) => u64::MAX,
        Some(l) => l.saturating_add(mem_limit),
        None => 0,
    };
    let swap_usage = read_u64(dir, "memory.swap.current").map(|s| s + mem_usage).unwrap_or(0);
    memory.insert("swap".into(), memory_entry(swap_limit, swap_usage, 0, 0));
    memory.insert("kernel".into(), memory_entry(0, 0, 0, 0));
    memory.insert("kernelTCP".into(), memory_entry(0, 0, 0, 0));
    if !stat.is_empty() {
        memory.insert("raw".into(), Value::Object(stat));
    }
    out.insert("memory".into(), Value::Object(memory));

    // Without the pids controller the processes are counted from cgroup.procs.
    let current = read_u64(dir, "pids.current").or_else(|| {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .ok()
            .map(|p| p.lines().filter(|l| !l.is_empty()).count() as u64)
    });
    let mut pids = Map::new();
    put_nonzero(&mut pids, "current", current.unwrap_or(0));
    // No limit ("max") reads as 0, as runc reports it.
    put_nonzero(&mut pids, "limit", read_u64(dir, "pids.max").filter(|&l| l != u64::MAX).unwrap_or(0));
    out.insert("pids".into(), Value::Object(pids));

    let mut blkio = Map::new();
    if let Ok(io) = std::fs::read_to_string(dir.join("io.stat")) {
        let mut bytes = Vec::new();
        let mut ios = Vec::new();
        for line in io.lines() {
            let mut parts = line.split_whitespace();
            let Some((major, minor)) = parts.next().and_then(|d| d.split_once(':')) else { continue };
            for kv in parts {
                let Some((k, v)) = kv.split_once('=') else { continue };
                let entry = |op: &str| {
                    let mut e = Map::new();
                    put_nonzero(&mut e, "major", major.parse::<u64>().unwrap_or(0));
                    put_nonzero(&mut e, "minor", minor.parse::<u64>().unwrap_or(0));
                    e.insert("op".into(), json!(op));
                    put_nonzero(&mut e, "value", v.parse::<u64>().unwrap_or(0));
                    Value::Object(e)
                };
                match k {
                    "rbytes" => bytes.push(entry("Read")),
                    "wbytes" => bytes.push(entry("Write")),
                    "rios" => ios.push(entry("Read")),
                    "wios" => ios.push(entry("Write")),
                    _ => {}
                }
            }
        }
        if !bytes.is_empty() {
            blkio.insert("ioServiceBytesRecursive".into(), Value::Array(bytes));
        }
        if !ios.is_empty() {
            blkio.insert("ioServicedRecursive".into(), Value::Array(ios));
        }
    }
    out.insert("blkio".into(), Value::Object(blkio));

    // One entry per huge page size the host has, as runc lists them.
    let mut hugetlb = Map::new();
    let mut sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let kb: u64 =
                        e.file_name().to_str()?.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
                    Some(page_size_name(kb))
                })
                .collect()
        })
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(size) = name.strip_prefix("hugetlb.").and_then(|r| r.strip_suffix(".current")) {
                if !sizes.iter().any(|s| s == size) {
                    sizes.push(size.to_string());
                }
            }
        }
    }
    sizes.sort();
    for size in sizes {
        let mut h = Map::new();
        put_nonzero(&mut h, "usage", read_u64(dir, &format!("hugetlb.{size}.current")).unwrap_or(0));
        let failcnt = std::fs::read_to_string(dir.join(format!("hugetlb.{size}.events")))
            .map(|s| flat_keyed(&s).get("max").and_then(Value::as_u64).unwrap_or(0))
            .unwrap_or(0);
        h.insert("failcnt".into(), json!(failcnt));
        hugetlb.insert(size, Value::Object(h));
    }
    out.insert("hugetlb".into(), Value::Object(hugetlb));
    out.insert("intel_rdt".into(), json!({}));
    out.insert("network_interfaces".into(), Value::Null);
    Value::Object(out)
}

/// The cgroup file name of a huge page size in KiB ("2MB", "1GB").
fn page_size_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_from_a_fake_tree() {
        let d = std::env::temp_dir().join(format!("strata-stats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\nnr_throttled 1\nthrottled_usec 7\n",
        )
        .expect("w");
        std::fs::write(d.join("pids.current"), "4\n").expect("w");
        std::fs::write(d.join("pids.max"), "max\n").expect("w");
        std::fs::write(d.join("io.stat"), "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n").expect("w");
        std::fs::write(d.join("hugetlb.2MB.current"), "0\n").expect("w");
        std::fs::write(d.join("hugetlb.2MB.max"), "4194304\n").expect("w");
        let s = collect(&d);
        assert_eq!(s["cpu"]["usage"]["total"], 1_500_000);
        assert_eq!(s["cpu"]["usage"]["kernel"], 500_000);
        assert_eq!(s["cpu"]["throttling"]["throttledPeriods"], 1);
        assert_eq!(s["pids"]["current"], 4);
        // No limit is runc's 0, which its omitempty leaves out.
        assert_eq!(s["pids"].get("limit"), None, "{}", s["pids"]);
        assert_eq!(s["cpu"]["usage"]["user"], 1_000_000);
        assert_eq!(s["blkio"]["ioServiceBytesRecursive"][0]["value"], 4096);
        std::fs::write(d.join("hugetlb.2MB.current"), "4194304\n").expect("w");
        std::fs::write(d.join("pids.max"), "64\n").expect("w");
        let s = collect(&d);
        assert_eq!(s["pids"]["limit"], 64);
        assert_eq!(s["hugetlb"]["2MB"]["usage"], 4_194_304);
        assert_eq!(s["hugetlb"]["2MB"]["failcnt"], 0);
        // No memory files: the section is there, at zero, as runc prints it.
        assert_eq!(s["memory"]["usage"], serde_json::json!({ "limit": 0, "failcnt": 0 }));
        // runc's key order, which tools that read the text rely on.
        let keys: Vec<&String> = s.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"]);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
