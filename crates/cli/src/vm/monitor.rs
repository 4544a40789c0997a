//! The monitor: the host process that stands for a VM container.
//!
//! Forked by `create`, it starts QEMU, waits for the guest agent, has it
//! create the container, and reports to its creator. Then, for the life of
//! the container, it
//! - waits at the exec fifo for `start` and has the agent start the workload
//!   (a failure goes back to `start` through the fifo, as an init's does);
//! - relays the workload's stdio between its own descriptors (the ones
//!   `create` was given) and the guest;
//! - forwards every signal it gets to the workload;
//! - takes `exec`s, containers that join the VM and questions about them
//!   (pause, resume, update, statistics) on the state directory's socket;
//! - exits with the workload's status once it ends, after the guest has
//!   reset itself (QEMU dies with it in any case: it has PDEATHSIG).

use std::collections::HashMap;
use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use strata_vm::proto::{Msg, INIT};
use strata_vm::qemu;

use super::host::{read_report, Ack, EXEC_SOCKET};

/// What the monitor needs to boot its VM.
pub(super) struct Monitor {
    /// The host end of the workload's terminal (a raw pty slave), if it has one.
    pub tty: Option<OwnedFd>,
    pub id: String,
    pub spec: oci_spec::runtime::Spec,
    /// A network namespace whose network the VM takes over.
    pub netns: Option<PathBuf>,
    /// What the guest's NIC takes over (filled in by the monitor).
    pub net: Option<strata_runtime::network::VmInterface>,
    pub readonly: bool,
    /// The bind mounts' sources, shared with the guest.
    pub shares: Vec<super::share::Share>,
    pub state_dir: PathBuf,
    pub cgroup: Option<PathBuf>,
    pub qemu: qemu::QemuConfig,
}

const OK: &str = "ok";

/// The file in the state directory that holds the workload's exit status
/// once the monitor is gone (for a watcher that is not its parent).
pub const EXIT_FILE: &str = "exit";

/// Forks the monitor and waits for its boot. Returns its pid and the
/// acknowledgement it waits for before it lets go of its creator. The caller
/// must have no other threads.
pub(super) fn spawn(m: Monitor) -> anyhow::Result<(i32, Ack)> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let (ack_r, ack_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let parent = nix::unistd::getpid();
    // SAFETY: the caller has no other threads; the child runs the monitor
    // and leaves through _exit.
    match unsafe { nix::unistd::fork() }.context("fork the VM's monitor")? {
        nix::unistd::ForkResult::Child => {
            drop(report_r);
            drop(ack_w);
            let code = child_main(m, report_w, ack_r, parent);
            // SAFETY: ends the forked child without the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(report_w);
            drop(ack_r);
            let report = read_report(report_r);
            if report == OK {
                return Ok((child.as_raw(), Ack(ack_w)));
            }
            drop(ack_w);
            let _ = nix::sys::wait::waitpid(child, None);
            if report.is_empty() {
                bail!("the VM's monitor died while the guest was booting");
            }
            bail!("{report}")
        }
    }
}

