//! What the host and strata's guest agent say to each other over the one
//! console channel: length-prefixed frames, `u32` little-endian length of
//! what follows, one byte of kind, then the payload.

use std::io::{self, Read, Write};

/// Largest frame accepted; a longer length is a broken or hostile peer.
pub const MAX_FRAME: usize = 16 << 20;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Guest → host: the agent is up and waits for its configuration.
    Ready,
    /// Host → guest: the container to run (JSON, see the agent).
    Config(Vec<u8>),
    /// Host → guest: bytes for the workload's stdin.
    Stdin(Vec<u8>),
    /// Host → guest: the workload's stdin is closed.
    StdinEof,
    /// Host → guest: deliver this signal to the workload.
    Signal(i32),
    /// Guest → host: the workload's stdout.
    Stdout(Vec<u8>),
    /// Guest → host: the workload's stderr.
    Stderr(Vec<u8>),
    /// Guest → host: the workload exited with this status (128+N for signal N).
    Exit(i32),
    /// Guest → host: the agent failed; the text says where.
    Error(String),
}

const READY: u8 = 1;
const CONFIG: u8 = 2;
const STDIN: u8 = 3;
const STDIN_EOF: u8 = 4;
const SIGNAL: u8 = 5;
const STDOUT: u8 = 10;
const STDERR: u8 = 11;
const EXIT: u8 = 12;
const ERROR: u8 = 13;

impl Msg {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, std::borrow::Cow<[u8]>) = match self {
            Msg::Ready => (READY, (&[][..]).into()),
            Msg::Config(b) => (CONFIG, b.as_slice().into()),
            Msg::Stdin(b) => (STDIN, b.as_slice().into()),
            Msg::StdinEof => (STDIN_EOF, (&[][..]).into()),
            Msg::Signal(s) => (SIGNAL, s.to_le_bytes().to_vec().into()),
            Msg::Stdout(b) => (STDOUT, b.as_slice().into()),
            Msg::Stderr(b) => (STDERR, b.as_slice().into()),
            Msg::Exit(c) => (EXIT, c.to_le_bytes().to_vec().into()),
            Msg::Error(s) => (ERROR, s.as_bytes().into()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.extend_from_slice(&((payload.len() + 1) as u32).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&payload);
        out
    }

    /// Writes one frame.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.encode())?;
        w.flush()
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream.
    pub fn read_from(r: &mut impl Read) -> io::Result<Option<Msg>> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("agent frame of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        let payload = body.split_off(1);
        let int = |p: &[u8]| -> io::Result<i32> {
            p.try_into()
                .map(i32::from_le_bytes)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "agent frame: bad integer"))
        };
        Ok(Some(match body[0] {
            READY => Msg::Ready,
            CONFIG => Msg::Config(payload),
            STDIN => Msg::Stdin(payload),
            STDIN_EOF => Msg::StdinEof,
            SIGNAL => Msg::Signal(int(&payload)?),
            STDOUT => Msg::Stdout(payload),
            STDERR => Msg::Stderr(payload),
            EXIT => Msg::Exit(int(&payload)?),
            ERROR => Msg::Error(String::from_utf8_lossy(&payload).into_owned()),
            k => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("agent frame of unknown kind {k}"))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let all = [
            Msg::Ready,
            Msg::Config(b"{\"a\":1}".to_vec()),
            Msg::Stdin(vec![0, 1, 2, 255]),
            Msg::StdinEof,
            Msg::Signal(15),
            Msg::Stdout(b"hello".to_vec()),
            Msg::Stderr(Vec::new()),
            Msg::Exit(-1),
            Msg::Error("mount /dev/vda: no such device".into()),
        ];
        let mut stream = Vec::new();
        for m in &all {
            m.write_to(&mut stream).expect("write");
        }
        let mut r = stream.as_slice();
        for m in &all {
            assert_eq!(&Msg::read_from(&mut r).expect("read").expect("frame"), m);
        }
        assert_eq!(Msg::read_from(&mut r).expect("eof"), None);
    }

    #[test]
    fn hostile_frames_are_errors_not_allocations() {
        for bad in [&[0u8, 0, 0, 0][..], &[0xff, 0xff, 0xff, 0x7f, 1], &[1, 0, 0, 0, 99], &[3, 0, 0, 0, 5, 1, 2]] {
            let mut r = bad;
            assert!(Msg::read_from(&mut r).is_err(), "{bad:?}");
        }
        let mut truncated: &[u8] = &[9, 0, 0, 0, 10, b'x'];
        assert!(Msg::read_from(&mut truncated).is_err());
    }
}
