//! The library's error type: every variant names what failed (path, syscall, field).

use std::path::PathBuf;

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while running a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container id is unusable as a directory name.
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },

    /// `config.json` could not be read or parsed.
    #[error("cannot load {path}: {reason}")]
    ConfigLoad { path: PathBuf, reason: String },

    /// A field of the config holds a value the runtime refuses.
    #[error("invalid config: {field}: {reason}")]
    InvalidConfig { field: String, reason: String },

    /// The config asks for something this build cannot do yet.
    #[error("{field} is not supported yet")]
    Unsupported { field: String },

    /// A container with this id already exists.
    #[error("container {0:?} already exists")]
    AlreadyExists(String),

    /// No container with this id exists.
    #[error("container {0:?} does not exist")]
    NotFound(String),

    /// The operation is not allowed in the container's current status.
    #[error("container {id:?} is {status}: {reason}")]
    WrongStatus { id: String, status: crate::Status, reason: &'static str },

    /// A system call failed.
    #[error("{syscall} {target}: {errno}")]
    Sys { syscall: &'static str, target: String, errno: nix::Error },

    /// An I/O operation on a file failed.
    /// (The cause is part of the message, not a chained source, so a front end
    /// printing the whole chain does not repeat it.)
    #[error("{op} {path}: {err}", path = path.display())]
    Io { op: &'static str, path: PathBuf, err: std::io::Error },

    /// A hook failed or timed out.
    #[error("{kind} hook {path}: {reason}")]
    Hook { kind: &'static str, path: PathBuf, reason: String },

    /// The container's process failed between `start` and execve (a
    /// startContainer hook, the seccomp filter, execve itself).
    #[error("container {id:?} failed to start: {reason}")]
    StartFailed { id: String, reason: String },

    /// The container's init process reported a failure while setting up.
    #[error("{0}")]
    Init(String),

    /// The state file is damaged.
    #[error("state of container {id:?}: {reason}")]
    State { id: String, reason: String },
}

impl Error {
    /// Builds an [`Error::Sys`] from a failed call on `target`.
    pub fn sys(syscall: &'static str, target: impl std::fmt::Display, errno: nix::Error) -> Self {
        Error::Sys { syscall, target: target.to_string(), errno }
    }

    /// Builds an [`Error::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), err: source }
    }

    /// Builds an [`Error::InvalidConfig`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { field: field.into(), reason: reason.into() }
    }
}
