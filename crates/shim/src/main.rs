//! `containerd-shim-strata-v2`: containerd's runtime v2 shim for Strata. Tasks
//! run in-process on the Strata library (no `strata` command per operation);
//! the shim is their parent and reaper.

mod io;
mod service;

fn main() {
    let config = containerd_shim::Config {
        // Exits are collected per process (see `service`): a reaper waiting for
        // any child would steal the library's own children.
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<service::Shim>("io.containerd.strata.v2", Some(config));
}
