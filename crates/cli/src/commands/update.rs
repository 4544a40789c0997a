//! `strata update`: change a running container's resource limits, runc's flags.

use anyhow::Context;
use oci_spec::runtime::LinuxResources;
use std::io::Read;
use std::path::{Path, PathBuf};
use strata_runtime::Container;

/// Flags of `update`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON file with LinuxResources ("-" for stdin); the flags below override it.
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (-1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<i64>,
    /// Memory soft limit (memory.low) in bytes.
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit in bytes (-1: unlimited swap).
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<i64>,
    /// CPU shares (converted to cpu.weight).
    #[arg(long = "cpu-share", alias = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPU realtime period (no cgroup v2 equivalent: refused).
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime (no cgroup v2 equivalent: refused).
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// SCHED_IDLE for the container's cgroup (cpu.idle, 0 or 1).
    #[arg(long = "cpu-idle")]
    pub cpu_idle: Option<i64>,
    /// Kernel memory limit (no cgroup v2 equivalent: refused).
    #[arg(long = "kernel-memory", allow_hyphen_values = true)]
    pub kernel_memory: Option<i64>,
    /// Kernel TCP buffer limit (no cgroup v2 equivalent: refused).
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<i64>,
    /// Intel RDT L3 cache schema of the container's own resctrl group.
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema of the container's own resctrl group.
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    /// CPU CFS quota in microseconds (-1: unlimited).
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU burst in microseconds.
    #[arg(long = "cpu-burst")]
    pub cpu_burst: Option<u64>,
    /// CPUs allowed (cpuset.cpus).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (cpuset.mems).
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block I/O weight, 10..1000 (converted to io.weight).
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// Container id.
    pub id: String,
}

/// Runs `strata update`.
pub fn run(args: Args, root: &Path) -> anyhow::Result<i32> {
    let mut r: serde_json::Value = match &args.resources {
        Some(p) => {
            let mut text = String::new();
            if p.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text).context("read resources from stdin")?;
            } else {
                text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            }
            serde_json::from_str(&text).context("parse resources JSON")?
        }
        None => serde_json::json!({}),
    };
    let mut set = |section: &str, key: &str, v: serde_json::Value| {
        if !r[section].is_object() {
            r[section] = serde_json::json!({});
        }
        r[section][key] = v;
    };
    if let Some(v) = args.memory {
        set("memory", "limit", v.into());
    }
    if let Some(v) = args.memory_reservation {
        set("memory", "reservation", v.into());
    }
    if let Some(v) = args.memory_swap {
        set("memory", "swap", v.into());
    }
    if let Some(v) = args.cpu_shares {
        set("cpu", "shares", v.into());
    }
    if let Some(v) = args.cpu_quota {
        set("cpu", "quota", v.into());
    }
    if let Some(v) = args.cpu_period {
        set("cpu", "period", v.into());
    }
    if let Some(v) = args.cpu_burst {
        set("cpu", "burst", v.into());
    }
    if let Some(v) = &args.cpuset_cpus {
        set("cpu", "cpus", v.clone().into());
    }
    if let Some(v) = &args.cpuset_mems {
        set("cpu", "mems", v.clone().into());
    }
    if let Some(v) = args.pids_limit {
        set("pids", "limit", v.into());
    }
    if let Some(v) = args.blkio_weight {
        set("blockIO", "weight", v.into());
    }
    if let Some(v) = args.cpu_rt_period {
        set("cpu", "realtimePeriod", v.into());
    }
    if let Some(v) = args.cpu_rt_runtime {
        set("cpu", "realtimeRuntime", v.into());
    }
    if let Some(v) = args.cpu_idle {
        set("cpu", "idle", v.into());
    }
    if let Some(v) = args.kernel_memory {
        set("memory", "kernel", v.into());
    }
    if let Some(v) = args.kernel_memory_tcp {
        set("memory", "kernelTCP", v.into());
    }
    let resources: LinuxResources = serde_json::from_value(r).context("invalid resources")?;
    let container = Container::load(root, &args.id)?;
    let rdt = args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some();
    if let Some(st) = container.state().ok().filter(crate::vm::is_vm) {
        // Its limits hold in the guest, where the container's cgroup is.
        if rdt {
            anyhow::bail!(
                "container {:?} runs in a VM: Intel RDT schemata are the host's, and its guest has none",
                args.id
            );
        }
        crate::vm::update(root, &st, &resources)?;
        return Ok(0);
    }
    // (Only RDT flags: no cgroup write at all.)
    if !rdt || resources != LinuxResources::default() {
        container.update(&resources)?;
    }
    if rdt {
        container.update_intel_rdt(args.l3_cache_schema.as_deref(), args.mem_bw_schema.as_deref())?;
    }
    Ok(0)
}
