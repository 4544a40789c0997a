//! Keeping the runtime's binary out of a container's reach (CVE-2019-5736).
//!
//! Between entering a container's pid namespace and execve, a process set up by
//! the runtime is a copy of the runtime: its `/proc/PID/exe` is the host binary.
//! Such processes are non-dumpable, so a container process can only open that
//! link with CAP_SYS_PTRACE in the host's user namespace. A container that may
//! hold it (no user namespace, and CAP_SYS_PTRACE in its sets, or a pid
//! namespace joined from elsewhere whose processes we cannot vouch for) gets a
//! runtime that first re-executes itself from a sealed memfd copy: what the
//! container can reach then is a copy that cannot be written.

use crate::{Error, Result};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxNamespaceType, Spec};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

/// Marker left in a container's state directory when an `exec` gave a process
/// CAP_SYS_PTRACE: later `exec`s must protect themselves from it.
pub const PTRACE_EXEC_MARKER: &str = "ptrace-exec";

/// Whether capability sets include CAP_SYS_PTRACE anywhere.
pub fn has_ptrace(caps: Option<&LinuxCapabilities>) -> bool {
    let Some(c) = caps else { return false };
    [c.bounding(), c.effective(), c.permitted(), c.inheritable(), c.ambient()]
        .into_iter()
        .flatten()
        .any(|set| set.contains(&Capability::SysPtrace))
}

fn has_user_ns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User))
}

/// Whether processes of a container created from `spec` may open the
/// `/proc/PID/exe` of a runtime process in it.
pub fn spec_exposes_runtime(spec: &Spec) -> bool {
    if has_user_ns(spec) {
        return false;
    }
    let joins_pid = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()).is_some_and(|ns| {
        ns.iter()
            .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().as_ref().is_some_and(|p| !p.as_os_str().is_empty()))
    });
    joins_pid || has_ptrace(spec.process().as_ref().and_then(|p| p.capabilities().as_ref()))
}

/// Whether `/proc/self/exe` is already a sealed, unwritable copy.
pub fn running_from_sealed_copy() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else { return false };
    fcntl(f.as_raw_fd(), FcntlArg::F_GET_SEALS)
        .map(|s| SealFlag::from_bits_truncate(s).contains(SealFlag::F_SEAL_WRITE))
        .unwrap_or(false)
}

/// Re-executes the running binary from a sealed memfd copy with the same
/// arguments and environment, unless it already runs from one. Descriptors that
/// are not close-on-exec (stdio, preserved ones) carry over.
pub fn reexec_from_sealed_copy() -> Result<()> {
    if running_from_sealed_copy() {
        return Ok(());
    }
    let copy = sealed_copy()?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Init("an argument contains a NUL byte".into()))?;
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let errno = nix::unistd::fexecve(copy.as_raw_fd(), &args, &env).err().unwrap_or(nix::Error::UnknownErrno);
    Err(Error::sys("execveat", "sealed copy of the runtime", errno))
}

fn sealed_copy() -> Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let name = c"strata";
    let memfd = memfd_create(name, MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING)
        .map_err(|e| Error::sys("memfd_create", "sealed copy of the runtime", e))?;
    let mut src = std::fs::File::open("/proc/self/exe").map_err(|e| Error::io("open", "/proc/self/exe", e))?;
    let mut dst = std::fs::File::from(memfd);
    // Through a buffer of ours, not std::io::copy: the kernel's in-kernel copy
    // (copy_file_range, splice) can leave the memfd's pages referenced for a
    // while, and the write seal is then refused with EBUSY.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        use std::io::{Read, Write};
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", "/proc/self/exe", e)),
        };
        dst.write_all(&buf[..n]).map_err(|e| Error::io("write", "sealed copy of the runtime", e))?;
    }
    let seals = SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    // The kernel waits a while for page references to go before EBUSY; any
    // left by someone else reading the memfd are brief: try a few more times.
    let mut tries = 0;
    loop {
        match fcntl(dst.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)) {
            Ok(_) => break,
            Err(nix::Error::EBUSY) if tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(Error::sys("fcntl", "F_ADD_SEALS", e)),
        }
    }
    Ok(OwnedFd::from(dst))
}
