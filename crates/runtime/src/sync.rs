//! The message channel between the runtime and a container process it is setting up.
//!
//! Each message is a one-byte tag, a 4-byte length and a payload. Either side sees
//! end-of-file when the other dies, which is how a killed `create` makes the
//! half-built container's init exit on its own.

use crate::{Error, Result};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// A message on the sync channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// Intermediate → runtime: host pid of the process it cloned.
    Pid(i32),
    /// Runtime → init: the container state (JSON, for hooks); uid/gid maps are
    /// written, go on.
    State(String),
    /// Init → runtime: the mounts are done; run the runtime-namespace hooks.
    RunRuntimeHooks,
    /// Runtime → init: runtime hooks done, go on.
    RuntimeHooksDone,
    /// Init → runtime: set up and waiting for `start`.
    Ready,
    /// Any → runtime: setup failed with this message.
    Error(String),
    /// Container process → runtime: its seccomp notify descriptor follows (sent
    /// with [`SyncChannel::send_fd`], received with [`SyncChannel::recv_fd`]).
    SeccompFd,
}

/// One end of a sync channel.
pub struct SyncChannel(UnixStream);

impl SyncChannel {
    /// A connected pair (close-on-exec).
    pub fn pair() -> Result<(SyncChannel, SyncChannel)> {
        let (a, b) = UnixStream::pair().map_err(|e| Error::io("socketpair", "sync channel", e))?;
        Ok((SyncChannel(a), SyncChannel(b)))
    }

    /// The underlying socket.
    pub fn as_stream(&self) -> &UnixStream {
        &self.0
    }

    /// Sends one message.
    pub fn send(&mut self, msg: &Msg) -> std::io::Result<()> {
        let (tag, payload): (u8, Vec<u8>) = match msg {
            Msg::Pid(pid) => (1, pid.to_le_bytes().to_vec()),
            Msg::State(s) => (2, s.as_bytes().to_vec()),
            Msg::RunRuntimeHooks => (3, Vec::new()),
            Msg::RuntimeHooksDone => (4, Vec::new()),
            Msg::Ready => (5, Vec::new()),
            Msg::Error(s) => (6, s.as_bytes().to_vec()),
            Msg::SeccompFd => (7, Vec::new()),
        };
        let mut buf = Vec::with_capacity(5 + payload.len());
        buf.push(tag);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&payload);
        // Plain write(2), not the socket layer's sendto(2): the container process
        // sends its last message after its seccomp filter is loaded, and profiles
        // allow write.
        let mut rest = buf.as_slice();
        while !rest.is_empty() {
            match nix::unistd::write(&self.0, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Receives one message; `Ok(None)` on end-of-file.
    pub fn recv(&mut self) -> std::io::Result<Option<Msg>> {
        let mut head = [0u8; 5];
        match self.0.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > 64 << 20 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "sync message too long"));
        }
        let mut payload = vec![0u8; len];
        self.0.read_exact(&mut payload)?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed sync message");
        Ok(Some(match head[0] {
            1 => Msg::Pid(i32::from_le_bytes(payload.try_into().map_err(|_| bad())?)),
            2 => Msg::State(String::from_utf8_lossy(&payload).into_owned()),
            3 => Msg::RunRuntimeHooks,
            4 => Msg::RuntimeHooksDone,
            5 => Msg::Ready,
            6 => Msg::Error(String::from_utf8_lossy(&payload).into_owned()),
            7 => Msg::SeccompFd,
            _ => return Err(bad()),
        }))
    }

    /// Sends [`Msg::SeccompFd`] with `fd` attached.
    pub fn send_fd(&mut self, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        let head = [7u8, 0, 0, 0, 0];
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(&head)];
        let n = sendmsg::<()>(self.0.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
        if n < head.len() {
            self.0.write_all(&head[n..])?;
        }
        Ok(())
    }

    /// Receives the descriptor of a [`Msg::SeccompFd`]; an error message, another
    /// message or end-of-file is an error (`what` names the step).
    pub fn recv_fd(&mut self, what: &str) -> Result<OwnedFd> {
        let mut head = [0u8; 5];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = {
            let mut iov = [std::io::IoSliceMut::new(&mut head)];
            let msg = recvmsg::<()>(self.0.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(|e| Error::sys("recvmsg", "sync channel", e))?;
            let mut fd = None;
            for c in msg.cmsgs().map_err(|e| Error::sys("recvmsg", "sync channel", e))? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: the kernel installed this descriptor for us; we own it now.
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            (msg.bytes, fd)
        };
        if n == 0 {
            return Err(Error::Init(format!("{what}: container process exited during setup")));
        }
        self.0.read_exact(&mut head[n..]).map_err(|e| Error::io("read", "sync channel", e))?;
        if head[0] == 6 {
            let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut payload = vec![0u8; len.min(1 << 20)];
            self.0.read_exact(&mut payload).map_err(|e| Error::io("read", "sync channel", e))?;
            return Err(Error::Init(String::from_utf8_lossy(&payload).into_owned()));
        }
        match (head[0], fd) {
            (7, Some(fd)) => Ok(fd),
            (7, None) => Err(Error::Init(format!("{what}: seccomp message carried no descriptor"))),
            (tag, _) => Err(Error::Init(format!("{what}: unexpected message {tag} instead of the seccomp descriptor"))),
        }
    }

    /// Receives the message `want`, turning an error message or EOF into an error.
    pub fn expect(&mut self, want: &Msg, what: &str) -> Result<()> {
        match self.recv() {
            Ok(Some(m)) if &m == want => Ok(()),
            Ok(Some(Msg::Error(e))) => Err(Error::Init(e)),
            Ok(Some(other)) => Err(Error::Init(format!("{what}: unexpected message {other:?}"))),
            Ok(None) => Err(Error::Init(format!("{what}: container process exited during setup"))),
            Err(e) => Err(Error::io("read", "sync channel", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (mut a, mut b) = SyncChannel::pair().expect("pair");
        for m in [Msg::Pid(42), Msg::State("{}".into()), Msg::Ready, Msg::Error("mount /proc: EPERM".into())] {
            a.send(&m).expect("send");
            assert_eq!(b.recv().expect("recv"), Some(m));
        }
        let file = std::fs::File::open("/dev/null").expect("open");
        a.send_fd(std::os::fd::AsFd::as_fd(&file)).expect("send fd");
        let got = b.recv_fd("test").expect("recv fd");
        assert!(nix::sys::stat::fstat(got.as_raw_fd()).is_ok());
        a.send(&Msg::Error("boom".into())).expect("send");
        assert!(b.recv_fd("test").is_err_and(|e| e.to_string().contains("boom")));
        drop(a);
        assert_eq!(b.recv().expect("eof"), None);
        assert!(b.expect(&Msg::Ready, "create").is_err());
    }
}
