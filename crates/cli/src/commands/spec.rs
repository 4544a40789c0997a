//! `strata spec`.

use anyhow::Context;
use std::path::PathBuf;

/// Flags of `spec`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the default for an unprivileged user: a user namespace mapping
    /// the caller's ids to root, /sys bound from the host, no resources.
    #[arg(long)]
    pub rootless: bool,
}

/// Runs `strata spec`: writes a default config.json, never over an existing one.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        anyhow::bail!("{} already exists", path.display());
    }
    let spec = if args.rootless {
        strata_runtime::config::rootless_spec_json(nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    } else {
        strata_runtime::config::default_spec_json()
    };
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    Ok(0)
}
