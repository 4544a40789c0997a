//! `strata ps`: the container's processes, as a `ps` table or a JSON list of pids.

use anyhow::Context;
use std::path::Path;
use strata_runtime::Container;

/// Flags of `ps`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format: table or json.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Container id.
    pub id: String,
    /// Options for ps(1) (default: -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// Runs `strata ps`.
pub fn run(args: Args, root: &Path) -> anyhow::Result<i32> {
    let pids = Container::load(root, &args.id)?.pids()?;
    if args.format == "json" {
        crate::outln!("{}", serde_json::to_string(&pids)?)?;
        return Ok(0);
    }
    let ps_args = if args.ps_args.is_empty() { vec!["-ef".to_string()] } else { args.ps_args };
    let out = std::process::Command::new("ps").args(&ps_args).output().context("run ps")?;
    if !out.status.success() {
        anyhow::bail!("ps {}: {}", ps_args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header.split_whitespace().position(|h| h == "PID").context("ps output has no PID column")?;
    crate::outln!("{header}")?;
    for line in lines {
        let pid = line.split_whitespace().nth(pid_col).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            crate::outln!("{line}")?;
        }
    }
    Ok(0)
}