fn child_main(mut m: Monitor, report: OwnedFd, ack: OwnedFd, parent: nix::unistd::Pid) -> i32 {
    // No PDEATHSIG: it would race with the creator's exit once it is done.
    // A creator that dies is seen at the acknowledgement (end of file).
    if nix::unistd::getppid() != parent {
        return 1;
    }
    let tty = m.tty.as_ref().map(|t| t.as_raw_fd());
    close_other_fds(&[0, 1, 2, report.as_raw_fd(), ack.as_raw_fd(), tty.unwrap_or(-1)]);
    if let Some(t) = tty {
        // The terminal is the workload's stdio, and so ours.
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe { libc::dup2(t, fd) };
        }
    }
    // Known by its name to `create`s that look for the VM whose namespaces
    // they join.
    let _ = nix::sys::prctl::set_name(&std::ffi::CString::new(super::pod::MONITOR_NAME).unwrap_or_default());
    let signals = crate::foreground::forwarded();
    let _ = signals.thread_block();
    let mut report = File::from(report);
    let begun = Instant::now();
    let booted = (|| -> anyhow::Result<Booted> {
        if let Some(cg) = &m.cgroup {
            std::fs::write(cg.join("cgroup.procs"), "0").with_context(|| format!("join cgroup {}", cg.display()))?;
        }
        super::share::expose(&m.shares, &m.state_dir.join(super::share::SHARE_DIR))?;
        // (The tap is QEMU's once it runs: this process's copy can go then.)
        let _tap = hand_over_network(&mut m)?;
        boot(&m, begun)
    })();
    let mut booted = match booted {
        Ok(b) => b,
        Err(e) => {
            give_network_back(&m);
            let _ = report.write_all(format!("{e:#}").as_bytes());
            return 1;
        }
    };
    let _ = report.write_all(OK.as_bytes());
    drop(report);
    let mut byte = [0u8; 1];
    if !matches!(File::from(ack).read(&mut byte), Ok(1)) {
        // The creator failed after our report, or died: the VM goes with it.
        booted.vm.finish(Duration::ZERO);
        give_network_back(&m);
        return 1;
    }
    let code = serve(booted, signals);
    give_network_back(&m);
    code
}

/// A network namespace that outlives the VM (not a pod's, removed with it)
/// gets back what the VM took.
fn give_network_back(m: &Monitor) {
    if let (Some(path), Some(iface)) = (&m.netns, &m.net) {
        if let Ok(ns) = File::open(path) {
            if let Err(e) = strata_runtime::network::give_back(ns.as_fd(), iface) {
                eprintln!("strata: {e}");
            }
        }
    }
}

/// Hands the network of the config's network namespace to the VM: its
/// interface is bridged with a tap device that becomes the guest's NIC, and
/// the guest takes its address.
fn hand_over_network(m: &mut Monitor) -> anyhow::Result<Option<OwnedFd>> {
    let Some(path) = &m.netns else { return Ok(None) };
    let ns = File::open(path).with_context(|| format!("the network namespace {}", path.display()))?;
    let Some((iface, tap)) = strata_runtime::network::hand_to_vm(ns.as_fd())
        .with_context(|| format!("hand the network of {} to the VM", path.display()))?
    else {
        return Ok(None);
    };
    // A locally administered MAC of the container's own.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in m.id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let b = h.to_be_bytes();
    m.qemu.net = Some((tap.as_raw_fd(), [0x02, b[1], b[2], b[3], b[4], b[5]]));
    m.net = Some(iface);
    Ok(Some(tap))
}

/// Closes every descriptor but `keep` (the monitor outlives its creator and
/// must not hold what the creator had open).
pub(super) fn close_other_fds(keep: &[RawFd]) {
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect(),
        Err(_) => return,
    };
    for fd in open {
        if !keep.contains(&fd) {
            // SAFETY: closing a descriptor nothing in this fresh child uses
            // (the directory's own is already closed and fails harmlessly).
            unsafe { libc::close(fd) };
        }
    }
}

/// When each step of the VM's life happened, written to `timings.json` in
/// the state directory when the monitor ends (what hack/bench-vm.sh reports).
#[derive(Default)]
struct Timings {
    /// The monitor's start.
    begun: Option<Instant>,
    /// QEMU spawned.
    launched: Option<Instant>,
    /// The agent's hello, and the guest's boot clock when the agent began.
    ready: Option<(Instant, u64)>,
    /// The container created in the guest.
    created: Option<Instant>,
    /// `start` opened the gate.
    start_asked: Option<Instant>,
    /// The agent reported the workload running.
    started: Option<Instant>,
    /// The workload's exit reported.
    exited: Option<Instant>,
}

