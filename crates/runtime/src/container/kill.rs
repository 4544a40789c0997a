//! `kill`: signal the container's init, or with `all` every process in its cgroup.

use super::{is_alive, wrong_status, Container};
use crate::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

impl Container {
    /// Sends `signal` to the init process, or with `all` to every process in the
    /// container's cgroup (which also reaches processes that share the host's pid
    /// namespace).
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        let st = self.state()?;
        // With --all, processes that outlived the init can still be signalled.
        let leftovers = all && st.cgroup().is_some_and(|c| c.pids().is_ok_and(|p| !p.is_empty()));
        if !is_alive(st.status) && !leftovers {
            return Err(wrong_status(&st, "container not running"));
        }
        if all {
            if let Some(cg) = st.cgroup() {
                return cg.signal_all(signal);
            }
        }
        kill(Pid::from_raw(st.pid), signal).map_err(|e| Error::sys("kill", format!("pid {}", st.pid), e))
    }
}
