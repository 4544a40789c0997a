//! Signal names as users type them: `TERM`, `SIGTERM`, `term` or `15`.

use nix::sys::signal::Signal;
use std::str::FromStr;

/// Parses a signal given by name (with or without the `SIG` prefix, any case) or number.
pub fn parse(s: &str) -> Result<Signal, String> {
    let err = || format!("unknown signal {s:?}");
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| err());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse("SIGKILL"), Ok(Signal::SIGKILL));
        assert_eq!(parse("hup"), Ok(Signal::SIGHUP));
        assert_eq!(parse("9"), Ok(Signal::SIGKILL));
        assert_eq!(parse("usr1"), Ok(Signal::SIGUSR1));
        assert!(parse("NOPE").is_err());
        assert!(parse("0").is_err());
        assert!(parse("99").is_err());
        assert!(parse("").is_err());
    }
}
