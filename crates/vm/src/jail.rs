//! The seccomp jail of a running VMM: once the guest runs, the VMM's threads
//! may only move bytes, run vCPUs and end. No file may be opened, no process
//! made, no memory made executable; any other system call kills the VMM.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterAttr, ScmpFilterContext, ScmpSyscall};

use crate::Error;

/// `KVM_RUN`, `_IO(KVMIO, 0x80)`: the one ioctl a running VMM needs.
pub const KVM_RUN: u64 = 0xae80;

/// System calls a running VMM makes: I/O on fds it already holds, vCPU runs,
/// thread wake-ups and kicks, the allocator, clocks, and exit.
pub const ALLOWED: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "fsync",
    "fdatasync",
    "lseek",
    "close",
    "poll",
    "ppoll",
    "epoll_wait",
    "epoll_pwait",
    "futex",
    "sched_yield",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "gettid",
    "getpid",
    "tgkill",
    "rt_sigreturn",
    "rt_sigprocmask",
    "sigaltstack",
    "brk",
    "munmap",
    "mremap",
    "madvise",
    "rseq",
    "restart_syscall",
    "exit",
    "exit_group",
];

/// Installs the jail on every thread of the calling process (TSYNC).
pub fn install() -> Result<(), Error> {
    let herr = |what: &str, e: libseccomp::error::SeccompError| Error::Host(format!("VMM seccomp jail: {what}: {e}"));
    let mut filter = ScmpFilterContext::new(ScmpAction::KillProcess).map_err(|e| herr("new filter", e))?;
    filter.set_filter_attr(ScmpFilterAttr::CtlTsync, 1).map_err(|e| herr("tsync", e))?;
    for name in ALLOWED {
        let call = ScmpSyscall::from_name(name).map_err(|e| herr(name, e))?;
        filter.add_rule(ScmpAction::Allow, call).map_err(|e| herr(name, e))?;
    }
    let ioctl = ScmpSyscall::from_name("ioctl").map_err(|e| herr("ioctl", e))?;
    filter
        .add_rule_conditional(ScmpAction::Allow, ioctl, &[ScmpArgCompare::new(1, ScmpCompareOp::Equal, KVM_RUN)])
        .map_err(|e| herr("ioctl", e))?;
    // Closing an fd checks it first in debug builds (fcntl F_GETFD reads flags only).
    let fcntl = ScmpSyscall::from_name("fcntl").map_err(|e| herr("fcntl", e))?;
    filter
        .add_rule_conditional(
            ScmpAction::Allow,
            fcntl,
            &[ScmpArgCompare::new(1, ScmpCompareOp::Equal, libc::F_GETFD as u64)],
        )
        .map_err(|e| herr("fcntl", e))?;
    // mmap may allocate, never map executable memory.
    let mmap = ScmpSyscall::from_name("mmap").map_err(|e| herr("mmap", e))?;
    filter
        .add_rule_conditional(
            ScmpAction::Allow,
            mmap,
            &[ScmpArgCompare::new(2, ScmpCompareOp::MaskedEqual(libc::PROT_EXEC as u64), 0)],
        )
        .map_err(|e| herr("mmap", e))?;
    filter.load().map_err(|e| herr("load", e))
}
