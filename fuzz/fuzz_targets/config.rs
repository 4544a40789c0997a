//! Arbitrary bytes as config.json: parsing, then everything `create` computes
//! from the config before it touches the system (validation, mount options, the
//! cgroup plan, the device program, the seccomp filter, the process plan). None of
//! it may panic, whatever the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use strata_runtime::cgroups::{devices, resources};
use strata_runtime::process::plan::ProcessPlan;
use strata_runtime::rootfs::options;
use strata_runtime::seccomp::SeccompPlan;

/// A bundle directory with an empty `rootfs`, made once per fuzzing process.
fn bundle() -> &'static Path {
    static BUNDLE: OnceLock<PathBuf> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("strata-fuzz-bundle-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs")).expect("create the fuzz bundle");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = strata_runtime::config::parse(data) else { return };
    let _ = strata_runtime::config::validate(&spec, bundle());
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let _ = options::parse(m.options().as_deref().unwrap_or_default(), &format!("mounts[{i}]"));
    }
    if let Some(linux) = spec.linux() {
        let rules = linux.resources().as_ref().and_then(|r| r.devices().as_deref()).unwrap_or_default();
        if let Some(r) = linux.resources() {
            let _ = resources::plan(r);
        }
        if let Ok(Some(rules)) = devices::rules(rules, linux.devices().as_deref().unwrap_or_default()) {
            let _ = devices::compile(&rules);
        }
        if let Some(seccomp) = linux.seccomp() {
            let _ = SeccompPlan::new(seccomp);
        }
    }
    if let Some(process) = spec.process() {
        let _ = ProcessPlan::new(process, "process");
    }
});