impl Timings {
    fn json(&self, ended: Instant) -> serde_json::Value {
        let ms = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => serde_json::json!(b.saturating_duration_since(a).as_secs_f64() * 1000.0),
            _ => serde_json::Value::Null,
        };
        let ready = self.ready.map(|r| r.0);
        serde_json::json!({
            "monitor_to_qemu_ms": ms(self.begun, self.launched),
            "qemu_to_agent_ms": ms(self.launched, ready),
            // The guest's own clock at the agent's start: how much of the
            // above its kernel took, by a clock that software emulation
            // does not keep true.
            "guest_clock_at_agent_ms": self.ready.map(|r| r.1),
            "create_in_guest_ms": ms(ready, self.created),
            "start_ms": ms(self.start_asked, self.started),
            "workload_ms": ms(self.started, self.exited),
            "guest_reset_ms": ms(self.exited, Some(ended)),
        })
    }
}

struct Booted {
    vm: qemu::QemuVm,
    timings: Timings,
    /// Where the workload's status is written before the monitor exits.
    exit_file: PathBuf,
    reader: UnixStream,
    writer: Arc<Mutex<UnixStream>>,
    fifo: File,
    listener: UnixListener,
}

fn boot(m: &Monitor, begun: Instant) -> anyhow::Result<Booted> {
    let mut vm = qemu::launch(&m.qemu)?;
    let mut timings = Timings { begun: Some(begun), launched: Some(Instant::now()), ..Default::default() };
    let mut came_up = false;
    let result = boot_in(m, &mut vm, &mut came_up, &mut timings);
    match result {
        Ok((reader, writer, fifo, listener)) => {
            Ok(Booted { vm, timings, exit_file: m.state_dir.join(EXIT_FILE), reader, writer, fifo, listener })
        }
        Err(e) => {
            let why = vm.exited();
            vm.finish(Duration::ZERO);
            let e = match why {
                Some(w) => e.context(w),
                None => e,
            };
            // The kernel's log says why a guest did not come up; once the
            // agent speaks, its own message does.
            let tail = if came_up { String::new() } else { vm.serial_tail(15) };
            if tail.is_empty() {
                Err(e)
            } else {
                Err(e.context(format!("guest kernel log (last lines):\n{tail}")))
            }
        }
    }
}

type Channel = (UnixStream, Arc<Mutex<UnixStream>>, File, UnixListener);

fn boot_in(m: &Monitor, vm: &mut qemu::QemuVm, came_up: &mut bool, t: &mut Timings) -> anyhow::Result<Channel> {
    let mut reader = vm.agent.try_clone().context("agent channel")?;
    let writer = vm.agent.try_clone().context("agent channel")?;
    let timeout = super::boot_timeout();
    reader.set_read_timeout(Some(timeout))?;
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
    match Msg::read_from(&mut reader) {
        Ok(Some(Msg::Ready(guest_ms))) => t.ready = Some((Instant::now(), guest_ms)),
        Ok(Some(other)) => bail!("guest agent said {other:?} before it was ready"),
        Ok(None) => bail!("the guest closed its agent channel before it came up"),
        Err(e) if timed_out(&e) => bail!("the guest did not come up within {} s", timeout.as_secs()),
        Err(e) => return Err(e).context("agent channel"),
    }
    *came_up = true;
    let config = serde_json::json!({
        "id": m.id,
        "readonly": m.readonly,
        "share": !m.shares.is_empty(),
        "net": m.net,
        "spec": m.spec,
    });
    let mut w = writer;
    Msg::Config(serde_json::to_vec(&config)?).write_to(&mut w)?;
    loop {
        match Msg::read_from(&mut reader) {
            Ok(Some(Msg::Created)) => {
                t.created = Some(Instant::now());
                break;
            }
            Ok(Some(Msg::Stdout(INIT, b))) => relay(1, &b),
            Ok(Some(Msg::Stderr(INIT, b))) => relay(2, &b),
            Ok(Some(Msg::Error(INIT, e))) => bail!("in the guest: {e}"),
            Ok(Some(other)) => bail!("guest agent sent {other:?} out of turn"),
            Ok(None) => bail!("the guest closed its agent channel while creating the container"),
            Err(e) if timed_out(&e) => {
                bail!("the guest did not create the container within {} s", timeout.as_secs())
            }
            Err(e) => return Err(e).context("agent channel"),
        }
    }
    reader.set_read_timeout(None)?;
    // `start` finds a reader of the fifo from now on (its write-only open
    // needs one), and the gate is ours to open.
    let fifo_path = m.state_dir.join(strata_runtime::container::EXEC_FIFO);
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo_path)
        .with_context(|| format!("open {}", fifo_path.display()))?;
    let dir = File::open(&m.state_dir).with_context(|| format!("open {}", m.state_dir.display()))?;
    let listener = UnixListener::bind(format!("/proc/self/fd/{}/{EXEC_SOCKET}", dir.as_raw_fd()))
        .with_context(|| format!("listen on {}/{EXEC_SOCKET}", m.state_dir.display()))?;
    Ok((reader, Arc::new(Mutex::new(w)), fifo, listener))
}

