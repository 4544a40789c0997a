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

use std::io::{IoSlice, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use strata_runtime::{Container, CreateOptions};

#[derive(serde::Serialize, serde::Deserialize)]
enum Request {
    Create {
        root: PathBuf,
        id: String,
        bundle: PathBuf,
        spec: serde_json::Value,
        /// The systemd cgroup driver.
        #[serde(default)]
        systemd: bool,
        /// A fourth descriptor is a network namespace to join.
        #[serde(default)]
        net: bool,
    },
    /// Reap, without an answer.
    Reap { pid: i32 },
    /// Reap and answer with the exit code.
    ReapNow { pid: i32 },
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Reply {
    Created { pid: i32, cgroup: Option<PathBuf> },
    Reaped { code: i32 },
    Failed { error: String },
}

/// Messages up to this size travel in the socket; larger ones (a config with
/// a big environment) in a memfd passed along, marked by a payload of "M".
const INLINE_MESSAGE: usize = 64 * 1024;
/// Largest message at all.
const MAX_MESSAGE: u64 = 16 << 20;

/// How long the server waits for a zygote's answer before it gives that
/// zygote up.
const ANSWER_TIMEOUT_S: i64 = 120;

/// One zygote: its socket (SOCK_SEQPACKET: whole messages, and end-of-file
/// when the other side is gone), behind a lock that pairs request and answer.
struct Zygote {
    sock: Mutex<OwnedFd>,
    /// The same socket, for messages without an answer. A replaced socket is
    /// never closed, so a number read here never names another file.
    raw: AtomicI32,
    pid: AtomicI32,
    dead: AtomicBool,
}

/// Handles of the zygotes, used in turn; a dead one is replaced.
pub struct Zygotes {
    zygotes: Arc<Vec<Zygote>>,
    next: AtomicUsize,
    /// To the thread that replaces dead zygotes.
    keeper: Mutex<std::sync::mpsc::Sender<usize>>,
}

fn set_answer_timeout(fd: RawFd) {
    let timeout = libc::timeval { tv_sec: ANSWER_TIMEOUT_S, tv_usec: 0 };
    // SAFETY: setsockopt reads `timeout`, which lives across the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
}

/// Starts a fresh zygote by executing this program (`strata-fn __zygote`,
/// its socket on stdin): forking the threaded server is what zygotes avoid.
/// Must run on a thread that lives as long as the server (the zygote dies
/// with the thread that made it).
fn exec_zygote() -> crate::Result<(OwnedFd, i32)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
    let child = std::process::Command::new("/proc/self/exe")
        .arg("__zygote")
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::null())
        .spawn()?;
    set_answer_timeout(ours.as_raw_fd());
    Ok((ours, child.id() as i32))
}

/// Entry of an executed zygote (`strata-fn __zygote`): serves the socket on
/// its stdin until the server goes away.
pub fn serve_stdin() -> ! {
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: the server passed the socket as our stdin; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(0) };
    serve(sock)
}

fn send(sock: RawFd, msg: &impl serde::Serialize, fds: &[RawFd]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut all: Vec<RawFd> = fds.to_vec();
    let memfd;
    let payload: &[u8] = if bytes.len() <= INLINE_MESSAGE {
        &bytes
    } else {
        let fd = nix::sys::memfd::memfd_create(c"strata-fn-message", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&bytes)?;
        file.rewind()?;
        memfd = file;
        all.push(memfd.as_raw_fd());
        b"M"
    };
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::ScmRights(&all)];
    let cmsgs: &[ControlMessage] = if all.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

fn recv<T: serde::de::DeserializeOwned>(sock: RawFd, buf: &mut [u8]) -> std::io::Result<(T, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (n, fds) = {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
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
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the other side is gone"));
    }
    let mut fds = fds;
    if &buf[..n] == b"M" {
        let fd = fds.pop().ok_or_else(|| std::io::Error::other("a large message without its memfd"))?;
        let mut bytes = Vec::new();
        std::fs::File::from(fd).take(MAX_MESSAGE).read_to_end(&mut bytes)?;
        let v = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        return Ok((v, fds));
    }
    let v = serde_json::from_slice(&buf[..n]).map_err(std::io::Error::other)?;
    Ok((v, fds))
}

