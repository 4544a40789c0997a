//! Terminals: a pty pair allocated from the container's devpts, its master handed to
//! the caller over a unix socket (SCM_RIGHTS), its slave made the controlling terminal.

use crate::{Error, Result};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

/// Opens the slave side of the pty whose master is `master` without a path lookup
/// (TIOCGPTPEER), so a hostile rootfs cannot substitute another file.
pub fn open_peer(master: &OwnedFd) -> Result<OwnedFd> {
    // SAFETY: TIOCGPTPEER takes open flags as its argument and returns a new fd.
    let fd =
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::sys("ioctl", "TIOCGPTPEER", nix::Error::last()));
    }
    // SAFETY: the kernel just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the pty slave `slave` belong to the process's user, as with runc: a
/// process that is not root owns its terminal, so `mesg`, `write` and job
/// control work. The group stays what devpts gave it when its `gid=` option set
/// one (the tty group, with mode 620); otherwise it is the process's group.
pub fn give_to(slave: &OwnedFd, uid: u32, gid: u32) -> Result<()> {
    let st = nix::sys::stat::fstat(slave.as_raw_fd()).map_err(|e| Error::sys("fstat", "terminal", e))?;
    let group = (st.st_gid == nix::unistd::getegid().as_raw()).then(|| nix::unistd::Gid::from_raw(gid));
    nix::unistd::fchown(slave.as_raw_fd(), Some(nix::unistd::Uid::from_raw(uid)), group)
        .map_err(|e| Error::sys("fchown", format!("terminal to uid {uid}"), e))
}

/// Unlocks the slave of a freshly opened master.
pub fn unlock(master: &OwnedFd) -> Result<()> {
    let zero: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which is valid.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &zero) } < 0 {
        return Err(Error::sys("ioctl", "TIOCSPTLCK", nix::Error::last()));
    }
    Ok(())
}

/// Sets the window size of a terminal.
pub fn resize(fd: RawFd, width: u16, height: u16) -> Result<()> {
    let ws = libc::winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: `ws` is a valid winsize for the duration of the call.
    unsafe { set_winsize(fd, &ws) }.map_err(|e| Error::sys("ioctl", "TIOCSWINSZ", e))?;
    Ok(())
}

/// Makes `slave` the controlling terminal and stdio of the calling process, which
/// must be a session leader.
pub fn make_controlling(slave: &OwnedFd) -> Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(Error::sys("ioctl", "TIOCSCTTY", nix::Error::last()));
    }
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(|e| Error::sys("dup2", "terminal", e))?;
    }
    Ok(())
}

/// Sends `master` over the connected unix socket `socket`, as runc does: one message
/// whose payload is the terminal's name and whose ancillary data holds the fd.
pub fn send_master(socket: RawFd, master: RawFd) -> Result<()> {
    let name = b"/dev/ptmx";
    let iov = [IoSlice::new(name)];
    let fds = [master];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(socket, &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| Error::sys("sendmsg", "console socket", e))?;
    Ok(())
}

/// Receives a terminal master sent with [`send_master`].
pub fn recv_master(socket: RawFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(socket, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| Error::sys("recvmsg", "console socket", e))?;
    for c in msg.cmsgs().map_err(|e| Error::sys("recvmsg", "console socket", e))? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this descriptor for us; we own it now.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(Error::Init("console socket: message carried no terminal".into()))
}
