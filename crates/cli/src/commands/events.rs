//! `strata events`: statistics of a container as JSON events, once (`--stats`) or
//! every `--interval` until the container stops.

use std::path::Path;
use std::time::Duration;
use strata_runtime::Container;

/// Flags of `events`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one statistics event and exit.
    #[arg(long)]
    pub stats: bool,
    /// Interval between statistics events (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Container id.
    pub id: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (use e.g. 5s, 500ms, 1m)");
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i)).ok_or_else(bad)?;
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

/// Runs `strata events`.
pub fn run(args: Args, root: &Path) -> anyhow::Result<i32> {
    let c = Container::load(root, &args.id)?;
    // A container that joined a VM has its cgroup in the guest.
    let in_vm = crate::vm::member(&c).is_some();
    let stats = || -> anyhow::Result<serde_json::Value> {
        if in_vm {
            crate::vm::member_stats(&c, root)
        } else {
            Ok(c.stats()?)
        }
    };
    let mut ooms = oom_kills(&c);
    loop {
        let data = match stats() {
            Ok(d) => d,
            // Stopped since the last round: the stream ends.
            Err(_) if !args.stats && c.state()?.status == strata_runtime::Status::Stopped => return Ok(0),
            Err(e) => return Err(e),
        };
        crate::outln!("{}", serde_json::json!({ "type": "stats", "id": args.id, "data": data }))?;
        if args.stats {
            return Ok(0);
        }
        std::thread::sleep(args.interval);
        // memory.events counts OOM kills where the memory controller is enabled;
        // read it before a stop ends the stream (an OOM kill may be what stopped it).
        let now = oom_kills(&c);
        if now > ooms {
            crate::outln!("{}", serde_json::json!({ "type": "oom", "id": args.id }))?;
        }
        ooms = now;
        if c.state()?.status == strata_runtime::Status::Stopped {
            return Ok(0);
        }
    }
}

/// The oom_kill counter of the container's memory.events (0 without the memory
/// controller).
fn oom_kills(c: &Container) -> u64 {
    let Some(dir) = c.state().ok().and_then(|s| s.cgroup) else { return 0 };
    std::fs::read_to_string(dir.join("memory.events"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}
