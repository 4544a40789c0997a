//! One module per CLI command.

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

use anyhow::Context;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connects to a `--console-socket` path.
pub fn connect_console(path: &Path) -> anyhow::Result<OwnedFd> {
    connect_socket(path, "console socket")
}

/// Connects to the unix socket at `path` (`what` names it in errors).
pub fn connect_socket(path: &Path, what: &str) -> anyhow::Result<OwnedFd> {
    let s = UnixStream::connect(path).with_context(|| format!("connect to {what} {}", path.display()))?;
    Ok(OwnedFd::from(s))
}
