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
pub mod sys;
pub mod tty;

pub use container::{Container, CreateOptions, ExecOptions};
pub use error::{Error, Result};
pub use state::{ContainerState, Status};

/// The OCI runtime specification version this runtime implements.
pub const OCI_VERSION: &str = "1.3.0";

/// Default directory holding one state directory per container.
pub const DEFAULT_ROOT: &str = "/run/strata";

/// Whether the runtime runs without root's privileges (rootless): as a user
/// other than root, or as root of a user namespace other than the host's (as
/// rootless podman runs it). It then works the way an unprivileged user can:
/// no cgroup unless one is delegated, no device program, binds made inside.
pub fn rootless() -> bool {
    !nix::unistd::geteuid().is_root() || in_user_namespace()
}

/// Whether this process is in a user namespace other than the initial one
/// (whose uid map is the identity over all ids).
pub fn in_user_namespace() -> bool {
    static IN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
            .unwrap_or(false)
    })
}
