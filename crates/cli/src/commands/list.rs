//! `strata list`.

use std::path::Path;
use strata_runtime::Container;

/// Flags of `list`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format: table or json.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Print only the ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `strata list`.
pub fn run(args: Args, root: &Path) -> anyhow::Result<i32> {
    let all = Container::list(root)?;
    if args.quiet {
        for st in &all {
            crate::outln!("{}", st.id)?;
        }
    } else if args.format == "json" {
        let items: Vec<serde_json::Value> = all.iter().map(|s| s.oci_json()).collect();
        crate::outln!("{}", serde_json::Value::Array(items))?;
    } else {
        crate::outln!("{:<20} {:<8} {:<10} {:<40} {:<32} OWNER", "ID", "PID", "STATUS", "BUNDLE", "CREATED")?;
        for st in &all {
            let pid = if st.status == strata_runtime::Status::Stopped { 0 } else { st.pid };
            crate::outln!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                st.id,
                pid,
                st.status,
                st.bundle.display(),
                st.created,
                st.owner
            )?;
        }
    }
    Ok(0)
}