/// The zygote's loop: one request at a time until the server goes away.
fn serve(sock: OwnedFd) -> ! {
    let mut buf = vec![0u8; INLINE_MESSAGE];
    loop {
        let (req, fds) = match recv::<Request>(sock.as_raw_fd(), &mut buf) {
            Ok(r) => r,
            Err(_) => strata_runtime_exit(),
        };
        let reply = match req {
            Request::Create { root, id, bundle, spec, systemd, net } => {
                create(&root, &id, bundle, spec, systemd, net, &fds)
            }
            // Sent without waiting for an answer (the caller knows the status).
            Request::Reap { pid } => {
                reap(pid);
                continue;
            }
            Request::ReapNow { pid } => Reply::Reaped { code: reap(pid) },
        };
        drop(fds);
        if send(sock.as_raw_fd(), &reply, &[]).is_err() {
            strata_runtime_exit();
        }
    }
}

fn strata_runtime_exit() -> ! {
    // SAFETY: _exit ends this process at once; nothing of the server's state,
    // copied at fork, is flushed or destroyed here.
    unsafe { libc::_exit(0) }
}

fn create(
    root: &Path,
    id: &str,
    bundle: PathBuf,
    mut spec: serde_json::Value,
    systemd: bool,
    net: bool,
    fds: &[OwnedFd],
) -> Reply {
    let want = if net { 4 } else { 3 };
    if fds.len() != want {
        return Reply::Failed { error: format!("create {id}: {} descriptors, not {want}", fds.len()) };
    }
    if net {
        if let Err(e) = crate::runner::join_network(&mut spec, fds[3].as_raw_fd()) {
            return Reply::Failed { error: format!("create {id}: {e}") };
        }
    }
    let spec = match serde_json::from_value(spec) {
        Ok(s) => s,
        Err(e) => return Reply::Failed { error: format!("create {id}: config: {e}") },
    };
    let opts = CreateOptions {
        bundle,
        stdio: Some([fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()]),
        spec: Some(spec),
        systemd_cgroup: systemd,
        ..Default::default()
    };
    match Container::create(root, id, &opts) {
        Ok(st) => Reply::Created { pid: st.pid, cgroup: st.cgroup().map(|c| c.dir) },
        Err(e) => Reply::Failed { error: format!("create: {e}") },
    }
}

