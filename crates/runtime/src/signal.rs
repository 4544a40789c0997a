//! Signal names as users type them: `TERM`, `SIGTERM`, `term` or `15`.

use nix::sys::signal::Signal;
use std::str::FromStr;

/// Parses a signal given by name (with or without the `SIG` prefix, any case) or
/// number; `0` is `None`, the null signal that only checks a process exists.
pub fn parse(s: &str) -> Result<Option<Signal>, String> {
    let err = || format!("unknown signal {s:?}");
    if let Ok(n) = s.parse::<i32>() {
        if n == 0 {
            return Ok(None);
        }
        return Signal::try_from(n).map(Some).map_err(|_| err());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).map(Some).map_err(|_| err())
}

/// What a signal that ended a process means, for error messages
/// ("SIGSYS (bad system call)").
pub fn describe(sig: Signal) -> String {
    let what = match sig {
        Signal::SIGSYS => "bad system call: a seccomp filter refused one of its system calls",
        Signal::SIGKILL => "killed",
        Signal::SIGSEGV => "segmentation fault",
        Signal::SIGABRT => "aborted",
        Signal::SIGBUS => "bus error",
        Signal::SIGILL => "illegal instruction",
        Signal::SIGFPE => "arithmetic exception",
        Signal::SIGTERM => "terminated",
        Signal::SIGPIPE => "broken pipe",
        _ => return sig.as_str().to_string(),
    };
    format!("{} ({what})", sig.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM"), Ok(Some(Signal::SIGTERM)));
        assert_eq!(parse("SIGKILL"), Ok(Some(Signal::SIGKILL)));
        assert_eq!(parse("hup"), Ok(Some(Signal::SIGHUP)));
        assert_eq!(parse("9"), Ok(Some(Signal::SIGKILL)));
        assert_eq!(parse("usr1"), Ok(Some(Signal::SIGUSR1)));
        assert_eq!(parse("0"), Ok(None));
        assert!(parse("NOPE").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("99").is_err());
        assert!(parse("").is_err());
    }
}
