//! `strata pause` and `strata resume`.

use std::path::Path;
use strata_runtime::Container;

/// Flags of `pause` and `resume`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Runs `strata pause`.
pub fn pause(args: Args, root: &Path) -> anyhow::Result<i32> {
    let c = Container::load(root, &args.id)?;
    match crate::vm::member(&c) {
        Some(_) => crate::vm::pause_member(root, &args.id, true)?,
        None => c.pause()?,
    }
    Ok(0)
}

/// Runs `strata resume`.
pub fn resume(args: Args, root: &Path) -> anyhow::Result<i32> {
    let c = Container::load(root, &args.id)?;
    match crate::vm::member(&c) {
        Some(_) => crate::vm::pause_member(root, &args.id, false)?,
        None => c.resume()?,
    }
    Ok(0)
}
