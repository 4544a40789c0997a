//! Strata's hypervisor backend: the same OCI bundle in a microVM.
//!
//! Two VMMs sit behind one interface. The in-process one ([`kvm`]) makes the
//! runtime process itself the VMM on `/dev/kvm` with the rust-vmm crates:
//! PVH direct boot, an 8250 serial port for the kernel's log, virtio-mmio
//! block and console devices, one or more vCPUs, a seccomp jail once the
//! guest runs. The portable one ([`qemu`]) runs QEMU's `microvm` machine as
//! a child process with the same kernel, initramfs, disk and agent channel,
//! on KVM when that works and on TCG otherwise.
//!
//! In the guest, the strata binary is PID 1 and applies the bundle's
//! config.json with the runtime library ([`proto`] is what it and the host
//! say to each other over the console).

pub mod blk;
pub mod boot;
pub mod cli;
pub mod console;
pub mod cpu;
pub mod image;
pub mod initramfs;
pub mod jail;
pub mod kvm;
pub mod layout;
pub mod mmio;
pub mod mptable;
pub mod proto;
pub mod qemu;

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod test_util;

use std::path::PathBuf;

/// What can go wrong building or running a machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` is missing, unreadable or too old.
    #[error("KVM is not usable: {0}")]
    KvmUnavailable(String),
    /// A KVM ioctl failed.
    #[error("{op} failed: {source}")]
    Kvm {
        /// The ioctl.
        op: &'static str,
        /// Its error.
        source: vmm_sys_util::errno::Error,
    },
    /// The kernel image cannot be booted.
    #[error("guest kernel {path}: {what}")]
    Kernel {
        /// The image.
        path: PathBuf,
        /// Why not.
        what: String,
    },
    /// Guest memory could not be set up or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The machine's configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The guest did something the machine cannot go on from.
    #[error("guest stopped: {0}")]
    Guest(String),
    /// The host side failed (threads, files, the jail).
    #[error("{0}")]
    Host(String),
}

impl Error {
    pub(crate) fn kvm(op: &'static str, source: vmm_sys_util::errno::Error) -> Self {
        Error::Kvm { op, source }
    }
}
