//! `strata kill`.

use std::path::Path;
use strata_runtime::Container;

/// Flags of `kill`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Signal every process of the container, not just its init.
    #[arg(short, long)]
    pub all: bool,
    /// Container id.
    pub id: String,
    /// Signal name (with or without SIG) or number.
    #[arg(default_value = "TERM")]
    pub signal: String,
}

/// Runs `strata kill`.
pub fn run(args: Args, root: &Path) -> anyhow::Result<i32> {
    let sig = strata_runtime::signal::parse(&args.signal).map_err(anyhow::Error::msg)?;
    let container = Container::load(root, &args.id)?;
    // A VM's cgroup holds its monitor and VMM, not its processes: the
    // monitor forwards the signal to the workload.
    let all = args.all && !container.state().is_ok_and(|s| crate::vm::is_vm(&s));
    container.kill(sig, all)?;
    Ok(0)
}
