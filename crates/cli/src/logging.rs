//! Log lines in runc's shapes: text, or JSON objects (`level`, `msg`, `time`) that
//! containerd's shim reads back to report a failure's real cause.

use std::io::Write;
use std::path::Path;

/// Where and how to log.
pub struct Logger {
    file: Option<std::fs::File>,
    json: bool,
    debug: bool,
}

impl Logger {
    /// Opens the log file (appending) if one is given; a path that cannot be
    /// opened is an error naming it.
    pub fn new(path: Option<&Path>, format: &str, debug: bool) -> anyhow::Result<Self> {
        let file = path
            .map(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("--log {}: {e}", p.display()))
            })
            .transpose()?;
        Ok(Logger { file, json: format == "json", debug })
    }

    fn write(&self, level: &str, msg: &str) {
        if let Some(mut f) = self.file.as_ref() {
            let line = if self.json {
                serde_json::json!({ "level": level, "msg": msg, "time": strata_runtime::state::now_rfc3339() })
                    .to_string()
            } else {
                format!("time=\"{}\" level={level} msg={msg:?}", strata_runtime::state::now_rfc3339())
            };
            let _ = writeln!(f, "{line}");
        }
    }

    /// An error: always on stderr too.
    pub fn error(&self, msg: &str) {
        self.write("error", msg);
        eprintln!("strata: {msg}");
    }

    /// A warning: on stderr too.
    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
        eprintln!("strata: warning: {msg}");
    }

    /// A debug message, only with --debug: to the log file, or stderr without one.
    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
            if self.file.is_none() {
                eprintln!("strata: debug: {msg}");
            }
        }
    }
}