/// Writes to one of the monitor's own descriptors (the container's stdout
/// or stderr); a reader that went away loses the output, as it would with
/// a container's.
fn relay(fd: RawFd, bytes: &[u8]) {
    // SAFETY: 1 and 2 stay open for the monitor's life; ManuallyDrop keeps
    // this File from closing them.
    let mut f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let _ = f.write_all(bytes);
}

struct ExecClient {
    out: File,
    err: File,
    ctrl: UnixStream,
}

/// A container that joined the VM: what the monitor attached to the shared
/// folder for it, and whether the guest has created it.
struct Member {
    targets: Vec<PathBuf>,
    joined: bool,
    /// Its client went away before the guest had created it.
    abandoned: bool,
}

struct Shared {
    agent: Arc<Mutex<UnixStream>>,
    /// The shared folder, in the monitor's mount namespace.
    share_dir: PathBuf,
    members: Mutex<HashMap<u32, Member>>,
    execs: Mutex<HashMap<u32, ExecClient>>,
    /// Questions about containers in the VM, by number: where the answer goes.
    asks: Mutex<HashMap<u32, UnixStream>>,
    next: AtomicU32,
    start: Mutex<Option<mpsc::Sender<Result<(), String>>>>,
}

impl Shared {
    fn send(&self, m: Msg) -> std::io::Result<()> {
        m.write_to(&mut *self.agent.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Container `n` left the VM (or never got in): what was attached for
    /// it goes.
    fn forget(&self, n: u32) {
        let member = self.members.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
        for t in member.map(|m| m.targets).unwrap_or_default() {
            let _ = nix::mount::umount2(&t, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(&t).or_else(|_| std::fs::remove_file(&t));
        }
    }
}

fn serve(b: Booted, signals: nix::sys::signal::SigSet) -> i32 {
    let Booted { mut vm, timings, exit_file, mut reader, writer, fifo, listener } = b;
    let timings = Arc::new(Mutex::new(timings));
    let shared = Arc::new(Shared {
        agent: writer,
        share_dir: exit_file.with_file_name(super::share::SHARE_DIR),
        members: Mutex::new(HashMap::new()),
        execs: Mutex::new(HashMap::new()),
        asks: Mutex::new(HashMap::new()),
        next: AtomicU32::new(1),
        start: Mutex::new(None),
    });
    // The gate: `start` writes a byte; the workload starts; `start` learns
    // how it went from what is left in the fifo once we close it.
    let s = shared.clone();
    let t = timings.clone();
    std::thread::spawn(move || {
        let mut fifo = fifo;
        let mut byte = [0u8; 1];
        if !matches!(fifo.read(&mut byte), Ok(1)) {
            return;
        }
        t.lock().unwrap_or_else(|e| e.into_inner()).start_asked = Some(Instant::now());
        let (tx, rx) = mpsc::channel();
        *s.start.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        if s.send(Msg::Start).is_err() {
            return;
        }
        if let Ok(Err(why)) = rx.recv() {
            let mut report = strata_runtime::process::init::START_FAILED.to_vec();
            report.extend_from_slice(why.as_bytes());
            let _ = fifo.write_all(&report);
        }
    });
    // Our stdin is the workload's.
    let s = shared.clone();
    std::thread::spawn(move || pump_stdin(0, INIT, &s));
    let s = shared.clone();
    std::thread::spawn(move || follow_size(1, INIT, &s));
    // Signals for the container go to its workload.
    let s = shared.clone();
    std::thread::spawn(move || loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD | Signal::SIGPIPE) => {}
            Ok(sig) => {
                if s.send(Msg::Signal(INIT, sig as i32)).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let s = shared.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || {
                let _ = take_exec(conn, &s);
            });
        }
    });
    let code = loop {
        let msg = match Msg::read_from(&mut reader) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => {
                eprintln!("strata: the VM of {:?} ended before its workload exited", vm_name(&vm));
                break 255;
            }
        };
        match msg {
            Msg::Stdout(INIT, b) => relay(1, &b),
            Msg::Stderr(INIT, b) => relay(2, &b),
            Msg::Exit(INIT, code) => {
                timings.lock().unwrap_or_else(|e| e.into_inner()).exited = Some(Instant::now());
                break code;
            }
            Msg::Started(INIT) => {
                timings.lock().unwrap_or_else(|e| e.into_inner()).started = Some(Instant::now());
                answer_start(&shared, Ok(()));
            }
            Msg::Error(INIT, e) => answer_start(&shared, Err(e)),
            m @ (Msg::Answer(n, _) | Msg::Error(n, _))
                if shared.asks.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&n) =>
            {
                let asker = shared.asks.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
                if let Some(mut conn) = asker {
                    let _ = m.write_to(&mut conn);
                }
            }
            Msg::Stdout(n, b) => with_exec(&shared, n, |c| {
                let _ = c.out.write_all(&b);
            }),
            Msg::Stderr(n, b) => with_exec(&shared, n, |c| {
                let _ = c.err.write_all(&b);
            }),
            Msg::Started(n) => with_exec(&shared, n, |c| {
                let _ = Msg::Started(n).write_to(&mut c.ctrl);
            }),
            Msg::Joined(n) => {
                let abandoned = match shared.members.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&n) {
                    Some(m) => {
                        m.joined = true;
                        m.abandoned
                    }
                    None => false,
                };
                if abandoned {
                    let _ = shared.send(Msg::Signal(n, Signal::SIGKILL as i32));
                }
                with_exec(&shared, n, |c| {
                    let _ = Msg::Joined(n).write_to(&mut c.ctrl);
                })
            }
            // A joined container's failed start: its exit follows.
            Msg::Error(n, e)
                if shared.members.lock().unwrap_or_else(|e| e.into_inner()).get(&n).is_some_and(|m| m.joined) =>
            {
                with_exec(&shared, n, |c| {
                    let _ = Msg::Error(n, e).write_to(&mut c.ctrl);
                })
            }
            m @ (Msg::Exit(n, _) | Msg::Error(n, _)) => {
                let client = shared.execs.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
                if let Some(mut c) = client {
                    let _ = m.write_to(&mut c.ctrl);
                }
                shared.forget(n);
            }
            _ => {}
        }
    };
    // Clients of execs still running, and of questions not yet answered,
    // learn that the VM is gone.
    shared.execs.lock().unwrap_or_else(|e| e.into_inner()).clear();
    shared.asks.lock().unwrap_or_else(|e| e.into_inner()).clear();
    vm.finish(Duration::from_secs(10));
    let json = timings.lock().unwrap_or_else(|e| e.into_inner()).json(Instant::now());
    let _ = std::fs::write(exit_file.with_file_name("timings.json"), json.to_string());
    // For those that watch the monitor without being its parent.
    let _ = std::fs::write(exit_file, code.to_string());
    code
}

