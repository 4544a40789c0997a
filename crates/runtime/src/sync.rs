//! The message channel between the runtime and a container process it is setting up.
//!
//! Each message is a one-byte tag, a 4-byte length and a payload. Either side sees
//! end-of-file when the other dies, which is how a killed `create` makes the
//! half-built container's init exit on its own.

use crate::{Error, Result};
use std::io::{Read, Write};
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
        };
        let mut buf = Vec::with_capacity(5 + payload.len());
        buf.push(tag);
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&payload);
        self.0.write_all(&buf)
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
            _ => return Err(bad()),
        }))
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
        drop(a);
        assert_eq!(b.recv().expect("eof"), None);
        assert!(b.expect(&Msg::Ready, "create").is_err());
    }
}
