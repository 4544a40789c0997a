//! The network a new network namespace starts with: its loopback interface,
//! down when the kernel creates it, brought up with one rtnetlink request (no
//! `ip` binary), as runc and crun do. Servers, test harnesses and language
//! runtimes that talk to themselves over 127.0.0.1 depend on it.

use crate::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The loopback interface's index: the first device of every network namespace.
const LOOPBACK_INDEX: i32 = 1;

/// Brings the loopback interface of the calling process's network namespace up
/// and waits for the kernel's answer.
pub fn loopback_up() -> Result<()> {
    // SAFETY: plain socket(2) call; the descriptor is owned right below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(Error::sys("socket", "rtnetlink", nix::Error::last()));
    }
    // SAFETY: socket(2) just returned this descriptor and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct nlmsghdr (16 bytes) + struct ifinfomsg (16 bytes): RTM_NEWLINK on
    // index 1 with IFF_UP set in both the flags and the change mask.
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    req[20..24].copy_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    req[24..28].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    req[28..32].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    nix::unistd::write(&sock, &req).map_err(|e| Error::sys("send", "rtnetlink: loopback up", e))?;
    // The acknowledgement: an NLMSG_ERROR message whose error is 0 on success.
    let mut ack = [0u8; 1024];
    let n = loop {
        match nix::unistd::read(sock.as_raw_fd(), &mut ack) {
            Err(nix::Error::EINTR) => continue,
            other => break other.map_err(|e| Error::sys("recv", "rtnetlink: loopback up", e))?,
        }
    };
    if n >= 20 && u16::from_ne_bytes([ack[4], ack[5]]) == libc::NLMSG_ERROR as u16 {
        let errno = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
        if errno != 0 {
            return Err(Error::sys("rtnetlink", "loopback up", nix::Error::from_raw(-errno)));
        }
        return Ok(());
    }
    Err(Error::Init("rtnetlink: loopback up: no acknowledgement".into()))
}
