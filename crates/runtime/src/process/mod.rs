//! Creating container processes without re-executing the runtime.
//!
//! A single-threaded caller (the CLI) with nothing to join first, other than a
//! network, ipc or uts namespace, clone3()s the container process itself, with
//! all new-namespace flags and straight into its cgroup (CLONE_INTO_CGROUP);
//! the process joins those namespaces first thing. Otherwise the runtime forks
//! once (through libc, so a multi-threaded caller such as a shim is safe: the
//! child may allocate).
//! That intermediate child is single-threaded; it joins existing namespaces,
//! unshares a time namespace if asked (offsets must be written before anything
//! lives in it), and clone3()s the real process with all new-namespace flags
//! and CLONE_PARENT, so the container process becomes a direct child of the
//! caller. The intermediate reports the pid and exits.

pub mod exec;
pub mod init;
pub mod plan;
pub mod policies;

use crate::namespaces::NamespacePlan;
use crate::sync::{Msg, SyncChannel};
use crate::sys::{self, Forked};
use crate::{Error, Result};
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};

/// How to create the process.
pub struct SpawnSpec<'a> {
    /// Namespaces to create and to join.
    pub namespaces: &'a NamespacePlan,
    /// Time namespace offsets, written when a new time namespace is unshared.
    pub time_offsets: Option<&'a HashMap<String, oci_spec::runtime::LinuxTimeOffset>>,
    /// The cgroup the process starts in.
    pub cgroup: Option<CgroupEntry>,
    /// Descriptors the container process needs besides stdio and the preserved
    /// ones; every other descriptor of the caller is closed in the child, so a
    /// multi-threaded caller's unrelated files (and locks) never reach it.
    pub keep_fds: Vec<RawFd>,
    /// Caller descriptors 3..3+N passed on to the container.
    pub preserve_fds: u32,
    /// Descriptors to become the process's stdin, stdout and stderr (default:
    /// the caller's own 0, 1 and 2).
    pub stdio: Option<[RawFd; 3]>,
    /// process.oomScoreAdj, set before any namespace is joined or created.
    pub oom_score_adj: Option<i32>,
    /// A resctrl group's `tasks` file: the process starts in that group.
    pub rdt_tasks: Option<RawFd>,
    /// Called with the intermediate process's pid before it goes on (it waits):
    /// a rootless caller has systemd move it into the container's scope, which
    /// the caller itself may not do, and the process is cloned there.
    pub adopt: Option<&'a dyn Fn(i32) -> Result<()>>,
}

/// How the process gets into its cgroup (a descriptor of the cgroup directory).
#[derive(Clone, Copy, Debug)]
pub enum CgroupEntry {
    /// Cloned straight into it (CLONE_INTO_CGROUP): the fast way, for a cgroup
    /// this runtime created and has never killed.
    Clone(RawFd),
    /// The intermediate process moves itself in first and the process is
    /// cloned there: for a cgroup that existed before. A cgroup that ever had
    /// cgroup.kill written (by us deleting an earlier container in it, or by
    /// anyone else) makes some kernels (6.18 among them) SIGKILL every child
    /// cloned into it from another cgroup, as they compare the kill counter of
    /// the target cgroup with the caller's.
    Migrate(RawFd),
}

impl CgroupEntry {
    /// The entry for the cgroup open at `fd`: `fresh` when this runtime
    /// created it for the process's container.
    pub fn new(fd: RawFd, fresh: bool) -> CgroupEntry {
        if fresh {
            CgroupEntry::Clone(fd)
        } else {
            CgroupEntry::Migrate(fd)
        }
    }

    fn fd(self) -> RawFd {
        match self {
            CgroupEntry::Clone(fd) | CgroupEntry::Migrate(fd) => fd,
        }
    }
}

