//! Invocations in microVMs (`isolation = "vm"`): the container is created
//! by `strata create` with the annotation that asks for a VM, because the
//! VM's monitor is forked from a process without threads, which the server is
//! not. The pool holds booted VMs whose workload waits for `start`, so an
//! event pays for the start alone, as with containers. Start, kill and
//! delete are the library's (they work on a VM's state as on a container's);
//! the monitor is not our child, so its exit is watched through a pidfd and
//! its status read from the file it leaves in the state directory.

use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where the bundle of a VM invocation goes (`~` is in no container id, so
/// listings of the state root never take it for one).
fn bundle_dir(root: &Path, id: &str) -> PathBuf {
    root.join(format!("{BUNDLE_PREFIX}{id}"))
}

const BUNDLE_PREFIX: &str = "~vm-";

/// Creates container `id` from `spec` in a VM, with `stdio` (stdin, stdout,
/// stderr) as its stdio. Returns the monitor's pid and the VM's host cgroup.
pub fn create(
    root: &Path,
    id: &str,
    mut spec: serde_json::Value,
    stdio: [RawFd; 3],
    systemd: bool,
) -> crate::Result<(i32, Option<PathBuf>)> {
    let bundle = bundle_dir(root, id);
    std::fs::create_dir_all(&bundle).map_err(|e| crate::Error::path(&bundle, e))?;
    let result = (|| -> crate::Result<(i32, Option<PathBuf>)> {
        spec["annotations"]["run.strata.isolation"] = "vm".into();
        let config = bundle.join("config.json");
        std::fs::write(&config, serde_json::to_vec(&spec)?).map_err(|e| crate::Error::path(&config, e))?;
        let dup = |fd: RawFd| -> crate::Result<Stdio> {
            let copy = nix::unistd::dup(fd).map_err(|e| crate::Error::Other(format!("dup: {e}")))?;
            // SAFETY: `dup` returned a new descriptor nothing else owns.
            Ok(Stdio::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(copy) }))
        };
        let bundle_arg = bundle.to_string_lossy();
        let mut args = vec!["create", "--bundle", &bundle_arg, id];
        if systemd {
            // The VM gets no host cgroup under the systemd driver yet.
            args.insert(0, "--systemd-cgroup");
        }
        strata_vm::cli::run(root, &bundle.join("create.log"), &args, [dup(stdio[0])?, dup(stdio[1])?, dup(stdio[2])?])
            .map_err(|e| crate::Error::Other(format!("create a VM: {e}")))?;
        let st = strata_runtime::Container::load(root, id)
            .and_then(|c| c.state())
            .map_err(|e| crate::Error::Other(format!("create a VM: {e}")))?;
        Ok((st.pid, st.cgroup))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&bundle);
    }
    result
}

/// The workload's status, once the monitor of `id` is gone: what it wrote,
/// or 137 when it was killed before it could.
pub fn exit_status(root: &Path, id: &str) -> i32 {
    std::fs::read_to_string(root.join(id).join("exit")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(137)
}

/// Removes what `create` made beside the container (its bundle).
pub fn forget(root: &Path, id: &str) {
    let _ = std::fs::remove_dir_all(bundle_dir(root, id));
}
