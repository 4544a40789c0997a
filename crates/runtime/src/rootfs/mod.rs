//! The container's root filesystem: mounts, devices, pivot_root, masked and
//! read-only paths. Runs inside the container's init, in its new mount namespace.

pub mod copyup;
pub mod devices;
pub mod idmap;
pub mod mounts;
pub mod options;
pub mod paths;
pub mod pivot;
