//! OCI hooks: programs run at fixed points of the lifecycle with the container
//! state on stdin. Spawned with fork + execve directly (no std::process), so they can
//! also run from a freshly forked container process.

use crate::{Error, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Hook;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// Runs every hook of `kind` in order, stopping at the first failure.
pub fn run_all(kind: &'static str, hooks: &[Hook], state_json: &str) -> Result<()> {
    hooks.iter().try_for_each(|h| run(kind, h, state_json))
}

/// Runs one hook to completion (or until its timeout) with `state_json` on stdin.
pub fn run(kind: &'static str, hook: &Hook, state_json: &str) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        kind,
        path: hook.path().clone(),
        reason,
    };
    let cstr = |s: &str| CString::new(s).map_err(|_| fail("argument contains a NUL byte".into()));
    let path = cstr(&hook.path().to_string_lossy())?;
    let args: Vec<CString> = match hook.args() {
        Some(a) if !a.is_empty() => a.iter().map(|s| cstr(s)).collect::<Result<_>>()?,
        _ => vec![path.clone()],
    };
    let env: Vec<CString> = hook
        .env()
        .iter()
        .flatten()
        .map(|s| cstr(s))
        .collect::<Result<_>>()?;
    let (stdin_r, stdin_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| fail(format!("pipe: {e}")))?;

    let child = match crate::sys::fork().map_err(|e| fail(format!("fork: {e}")))? {
        crate::sys::Forked::Child => {
            // In the child: wire stdin and stderr, exec. Nothing here allocates.
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
    // A hook that does not read its stdin must not fail the write: ignore EPIPE.
    let mut stdin = std::fs::File::from(stdin_w);
    let _ = stdin.write_all(state_json.as_bytes());
    drop(stdin);

    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let pidfd =
        crate::sys::pidfd_open(child.as_raw()).map_err(|e| fail(format!("pidfd_open: {e}")))?;
    loop {
        let wait_ms = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
            None => -1,
        };
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(wait_ms).unwrap_or(PollTimeout::NONE),
        ) {
            Ok(0) => {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(fail(format!(
                    "timed out after {}s",
                    hook.timeout().unwrap_or(0)
                )));
            }
            Ok(_) => break,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(fail(format!("poll: {e}"))),
        }
    }
    let status = loop {
        match waitpid(child, None) {
            Err(nix::Error::EINTR) => continue,
            other => break other.map_err(|e| fail(format!("wait: {e}")))?,
        }
    };
    let mut stderr = String::new();
    let _ = std::fs::File::from(err_r)
        .take(4096)
        .read_to_string(&mut stderr);
    let stderr = stderr.trim();
    let detail = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    };
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        WaitStatus::Exited(_, code) => Err(fail(format!("exited with status {code}{detail}"))),
        WaitStatus::Signaled(_, sig, _) => Err(fail(format!("killed by {sig}{detail}"))),
        other => Err(fail(format!("ended unexpectedly: {other:?}"))),
    }
}
