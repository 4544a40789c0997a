//! The Strata runtime library.
//!
//! Everything that touches the kernel to run an OCI bundle lives here: reading and
//! validating `config.json`, the container state directory, namespaces, the root
//! filesystem, the container's init process and the lifecycle operations
//! (`create`, `start`, `kill`, `delete`, `exec`). Front ends (the `strata` CLI, the
//! shims) call [`Container`] and print what it returns.

pub mod capabilities;
pub mod cgroups;
pub mod config;
pub mod container;
pub mod error;
pub mod exe;
pub mod features;
pub mod hooks;
pub mod id;
pub mod jsonpath;
pub mod lsm;
pub mod namespaces;
pub mod network;
pub mod process;
pub mod rdt;
pub mod rootfs;
pub mod seccomp;
pub mod signal;
pub mod state;
pub mod sync;
mod sys;
pub mod tty;

pub use container::{Container, CreateOptions, ExecOptions};
pub use error::{Error, Result};
pub use state::{ContainerState, Status};

/// The OCI runtime specification version this runtime implements.
pub const OCI_VERSION: &str = "1.3.0";

/// Default directory holding one state directory per container.
pub const DEFAULT_ROOT: &str = "/run/strata";
