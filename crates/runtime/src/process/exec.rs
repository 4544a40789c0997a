//! A process started in a running container (`strata exec`): it has already joined
//! the container's namespaces (the mount namespace puts it at the container's root);
//! it starts a session of its own (so it leads its own process group inside the
//! container, as with runc), sets up its terminal, limits, user and capabilities,
//! loads the container's seccomp filter as its last step and execs. Success is
//! seen by the runtime as end-of-file on the sync channel (closed by execve).

use super::plan::ProcessPlan;
use crate::sync::SyncChannel;
use crate::{Error, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the exec'd process needs, prepared before the fork.
pub struct ExecContext<'a> {
    /// The process to run.
    pub process: &'a ProcessPlan,
    /// Connected console socket for a terminal.
    pub console_socket: Option<RawFd>,
    /// Number of caller descriptors after stdio to pass on.
    pub preserve_fds: u32,
    /// The container's seccomp filter.
    pub seccomp: Option<&'a crate::seccomp::SeccompPlan>,
    /// The container's personality and memory policy.
    pub policies: &'a super::policies::Policies,
}

/// Runs the exec'd process; returns only with the error that stopped it.
pub fn main(ctx: &ExecContext<'_>, sync: &mut SyncChannel) -> Error {
    match setup(ctx, sync) {
        Ok(target) => ctx.process.exec(&target),
        Err(e) => e,
    }
}

fn setup(ctx: &ExecContext<'_>, sync: &mut SyncChannel) -> Result<super::plan::ExecTarget> {
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", "exec", e))?;
    if ctx.process.terminal {
        let socket =
            ctx.console_socket.ok_or_else(|| Error::config("process.terminal", "a terminal needs --console-socket"))?;
        let slave = open_terminal(socket, ctx.process)?;
        crate::tty::make_controlling(&slave)?;
    }
    ctx.process.apply_limits()?;
    ctx.policies.apply()?;
    let labels = ctx.process.open_labels()?;
    labels.apply()?;
    drop(labels);
    let target = ctx.process.become_process(ctx.seccomp.is_some() && !ctx.process.no_new_privs)?;
    super::init::prepare_fds(ctx.preserve_fds)?;
    // The process is set up: from execve on it is the container's, whatever
    // happens to the runtime that started it (as with runc).
    nix::sys::prctl::set_pdeathsig(None).map_err(|e| Error::sys("prctl", "PR_SET_PDEATHSIG", e))?;
    if let Some(filter) = ctx.seccomp {
        if let Some(fd) = filter.load()? {
            sync.send_fd(std::os::fd::AsFd::as_fd(&fd))
                .map_err(|e| Error::io("send", "seccomp notify descriptor", e))?;
        }
    }
    Ok(target)
}

/// Opens a new pty from the container's devpts, gives its slave to the process's
/// user, and sends its master away.
fn open_terminal(socket: RawFd, process: &ProcessPlan) -> Result<OwnedFd> {
    let fd = nix::fcntl::open("/dev/pts/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::sys("open", "/dev/pts/ptmx in the container", e))?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = fstat(master.as_raw_fd()).map_err(|e| Error::sys("fstat", "/dev/pts/ptmx", e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFCHR || libc::major(st.st_rdev) != 5 {
        return Err(Error::Init("/dev/pts/ptmx in the container is not a pty multiplexer".into()));
    }
    crate::tty::unlock(&master)?;
    let slave = crate::tty::open_peer(&master)?;
    crate::tty::give_to(&slave, process.uid, process.gid)?;
    if let Some((w, h)) = process.console_size {
        crate::tty::resize(slave.as_raw_fd(), w, h)?;
    }
    crate::tty::send_master(socket, master.as_raw_fd())?;
    Ok(slave)
}
