//! strata-fn's errors: what went wrong, with the field, path or component
//! that did, in one line a person can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad field of function.toml (or a line of it that does not parse).
    #[error("function.toml: {field}: {message}")]
    Function { field: String, message: String },
    /// A file operation on a named path.
    #[error("{}: {err}", path.display())]
    Path { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Sys(#[from] nix::Error),
    /// The library refused or failed an operation.
    #[error(transparent)]
    Runtime(#[from] strata_runtime::Error),
    /// A zygote (see zygote.rs) failed or is gone.
    #[error("{0}")]
    Zygote(String),
    /// Anything else, said in full.
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn path(path: impl Into<PathBuf>, err: std::io::Error) -> Error {
        Error::Path { path: path.into(), err }
    }
}
