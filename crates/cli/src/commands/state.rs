//! `strata state`.

use std::path::Path;
use strata_runtime::Container;

/// Flags of `state`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Runs `strata state`: the OCI state JSON, indented as runc prints it.
pub fn run(args: Args, root: &Path) -> anyhow::Result<i32> {
    let st = Container::load(root, &args.id)?.state()?;
    crate::outln!("{}", serde_json::to_string_pretty(&st.oci_json())?)?;
    Ok(0)
}