/// Reaps child `pid`; its exit code (128+N for a signal).
pub(crate) fn reap(pid: i32) -> i32 {
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
    /// Forks `n` zygotes. Must run while the process has a single thread
    /// (it then starts the thread that replaces dead zygotes).
    pub fn spawn(n: usize) -> crate::Result<Zygotes> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let mut zygotes: Vec<Zygote> = Vec::new();
        for _ in 0..n.max(1) {
            let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
            // SAFETY: the caller guarantees no other thread exists, so the child
            // is a consistent copy; it only runs `serve`, which never returns.
            match unsafe { nix::unistd::fork() }? {
                nix::unistd::ForkResult::Child => {
                    drop(ours);
                    // Gone with the server, whatever kills it.
                    // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag.
                    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                    // The sockets of the zygotes forked before this one stay
                    // with the server alone.
                    for z in &zygotes {
                        let _ = nix::unistd::close(z.raw.load(Ordering::SeqCst));
                    }
                    std::mem::forget(zygotes);
                    serve(theirs);
                }
                nix::unistd::ForkResult::Parent { child } => {
                    drop(theirs);
                    set_answer_timeout(ours.as_raw_fd());
                    let raw = AtomicI32::new(ours.as_raw_fd());
                    zygotes.push(Zygote {
                        sock: Mutex::new(ours),
                        raw,
                        pid: AtomicI32::new(child.as_raw()),
                        dead: AtomicBool::new(false),
                    });
                }
            }
        }
        let zygotes = Arc::new(zygotes);
        let (keeper, dead) = std::sync::mpsc::channel::<usize>();
        let all = zygotes.clone();
        std::thread::spawn(move || {
            for index in dead {
                let z = &all[index];
                let old = z.pid.load(Ordering::SeqCst);
                // Stuck or gone: it is ended and reaped either way.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(old), None);
                match exec_zygote() {
                    Ok((sock, pid)) => {
                        let mut guard = z.sock.lock().unwrap_or_else(|e| e.into_inner());
                        z.raw.store(sock.as_raw_fd(), Ordering::SeqCst);
                        std::mem::forget(std::mem::replace(&mut *guard, sock));
                        z.pid.store(pid, Ordering::SeqCst);
                        z.dead.store(false, Ordering::SeqCst);
                        eprintln!("strata-fn: zygote {index} replaced");
                    }
                    Err(e) => eprintln!("strata-fn: zygote {index} cannot be replaced: {e}"),
                }
            }
        });
        Ok(Zygotes { zygotes, next: AtomicUsize::new(0), keeper: Mutex::new(keeper) })
    }

    fn call(&self, index: usize, req: &Request, fds: &[RawFd]) -> crate::Result<Reply> {
        let z = &self.zygotes[index % self.zygotes.len()];
        let sock = z.sock.lock().unwrap_or_else(|e| e.into_inner());
        if z.dead.load(Ordering::SeqCst) {
            return Err(crate::Error::Zygote(format!("zygote {index} is gone")));
        }
        let mut buf = [0u8; 4096];
        match send(sock.as_fd().as_raw_fd(), req, fds).and_then(|()| recv::<Reply>(sock.as_raw_fd(), &mut buf)) {
            Ok((reply, _)) => Ok(reply),
            Err(e) => {
                // Dead, or stuck past the timeout: its answers can no longer be
                // paired with requests, so it is replaced.
                if !z.dead.swap(true, Ordering::SeqCst) {
                    eprintln!("strata-fn: zygote {index} given up: {e}");
                    let _ = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).send(index % self.zygotes.len());
                }
                Err(crate::Error::Zygote(format!("zygote {index}: {e}")))
            }
        }
    }

    /// Creates container `id` through a zygote (the next live one in turn);
    /// returns its init's pid, the zygote that is its parent, and its cgroup.
    /// `fds` are the container's stdin, stdout and stderr, then, if there is
    /// a fourth, a network namespace for it to join.
    pub fn create(
        &self,
        root: &Path,
        id: &str,
        bundle: &Path,
        spec: serde_json::Value,
        fds: &[RawFd],
        systemd: bool,
    ) -> crate::Result<(i32, usize, Option<PathBuf>)> {
        let n = self.zygotes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let req = Request::Create {
            root: root.into(),
            id: id.into(),
            bundle: bundle.into(),
            spec,
            systemd,
            net: fds.len() == 4,
        };
        let mut last = None;
        // A zygote found dead on the way is replaced; the create goes to the
        // next live one.
        for index in (0..n).map(|k| (start + k) % n) {
            if self.zygotes[index].dead.load(Ordering::SeqCst) {
                continue;
            }
            match self.call(index, &req, fds) {
                Ok(Reply::Created { pid, cgroup }) => return Ok((pid, index, cgroup)),
                Ok(Reply::Failed { error }) => return Err(crate::Error::Other(error)),
                Ok(Reply::Reaped { .. }) => return Err(crate::Error::Zygote("the zygote answered out of turn".into())),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| crate::Error::Zygote("every zygote is gone (they are being replaced)".into())))
    }

    /// Has zygote `index` reap its child `pid`; its exit code.
    pub fn reap(&self, index: usize, pid: i32) -> i32 {
        match self.call(index, &Request::ReapNow { pid }, &[]) {
            Ok(Reply::Reaped { code }) => code,
            _ => 255,
        }
    }

    /// Has zygote `index` reap its child `pid`, which has exited or been
    /// killed, when it gets to it, without waiting (a message is sent whole,
    /// so no lock is needed: a create in flight gets its answer first).
    pub fn reap_later(&self, index: usize, pid: i32) {
        let z = &self.zygotes[index % self.zygotes.len()];
        let _ = send(z.raw.load(Ordering::SeqCst), &Request::Reap { pid }, &[]);
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
