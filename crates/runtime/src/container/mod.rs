//! Container lifecycle operations, one file per operation. A [`Container`] is a
//! handle on `<root>/<id>`; every operation locks the state directory, re-reads
//! the state and checks the status the spec requires.

mod cgroup_ops;
mod create;
mod delete;
mod exec;
mod kill;
mod start;

pub use create::{check_preserved_fds, CreateOptions};
pub use exec::{sub_cgroup, ExecOptions};

use crate::state::{self, ContainerState, StateDir};
use crate::{Error, Result, Status};
use std::path::{Path, PathBuf};

/// Name of the create→start gate in the state directory.
pub const EXEC_FIFO: &str = "exec.fifo";

/// A container known to the runtime.
#[derive(Debug, Clone)]
pub struct Container {
    root: PathBuf,
    id: String,
}

impl Container {
    /// A handle on an existing container (fails if it does not exist).
    pub fn load(root: &Path, id: &str) -> Result<Self> {
        crate::id::validate(id)?;
        if !root.join(id).is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        Ok(Container { root: root.to_path_buf(), id: id.to_string() })
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Current state, with the status re-derived from the kernel.
    pub fn state(&self) -> Result<ContainerState> {
        // No lock: state.json is replaced atomically, so a reader always sees a
        // whole file, and a hook calling `state` during `create` cannot deadlock.
        let mut st = state::read(&self.root, &self.id)?.ok_or_else(|| Error::State {
            id: self.id.clone(),
            reason: "creation did not finish; use delete --force".into(),
        })?;
        settle_status(&mut st, &self.root.join(&self.id));
        Ok(st)
    }

    fn load_state(dir: &StateDir, id: &str) -> Result<ContainerState> {
        let mut st = dir.load()?.ok_or_else(|| Error::State {
            id: id.to_string(),
            reason: "creation did not finish; use delete --force".into(),
        })?;
        settle_status(&mut st, dir.path());
        Ok(st)
    }

    /// States of all containers under `root`, sorted by id. Containers whose state
    /// cannot be read are skipped.
    pub fn list(root: &Path) -> Result<Vec<ContainerState>> {
        // A listing is what recovery starts from: scratch left by killed
        // creates and deletes goes first.
        state::sweep(root);
        Ok(state::list_ids(root)?
            .into_iter()
            .filter_map(|id| Container { root: root.to_path_buf(), id }.state().ok())
            .collect())
    }
}

/// Re-derives the status from the kernel and from the state directory `dir`:
/// `start` does not record `running`, as that is what a `created` container
/// whose exec fifo is gone is (the process is past the gate, or on its way
/// to execve; `stopped` once it is gone).
fn settle_status(st: &mut ContainerState, dir: &Path) {
    st.refresh_status();
    if st.status == Status::Created && !dir.join(EXEC_FIFO).exists() {
        st.status = Status::Running;
    }
}

fn wrong_status(st: &ContainerState, reason: &'static str) -> Error {
    Error::WrongStatus { id: st.id.clone(), status: st.status, reason }
}

/// Whether a status means the init process may still be alive.
fn is_alive(status: Status) -> bool {
    matches!(status, Status::Creating | Status::Created | Status::Running | Status::Paused)
}
