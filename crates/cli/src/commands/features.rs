//! `strata features`: what this build supports on this host, as the OCI
//! runtime spec's features document (features.md), so a caller can decide
//! before it writes a config.

/// Runs `strata features`.
pub fn run() -> anyhow::Result<i32> {
    crate::outln!("{}", serde_json::to_string_pretty(&strata_runtime::features::document())?)?;
    Ok(0)
}
