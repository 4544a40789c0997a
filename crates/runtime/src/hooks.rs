//! OCI hooks: programs run at fixed points of the lifecycle with the container
//! state on stdin. Spawned with fork + execve directly (no std::process), so they can
//! also run from a freshly forked container process.
//!
//! One poll loop feeds stdin, collects the start of stderr and watches the hook's
//! pidfd, all under the hook's timeout: a hook that does not read its stdin, floods
//! its stderr or leaves a background child holding the pipes cannot hang us.

use crate::{Error, Result};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Hook;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How much of a failing hook's stderr is quoted in the error.
const STDERR_KEPT: usize = 4096;

/// Runs every hook of `kind` in order, stopping at the first failure.
pub fn run_all(kind: &'static str, hooks: &[Hook], state_json: &str) -> Result<()> {
    hooks.iter().try_for_each(|h| run(kind, h, state_json))
}

/// As [`run_all`], a hook without `env` getting `default_env` (the
/// startContainer hooks get the container process's environment, as runc
/// gives it; an empty `env` stays empty).
pub fn run_all_with_env(kind: &'static str, hooks: &[Hook], state_json: &str, default_env: &[CString]) -> Result<()> {
    hooks.iter().try_for_each(|h| run_with_env(kind, h, state_json, Some(default_env)))
}

/// Runs one hook to completion (or until its timeout) with `state_json` on stdin.
pub fn run(kind: &'static str, hook: &Hook, state_json: &str) -> Result<()> {
    run_with_env(kind, hook, state_json, None)
}

fn run_with_env(kind: &'static str, hook: &Hook, state_json: &str, default_env: Option<&[CString]>) -> Result<()> {
    let fail = |reason: String| Error::Hook { kind, path: hook.path().clone(), reason };
    let cstr = |s: &str| CString::new(s).map_err(|_| fail("argument contains a NUL byte".into()));
    let path = cstr(&hook.path().to_string_lossy())?;
    let args: Vec<CString> = match hook.args() {
        Some(a) if !a.is_empty() => a.iter().map(|s| cstr(s)).collect::<Result<_>>()?,
        _ => vec![path.clone()],
    };
    let env: Vec<CString> = match (hook.env(), default_env) {
        (None, Some(default)) => default.to_vec(),
        (env, _) => env.iter().flatten().map(|s| cstr(s)).collect::<Result<_>>()?,
    };
    // Deadline arithmetic must not overflow on absurd timeouts: those mean "none".
    let deadline = hook.timeout().and_then(|t| Instant::now().checked_add(Duration::from_secs(t.max(0) as u64)));
    let (stdin_r, stdin_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;

    let child = match crate::sys::fork().map_err(|e| fail(format!("fork: {e}")))? {
        crate::sys::Forked::Child => {
            // In the child: a clean signal state (the caller may block or ignore
            // signals), stdin and stderr wired, exec.
            crate::process::reset_signals();
            let _ = nix::unistd::dup2(stdin_r.as_raw_fd(), 0);
            let _ = nix::unistd::dup2(err_w.as_raw_fd(), 2);
            let _ = nix::unistd::execve(&path, &args, &env);
            let _ = nix::unistd::write(err_w.as_fd(), b"exec failed: ");
            let _ = nix::unistd::write(err_w.as_fd(), nix::Error::last().desc().as_bytes());
            crate::sys::exit_now(127);
        }
        crate::sys::Forked::Parent(pid) => Pid::from_raw(pid),
    };
    drop(stdin_r);
    drop(err_w);
    let outcome = supervise(child, stdin_w, err_r, state_json.as_bytes(), deadline);
    let (status, stderr) = match outcome {
        Ok(done) => done,
        Err(reason) => {
            let reason = match (reason.as_str(), hook.timeout()) {
                ("timed out", Some(t)) => format!("timed out after {t}s"),
                _ => reason,
            };
            let _ = kill(child, Signal::SIGKILL);
            while let Err(nix::Error::EINTR) = waitpid(child, None) {}
            return Err(fail(reason));
        }
    };
    let stderr = String::from_utf8_lossy(&stderr);
    let stderr = stderr.trim();
    let detail = if stderr.is_empty() { String::new() } else { format!(": {stderr}") };
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        WaitStatus::Exited(_, code) => Err(fail(format!("exited with status {code}{detail}"))),
        WaitStatus::Signaled(_, sig, _) => Err(fail(format!("killed by {}{detail}", crate::signal::describe(sig)))),
        other => Err(fail(format!("ended unexpectedly: {other:?}"))),
    }
}

