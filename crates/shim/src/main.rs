//! `containerd-shim-strata-v2`: containerd's runtime v2 shim for Strata. Tasks
//! run in-process on the Strata library (no `strata` command per operation);
//! the shim is their parent and reaper.

mod daemon;
mod events;
mod io;
mod oom;
mod options;
mod service;
mod stats;
mod vm;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use std::io::Write;

pub(crate) const RUNTIME_ID: &str = "io.containerd.strata.v2";

/// `-info` (containerd 2.x asks before it uses a runtime): the runtime's name,
/// version and OCI features document, as a protobuf RuntimeInfo on stdout.
fn info() -> Result<Vec<u8>, String> {
    let mut version = RuntimeVersion::new();
    version.version = env!("CARGO_PKG_VERSION").into();
    let mut features = Any::new();
    // The type URL containerd registers for the runtime-spec features struct;
    // such non-protobuf types travel as JSON.
    features.type_url = "types.containerd.io/opencontainers/runtime-spec/1/features/Features".into();
    features.value = serde_json::to_vec(&strata_runtime::features::document()).map_err(|e| e.to_string())?;
    let mut info = RuntimeInfo::new();
    info.name = RUNTIME_ID.into();
    info.version = Some(version).into();
    info.features = Some(features).into();
    info.write_to_bytes().map_err(|e| e.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a.trim_start_matches('-') == name && a.starts_with('-'));
    if flag("version") {
        println!("containerd-shim-strata-v2:\n  Runtime: {RUNTIME_ID}\n  Version: {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if flag("info") {
        match info() {
            Ok(bytes) => {
                if std::io::stdout().write_all(&bytes).is_err() {
                    std::process::exit(1);
                }
            }
            Err(e) => {
                eprintln!("{RUNTIME_ID}: info: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    // `start` is answered by the shim's own bootstrap: one fork, no second
    // exec. (Anything else, and arguments that do not parse, go to the crate's.)
    let os_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Ok(flags) = containerd_shim::parse(&os_args) {
        if flags.action == "start" {
            if let Err(e) = daemon::start(flags) {
                eprintln!("{RUNTIME_ID}: start: {e}");
                std::process::exit(1);
            }
            return;
        }
    }
    let config = containerd_shim::Config {
        // Exits are collected per process (see `service`): a reaper waiting for
        // any child would steal the library's own children. Orphans handed to
        // the shim (it is their subreaper) are reaped by `service::reap_orphans`.
        no_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<service::Shim>(RUNTIME_ID, Some(config));
}
