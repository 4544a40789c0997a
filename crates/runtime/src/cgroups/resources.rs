//! `linux.resources` translated to cgroup v2 interface files. Pure functions: each
//! resource becomes a list of (controller, file, value) writes, testable without a
//! kernel.

use crate::{Error, Result};
use oci_spec::runtime::LinuxResources;

/// One write to a cgroup interface file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Controller that must be enabled for the file to exist (None: core file).
    pub controller: Option<&'static str>,
    /// File name in the cgroup directory.
    pub file: String,
    /// Value to write.
    pub value: String,
}

fn w(controller: &'static str, file: impl Into<String>, value: impl Into<String>) -> Write {
    Write { controller: Some(controller), file: file.into(), value: value.into() }
}

/// cpu.shares (cgroup v1, 2..262144) to cpu.weight (v2, 1..10000), the conversion
/// every OCI runtime uses.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// blkio.weight (v1, 10..1000) to io.weight (v2, 1..10000).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + ((u64::from(weight).clamp(10, 1000) - 10) * 9999) / 990
}

/// "max" for negative (unlimited) values, as the v2 files spell it.
fn limit(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// The writes `resources` asks for (device rules excluded: they are a BPF program).
pub fn plan(r: &LinuxResources) -> Result<Vec<Write>> {
    let mut out = Vec::new();
    if let Some(m) = r.memory() {
        // Zero means "not set" for these fields, as runc reads them.
        if let Some(l) = m.limit().filter(|&l| l != 0) {
            out.push(w("memory", "memory.max", limit(l)));
        }
        if let Some(l) = m.reservation() {
            out.push(w("memory", "memory.low", limit(l)));
        }
        if let Some(swap) = m.swap().filter(|&s| s != 0) {
            // v1's memsw limit is memory+swap; v2 limits swap alone.
            let v = match (swap, m.limit()) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(Error::config("linux.resources.memory.swap", "must not be below memory.limit"));
                    }
                    (s - l).to_string()
                }
                (_, _) => {
                    return Err(Error::config(
                        "linux.resources.memory.swap",
                        "needs memory.limit to convert to cgroup v2",
                    ))
                }
            };
            out.push(w("memory", "memory.swap.max", v));
        }
        if m.swappiness().is_some() {
            return Err(Error::Unsupported {
                field: "linux.resources.memory.swappiness (no cgroup v2 equivalent)".into(),
            });
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            return Err(Error::Unsupported { field: "linux.resources.memory.kernel (no cgroup v2 equivalent)".into() });
        }
        if m.disable_oom_killer() == Some(true) {
            return Err(Error::Unsupported {
                field: "linux.resources.memory.disableOOMKiller (no cgroup v2 equivalent)".into(),
            });
        }
        if let Some(u) = m.use_hierarchy() {
            let _ = u; // Always hierarchical in v2.
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares() {
            if s != 0 {
                out.push(w("cpu", "cpu.weight", shares_to_weight(s).to_string()));
            }
        }
        let quota = c.quota().filter(|&q| q != 0);
        if quota.is_some() || c.period().is_some() {
            let quota = quota.map(limit).unwrap_or_else(|| "max".to_string());
            let period = c.period().unwrap_or(100_000);
            if period == 0 {
                return Err(Error::config("linux.resources.cpu.period", "must be greater than zero"));
            }
            out.push(w("cpu", "cpu.max", format!("{quota} {period}")));
        }
        if let Some(b) = c.burst() {
            out.push(w("cpu", "cpu.max.burst", b.to_string()));
        }
        if c.realtime_runtime().is_some() || c.realtime_period().is_some() {
            return Err(Error::Unsupported { field: "linux.resources.cpu.realtime* (no cgroup v2 equivalent)".into() });
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            crate::process::plan::parse_cpu_list(cpus).map_err(|e| Error::config("linux.resources.cpu.cpus", e))?;
            out.push(w("cpuset", "cpuset.cpus", cpus));
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            crate::process::plan::parse_cpu_list(mems).map_err(|e| Error::config("linux.resources.cpu.mems", e))?;
            out.push(w("cpuset", "cpuset.mems", mems));
        }
        if let Some(idle) = c.idle() {
            out.push(w("cpu", "cpu.idle", idle.to_string()));
        }
    }
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        out.push(w("pids", "pids.max", limit(p.limit())));
    }
    if let Some(b) = r.block_io() {
        // Zero means unset (Docker sends `"weight": 0`), as for every other value.
        if let Some(weight) = b.weight().filter(|&w| w != 0) {
            out.push(w("io", "io.weight", format!("default {}", blkio_to_io_weight(weight))));
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(weight) = d.weight().filter(|&w| w != 0) {
                out.push(w("io", "io.weight", format!("{}:{} {}", d.major(), d.minor(), blkio_to_io_weight(weight))));
            }
        }
        let throttles = [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ];
        for (key, list) in throttles {
            for d in list.iter().flatten() {
                let rate = if d.rate() == 0 { "max".to_string() } else { d.rate().to_string() };
                out.push(w("io", "io.max", format!("{}:{} {key}={rate}", d.major(), d.minor())));
            }
        }
        if b.leaf_weight().is_some() {
            return Err(Error::Unsupported {
                field: "linux.resources.blockIO.leafWeight (no cgroup v2 equivalent)".into(),
            });
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::config(
                "linux.resources.hugepageLimits.pageSize",
                format!("{size:?} is not a page size"),
            ));
        }
        out.push(w("hugetlb", format!("hugetlb.{size}.max"), h.limit().to_string()));
    }
    for (dev, rdma) in r.rdma().iter().flatten() {
        if dev.is_empty() || dev.contains(char::is_whitespace) {
            return Err(Error::config("linux.resources.rdma", format!("{dev:?} is not a device name")));
        }
        let mut parts = vec![dev.clone()];
        if let Some(h) = rdma.hca_handles() {
            parts.push(format!("hca_handle={h}"));
        }
        if let Some(o) = rdma.hca_objects() {
            parts.push(format!("hca_object={o}"));
        }
        out.push(w("rdma", "rdma.max", parts.join(" ")));
    }
    if r.network().is_some() {
        return Err(Error::Unsupported { field: "linux.resources.network (no cgroup v2 equivalent)".into() });
    }
    for (key, value) in r.unified().iter().flatten() {
        out.push(unified(key, value)?);
    }
    Ok(out)
}