/// Creates the container process, which runs `main` with its end of the sync
/// channel and must never return normally (it execs or exits). Returns the host pid
/// and the runtime's end of the channel.
pub fn spawn<F>(spec: &SpawnSpec<'_>, main: F) -> Result<(i32, SyncChannel)>
where
    F: FnOnce(&mut SyncChannel) -> Error,
{
    let (mut parent_end, mut child_end) = SyncChannel::pair()?;
    let main = if direct_possible(spec) {
        match spawn_direct(spec, &mut child_end, main)? {
            Ok(pid) => return Ok((pid, parent_end)),
            Err(main) => main,
        }
    } else {
        main
    };
    // The intermediate waits on this pipe until it is adopted.
    let adopted = match spec.adopt {
        Some(_) => Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", "", e))?),
        None => None,
    };
    match sys::fork().map_err(|e| Error::sys("fork", "container process", e))? {
        Forked::Child => {
            drop(parent_end);
            if let Some((read, write)) = &adopted {
                // Without the write end here, the runtime's death is end-of-file.
                let _ = nix::unistd::close(write.as_raw_fd());
                let mut b = [0u8; 1];
                if !matches!(nix::unistd::read(read.as_raw_fd(), &mut b), Ok(1)) {
                    sys::exit_now(1);
                }
            }
            let mut keep: Vec<RawFd> = spec.keep_fds.clone();
            keep.extend(spec.namespaces.join.iter().map(|(_, f)| f.as_raw_fd()));
            keep.extend(spec.namespaces.join_process.iter().map(|p| p.pidfd.as_raw_fd()));
            keep.extend(spec.cgroup.map(CgroupEntry::fd));
            keep.extend(spec.rdt_tasks);
            keep.push(child_end.as_stream().as_raw_fd());
            keep.extend(spec.stdio.iter().flatten());
            close_all_but(3 + spec.preserve_fds as RawFd, &mut keep);
            // Never run destructors or atexit handlers of the caller's state here.
            // A panic must never unwind into the caller's frames copied into this
            // process (a library caller could catch it and go on running here).
            let code =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| intermediate(spec, &mut child_end, main)))
                    .unwrap_or(1);
            sys::exit_now(code);
        }
        Forked::Parent(pid) => {
            drop(child_end);
            if let (Some(adopt), Some((read, write))) = (spec.adopt, adopted) {
                drop(read);
                if let Err(e) = adopt(pid) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(Pid::from_raw(pid), None);
                    return Err(e);
                }
                nix::unistd::write(&write, b"1").map_err(|e| Error::sys("write", "adoption pipe", e))?;
            }
            let reaped = loop {
                match waitpid(Pid::from_raw(pid), None) {
                    Err(nix::Error::EINTR) => continue,
                    other => break other,
                }
            };
            reaped.map_err(|e| Error::sys("waitpid", "intermediate process", e))?;
            // The intermediate has exited, so its message (the pid, or why it failed)
            // is buffered; the new process may have written an error before it.
            let mut early_error = None;
            loop {
                match parent_end.recv() {
                    Ok(Some(Msg::Pid(p))) => match early_error {
                        None => return Ok((p, parent_end)),
                        Some(e) => {
                            reap(p);
                            return Err(Error::Init(e));
                        }
                    },
                    Ok(Some(Msg::Error(e))) if early_error.is_none() => early_error = Some(e),
                    Ok(Some(Msg::Error(_))) => {}
                    Ok(Some(other)) => {
                        return Err(Error::Init(format!("container process: unexpected message {other:?}")))
                    }
                    Ok(None) => {
                        return Err(Error::Init(
                            early_error.unwrap_or_else(|| "container process: no pid reported".into()),
                        ))
                    }
                    Err(e) => return Err(Error::io("read", "sync channel", e)),
                }
            }
        }
    }
}

/// Whether the process can be cloned by the caller itself, without the
/// intermediate: nothing to join or unshare first (a time namespace, a cgroup
/// to migrate into, a resctrl group, an adopting systemd, namespaces other
/// than those [`joinable_after_clone`]), and a caller with a single thread,
/// whose memory the clone may copy without libc's fork handlers (no other
/// thread can hold a lock in it).
fn direct_possible(spec: &SpawnSpec<'_>) -> bool {
    joinable_after_clone(spec.namespaces)
        && spec.namespaces.join_process.is_none()
        && !spec.namespaces.new_time
        && spec.rdt_tasks.is_none()
        && spec.adopt.is_none()
        && !matches!(spec.cgroup, Some(CgroupEntry::Migrate(_)))
        && sys::single_threaded()
}

/// Whether the namespaces to join can be joined by the cloned process itself:
/// only network, ipc and uts namespaces (a process is in them as soon as it
/// joins; none of them changes what the clone's new namespaces are), and
/// only when the clone makes no user namespace (in one, the process would no
/// longer have the privilege to join namespaces of the caller's).
fn joinable_after_clone(plan: &NamespacePlan) -> bool {
    use oci_spec::runtime::LinuxNamespaceType as T;
    plan.join.is_empty()
        || (!plan.clone_flags.contains(CloneFlags::CLONE_NEWUSER)
            && plan.join.iter().all(|(t, _)| matches!(t, T::Network | T::Ipc | T::Uts)))
}

