//! The VM backend from the command line.
//!
//! - `host`: `create` of a VM container. It builds (or reuses) the initramfs
//!   from this binary and an EROFS image of the bundle's rootfs, and forks the
//!   container's monitor.
//! - `monitor`: the host process that stands for the container (its pid is
//!   the container's): it runs QEMU, speaks to the guest agent, relays stdio,
//!   signals and `exec`s, waits at the exec fifo for `start`, and exits with
//!   the workload's status.
//! - `agent`: strata as the VM's `/init`. It mounts the image (with a tmpfs
//!   overlay unless `root.readonly`) and runs the same config with `strata
//!   create`, `start` and `exec`: the same runtime code sets up namespaces,
//!   mounts, cgroups, seccomp and capabilities inside the guest.

mod agent;
mod host;
mod monitor;
mod pod;
mod share;

pub use agent::agent_main;
pub use host::{create, exec, CreateVm, ExecVm};
pub use pod::{joins_vm, member, member_stats, pause_member, update};

use std::time::Duration;

use anyhow::{bail, Context};

/// Annotation that asks for a VM.
pub const ISOLATION_ANNOTATION: &str = "run.strata.isolation";
const VCPUS_ANNOTATION: &str = "run.strata.vm.vcpus";
const VMM_ANNOTATION: &str = "run.strata.vm.vmm";
const MEMORY_ANNOTATION: &str = "run.strata.vm.memory_mb";
const DEFAULT_MEMORY_MIB: u32 = 256;
/// How long a guest may take from QEMU's start to its agent's hello
/// (`STRATA_VM_BOOT_TIMEOUT_S` changes it).
fn boot_timeout() -> Duration {
    let secs = std::env::var("STRATA_VM_BOOT_TIMEOUT_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60u64);
    Duration::from_secs(secs.max(1))
}

/// Whether this process is a VM's init (the guest agent).
pub fn is_agent() -> bool {
    std::process::id() == 1 && std::env::args_os().next().is_some_and(|a| a == "/init")
}

/// The name under which strata makes every container a VM, as `--vm` does
/// (a link to the binary): for engines that cannot pass the annotation
/// (Docker before 24: `dockerd --add-runtime strata-vm=PATH`), or a runc
/// shim's `BinaryName`.
pub const VM_NAME: &str = "strata-vm";

/// Whether this process was invoked as [`VM_NAME`].
pub fn invoked_as_vm() -> bool {
    std::env::args_os().next().is_some_and(|a| std::path::Path::new(&a).file_name() == Some(VM_NAME.as_ref()))
}

/// Whether the config asks for a VM through its annotation.
pub fn wants_vm(spec: &oci_spec::runtime::Spec) -> anyhow::Result<bool> {
    match spec.annotations().as_ref().and_then(|a| a.get(ISOLATION_ANNOTATION)).map(String::as_str) {
        None | Some("container") => Ok(false),
        Some("vm") => Ok(true),
        Some(other) => bail!("annotation {ISOLATION_ANNOTATION}: {other:?} is neither \"vm\" nor \"container\""),
    }
}

/// Guest size: annotations first, then `linux.resources`, then defaults.
pub fn guest_size(spec: &oci_spec::runtime::Spec) -> anyhow::Result<(u8, u32)> {
    let no_annotations = std::collections::HashMap::new();
    let ann = spec.annotations().as_ref().unwrap_or(&no_annotations);
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    let vcpus = match ann.get(VCPUS_ANNOTATION) {
        Some(v) => v
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .with_context(|| format!("annotation {VCPUS_ANNOTATION}: {v:?} is not a vCPU count from 1 to 16"))?,
        None => resources
            .as_ref()
            .and_then(|r| r.cpu().as_ref())
            .and_then(|c| match (c.quota(), c.period()) {
                (Some(q), Some(p)) if q > 0 && p > 0 => Some(((q as u64).div_ceil(p)).clamp(1, 16) as u8),
                _ => None,
            })
            .unwrap_or(1),
    };
    let memory =
        match ann.get(MEMORY_ANNOTATION) {
            Some(v) => v.parse::<u32>().ok().filter(|n| (64..=3072).contains(n)).with_context(|| {
                format!("annotation {MEMORY_ANNOTATION}: {v:?} is not a size in MiB from 64 to 3072")
            })?,
            // The container's limit plus room for the guest kernel and agent.
            None => resources
                .as_ref()
                .and_then(|r| r.memory().as_ref())
                .and_then(|m| m.limit())
                .filter(|l| *l > 0)
                .map(|l| ((l as u64 >> 20) as u32 + 64).clamp(64, 3072))
                .unwrap_or(DEFAULT_MEMORY_MIB),
        };
    Ok((vcpus, memory))
}

/// Whether a container's state says it runs in a VM.
pub fn is_vm(state: &strata_runtime::ContainerState) -> bool {
    state.annotations.get(ISOLATION_ANNOTATION).map(String::as_str) == Some("vm")
}

/// What a VM cannot take from a config, refused by field.
fn check_supported(spec: &oci_spec::runtime::Spec) -> anyhow::Result<()> {
    // createContainer hooks resolve on the host and run in the container's
    // namespaces, which are the guest kernel's: no host binary runs there.
    // (The others run on the host, and startContainer's in the guest.)
    if spec.hooks().as_ref().and_then(|h| h.create_container().as_ref()).is_some_and(|l| !l.is_empty()) {
        bail!(
            "hooks.createContainer: a VM container cannot run them (they are the host's binaries, to run in the container's namespaces, which are the guest's)"
        );
    }
    if spec.root().is_none() {
        bail!("root: a VM container needs a root filesystem");
    }
    match spec.annotations().as_ref().and_then(|a| a.get(VMM_ANNOTATION)).map(String::as_str) {
        None | Some("qemu") => {}
        Some("inprocess") => bail!(
            "annotation {VMM_ANNOTATION}: \"inprocess\": the in-process VMM does not boot a Linux guest yet; \"qemu\" (the default) does"
        ),
        Some(other) => bail!("annotation {VMM_ANNOTATION}: {other:?} is neither \"qemu\" nor \"inprocess\""),
    }
    Ok(())
}
