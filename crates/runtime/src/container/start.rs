//! `start`: open the gate the init is blocked on, then run `poststart` hooks.

use super::{wrong_status, Container, EXEC_FIFO};
use crate::state::StateDir;
use crate::{hooks, Error, Result, Status};
use nix::fcntl::OFlag;
use std::io::Write;
use std::os::fd::FromRawFd;

impl Container {
    /// Starts a created container. Returns warnings (failed `poststart` hooks, which
    /// the spec says must not fail the start).
    pub fn start(&self) -> Result<Vec<String>> {
        let dir = StateDir::open(&self.root, &self.id)?;
        let mut st = Self::load_state(&dir, &self.id)?;
        if st.status == Status::Running {
            // (Its gate is gone: another start opened it.)
            return Err(wrong_status(&st, "the container is already being started, or was started"));
        }
        if st.status != Status::Created {
            return Err(wrong_status(&st, "only a created container can be started"));
        }
        if st.config.process().is_none() {
            // Nothing can ever run in it: it stops here, as a failed start does.
            crate::process::reap_foreign(st.pid, st.init_start_time);
            return Err(Error::config("process", "start needs a process; the container's config has none"));
        }
        let fifo_path = dir.path().join(EXEC_FIFO);
        // A reader of our own first: once the init's descriptor (its only writer)
        // is closed by execve, the fifo reports hang-up, and `start` returns only
        // then, as the spec wants poststart hooks to run after the process started.
        let watch = match nix::fcntl::open(
            &fifo_path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Another `start` took the gate and is waiting for the process.
            Err(nix::Error::ENOENT) => return Err(wrong_status(&st, "the container is already being started")),
            Err(e) => return Err(Error::sys("open", fifo_path.display(), e)),
        };
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        let watch = unsafe { std::os::fd::OwnedFd::from_raw_fd(watch) };
        let fd = nix::fcntl::open(
            &fifo_path,
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys("open", fifo_path.display(), e))?;
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        let mut fifo = unsafe { std::fs::File::from_raw_fd(fd) };
        fifo.write_all(&[0]).map_err(|e| Error::io("write", &fifo_path, e))?;
        drop(fifo);
        // The gate is ours alone now; the state lock is let go while the process
        // gets to execve (its startContainer hooks, a SIGSTOP...), so `kill` and
        // `delete --force` are never stuck behind a start that cannot finish.
        let _ = std::fs::remove_file(&fifo_path);
        drop(dir);
        loop {
            let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&watch), nix::poll::PollFlags::empty())];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::sys("poll", fifo_path.display(), e)),
                Ok(_) => break,
            }
        }
        // What is left in the fifo tells how the init went away: nothing (execve
        // closed it), our unread byte (it died before reading), or its failure mark.
        let mut left = [0u8; 4096];
        let n = loop {
            match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&watch), &mut left) {
                Err(nix::Error::EINTR) => continue,
                Ok(n) => break n,
                Err(_) => break 0,
            }
        };
        if n > 0 {
            st.status = Status::Stopped;
            return Err(match left[..n].strip_prefix(crate::process::init::START_FAILED) {
                // Our own byte comes first when the init died before reading it.
                Some(report) if left[0] != 0 => {
                    let text = String::from_utf8_lossy(report);
                    Error::StartFailed { id: st.id.clone(), reason: text.trim().to_string() }
                }
                _ => wrong_status(&st, "its init process exited before start"),
            });
        }
        // Not written down: a created container whose gate is gone is running.
        st.status = Status::Running;
        let mut warnings = Vec::new();
        if let Some(list) = st.config.hooks().as_ref().and_then(|h| h.poststart().clone()) {
            let json = st.oci_json().to_string();
            for h in &list {
                if let Err(e) = hooks::run("poststart", h, &json) {
                    warnings.push(e.to_string());
                }
            }
        }
        Ok(warnings)
    }
}