/// Clones the process straight from the caller, the intermediate's work done
/// by the child itself (descriptors, signals, stdio, dumpable) and by the
/// caller (oomScoreAdj, written to the child's /proc file: a child in a new
/// user namespace could not lower its own). `Ok(Err(main))`: the kernel
/// cannot clone into the cgroup (before 5.7), and the intermediate, which
/// moves itself in first, has to be used.
fn spawn_direct<F>(spec: &SpawnSpec<'_>, child_end: &mut SyncChannel, main: F) -> Result<std::result::Result<i32, F>>
where
    F: FnOnce(&mut SyncChannel) -> Error,
{
    let flags = spec.namespaces.clone_flags.bits() as u64;
    let clone_into = spec.cgroup.map(CgroupEntry::fd);
    let forked = match sys::clone3_fork(flags, clone_into) {
        Err(nix::Error::E2BIG) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOSYS) if clone_into.is_some() => {
            return Ok(Err(main))
        }
        other => other.map_err(|e| Error::sys("clone3", "container process", e))?,
    };
    match forked {
        Forked::Child => {
            // As in the intermediate (see there): the container process dies
            // with the thread that made it until it reports ready (one that
            // died before this line closed the channel the process waits on
            // first), and is not dumpable.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            if !(crate::rootless() && spec.namespaces.new_user()) {
                let _ = nix::sys::prctl::set_dumpable(false);
            }
            // The namespaces to join (see joinable_after_clone), while their
            // files are open; before anything of the container is set up.
            let joined = spec.namespaces.join_all();
            let mut keep: Vec<RawFd> = spec.keep_fds.clone();
            keep.push(child_end.as_stream().as_raw_fd());
            keep.extend(spec.stdio.iter().flatten());
            close_all_but(3 + spec.preserve_fds as RawFd, &mut keep);
            reset_signals();
            let err = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                match joined.and_then(|()| spec.stdio.map(install_stdio).transpose()) {
                    Ok(_) => main(child_end),
                    Err(e) => e,
                }
            })) {
                Ok(e) => e,
                Err(_) => Error::Init("container process panicked during setup".into()),
            };
            let _ = child_end.send(&Msg::Error(err.to_string()));
            sys::exit_now(1);
        }
        Forked::Parent(pid) => {
            if let Some(adj) = spec.oom_score_adj {
                if let Err(e) = plan::set_oom_score_adj_of(pid, adj) {
                    reap(pid);
                    return Err(e);
                }
            }
            Ok(Ok(pid))
        }
    }
}

/// Makes `fds` descriptors 0, 1 and 2: each is first copied above 2, so placing
/// one cannot overwrite the source of the next.
fn install_stdio(fds: [RawFd; 3]) -> Result<()> {
    let mut high = [0; 3];
    for (h, &fd) in high.iter_mut().zip(&fds) {
        *h = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
            .map_err(|e| Error::sys("fcntl", format!("stdio descriptor {fd}"), e))?;
    }
    for (target, &h) in high.iter().enumerate() {
        nix::unistd::dup2(h, target as RawFd).map_err(|e| Error::sys("dup2", format!("stdio {target}"), e))?;
        let _ = nix::unistd::close(h);
    }
    Ok(())
}

