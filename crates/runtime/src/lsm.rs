//! Linux security module labels: `process.apparmorProfile`,
//! `process.selinuxLabel` and `linux.mountLabel`. Each applies when the host runs
//! that module and is refused, naming the field, when it does not (a label the
//! host cannot enforce must never be silently dropped).

use crate::{Error, Result};
use std::os::fd::{FromRawFd, OwnedFd};

/// Whether AppArmor is enabled on this host.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'))
        && std::path::Path::new("/proc/self/attr/apparmor/exec").exists()
}

/// Whether SELinux is enabled on this host (selinuxfs is mounted).
pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Refuses labels the host cannot apply.
pub fn check(apparmor: &Option<String>, selinux: &Option<String>, field: &str) -> Result<()> {
    if set(apparmor).is_some() && !apparmor_enabled() {
        return Err(Error::config(format!("{field}.apparmorProfile"), "AppArmor is not enabled on this host"));
    }
    if set(selinux).is_some() && !selinux_enabled() {
        return Err(Error::config(format!("{field}.selinuxLabel"), "SELinux is not enabled on this host"));
    }
    Ok(())
}

/// Refuses a `linux.mountLabel` the host cannot apply.
pub fn check_mount_label(label: &Option<String>) -> Result<()> {
    if set(label).is_some() && !selinux_enabled() {
        return Err(Error::config("linux.mountLabel", "SELinux is not enabled on this host"));
    }
    Ok(())
}

/// The mount data option that labels a new filesystem with `label`.
pub fn mount_context(label: &str) -> String {
    format!("context=\"{label}\"")
}

/// Labels the next execve of the calling thread gets, with the attribute files
/// opened early, from the host's procfs (a container's /proc could be a fake one
/// that swallows the writes), and written just before execve.
pub struct ExecLabels {
    apparmor: Option<(OwnedFd, String)>,
    selinux: Option<(OwnedFd, String)>,
}

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

fn open_attr(path: &str) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open", path, e))?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let fs = nix::sys::statfs::fstatfs(&fd).map_err(|e| Error::sys("fstatfs", path, e))?;
    if fs.filesystem_type().0 as i64 != PROC_SUPER_MAGIC {
        return Err(Error::Init(format!("{path} is not on procfs")));
    }
    Ok(fd)
}

impl ExecLabels {
    /// Opens the attribute files for the labels that are set (call before the
    /// root changes).
    pub fn open(apparmor: &Option<String>, selinux: &Option<String>) -> Result<Self> {
        let apparmor = match set(apparmor) {
            Some(p) => Some((open_attr("/proc/thread-self/attr/apparmor/exec")?, format!("exec {p}"))),
            None => None,
        };
        let selinux = match set(selinux) {
            Some(l) => Some((open_attr("/proc/thread-self/attr/exec")?, l.to_string())),
            None => None,
        };
        Ok(ExecLabels { apparmor, selinux })
    }

    /// Writes the labels; they take effect at the next execve.
    pub fn apply(&self) -> Result<()> {
        for (fd, value) in self.apparmor.iter().chain(self.selinux.iter()) {
            let n = nix::unistd::write(fd, value.as_bytes()).map_err(|e| Error::sys("set exec label", value, e))?;
            if n != value.len() {
                return Err(Error::Init(format!("set exec label {value}: short write")));
            }
        }
        Ok(())
    }
}
