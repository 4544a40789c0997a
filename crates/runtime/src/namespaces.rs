//! Which namespaces a container gets: new ones (clone flags) and existing ones to join
//! (open descriptors, taken before any fork so paths resolve in the runtime's view).

use crate::{Error, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};

/// Clone flag of a namespace type.
pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME shares its value with CSIGNAL; nix has no constant for it.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Opens namespace file `path` and checks it is a namespace of type `t`: a FIFO
/// must not block us, and a wrong file must fail here, naming `field`, not as a
/// bare EINVAL from setns.
pub fn open_namespace(path: &std::path::Path, t: LinuxNamespaceType, field: &str) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::config(field, format!("{}: {e}", path.display())))?;
    let not_ns = || Error::config(field, format!("{} is not a {} namespace", path.display(), proc_name(t)));
    let fs = nix::sys::statfs::fstatfs(&f).map_err(|_| not_ns())?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(not_ns());
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns an integer.
    let kind = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) };
    if kind < 0 || kind != clone_flag(t).bits() {
        return Err(not_ns());
    }
    Ok(f)
}

/// Name of the namespace's file under /proc/PID/ns.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// All namespace types, the user namespace first: joining it first gives the
/// privileges needed to join the namespaces it owns.
pub const ALL: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

/// The namespaces of a process about to be created.
pub struct NamespacePlan {
    /// Namespaces to create with the clone (everything but time).
    pub clone_flags: CloneFlags,
    /// Whether a new time namespace is unshared before the clone (its offsets must be
    /// written before any process lives in it).
    pub new_time: bool,
    /// Existing namespaces to join, user namespace first, mount namespace last.
    pub join: Vec<(LinuxNamespaceType, File)>,
    /// A new ipc namespace unshared by the container process once it is root in
    /// its new user namespace: the ipc namespace's mqueue filesystem belongs to
    /// whoever creates it, and created by the clone it would belong to the
    /// host's root (an unmapped owner, "nobody", on /dev/mqueue).
    pub late_ipc: bool,
    /// The namespaces of a running process to join, all at once (`exec`).
    pub join_process: Option<ProcessNamespaces>,
}

/// Namespaces of a running process, joined with one setns of a pidfd of it
/// (Linux 5.8), or one namespace file at a time on older kernels.
#[derive(Debug)]
pub struct ProcessNamespaces {
    /// The process.
    pub pid: i32,
    /// A pidfd of it.
    pub pidfd: std::os::fd::OwnedFd,
    /// The namespace types to join, user namespace first.
    pub types: Vec<LinuxNamespaceType>,
}

impl Default for NamespacePlan {
    fn default() -> Self {
        NamespacePlan {
            clone_flags: CloneFlags::empty(),
            new_time: false,
            join: Vec::new(),
            late_ipc: false,
            join_process: None,
        }
    }
}

impl NamespacePlan {
    /// Builds the plan from the config's namespace list.
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Result<Self> {
        let mut plan = NamespacePlan::default();
        for t in ALL {
            let Some((i, ns)) = namespaces.iter().enumerate().find(|(_, n)| n.typ() == t) else {
                continue;
            };
            match ns.path() {
                Some(path) => plan.join.push((t, open_namespace(path, t, &format!("linux.namespaces[{i}].path"))?)),
                None if t == LinuxNamespaceType::Time => plan.new_time = true,
                None => plan.clone_flags |= clone_flag(t),
            }
        }
        if plan.clone_flags.contains(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWIPC) {
            plan.clone_flags.remove(CloneFlags::CLONE_NEWIPC);
            plan.late_ipc = true;
        }
        Ok(plan)
    }

    /// Whether the container gets a new user namespace.
    pub fn new_user(&self) -> bool {
        self.clone_flags.contains(CloneFlags::CLONE_NEWUSER)
    }

    /// Joins every namespace in `join` (in the calling, single-threaded process).
    pub fn join_all(&self) -> Result<()> {
        for (t, f) in &self.join {
            nix::sched::setns(f.as_fd(), clone_flag(*t)).map_err(|e| Error::sys("setns", proc_name(*t), e))?;
        }
        if let Some(p) = &self.join_process {
            let flags = p.types.iter().fold(CloneFlags::empty(), |f, t| f | clone_flag(*t));
            if nix::sched::setns(p.pidfd.as_fd(), flags).is_err() {
                // A kernel before 5.8 (or a refusal, which the namespace it
                // concerns then names).
                for t in &p.types {
                    let path = format!("/proc/{}/ns/{}", p.pid, proc_name(*t));
                    let f = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
                    nix::sched::setns(f.as_fd(), clone_flag(*t)).map_err(|e| Error::sys("setns", proc_name(*t), e))?;
                }
            }
        }
        Ok(())
    }
}

/// Writes time namespace offsets for the namespace the caller just unshared.
pub fn write_time_offsets(
    offsets: &std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset>,
) -> Result<()> {
    let mut text = String::new();
    for (clock, off) in offsets {
        text.push_str(&format!("{clock} {} {}\n", off.secs().unwrap_or(0), off.nanosecs().unwrap_or(0)));
    }
    std::fs::write("/proc/self/timens_offsets", text).map_err(|e| Error::io("write", "/proc/self/timens_offsets", e))
}