fn vm_name(vm: &qemu::QemuVm) -> String {
    vm.serial_log.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn answer_start(shared: &Shared, r: Result<(), String>) {
    if let Some(tx) = shared.start.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = tx.send(r);
    }
}

fn with_exec(shared: &Shared, n: u32, f: impl FnOnce(&mut ExecClient)) {
    if let Some(c) = shared.execs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&n) {
        f(c);
    }
}

/// Relays `fd` (ours, or an exec client's stdin) to process `n`'s stdin.
/// An exec's ends with the exec: its stdin may be a terminal that never
/// reaches end of file, and the descriptor must not outlive the process.
fn pump_stdin(fd: RawFd, n: u32, shared: &Shared) {
    // SAFETY: `fd` stays open while this thread reads it (0 for the
    // monitor's life; an exec's is owned by the caller's thread).
    let mut f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if n != INIT {
            if !shared.execs.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&n) {
                return;
            }
            // SAFETY: `fd` is open (see above) for the length of the poll.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let mut fds = [nix::poll::PollFd::new(borrowed, nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)) {
                Ok(0) | Err(nix::Error::EINTR) => continue,
                _ => {}
            }
        }
        let msg = match f.read(&mut buf) {
            Ok(0) | Err(_) => Msg::StdinEof(n),
            Ok(k) => Msg::Stdin(n, buf[..k].to_vec()),
        };
        let eof = matches!(msg, Msg::StdinEof(_));
        if shared.send(msg).is_err() || eof {
            return;
        }
    }
}

