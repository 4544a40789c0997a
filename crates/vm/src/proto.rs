//! What the host and strata's guest agent say to each other over the one
//! console channel: length-prefixed frames, `u32` little-endian length of
//! what follows, one byte of kind, then the payload.
//!
//! Processes in the guest are numbered: 0 is the container's init, and each
//! `exec` gets the number the host chose for it. Messages about a process
//! (its stdio, a signal, its exit, a failure) start their payload with that
//! number (`u32` little-endian).

use std::io::{self, Read, Write};

/// Largest frame accepted; a longer length is a broken or hostile peer.
pub const MAX_FRAME: usize = 16 << 20;

/// The container's init among the guest's processes.
pub const INIT: u32 = 0;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Guest → host: the agent is up and waits for its configuration; the
    /// guest's boot clock (ms since its kernel started) when the agent began.
    Ready(u64),
    /// Host → guest: the container to create (JSON, see the agent).
    Config(Vec<u8>),
    /// Guest → host: the container is created and waits for `Start`.
    Created,
    /// Host → guest: start the container.
    Start,
    /// Guest → host: process N runs (the init after `Start`, an exec once
    /// its process is started).
    Started(u32),
    /// Host → guest: run this process (an OCI `process` as JSON) in the
    /// container as number N.
    Exec(u32, Vec<u8>),
    /// Host → guest: bytes for process N's stdin.
    Stdin(u32, Vec<u8>),
    /// Host → guest: process N's stdin is closed.
    StdinEof(u32),
    /// Host → guest: deliver this signal to process N.
    Signal(u32, i32),
    /// Host → guest: process N's terminal is now this many rows and columns.
    Resize(u32, u16, u16),
    /// Guest → host: process N's stdout.
    Stdout(u32, Vec<u8>),
    /// Guest → host: process N's stderr.
    Stderr(u32, Vec<u8>),
    /// Guest → host: process N exited with this status (128+S for signal S).
    Exit(u32, i32),
    /// Guest → host: what was asked about process N (create and start for
    /// the init) failed; the text says where.
    Error(u32, String),
    /// Host → guest: create another container in this VM, joining the first
    /// one's pod (JSON, see the agent), its init numbered N.
    Join(u32, Vec<u8>),
    /// Guest → host: the container of `Join` N is created and waits for
    /// `Begin`.
    Joined(u32),
    /// Host → guest: start the container of `Join` N.
    Begin(u32),
    /// Host → guest: run a process in one of the VM's containers as number
    /// N (JSON: `{"container": ID, "process": PROCESS}`).
    ExecIn(u32, Vec<u8>),
    /// Host → guest: an operation on one of the VM's containers, numbered N
    /// and answered by `Answer` N or `Error` N (JSON: `{"container": ID,
    /// "op": "pause" | "resume" | "stats" | "update"}`, with `"resources"`
    /// for an update).
    Ask(u32, Vec<u8>),
    /// Guest → host: the result of `Ask` N (JSON).
    Answer(u32, Vec<u8>),
}

const READY: u8 = 1;
const CONFIG: u8 = 2;
const CREATED: u8 = 3;
const START: u8 = 4;
const STARTED: u8 = 5;
const EXEC: u8 = 6;
const STDIN: u8 = 7;
const STDIN_EOF: u8 = 8;
const SIGNAL: u8 = 9;
const STDOUT: u8 = 10;
const STDERR: u8 = 11;
const EXIT: u8 = 12;
const ERROR: u8 = 13;
const RESIZE: u8 = 14;
const JOIN: u8 = 15;
const JOINED: u8 = 16;
const BEGIN: u8 = 17;
const EXEC_IN: u8 = 18;
const ASK: u8 = 19;
const ANSWER: u8 = 20;

fn tagged(n: u32, rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + rest.len());
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(rest);
    v
}

