//! Arbitrary bytes as what strata-fn reads from the outside: one connection's
//! worth of HTTP (HTTP/1.1, or HTTP/2 where the bytes start with its preface)
//! served by the server's HTTP layer (hyper with the server's settings, the
//! server's request reader, each request's credentials checked against a
//! token store), and function.toml. Neither may panic or hang, whatever the
//! input. The first byte picks the parser.

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

/// Serves `input` as one client connection and reads everything the server
/// answers until it closes.
fn serve(input: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    thread_local! {
        static RT: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    }
    let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
        let resp = match strata_fn::http::read(req).await {
            Ok(req) => {
                let _ = req.query("async");
                let name = req.path.rsplit('/').nth(1).unwrap_or_default();
                for need in [
                    strata_fn::auth::Need::Invoke(name),
                    strata_fn::auth::Need::Read,
                    strata_fn::auth::Need::Metrics,
                ] {
                    let _ = gatekeeper().check(None, req.header("Authorization"), need);
                }
                strata_fn::http::Response::new(200, "text/plain", req.body)
            }
            Err(strata_fn::http::HttpError(status, msg)) => strata_fn::http::Response::error(status, &msg),
        };
        Ok::<_, std::convert::Infallible>(strata_fn::http::into_hyper(resp))
    });
    RT.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let mut http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            http.http1()
                .half_close(true)
                .max_buf_size(strata_fn::http::MAX_HEAD.max(8192))
                .max_headers(strata_fn::http::MAX_HEADERS);
            http.http2().max_header_list_size(strata_fn::http::MAX_HEAD as u32);
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(server), svc);
            let talk = async {
                let _ = client.write_all(input).await;
                let _ = client.shutdown().await;
                let mut out = Vec::new();
                let _ = client.read_to_end(&mut out).await;
                drop(client);
            };
            let _ = tokio::join!(conn, talk);
        })
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        serve(rest);
    } else if let Ok(text) = std::str::from_utf8(rest) {
        let _ = strata_fn::function::Function::parse(text, dir());
    }
});
