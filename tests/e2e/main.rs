//! End-to-end suite: real containers run by the runtime binary, as root.
//! Each check looks from inside the container (busybox commands) or at the host.
//! `STRATA_TEST_RUNTIME=runc cargo test -p strata-tests` runs the same checks
//! against runc to validate them.

mod cgroups;
mod compat;
mod docs;
mod errors;
mod features;
mod hooks;
mod hostile;
mod library;
mod lifecycle;
mod namespaces;
mod oci13;
mod process;
mod rootfs;
mod seccomp;
mod security;
mod terminal;
