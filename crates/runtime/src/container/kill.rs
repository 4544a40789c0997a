//! `kill`: signal the container's init, or with `all` every process in its cgroup.

use super::{is_alive, wrong_status, Container};
use crate::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

impl Container {
    /// Sends `signal` to the init process, or with `all` to every process in the
    /// container's cgroup (which also reaches processes that share the host's pid
    /// namespace). `None` is signal 0: only checks that the process exists.
    ///
    /// As runc's, `all` on a stopped container succeeds: it signals whatever is
    /// left in the cgroup, which may be nothing.
    pub fn kill(&self, signal: impl Into<Option<Signal>>, all: bool) -> Result<()> {
        let signal = signal.into();
        let st = self.state()?;
        if all {
            if let Some(cg) = st.cgroup() {
                if !cg.dir.exists() {
                    return Ok(());
                }
                return cg.signal_all(signal);
            }
            if !is_alive(st.status) {
                return Ok(());
            }
        }
        if !is_alive(st.status) {
            return Err(wrong_status(&st, "container not running"));
        }
        kill(Pid::from_raw(st.pid), signal).map_err(|e| Error::sys("kill", format!("pid {}", st.pid), e))
    }
}