impl Msg {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Msg::Ready(ms) => (READY, ms.to_le_bytes().to_vec()),
            Msg::Config(b) => (CONFIG, b.clone()),
            Msg::Created => (CREATED, Vec::new()),
            Msg::Start => (START, Vec::new()),
            Msg::Started(n) => (STARTED, tagged(*n, &[])),
            Msg::Exec(n, b) => (EXEC, tagged(*n, b)),
            Msg::Stdin(n, b) => (STDIN, tagged(*n, b)),
            Msg::StdinEof(n) => (STDIN_EOF, tagged(*n, &[])),
            Msg::Signal(n, s) => (SIGNAL, tagged(*n, &s.to_le_bytes())),
            Msg::Resize(n, rows, cols) => (RESIZE, tagged(*n, &[rows.to_le_bytes(), cols.to_le_bytes()].concat())),
            Msg::Stdout(n, b) => (STDOUT, tagged(*n, b)),
            Msg::Stderr(n, b) => (STDERR, tagged(*n, b)),
            Msg::Exit(n, c) => (EXIT, tagged(*n, &c.to_le_bytes())),
            Msg::Error(n, s) => (ERROR, tagged(*n, s.as_bytes())),
            Msg::Join(n, b) => (JOIN, tagged(*n, b)),
            Msg::Joined(n) => (JOINED, tagged(*n, &[])),
            Msg::Begin(n) => (BEGIN, tagged(*n, &[])),
            Msg::ExecIn(n, b) => (EXEC_IN, tagged(*n, b)),
            Msg::Ask(n, b) => (ASK, tagged(*n, b)),
            Msg::Answer(n, b) => (ANSWER, tagged(*n, b)),
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
        Self::decode(body[0], payload)
    }

    fn decode(kind: u8, payload: Vec<u8>) -> io::Result<Option<Msg>> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("agent frame: {what}"));
        let int =
            |p: &[u8]| -> io::Result<i32> { p.try_into().map(i32::from_le_bytes).map_err(|_| bad("bad integer")) };
        let split = |p: Vec<u8>| -> io::Result<(u32, Vec<u8>)> {
            if p.len() < 4 {
                return Err(bad("no process number"));
            }
            let n = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            Ok((n, p[4..].to_vec()))
        };
        let empty = |p: &[u8]| if p.is_empty() { Ok(()) } else { Err(bad("unexpected payload")) };
        Ok(Some(match kind {
            READY => Msg::Ready(u64::from_le_bytes(payload.as_slice().try_into().map_err(|_| bad("bad boot time"))?)),
            CONFIG => Msg::Config(payload),
            CREATED => empty(&payload).map(|_| Msg::Created)?,
            START => empty(&payload).map(|_| Msg::Start)?,
            STARTED => {
                let (n, rest) = split(payload)?;
                empty(&rest)?;
                Msg::Started(n)
            }
            EXEC => split(payload).map(|(n, b)| Msg::Exec(n, b))?,
            STDIN => split(payload).map(|(n, b)| Msg::Stdin(n, b))?,
            STDIN_EOF => {
                let (n, rest) = split(payload)?;
                empty(&rest)?;
                Msg::StdinEof(n)
            }
            SIGNAL => {
                let (n, rest) = split(payload)?;
                Msg::Signal(n, int(&rest)?)
            }
            STDOUT => split(payload).map(|(n, b)| Msg::Stdout(n, b))?,
            STDERR => split(payload).map(|(n, b)| Msg::Stderr(n, b))?,
            EXIT => {
                let (n, rest) = split(payload)?;
                Msg::Exit(n, int(&rest)?)
            }
            RESIZE => {
                let (n, rest) = split(payload)?;
                let size: [u8; 4] = rest.as_slice().try_into().map_err(|_| bad("bad terminal size"))?;
                Msg::Resize(n, u16::from_le_bytes([size[0], size[1]]), u16::from_le_bytes([size[2], size[3]]))
            }
            ERROR => split(payload).map(|(n, b)| Msg::Error(n, String::from_utf8_lossy(&b).into_owned()))?,
            JOIN => split(payload).map(|(n, b)| Msg::Join(n, b))?,
            JOINED | BEGIN => {
                let (n, rest) = split(payload)?;
                empty(&rest)?;
                if kind == JOINED {
                    Msg::Joined(n)
                } else {
                    Msg::Begin(n)
                }
            }
            EXEC_IN => split(payload).map(|(n, b)| Msg::ExecIn(n, b))?,
            ASK => split(payload).map(|(n, b)| Msg::Ask(n, b))?,
            ANSWER => split(payload).map(|(n, b)| Msg::Answer(n, b))?,
            k => return Err(bad(&format!("unknown kind {k}"))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let all = [
            Msg::Ready(1234),
            Msg::Config(b"{\"a\":1}".to_vec()),
            Msg::Created,
            Msg::Start,
            Msg::Started(4),
            Msg::Exec(3, b"{\"args\":[\"sh\"]}".to_vec()),
            Msg::Stdin(INIT, vec![0, 1, 2, 255]),
            Msg::StdinEof(7),
            Msg::Signal(2, 15),
            Msg::Resize(0, 24, 80),
            Msg::Stdout(INIT, b"hello".to_vec()),
            Msg::Stderr(u32::MAX, Vec::new()),
            Msg::Exit(1, -1),
            Msg::Error(INIT, "mount /dev/vda: no such device".into()),
            Msg::Join(5, b"{\"id\":\"app\"}".to_vec()),
            Msg::Joined(5),
            Msg::Begin(5),
            Msg::ExecIn(6, b"{\"container\":\"app\"}".to_vec()),
            Msg::Ask(7, b"{\"container\":\"app\",\"op\":\"pause\"}".to_vec()),
            Msg::Answer(7, b"null".to_vec()),
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
        for bad in [
            &[0u8, 0, 0, 0][..],                           // no kind
            &[0xff, 0xff, 0xff, 0x7f, 1],                  // 2 GiB
            &[1, 0, 0, 0, 99],                             // unknown kind
            &[3, 0, 0, 0, 9, 1, 2],                        // signal without a number
            &[4, 0, 0, 0, 7, 1, 0, 0],                     // stdin with half a number
            &[2, 0, 0, 0, 1, 0],                           // ready with a payload
            &[10, 0, 0, 0, 12, 0, 0, 0, 0, 1, 2, 3, 4, 5], // exit with 5 bytes of status
        ] {
            let mut r = bad;
            assert!(Msg::read_from(&mut r).is_err(), "{bad:?}");
        }
        let mut truncated: &[u8] = &[9, 0, 0, 0, 10, b'x'];
        assert!(Msg::read_from(&mut truncated).is_err());
    }
}
