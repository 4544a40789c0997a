//! `strata start`.

use crate::logging::Logger;
use anyhow::Context;
use std::path::Path;
use strata_runtime::Container;

/// Flags of `start`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Runs `strata start`.
pub fn run(args: Args, root: &Path, log: &Logger) -> anyhow::Result<i32> {
    let c = Container::load(root, &args.id)?;
    for w in c.start().with_context(|| format!("start container {:?}", args.id))? {
        log.warn(&w);
    }
    log.debug(&format!("started {:?}", args.id));
    Ok(0)
}
