//! `strata delete`.

use crate::logging::Logger;
use std::path::Path;
use strata_runtime::Container;

/// Flags of `delete`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    /// Container id.
    pub id: String,
}

/// Runs `strata delete`. Deleting a container that does not exist succeeds with
/// --force, as with runc.
pub fn run(args: Args, root: &Path, log: &Logger) -> anyhow::Result<i32> {
    let c = match Container::load(root, &args.id) {
        Ok(c) => c,
        Err(strata_runtime::Error::NotFound(_)) if args.force => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    for w in c.delete(args.force)? {
        log.warn(&w);
    }
    log.debug(&format!("deleted {:?}", args.id));
    Ok(0)
}