fn intermediate<F>(spec: &SpawnSpec<'_>, sync: &mut SyncChannel, main: F) -> i32
where
    F: FnOnce(&mut SyncChannel) -> Error,
{
    // Nobody may read /proc/PID/exe of a runtime process from inside the container
    // (CVE-2019-5736): non-dumpable processes only expose it to the host's root.
    // The flag is inherited by the clone below and reset by the final execve.
    // Rootless, the runtime can write the new user namespace's id maps only
    // while the process is dumpable (its /proc files are otherwise root's): it
    // stays so until the maps are written, before anything of the container
    // exists, and the runtime's own processes are its user's to trace anyway.
    if !(crate::rootless() && spec.namespaces.new_user()) {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    reset_signals();
    let result = (|| -> Result<i32> {
        if let Some(stdio) = spec.stdio {
            install_stdio(stdio)?;
        }
        if let Some(adj) = spec.oom_score_adj {
            plan::set_oom_score_adj(adj)?;
        }
        if let Some(fd) = spec.rdt_tasks {
            // "0" is the writer: the clone below inherits the group.
            // SAFETY: the caller keeps `fd` open for the duration of the spawn.
            let tasks = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::unistd::write(tasks, b"0").map_err(|e| Error::sys("write", "the resctrl group's tasks", e))?;
        }
        spec.namespaces.join_all()?;
        if spec.namespaces.new_time {
            nix::sched::unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
                .map_err(|e| Error::sys("unshare", "time namespace", e))?;
            if let Some(offsets) = spec.time_offsets {
                crate::namespaces::write_time_offsets(offsets)?;
            }
        }
        let flags = spec.namespaces.clone_flags.bits() as u64 | libc::CLONE_PARENT as u64;
        let clone_into = match spec.cgroup {
            Some(CgroupEntry::Migrate(fd)) => {
                join_cgroup(fd)?;
                None
            }
            Some(CgroupEntry::Clone(fd)) => Some(fd),
            None => None,
        };
        let forked = match sys::clone3_fork(flags, clone_into) {
            // Kernels before 5.7 know no CLONE_INTO_CGROUP: move ourselves into the
            // cgroup instead, and the clone inherits it.
            Err(nix::Error::E2BIG) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOSYS) if clone_into.is_some() => {
                if let Some(fd) = clone_into {
                    join_cgroup(fd)?;
                }
                sys::clone3_fork(flags, None)
            }
            other => other,
        };
        match forked.map_err(|e| Error::sys("clone3", "container process", e))? {
            Forked::Child => {
                // Until it reports ready, the process dies with the thread that
                // creates it (our caller, through CLONE_PARENT): a runtime killed
                // mid-way leaves no half-set-up process behind. Cleared again
                // by the process once it no longer needs the caller.
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                let err = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| main(sync))) {
                    Ok(e) => e,
                    Err(_) => Error::Init("container process panicked during setup".into()),
                };
                let _ = sync.send(&Msg::Error(err.to_string()));
                sys::exit_now(1);
            }
            Forked::Parent(pid) => Ok(pid),
        }
    })();
    match result {
        Ok(pid) => match sync.send(&Msg::Pid(pid)) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        Err(e) => {
            let _ = sync.send(&Msg::Error(e.to_string()));
            1
        }
    }
}

/// Gives the container a clean signal state: the caller may block signals (to
/// forward them) or ignore some (Rust ignores SIGPIPE), and both survive execve.
pub(crate) fn reset_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL runs no code of ours in signal context.
            let _ = unsafe { sigaction(sig, &dfl) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Closes every descriptor from `first` up except those in `keep`.
fn close_all_but(first: RawFd, keep: &mut Vec<RawFd>) {
    keep.retain(|&fd| fd >= first);
    keep.sort_unstable();
    keep.dedup();
    let mut from = first as u32;
    for &fd in keep.iter() {
        if fd as u32 > from {
            // SAFETY: close_range only closes descriptors; none in this range is in use.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd as u32 - 1, 0) };
        }
        from = fd as u32 + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

/// Moves the calling process into the cgroup open at `dir`.
fn join_cgroup(dir: RawFd) -> Result<()> {
    let fd = nix::fcntl::openat(
        Some(dir),
        "cgroup.procs",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open", "cgroup.procs", e))?;
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    let f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    nix::unistd::write(&f, b"0").map_err(|e| Error::sys("write", "cgroup.procs", e))?;
    Ok(())
}

/// Kills and reaps a process this runtime created (a child of the caller through
/// CLONE_PARENT).
pub fn reap(pid: i32) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    while let Err(nix::Error::EINTR) = waitpid(Pid::from_raw(pid), None) {}
}

/// Why the child `pid` stopped answering during setup (its end of the channel
/// closed without a word, `err`): the signal that killed it or its exit status,
/// once it is gone (it is not reaped here).
pub fn setup_failure(pid: i32, what: &str, err: std::io::Error) -> Error {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    for _ in 0..100 {
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Error::Init(format!("{what}: container process killed by {sig} during setup"))
            }
            Ok(WaitStatus::Exited(_, code)) => {
                return Error::Init(format!("{what}: container process exited with status {code} during setup"))
            }
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(1)),
            _ => break,
        }
    }
    Error::io("write", "sync channel", err)
}

/// Sends a pidfd of `pid` over the connected unix socket `socket`
/// (`--pidfd-socket`), with the word "pidfd" as the message, as runc does.
pub fn send_pidfd(socket: RawFd, pid: i32) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let pidfd = crate::sys::pidfd_open(pid).map_err(|e| Error::sys("pidfd_open", format!("process {pid}"), e))?;
    let fds = [pidfd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"pidfd")];
    sendmsg::<()>(socket, &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map_err(|e| Error::sys("sendmsg", "--pidfd-socket", e))?;
    Ok(())
}

/// This process's pid and start time (to recognise it later, pid reuse aside).
pub fn own_identity() -> (i32, u64) {
    let pid = std::process::id() as i32;
    (pid, crate::state::proc_stat(pid).map(|(_, t)| t).unwrap_or(0))
}

