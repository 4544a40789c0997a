//! Arbitrary bytes as what strata-fn reads from the outside: HTTP requests
//! (one connection's worth, parsed until the first error, each request's
//! credentials checked against a token store) and function.toml. Neither may
//! panic, whatever the input. The first byte picks the parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A function directory with a rootfs holding /tmp and an executable, made
/// once per fuzzing process.
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("strata-fuzz-fn-{}", std::process::id()));
        std::fs::create_dir_all(d.join("rootfs/tmp")).expect("create the fuzz function");
        std::fs::create_dir_all(d.join("rootfs/bin")).expect("create the fuzz function");
        let cat = d.join("rootfs/bin/cat");
        std::fs::write(&cat, "").expect("create the fuzz function");
        std::fs::set_permissions(&cat, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        d
    })
}

/// A token store with one token of each kind, made once per fuzzing process.
fn gatekeeper() -> &'static strata_fn::auth::Gatekeeper {
    static GK: OnceLock<strata_fn::auth::Gatekeeper> = OnceLock::new();
    GK.get_or_init(|| {
        let state = dir().join("state");
        for scope in ["invoke:hello", "read", "metrics", "admin"] {
            strata_fn::auth::create(&state, scope, &[scope.to_string()]).expect("create a token");
        }
        strata_fn::auth::Gatekeeper::new(&state)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        let mut reader = std::io::BufReader::new(rest);
        for _ in 0..16 {
            match strata_fn::http::read_request(&mut reader) {
                Ok(Some(req)) => {
                    let _ = req.query("async");
                    let _ = req.header("content-type");
                    let name = req.path.rsplit('/').nth(1).unwrap_or_default();
                    for need in [
                        strata_fn::auth::Need::Invoke(name),
                        strata_fn::auth::Need::Read,
                        strata_fn::auth::Need::Metrics,
                    ] {
                        let _ = gatekeeper().check(None, req.header("Authorization"), need);
                    }
                }
                _ => break,
            }
        }
    } else if let Ok(text) = std::str::from_utf8(rest) {
        let _ = strata_fn::function::Function::parse(text, dir());
    }
});
