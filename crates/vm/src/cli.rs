//! Driving the `strata` binary for VM containers, from front ends that have
//! threads (the shim, strata-fn): a VM's monitor is forked, which only a
//! process without other threads may do safely, so they run `strata create`
//! and `strata exec --detach`. They use the library for everything else but
//! what only a VM's guest can do: pausing, resuming and measuring a container
//! that joined a VM (`strata pause`, `resume`, `events --stats`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `strata` binary: beside the running one, else on PATH.
pub fn strata_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name("strata"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("strata"))
}

/// Runs `strata --root ROOT ARGS` with `stdio` (stdin, stdout, stderr: the
/// container's, which the monitor keeps). On failure, the error `strata`
/// logged (to `log`, removed again), not what went to the container's stderr.
pub fn run(root: &Path, log: &Path, args: &[&str], stdio: [Stdio; 3]) -> Result<(), String> {
    let [stdin, stdout, stderr] = stdio;
    let status = command(root, log, args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(|e| format!("run {}: {e}", strata_binary().display()))?;
    outcome(status, log, args)
}

/// Runs `strata --root ROOT ARGS` without input; returns what it printed.
/// Errors as [`run`]'s.
pub fn output(root: &Path, log: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = command(root, log, args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", strata_binary().display()))?;
    outcome(out.status, log, args).map(|()| out.stdout)
}

fn command(root: &Path, log: &Path, args: &[&str]) -> Command {
    let _ = std::fs::remove_file(log);
    let mut c = Command::new(strata_binary());
    c.arg("--root").arg(root).arg("--log").arg(log).args(["--log-format", "json"]).args(args);
    c
}

/// Success, or the error `strata` logged to `log` (which goes).
fn outcome(status: std::process::ExitStatus, log: &Path, args: &[&str]) -> Result<(), String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let _ = std::fs::remove_file(log);
    if status.success() {
        return Ok(());
    }
    let why = last_error(&text);
    let what = args.iter().find(|a| !a.starts_with('-')).copied().unwrap_or("");
    Err(if why.is_empty() { format!("strata {what} failed ({status})") } else { why })
}

/// The message of the last error in a `strata --log-format json` log.
fn last_error(log: &str) -> String {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .next_back()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_error_of_a_json_log_is_its_message() {
        let log = concat!(
            "{\"level\":\"warning\",\"msg\":\"a warning\",\"time\":\"t\"}\n",
            "{\"level\":\"error\",\"msg\":\"mounts: the bind mount of /a onto /b cannot reach a VM guest\",\"time\":\"t\"}\n",
            "not json\n",
        );
        assert_eq!(super::last_error(log), "mounts: the bind mount of /a onto /b cannot reach a VM guest");
        assert_eq!(super::last_error(""), "");
    }
}