/// SIGKILLs a container process that may not be our child (another runtime
/// invocation created it), checking first that `pid` is still the process that
/// started at `start_time`, and waits up to 10 s for it to be gone.
pub fn reap_foreign(pid: i32, start_time: u64) {
    use std::os::fd::AsFd;
    // The pidfd pins the process: after the start-time check, the pid cannot be reused.
    let Ok(pidfd) = crate::sys::pidfd_open(pid) else { return };
    if !crate::state::process_alive(pid, start_time) {
        return;
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let mut fds = [nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN)];
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16));
}

/// Writes the uid and gid maps of process `pid`'s new user namespace. As root,
/// directly. Rootless, a mapping of just the caller's own id is written
/// directly too (gid after denying setgroups, as the kernel requires); wider
/// mappings go through the setuid helpers newuidmap and newgidmap, which allow
/// what /etc/subuid and /etc/subgid grant the user.
pub fn write_id_maps(
    pid: i32,
    uids: &[oci_spec::runtime::LinuxIdMapping],
    gids: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<()> {
    // Root (of the host, or of a user namespace: rootless podman) writes any
    // mapping its namespace holds.
    if nix::unistd::geteuid().is_root() {
        write_id_map(pid, "uid_map", uids)?;
        return write_id_map(pid, "gid_map", gids);
    }
    let own =
        |maps: &[oci_spec::runtime::LinuxIdMapping], id: u32| matches!(maps, [m] if m.host_id() == id && m.size() == 1);
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    if own(uids, uid) {
        write_id_map(pid, "uid_map", uids)?;
    } else {
        helper_id_map(pid, "newuidmap", "linux.uidMappings", uids)?;
    }
    if own(gids, gid) {
        let path = format!("/proc/{pid}/setgroups");
        std::fs::write(&path, "deny").map_err(|e| Error::io("write", path, e))?;
        write_id_map(pid, "gid_map", gids)
    } else {
        helper_id_map(pid, "newgidmap", "linux.gidMappings", gids)
    }
}

/// Runs newuidmap/newgidmap for `pid` with `maps`; its refusal names `field`.
fn helper_id_map(pid: i32, helper: &str, field: &str, maps: &[oci_spec::runtime::LinuxIdMapping]) -> Result<()> {
    let mut cmd = std::process::Command::new(helper);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([m.container_id().to_string(), m.host_id().to_string(), m.size().to_string()]);
    }
    let out = cmd.stdin(std::process::Stdio::null()).output().map_err(|e| {
        Error::config(
            field,
            format!("mapping more than the caller's own id needs {helper} (Debian package uidmap): {e}"),
        )
    })?;
    if !out.status.success() {
        return Err(Error::config(
            field,
            format!(
                "{helper} refused the mapping (the user may map only its own id and what /etc/sub{}id grants it): {}",
                if helper == "newuidmap" { "u" } else { "g" },
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Writes a uid or gid map for `pid` ("uid_map" or "gid_map").
pub fn write_id_map(pid: i32, file: &str, maps: &[oci_spec::runtime::LinuxIdMapping]) -> Result<()> {
    let text: String = maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect();
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, text).map_err(|e| Error::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceType as T;

    fn plan(clone_flags: CloneFlags, join: &[T]) -> NamespacePlan {
        let join = join
            .iter()
            .map(|t| (*t, std::fs::File::open("/proc/self/ns/net").expect("a namespace file to stand in")))
            .collect();
        NamespacePlan { clone_flags, join, ..Default::default() }
    }

    #[test]
    fn only_network_ipc_and_uts_namespaces_are_joined_after_the_clone() {
        let new = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID;
        assert!(joinable_after_clone(&plan(new, &[])));
        // A pod's container: the sandbox's network, ipc and uts namespaces.
        assert!(joinable_after_clone(&plan(new, &[T::Network, T::Ipc, T::Uts])));
        // Those change what the clone makes, or where the process is only
        // once it forks (pid), or its root (mount): joined before the clone.
        for t in [T::Pid, T::Mount, T::User, T::Cgroup, T::Time] {
            assert!(!joinable_after_clone(&plan(new, &[T::Network, t])), "{t:?}");
        }
        // In a new user namespace the process could no longer join the caller's.
        assert!(!joinable_after_clone(&plan(new | CloneFlags::CLONE_NEWUSER, &[T::Network])));
        assert!(joinable_after_clone(&plan(new | CloneFlags::CLONE_NEWUSER, &[])));
    }
}