/// Feeds stdin, collects stderr and reaps the hook; `Err` means the caller must
/// kill it (timeout or a failed system call).
fn supervise(
    child: Pid,
    stdin: OwnedFd,
    stderr: OwnedFd,
    input: &[u8],
    deadline: Option<Instant>,
) -> Result<(WaitStatus, Vec<u8>), String> {
    for fd in [&stdin, &stderr] {
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| format!("fcntl: {e}"))?;
    }
    let pidfd = crate::sys::pidfd_open(child.as_raw()).map_err(|e| format!("pidfd_open: {e}"))?;
    let mut stdin = Some(stdin);
    let mut stderr = Some(stderr);
    let mut written = 0;
    let mut collected = Vec::new();
    let mut buf = [0u8; 4096];
    if input.is_empty() {
        stdin = None;
    }
    loop {
        let wait_ms = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("timed out".into());
                }
                left.as_millis().min(i32::MAX as u128) as i32
            }
            None => -1,
        };
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if let Some(w) = &stdin {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
        }
        if let Some(r) = &stderr {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::try_from(wait_ms).unwrap_or(PollTimeout::NONE)) {
            Ok(0) => return Err("timed out".into()),
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let exited = ready[0];
        let mut idx = 1;
        if let Some(w) = &stdin {
            if ready[idx] {
                match write_ignoring_sigpipe(w, &input[written..]) {
                    Ok(n) => written += n,
                    Err(nix::Error::EAGAIN) => {}
                    // EPIPE: the hook does not read its stdin, which is its right.
                    Err(_) => written = input.len(),
                }
                if written >= input.len() {
                    stdin = None;
                }
            }
            idx += 1;
        }
        if let (Some(r), true) = (&stderr, ready.get(idx).copied().unwrap_or(false)) {
            match nix::unistd::read(r.as_raw_fd(), &mut buf) {
                Ok(0) => stderr = None,
                Ok(n) => {
                    let room = STDERR_KEPT.saturating_sub(collected.len());
                    collected.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
                Err(_) => stderr = None,
            }
        }
        if exited {
            // What the hook wrote before exiting is in the pipe already; a background
            // child of the hook may keep the pipe open, so do not wait for EOF.
            if let Some(r) = &stderr {
                while let Ok(n) = nix::unistd::read(r.as_raw_fd(), &mut buf) {
                    if n == 0 || collected.len() >= STDERR_KEPT {
                        break;
                    }
                    let room = STDERR_KEPT - collected.len();
                    collected.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            loop {
                match waitpid(child, None) {
                    Err(nix::Error::EINTR) => continue,
                    Ok(status) => return Ok((status, collected)),
                    Err(e) => return Err(format!("wait: {e}")),
                }
            }
        }
    }
}

/// write(2) that reports EPIPE instead of dying of SIGPIPE (the container's init
/// runs with SIGPIPE at its default action).
fn write_ignoring_sigpipe(fd: &OwnedFd, data: &[u8]) -> nix::Result<usize> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    let mut pipe_only = SigSet::empty();
    pipe_only.add(Signal::SIGPIPE);
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe_only), Some(&mut old))?;
    let result = nix::unistd::write(fd, data);
    if result == Err(nix::Error::EPIPE) && !old.contains(Signal::SIGPIPE) {
        // Consume the SIGPIPE now pending for this thread before unblocking it
        // (a blocked signal is queued even when its action is "ignore").
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: the set and timespec are valid for the call; a null siginfo is allowed.
        unsafe { libc::sigtimedwait(pipe_only.as_ref(), std::ptr::null_mut(), &zero) };
    }
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}
