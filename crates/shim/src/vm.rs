//! Tasks in VMs: a task whose config carries `run.strata.isolation: "vm"`
//! is created and exec'd through the `strata` binary (`create`, `exec
//! --detach`), whose VM monitor must be forked from a process without
//! threads, which the shim is not. The monitor and exec proxies it leaves
//! are re-parented to the shim (the subreaper of its tasks), so they are
//! waited for as a container's init and execs are; every other RPC works on
//! the state as for a container.

use crate::io::Stdio;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Annotation that asks for a VM (as the `strata` CLI reads it).
const ISOLATION_ANNOTATION: &str = "run.strata.isolation";

/// Whether a config asks for a VM.
pub fn wants_vm(spec: &oci_spec::runtime::Spec) -> bool {
    spec.annotations().as_ref().and_then(|a| a.get(ISOLATION_ANNOTATION)).map(String::as_str) == Some("vm")
}

/// Whether a container's state says it is a VM.
pub fn is_vm(state: &strata_runtime::ContainerState) -> bool {
    state.annotations.get(ISOLATION_ANNOTATION).map(String::as_str) == Some("vm")
}

/// Runs `strata ARGS` with duplicates of the task's stdio.
fn strata(root: &Path, scratch: &Path, args: &[&str], stdio: &Stdio) -> Result<(), String> {
    let dup = |f: &std::fs::File| {
        f.try_clone().map(std::process::Stdio::from).map_err(|e| format!("duplicate the task's stdio: {e}"))
    };
    strata_vm::cli::run(
        root,
        &scratch.with_extension("log"),
        args,
        [dup(&stdio.stdin)?, dup(&stdio.stdout)?, dup(&stdio.stderr)?],
    )
}

/// Creates task `id` in a VM; its state then names the monitor's pid.
pub fn create(root: &Path, id: &str, bundle: &Path, stdio: &Stdio) -> Result<(), String> {
    let bundle = bundle.to_string_lossy();
    strata(root, &Path::new(bundle.as_ref()).join(".strata-vm-create"), &["create", "--bundle", &bundle, id], stdio)
}

/// Starts `process` in VM task `id`; returns the pid of its proxy on the
/// host (which exits with the process's status, and forwards signals).
pub fn exec(
    root: &Path,
    id: &str,
    bundle: &Path,
    process: &oci_spec::runtime::Process,
    stdio: &Stdio,
) -> Result<i32, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let scratch = bundle.join(format!(".strata-vm-exec-{}-{n}", std::process::id()));
    let spec = scratch.with_extension("json");
    let pid_file = scratch.with_extension("pid");
    let json = serde_json::to_vec(process).map_err(|e| format!("process: {e}"))?;
    std::fs::write(&spec, json).map_err(|e| format!("write {}: {e}", spec.display()))?;
    let result = strata(
        root,
        &scratch,
        &["exec", "--detach", "--pid-file", &pid_file.to_string_lossy(), "--process", &spec.to_string_lossy(), id],
        stdio,
    )
    .and_then(|()| {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| format!("{} holds no pid", pid_file.display()))
    });
    let _ = std::fs::remove_file(&spec);
    let _ = std::fs::remove_file(&pid_file);
    result
}
