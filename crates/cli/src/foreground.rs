//! Waiting for a container process in the foreground (`run`, `exec` without
//! --detach): signals sent to strata are forwarded to the process, and with a
//! terminal the caller's stdin/stdout are proxied to the pty master.

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Every signal a user can send, plus SIGCHLD.
pub fn forwarded() -> SigSet {
    let mut set = SigSet::empty();
    for sig in Signal::iterator() {
        if !matches!(
            sig,
            Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGILL | Signal::SIGFPE
        ) {
            set.add(sig);
        }
    }
    set
}

/// Blocks the forwarded signals so none is lost between spawning the process and
/// waiting for it (the runtime library resets the mask in the container process).
pub fn block_signals() -> anyhow::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded()), None).context("block signals")
}

/// Restores the terminal's mode when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize through the valid pointer.
    if unsafe { libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0 {
        // SAFETY: TIOCSWINSZ reads a winsize through the valid pointer.
        unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

/// Waits for `pid` (a child of this process) and returns its exit code the way a
/// shell reports it (128+N when killed by signal N).
pub fn wait(pid: i32, master: Option<OwnedFd>) -> anyhow::Result<i32> {
    let sigfd = SignalFd::with_flags(&forwarded(), SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    let stdin = std::io::stdin();
    let _raw = master.as_ref().and_then(|_| RawMode::enter());
    if let Some(m) = &master {
        copy_winsize(stdin.as_fd(), m.as_fd());
    }
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        if let (true, Some(m)) = (master_open, &master) {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            r => r.context("poll")?,
        };
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let mut idx = 1;
        if let (true, Some(m)) = (master_open, &master) {
            if ready[idx] {
                match nix::unistd::read(m.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(_) => master_open = false,
                    Ok(n) => {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                }
            }
            idx += 1;
        }
        if stdin_open && ready[idx] {
            match std::io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if let Some(m) = &master {
                        let _ = nix::unistd::write(m, &buf[..n]);
                    }
                }
            }
        }
        if ready[0] {
            let Ok(Some(info)) = sigfd.read_signal() else {
                continue;
            };
            let sig = Signal::try_from(info.ssi_signo as i32).ok();
            match sig {
                Some(Signal::SIGCHLD) => {
                    if let Some(code) = reap(pid) {
                        if let Some(m) = &master {
                            drain(m);
                        }
                        return Ok(code);
                    }
                }
                Some(Signal::SIGWINCH) => {
                    if let Some(m) = &master {
                        copy_winsize(stdin.as_fd(), m.as_fd());
                    }
                }
                Some(s) => {
                    let _ = kill(Pid::from_raw(pid), s);
                }
                None => {}
            }
        }
    }
}

/// Reaps every exited child; returns the exit code once `pid` is among them.
fn reap(pid: i32) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => result = Some(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => result = Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(_) => {}
        }
    }
}

/// Copies what the container wrote to its terminal before exiting.
fn drain(master: &OwnedFd) {
    let _ = nix::fcntl::fcntl(master.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
    let mut buf = [0u8; 8192];
    let mut out = std::io::stdout().lock();
    while let Ok(n) = nix::unistd::read(master.as_raw_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
    }
    let _ = out.flush();
}
