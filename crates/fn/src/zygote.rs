//! Zygotes: small single-threaded processes, forked before the server starts
//! any thread, that run the library's `create` on its behalf.
//!
//! `create` forks. Forking the server itself (many threads, a large heap)
//! copies its page tables, and every page the server writes afterwards takes a
//! copy-on-write fault with a TLB shootdown on every CPU: measured here, about
//! a third of the server's CPU went to that. A zygote's image is a few
//! hundred KiB, so its forks are cheap. The containers' inits are the
//! zygote's children; the server watches them through pidfds, reads their exit
//! status from /proc while they are zombies, and has the zygote reap them.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use strata_runtime::{Container, CreateOptions};

#[derive(serde::Serialize, serde::Deserialize)]
enum Request {
    Create {
        root: PathBuf,
        id: String,
        bundle: PathBuf,
        spec: serde_json::Value,
    },
    /// Reap, without an answer.
    Reap {
        pid: i32,
    },
    /// Reap and answer with the exit code.
    ReapNow {
        pid: i32,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Reply {
    Created { pid: i32, cgroup: Option<PathBuf> },
    Reaped { code: i32 },
    Failed { error: String },
}

/// Largest message (a config with a big environment still fits).
const MAX_MESSAGE: usize = 4 << 20;

/// Handles of the zygotes, used in turn.
pub struct Zygotes {
    zygotes: Vec<Mutex<UnixDatagram>>,
    /// The same sockets' descriptors, for messages without an answer.
    raw: Vec<RawFd>,
    next: AtomicUsize,
}

fn send(sock: &UnixDatagram, msg: &impl serde::Serialize, fds: &[RawFd]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

fn recv<T: serde::de::DeserializeOwned>(sock: &UnixDatagram, buf: &mut [u8]) -> std::io::Result<(T, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let (n, fds) = {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(list) = c {
                // SAFETY: the kernel installed these descriptors for us alone.
                fds.extend(list.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the zygote is gone"));
    }
    let v = serde_json::from_slice(&buf[..n]).map_err(std::io::Error::other)?;
    Ok((v, fds))
}

/// The zygote's loop: one request at a time until the server goes away.
fn serve(sock: UnixDatagram) -> ! {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (req, fds) = match recv::<Request>(&sock, &mut buf) {
            Ok(r) => r,
            Err(_) => strata_runtime_exit(),
        };
        let reply = match req {
            Request::Create { root, id, bundle, spec } => create(&root, &id, bundle, spec, &fds),
            // Sent without waiting for an answer (the caller knows the status).
            Request::Reap { pid } => {
                reap(pid);
                continue;
            }
            Request::ReapNow { pid } => Reply::Reaped { code: reap(pid) },
        };
        drop(fds);
        if send(&sock, &reply, &[]).is_err() {
            strata_runtime_exit();
        }
    }
}

fn strata_runtime_exit() -> ! {
    // SAFETY: _exit ends this process at once; nothing of the server's state,
    // copied at fork, is flushed or destroyed here.
    unsafe { libc::_exit(0) }
}

fn create(root: &Path, id: &str, bundle: PathBuf, spec: serde_json::Value, fds: &[OwnedFd]) -> Reply {
    if fds.len() != 3 {
        return Reply::Failed { error: format!("create {id}: {} descriptors for stdio, not 3", fds.len()) };
    }
    let spec = match serde_json::from_value(spec) {
        Ok(s) => s,
        Err(e) => return Reply::Failed { error: format!("create {id}: config: {e}") },
    };
    let opts = CreateOptions {
        bundle,
        stdio: Some([fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()]),
        spec: Some(spec),
        ..Default::default()
    };
    match Container::create(root, id, &opts) {
        Ok(st) => Reply::Created { pid: st.pid, cgroup: st.cgroup().map(|c| c.dir) },
        Err(e) => Reply::Failed { error: format!("create: {e}") },
    }
}

/// Reaps child `pid`; its exit code (128+N for a signal).
fn reap(pid: i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

impl Zygotes {
    /// Forks `n` zygotes. Must run while the process has a single thread.
    pub fn spawn(n: usize) -> anyhow::Result<Zygotes> {
        let mut zygotes = Vec::new();
        for _ in 0..n.max(1) {
            let (ours, theirs) = UnixDatagram::pair()?;
            // SAFETY: the caller guarantees no other thread exists, so the child
            // is a consistent copy; it only runs `serve`, which never returns.
            match unsafe { nix::unistd::fork() }? {
                nix::unistd::ForkResult::Child => {
                    drop(ours);
                    // Gone with the server, whatever kills it.
                    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag.
                    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                    // Descriptors of the zygotes forked before this one stay
                    // with the server alone.
                    for z in &zygotes {
                        let z: &Mutex<UnixDatagram> = z;
                        let fd = z.lock().map(|s| s.as_raw_fd()).unwrap_or(-1);
                        let _ = nix::unistd::close(fd);
                    }
                    serve(theirs);
                }
                nix::unistd::ForkResult::Parent { .. } => {
                    drop(theirs);
                    zygotes.push(Mutex::new(ours));
                }
            }
        }
        let raw = zygotes.iter().map(|z| z.lock().map(|s| s.as_raw_fd()).unwrap_or(-1)).collect();
        Ok(Zygotes { zygotes, raw, next: AtomicUsize::new(0) })
    }

    fn call(&self, index: usize, req: &Request, fds: &[RawFd]) -> anyhow::Result<Reply> {
        let sock = self.zygotes[index % self.zygotes.len()].lock().unwrap_or_else(|e| e.into_inner());
        send(&sock, req, fds)?;
        let mut buf = [0u8; 64 * 1024];
        Ok(recv::<Reply>(&sock, &mut buf)?.0)
    }

    /// Creates container `id` through a zygote (the next in turn); returns its
    /// init's pid, the zygote that is its parent, and its cgroup.
    pub fn create(
        &self,
        root: &Path,
        id: &str,
        bundle: &Path,
        spec: serde_json::Value,
        stdio: [RawFd; 3],
    ) -> anyhow::Result<(i32, usize, Option<PathBuf>)> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.zygotes.len();
        let req = Request::Create { root: root.into(), id: id.into(), bundle: bundle.into(), spec };
        match self.call(index, &req, &stdio)? {
            Reply::Created { pid, cgroup } => Ok((pid, index, cgroup)),
            Reply::Failed { error } => Err(anyhow::anyhow!(error)),
            Reply::Reaped { .. } => Err(anyhow::anyhow!("the zygote answered out of turn")),
        }
    }

    /// Has zygote `index` reap its child `pid`; its exit code.
    pub fn reap(&self, index: usize, pid: i32) -> i32 {
        match self.call(index, &Request::ReapNow { pid }, &[]) {
            Ok(Reply::Reaped { code }) => code,
            _ => 255,
        }
    }

    /// Has zygote `index` reap its child `pid` when it gets to it, without
    /// waiting (a datagram is sent whole, so no lock is needed: a create in
    /// flight gets its answer first).
    pub fn reap_later(&self, index: usize, pid: i32) {
        let sock = &self.zygotes[index % self.zygotes.len()];
        // The socket itself, not the lock that orders request and answer.
        let fd = self.raw[index % self.raw.len()];
        let _ = sock;
        // SAFETY: `fd` stays open as long as `self` (the socket in `zygotes`).
        let s = std::mem::ManuallyDrop::new(unsafe { UnixDatagram::from_raw_fd(fd) });
        let _ = send(&s, &Request::Reap { pid }, &[]);
    }
}

/// The exit code (128+N for signal N) of `pid`, a zombie not yet reaped, from
/// /proc/PID/stat's exit_code field.
pub fn zombie_exit_code(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    // Field 52 of the file; `rest` starts at field 3.
    let status: i32 = fields.get(49)?.parse().ok()?;
    Some(if status & 0x7f == 0 { (status >> 8) & 0xff } else { 128 + (status & 0x7f) })
}
