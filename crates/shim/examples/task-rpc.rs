//! A minimal task API client for the shim's tests: sends one RPC that `ctr`
//! has no command for, straight to a shim's socket.
//!
//! Usage: task-rpc ADDRESS update ID RESOURCES_JSON | task-rpc ADDRESS checkpoint ID
//! | task-rpc ADDRESS state ID (prints the status and the exit status)
//! (ADDRESS as in the bundle's `address` file, e.g. unix:///run/containerd/s/…).
//! Prints the RPC's error and exits 1 when it fails.

use containerd_shim::api::{CheckpointTaskRequest, StateRequest, UpdateTaskRequest};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::ttrpc::{context, Client};
use containerd_shim::protos::TaskClient;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = match Client::connect(args.first().copied().unwrap_or_default()) {
        Ok(c) => TaskClient::new(c),
        Err(e) => {
            eprintln!("connect: {e}");
            std::process::exit(1);
        }
    };
    let ctx = context::with_timeout(10_000_000_000);
    let result = match args.get(1..) {
        Some(["update", id, resources]) => {
            let mut req = UpdateTaskRequest::new();
            req.id = id.to_string();
            let mut any = Any::new();
            any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
            any.value = resources.as_bytes().to_vec();
            req.resources = Some(any).into();
            client.update(ctx, &req).map(|_| ())
        }
        Some(["state", id]) => {
            let mut req = StateRequest::new();
            req.id = id.to_string();
            client.state(ctx, &req).map(|r| println!("{:?} {}", r.status.enum_value_or_default(), r.exit_status))
        }
        Some(["checkpoint", id]) => {
            let mut req = CheckpointTaskRequest::new();
            req.id = id.to_string();
            client.checkpoint(ctx, &req).map(|_| ())
        }
        _ => {
            eprintln!("usage: task-rpc ADDRESS update ID RESOURCES_JSON | task-rpc ADDRESS checkpoint ID | task-rpc ADDRESS state ID");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
