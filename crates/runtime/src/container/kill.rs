//! `kill`: signal the container's init, or with `all` every process of the container.

use super::{is_alive, wrong_status, Container};
use crate::state::StateDir;
use crate::{Error, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::MetadataExt;

impl Container {
    /// Sends `signal` to the init process (or to every process in the container's
    /// pid namespace when `all`).
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        let dir = StateDir::open(&self.root, &self.id)?;
        let st = Self::load_state(&dir, &self.id)?;
        if !is_alive(st.status) {
            return Err(wrong_status(&st, "container not running"));
        }
        if all && st.has_own_pid_ns() {
            for pid in container_pids(st.pid) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
        kill(Pid::from_raw(st.pid), signal).map_err(|e| Error::sys("kill", format!("pid {}", st.pid), e))
    }
}

/// Host pids of the processes in the same pid namespace as `init`, when that
/// namespace is not the runtime's own (else just `init`).
pub(super) fn container_pids(init: i32) -> Vec<i32> {
    let ns_of = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/pid")).map(|m| (m.dev(), m.ino())).ok();
    let Some(target) = ns_of(&init.to_string()) else {
        return Vec::new();
    };
    if ns_of("self") == Some(target) {
        return vec![init];
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![init];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|name| ns_of(name) == Some(target))
        .filter_map(|name| name.parse().ok())
        .collect()
}
