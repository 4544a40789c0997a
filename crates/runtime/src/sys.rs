//! Thin safe wrappers over the system calls that neither `nix` nor `libc` wrap here:
//! clone3, openat2, mount_setattr and close_range.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Result of [`clone3_fork`] as seen by each side.
pub enum Forked {
    /// In the parent, with the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// Forks like fork(2) but with extra clone flags (namespaces, CLONE_PARENT) and,
/// when `cgroup` is given, directly into that cgroup (CLONE_INTO_CGROUP).
///
/// Must only be called from a single-threaded process: the child continues with a
/// copy of the caller's memory without any of libc's fork handlers having run.
pub fn clone3_fork(flags: u64, cgroup: Option<RawFd>) -> nix::Result<Forked> {
    // With CLONE_PARENT the child inherits our exit signal; the kernel insists on 0 here.
    let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 { 0 } else { libc::SIGCHLD as u64 };
    let mut args = CloneArgs { flags, exit_signal, ..Default::default() };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork(2): the child
    // gets a private copy of the address space and returns here with 0. `args` lives on
    // our stack for the duration of the call and its size is passed alongside.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    match ret {
        -1 => Err(nix::Error::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// Whether the calling process has a single thread (field 20 of
/// /proc/self/stat); false when that cannot be read.
pub fn single_threaded() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return false };
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let Some(end) = stat.rfind(')') else { return false };
    // Field 3 (the state) is the first after the name; field 20 is 17 further.
    stat[end + 1..].split_ascii_whitespace().nth(17) == Some("1")
}

/// CLONE_INTO_CGROUP (Linux 5.7).
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2's RESOLVE_NO_MAGICLINKS.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// openat2's RESOLVE_NO_SYMLINKS: fail on any symlink in the path.
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// openat2's RESOLVE_IN_ROOT.
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2(2): opens `path` relative to `dirfd` with `resolve` restrictions.
pub fn openat2(dirfd: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32, resolve: u64) -> nix::Result<OwnedFd> {
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: u64::from(mode), resolve };
    // SAFETY: `path` is a valid NUL-terminated string and `how` a properly sized struct,
    // both alive for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) on the mount at `fd`, recursively when `recursive`.
pub fn mount_setattr(fd: BorrowedFd<'_>, recursive: bool, set: u64, clear: u64) -> nix::Result<()> {
    mount_setattr_raw(fd, recursive, MountAttr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 })
}

/// Whether the kernel has mount_setattr(2) (Linux 5.12), and with it idmapped mounts.
pub fn mount_setattr_known() -> bool {
    // SAFETY: an invalid descriptor and null arguments: the kernel only reports an error.
    let ret = unsafe {
        libc::syscall(libc::SYS_mount_setattr, -1, std::ptr::null::<libc::c_char>(), 0, std::ptr::null::<u8>(), 0)
    };
    !(ret < 0 && nix::Error::last() == nix::Error::ENOSYS)
}

/// MOUNT_ATTR_IDMAP (Linux 5.12).
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Idmaps the detached mount `fd` (and the mounts below it when `recursive`)
/// with the mappings of the user namespace open at `userns`.
pub fn mount_setattr_idmap(fd: BorrowedFd<'_>, recursive: bool, userns: BorrowedFd<'_>) -> nix::Result<()> {
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    mount_setattr_raw(fd, recursive, attr)
}

fn mount_setattr_raw(fd: BorrowedFd<'_>, recursive: bool, attr: MountAttr) -> nix::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: the empty path with AT_EMPTY_PATH makes the call act on `fd`; `attr` is a
    // properly sized struct alive for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// A detached copy of the mount at `fd` (open_tree with OPEN_TREE_CLONE, Linux
/// 5.2), with the mounts below it when `recursive`: changed and attached again
/// without any path lookup.
pub fn open_tree_clone(fd: BorrowedFd<'_>, recursive: bool) -> nix::Result<OwnedFd> {
    const OPEN_TREE_CLONE: u32 = 1;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: the empty path with AT_EMPTY_PATH makes the call act on `fd`.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ret as RawFd) })
}

/// Attaches the detached mount `tree` on top of the directory or file `target`
/// (move_mount, Linux 5.2), both given as descriptors.
pub fn move_mount_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> nix::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
    // SAFETY: both paths are empty and the flags make the call act on the descriptors.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec: close_range (Linux 5.11),
/// or on a kernel without CLOSE_RANGE_CLOEXEC (or a caller whose seccomp filter
/// refuses it) one fcntl per descriptor listed in /proc/self/fd.
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it
    // cannot invalidate memory or descriptors still in use before exec.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if ret == 0 {
        return Ok(());
    }
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &RawFd| fd >= first as RawFd)
        .collect();
    for fd in fds {
        // The directory's own descriptor is in the list and already closed: EBADF.
        match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)) {
            Ok(_) | Err(nix::Error::EBADF) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// pidfd_open(2).
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// fork(2) through libc, which runs libc's atfork handlers: safe to call from a
/// multi-threaded process (the child may allocate), unlike a raw clone.
pub fn fork() -> nix::Result<Forked> {
    // SAFETY: the child only runs code of this crate that avoids locks other threads of
    // the parent could hold (no environment access, no stdio locks); glibc's fork resets
    // the allocator's locks so allocation in the child is safe.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Exits the current process immediately, without running atexit handlers or
/// unwinding: used by forked children that must not touch the parent's state.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test harness runs tests on threads of its own: this process has
    /// several; a child forked from it has one.
    #[test]
    fn single_threaded_counts_the_threads_of_the_process() {
        assert!(!single_threaded());
        match fork().expect("fork") {
            Forked::Child => exit_now(if single_threaded() { 0 } else { 1 }),
            Forked::Parent(pid) => {
                let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("wait");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0));
            }
        }
    }
}