/// A raw `unified` entry: a plain file name of the form `<controller>.<knob>`.
fn unified(key: &str, value: &str) -> Result<Write> {
    let field = format!("linux.resources.unified.{key}");
    if key.is_empty() || key.contains('/') || key.starts_with('.') || key.contains("..") {
        return Err(Error::config(field, "must be a file name in the cgroup directory"));
    }
    let Some((controller, _)) = key.split_once('.') else {
        return Err(Error::config(field, "must look like <controller>.<file>"));
    };
    if value.contains('\0') {
        return Err(Error::config(field, "contains a NUL byte"));
    }
    let controller: &'static str = match controller {
        // Of the core files only the limits: cgroup.procs, .freeze, .kill or
        // .subtree_control would let a config move, freeze or kill other processes.
        "cgroup" if key == "cgroup.max.depth" || key == "cgroup.max.descendants" => {
            return Ok(Write { controller: None, file: key.to_string(), value: value.to_string() })
        }
        "cgroup" => return Err(Error::config(field, "only cgroup.max.depth and cgroup.max.descendants may be set")),
        "memory" => "memory",
        "cpu" => "cpu",
        "cpuset" => "cpuset",
        "io" => "io",
        "pids" => "pids",
        "hugetlb" => "hugetlb",
        "rdma" => "rdma",
        "misc" => "misc",
        other => return Err(Error::config(field, format!("unknown controller {other:?}"))),
    };
    Ok(Write { controller: Some(controller), file: key.to_string(), value: value.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(json: serde_json::Value) -> Result<Vec<(String, String)>> {
        let r: LinuxResources = serde_json::from_value(json).expect("resources json");
        plan(&r).map(|v| v.into_iter().map(|w| (w.file, w.value)).collect())
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn weight_conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(500), 4950);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
    }

    #[test]
    fn expected_files_and_values() {
        let got = plan_of(serde_json::json!({
            "memory": { "limit": 1048576, "reservation": 524288, "swap": 2097152 },
            "cpu": { "shares": 1024, "quota": 50000, "period": 100000, "burst": 1000, "cpus": "0-1", "mems": "0", "idle": 1 },
            "pids": { "limit": 64 },
            "blockIO": { "weight": 500, "weightDevice": [{ "major": 8, "minor": 0, "weight": 100 }],
                         "throttleReadBpsDevice": [{ "major": 8, "minor": 0, "rate": 1048576 }],
                         "throttleWriteIOPSDevice": [{ "major": 8, "minor": 0, "rate": 0 }] },
            "hugepageLimits": [{ "pageSize": "2MB", "limit": 4194304 }],
            "rdma": { "mlx5_1": { "hcaHandles": 3, "hcaObjects": 10000 } },
            "unified": { "memory.high": "max" }
        }))
        .expect("plan");
        assert_eq!(
            got,
            pairs(&[
                ("memory.max", "1048576"),
                ("memory.low", "524288"),
                ("memory.swap.max", "1048576"),
                ("cpu.weight", "39"),
                ("cpu.max", "50000 100000"),
                ("cpu.max.burst", "1000"),
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0"),
                ("cpu.idle", "1"),
                ("pids.max", "64"),
                ("io.weight", "default 4950"),
                ("io.weight", "8:0 910"),
                ("io.max", "8:0 rbps=1048576"),
                ("io.max", "8:0 wiops=max"),
                ("hugetlb.2MB.max", "4194304"),
                ("rdma.max", "mlx5_1 hca_handle=3 hca_object=10000"),
                ("memory.high", "max"),
            ])
        );
    }

    #[test]
    fn zero_means_unset() {
        let got = plan_of(
            // What Docker sends for a container without limits.
            serde_json::json!({ "memory": { "limit": 0, "swap": 0 }, "pids": { "limit": 0 }, "cpu": { "quota": 0, "shares": 0 },
                                "blockIO": { "weight": 0, "weightDevice": [{ "major": 8, "minor": 0, "weight": 0 }] } }),
        )
        .expect("plan");
        assert_eq!(got, pairs(&[]));
    }

    #[test]
    fn unlimited_values() {
        let got = plan_of(serde_json::json!({ "memory": { "limit": -1, "swap": -1 }, "pids": { "limit": -1 }, "cpu": { "quota": -1 } }))
            .expect("plan");
        assert_eq!(
            got,
            pairs(&[("memory.max", "max"), ("memory.swap.max", "max"), ("cpu.max", "max 100000"), ("pids.max", "max")])
        );
    }

    #[test]
    fn invalid_values_are_errors() {
        for (json, want) in [
            (serde_json::json!({ "memory": { "limit": 100, "swap": 50 } }), "memory.swap"),
            (serde_json::json!({ "memory": { "swap": 50 } }), "memory.swap"),
            (serde_json::json!({ "memory": { "swappiness": 10 } }), "swappiness"),
            (serde_json::json!({ "cpu": { "realtimeRuntime": 10 } }), "realtime"),
            (serde_json::json!({ "cpu": { "period": 0 } }), "cpu.period"),
            (serde_json::json!({ "cpu": { "cpus": "3-1" } }), "cpu.cpus"),
            (serde_json::json!({ "hugepageLimits": [{ "pageSize": "../x", "limit": 1 }] }), "pageSize"),
            (serde_json::json!({ "unified": { "../../etc/passwd": "x" } }), "unified"),
            (serde_json::json!({ "unified": { "memory.max/../../x": "1" } }), "unified"),
            (serde_json::json!({ "unified": { "nosuch.file": "1" } }), "unknown controller"),
            (serde_json::json!({ "unified": { "noprefix": "1" } }), "unified"),
            (serde_json::json!({ "unified": { "cgroup.procs": "1" } }), "cgroup.max.depth"),
            (serde_json::json!({ "unified": { "cgroup.freeze": "1" } }), "cgroup.max.depth"),
        ] {
            let err = plan_of(json.clone()).expect_err(&json.to_string()).to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
