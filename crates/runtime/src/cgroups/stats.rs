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

/// Whatever statistics the cgroup's files offer (controllers that are not enabled
/// simply contribute nothing).
pub fn collect(dir: &Path) -> Value {
    let mut out = Map::new();
    if let Ok(cpu) = std::fs::read_to_string(dir.join("cpu.stat")) {
        let f = flat_keyed(&cpu);
        let us = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
        out.insert(
            "cpu".into(),
            json!({
                "usage": { "total": us("usage_usec") * 1000, "kernel": us("system_usec") * 1000, "user": us("user_usec") * 1000 },
                "throttling": { "periods": us("nr_periods"), "throttledPeriods": us("nr_throttled"), "throttledTime": us("throttled_usec") * 1000 }
            }),
        );
    }
    if let Some(usage) = read_u64(dir, "memory.current") {
        let stat = std::fs::read_to_string(dir.join("memory.stat")).map(|s| flat_keyed(&s)).unwrap_or_default();
        let swap = read_u64(dir, "memory.swap.current");
        out.insert(
            "memory".into(),
            json!({
                "usage": { "usage": usage, "max": read_u64(dir, "memory.peak").unwrap_or(0), "limit": read_u64(dir, "memory.max").unwrap_or(u64::MAX) },
                "swap": { "usage": swap.unwrap_or(0), "limit": read_u64(dir, "memory.swap.max").unwrap_or(0) },
                "raw": stat
            }),
        );
    }
    if let Some(current) = read_u64(dir, "pids.current") {
        out.insert(
            "pids".into(),
            json!({ "current": current, "limit": read_u64(dir, "pids.max").unwrap_or(u64::MAX) }),
        );
    }
    if let Ok(io) = std::fs::read_to_string(dir.join("io.stat")) {
        let mut bytes = Vec::new();
        let mut ios = Vec::new();
        for line in io.lines() {
            let mut parts = line.split_whitespace();
            let Some((major, minor)) = parts.next().and_then(|d| d.split_once(':')) else { continue };
            for kv in parts {
                let Some((k, v)) = kv.split_once('=') else { continue };
                let entry = |op: &str| json!({ "major": major.parse::<u64>().unwrap_or(0), "minor": minor.parse::<u64>().unwrap_or(0), "op": op, "value": v.parse::<u64>().unwrap_or(0) });
                match k {
                    "rbytes" => bytes.push(entry("Read")),
                    "wbytes" => bytes.push(entry("Write")),
                    "rios" => ios.push(entry("Read")),
                    "wios" => ios.push(entry("Write")),
                    _ => {}
                }
            }
        }
        out.insert("blkio".into(), json!({ "ioServiceBytesRecursive": bytes, "ioServicedRecursive": ios }));
    }
    let mut hugetlb = Map::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(size) = name.strip_prefix("hugetlb.").and_then(|r| r.strip_suffix(".current")) {
                let usage = read_u64(dir, &name).unwrap_or(0);
                let max = read_u64(dir, &format!("hugetlb.{size}.max")).unwrap_or(0);
                let failcnt = std::fs::read_to_string(dir.join(format!("hugetlb.{size}.events")))
                    .map(|s| flat_keyed(&s).get("max").and_then(Value::as_u64).unwrap_or(0))
                    .unwrap_or(0);
                hugetlb.insert(size.to_string(), json!({ "usage": usage, "max": max, "failcnt": failcnt }));
            }
        }
    }
    if !hugetlb.is_empty() {
        out.insert("hugetlb".into(), Value::Object(hugetlb));
    }
    Value::Object(out)
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
        assert_eq!(s["pids"]["limit"], u64::MAX);
        assert_eq!(s["blkio"]["ioServiceBytesRecursive"][0]["value"], 4096);
        assert_eq!(s["hugetlb"]["2MB"]["max"], 4_194_304);
        assert!(s.get("memory").is_none(), "no memory files, no memory stats");
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