/// Tells the guest when the size of terminal `fd` (process `n`'s, on the
/// host) changes: whoever holds its master resizes it, and nothing signals
/// us, so it is looked at five times a second while it is a terminal (and,
/// for an exec, while the exec lasts).
fn follow_size(fd: RawFd, n: u32, shared: &Shared) {
    let mut last = (0u16, 0u16);
    loop {
        if n != INIT && !shared.execs.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&n) {
            return;
        }
        let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes a winsize through the valid pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } != 0 {
            return;
        }
        if (ws.ws_row, ws.ws_col) != last && ws.ws_row > 0 {
            last = (ws.ws_row, ws.ws_col);
            if shared.send(Msg::Resize(n, ws.ws_row, ws.ws_col)).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Most descriptors a client passes: stdio, and for a joining container its
/// rootfs and bind mounts.
const MAX_PASSED: usize = 3 + 125;

/// One `exec` from a client, or a container that joins the VM: its stdio
/// (passed with the first byte), its request, then the signals it forwards.
/// A first byte without descriptors comes with a question instead.
fn take_exec(mut conn: UnixStream, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([RawFd; MAX_PASSED]);
    let fds: Vec<OwnedFd> = {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .context("receive the exec's stdio")?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().context("control message")? {
            if let ControlMessageOwned::ScmRights(list) = c {
                // SAFETY: descriptors just received are ours alone.
                fds.extend(list.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        fds
    };
    if fds.is_empty() {
        return take_ask(conn, shared);
    }
    if fds.len() < 3 {
        bail!("exec without its stdio");
    }
    let mut fds = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
        bail!("exec without its stdio");
    };
    let trees: Vec<OwnedFd> = fds.collect();
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    let request = match Msg::read_from(&mut conn)? {
        Some(Msg::Exec(_, p)) if trees.is_empty() => Msg::Exec(n, p),
        Some(Msg::ExecIn(_, p)) if trees.is_empty() => Msg::ExecIn(n, p),
        Some(Msg::Join(_, body)) => {
            let attached = attach(shared, n, &body, trees);
            if let Err(e) = &attached {
                shared.forget(n);
                let _ = Msg::Error(n, format!("{e:#}")).write_to(&mut conn);
            }
            attached?;
            Msg::Join(n, body)
        }
        other => bail!("expected an exec or a container, got {other:?}"),
    };
    let member = matches!(request, Msg::Join(..));
    let ctrl = conn.try_clone()?;
    let stdout_fd = stdout.try_clone()?;
    shared
        .execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(n, ExecClient { out: File::from(stdout), err: File::from(stderr), ctrl });
    shared.send(request)?;
    if nix::unistd::isatty(stdout_fd.as_raw_fd()).unwrap_or(false) {
        let s = shared.clone();
        let tty = stdout_fd;
        std::thread::spawn(move || follow_size(tty.as_raw_fd(), n, &s));
    }
    let s = shared.clone();
    std::thread::spawn(move || {
        let stdin = stdin;
        pump_stdin(stdin.as_raw_fd(), n, &s);
    });
    loop {
        let sent = match Msg::read_from(&mut conn) {
            Ok(Some(Msg::Signal(_, sig))) => shared.send(Msg::Signal(n, sig)),
            Ok(Some(Msg::Begin(_))) if member => shared.send(Msg::Begin(n)),
            _ => break,
        };
        if sent.is_err() {
            break;
        }
    }
    // A process whose proxy is gone goes too (an exec's, killed by a
    // client's timeout; a joined container's, killed by `delete --force`, or
    // whose `create` failed or died: now, or once the guest has made it).
    let kill = if member {
        match shared.members.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&n) {
            Some(m) => {
                m.abandoned = true;
                m.joined
            }
            None => false,
        }
    } else {
        shared.execs.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&n)
    };
    if kill {
        let _ = shared.send(Msg::Signal(n, Signal::SIGKILL as i32));
    }
    Ok(())
}

/// A question about one of the VM's containers (pause, resume, update, its
/// statistics): the guest's answer goes back on `conn`.
fn take_ask(mut conn: UnixStream, shared: &Shared) -> anyhow::Result<()> {
    let Some(Msg::Ask(_, body)) = Msg::read_from(&mut conn)? else {
        bail!("expected a question about a container");
    };
    let n = shared.next.fetch_add(1, Ordering::Relaxed);
    shared.asks.lock().unwrap_or_else(|e| e.into_inner()).insert(n, conn);
    if let Err(e) = shared.send(Msg::Ask(n, body)) {
        shared.asks.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
        return Err(e.into());
    }
    Ok(())
}

/// Attaches a joining container's rootfs and bind mounts (the detached
/// copies `trees`, in the order the request lists them) to the shared folder.
fn attach(shared: &Shared, n: u32, body: &[u8], trees: Vec<OwnedFd>) -> anyhow::Result<()> {
    use nix::mount::MsFlags;
    let v: serde_json::Value = serde_json::from_slice(body).context("the joining container")?;
    let list = v["shares"].as_array().cloned().unwrap_or_default();
    if list.len() != trees.len() {
        bail!("{} shares with {} copies", list.len(), trees.len());
    }
    shared
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(n, Member { targets: Vec::new(), joined: false, abandoned: false });
    for (s, tree) in list.iter().zip(trees) {
        let name = s["name"].as_str().unwrap_or_default();
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            bail!("share name {name:?}");
        }
        let target = shared.share_dir.join(name);
        if s["dir"].as_bool().unwrap_or(false) {
            std::fs::create_dir(&target)
        } else {
            std::fs::File::create_new(&target).map(drop)
        }
        .with_context(|| format!("create {}", target.display()))?;
        if let Some(m) = shared.members.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&n) {
            m.targets.push(target.clone());
        }
        let at = File::open(&target).with_context(|| format!("open {}", target.display()))?;
        strata_runtime::sys::move_mount_onto(tree.as_fd(), at.as_fd())
            .with_context(|| format!("attach the guest's {name}"))?;
        if s["readonly"].as_bool().unwrap_or(false) {
            let kept = nix::sys::statvfs::statvfs(&target)
                .map(|v| strata_runtime::rootfs::mounts::locked_flags(v.flags()))
                .unwrap_or(MsFlags::empty());
            nix::mount::mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept,
                None::<&str>,
            )
            .with_context(|| format!("make the guest's {name} read-only"))?;
        }
    }
    Ok(())
}
