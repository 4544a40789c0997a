//! `start`: the shim's own bootstrap. containerd runs `start` and waits for it to
//! print the address of the task service. The process that answers stays in
//! this one: `start` binds the socket, forks (no exec of a second shim binary),
//! and the child becomes the daemon while the parent prints the address and
//! exits. The parent waits for the child's word before it answers, so a daemon
//! that cannot come up fails `start` with its reason; the child waits for the
//! parent's word that containerd has the address, so a `start` killed half-way
//! leaves no daemon that nobody will ever call.

use crate::service::{group_of, Shim};
use containerd_shim::protos::shim::shim_ttrpc::create_task;
use containerd_shim::protos::ttrpc::Server;
use containerd_shim::{Flags, Shim as _};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

/// Runs `start`: prints the task service's address once a daemon serves it.
pub fn start(flags: Flags) -> Result<(), String> {
    if flags.namespace.is_empty() {
        return Err("-namespace is empty".into());
    }
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
    // Containers of one pod (or one named group) share a shim.
    // (containerd runs `start` in the bundle directory.)
    let grouping = group_of(Path::new(".")).unwrap_or_else(|| flags.id.clone());
    // (Under /run/containerd/s/, named as containerd's own shims name theirs.)
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &grouping);
    let path = address.trim_start_matches("unix://");
    let listener = match listen(path)? {
        Some(l) => l,
        None => {
            // The group's shim already serves this address.
            return answer(&address);
        }
    };
    let (mut ready_r, ready_w) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: `start` has no other thread (containerd runs it as a fresh process
    // and nothing above spawns one), so the child may go on running Rust code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ready_r);
            let code = match daemon(flags, &ttrpc_address, listener, ready_w) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
            let _ = std::fs::remove_file(path);
            std::process::exit(code)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(ready_w);
            drop(listener);
            // The child's word: READY, or the reason it is not; nothing at all
            // when it died first.
            let mut word = String::new();
            let _ = ready_r.read_to_string(&mut word);
            if word != READY {
                let _ = std::fs::remove_file(path);
                return Err(if word.is_empty() { "the daemon exited before it served".into() } else { word });
            }
            // A daemon containerd never hears of would wait for it forever.
            answer(&address)
                .and_then(|()| ready_r.write_all(COMMITTED.as_bytes()).map_err(|e| format!("tell the daemon: {e}")))
                .inspect_err(|_| {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = std::fs::remove_file(path);
                })
        }
    }
}

/// What the daemon writes to `start` once it serves.
const READY: &str = "\0";

/// What `start` writes back once containerd has the address. A daemon that
/// reads end-of-file instead (`start` was killed, or could not answer) ends.
const COMMITTED: &str = "\0";

/// The address containerd gets, and the bundle's record of it (which
/// containerd reads when it restarts and finds its shims again).
fn answer(address: &str) -> Result<(), String> {
    containerd_shim::synchronous::util::write_address(address).map_err(|e| format!("write address: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes()).and_then(|_| out.flush()).map_err(|e| format!("write address: {e}"))
}

/// Binds `path`; `None` when a live shim already listens there (a stale socket
/// is replaced).
fn listen(path: &str) -> Result<Option<UnixListener>, String> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(|e| format!("remove stale socket {path}: {e}"))?;
            UnixListener::bind(path).map(Some).map_err(|e| format!("listen on {path}: {e}"))
        }
        Err(e) => Err(format!("listen on {path}: {e}")),
    }
}

/// A handler that does nothing: SIGTERM, SIGINT and SIGPIPE must not end the
/// shim, and a handler (unlike SIG_IGN) is not inherited by the containers.
extern "C" fn ignore(_: libc::c_int) {}

/// The daemon: detached from containerd's `start`, serving the task service on
/// `listener` until the last task is shut down.
fn daemon(flags: Flags, ttrpc_address: &str, listener: UnixListener, mut ready: UnixStream) -> Result<(), String> {
    let set_up = || -> Result<(Shim, Server), String> {
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        // containerd reads `start`'s output to its end: the daemon keeps none of it.
        let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map_err(|e| e.to_string())?;
        for fd in 0..3 {
            nix::unistd::dup2(null.as_raw_fd(), fd).map_err(|e| format!("dup2: {e}"))?;
        }
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGPIPE] {
            // SAFETY: `ignore` is async-signal-safe (it does nothing).
            unsafe { libc::signal(sig, ignore as *const () as libc::sighandler_t) };
        }
        // One malloc arena: a few threads that mostly wait, where one arena per
        // thread would cost more memory than contention.
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        // The shim reaps the orphans of its containers.
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            return Err(format!("become a subreaper: {}", std::io::Error::last_os_error()));
        }
        containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
            .map_err(|e| format!("open the bundle's log fifo: {e}"))?;
        let mut config = containerd_shim::Config::default();
        let shim = Shim::new(crate::RUNTIME_ID, &flags, &mut config);
        let publisher = crate::events::Publisher::connect(ttrpc_address, &flags.namespace)
            .map_err(|e| format!("connect to {ttrpc_address}: {e}"))?;
        let service = create_task(Arc::new(shim.task_service(Some(publisher))));
        // Two workers per connection, the fewest the library takes (three by
        // default); it starts more once none is idle, so a long Wait never
        // holds up other calls.
        let mut server = Server::new()
            .set_thread_count_default(2)
            .set_thread_count_min(1)
            .add_listener(listener.into_raw_fd())
            .map_err(|e| format!("serve: {e}"))?
            .register_service(service);
        server.start().map_err(|e| format!("serve: {e}"))?;
        Ok((shim, server))
    };
    let (mut shim, server) = match set_up() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.write_all(e.as_bytes());
            return Err(e);
        }
    };
    let _ = ready.write_all(READY.as_bytes());
    let _ = ready.shutdown(std::net::Shutdown::Write);
    let mut word = [0u8; 1];
    if !matches!(ready.read(&mut word), Ok(1) if word == *COMMITTED.as_bytes()) {
        server.shutdown();
        return Err("start ended before containerd had the address".into());
    }
    drop(ready);
    shim.wait();
    server.shutdown();
    Ok(())
}
