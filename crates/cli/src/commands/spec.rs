//! `strata spec`.

use anyhow::Context;
use std::path::PathBuf;

/// Flags of `spec`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
}

/// Runs `strata spec`: writes a default config.json, never over an existing one.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        anyhow::bail!("{} already exists", path.display());
    }
    let text = serde_json::to_string_pretty(&strata_runtime::config::default_spec_json())?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    Ok(0)
}
