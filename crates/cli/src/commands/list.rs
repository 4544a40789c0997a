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
        // runc's shape: a stopped container's pid is 0, and the owner is a name.
        let items: Vec<serde_json::Value> = all
            .iter()
            .map(|s| {
                let mut v = s.oci_json();
                if s.status == strata_runtime::Status::Stopped {
                    v["pid"] = 0.into();
                }
                v["owner"] = owner_name(&s.owner).into();
                v
            })
            .collect();
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
                owner_name(&st.owner)
            )?;
        }
    }
    Ok(0)
}

/// The user name of a state's owner (empty means root), as runc lists it:
/// `#UID` when the host has no such user.
fn owner_name(owner: &str) -> String {
    let uid: u32 = if owner.is_empty() { 0 } else { owner.parse().unwrap_or(u32::MAX) };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("#{uid}"),
    }
}
