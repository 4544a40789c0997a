//! Tasks in VMs: a task whose config carries `run.strata.isolation: "vm"`
//! is created and exec'd through the `strata` binary (`create`, `exec
//! --detach`), whose VM monitor must be forked from a process without
//! threads, which the shim is not. The monitor and exec proxies it leaves
//! are re-parented to the shim (the subreaper of its tasks), so they are
//! waited for as a container's init and execs are. Update, and pause,
//! resume and statistics of a task that joined a VM (whose cgroup is in the
//! guest), run `strata` too; every other RPC works on the state as for a
//! container.

use crate::io::Stdio;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Annotation that asks for a VM (as the `strata` CLI reads it).
const ISOLATION_ANNOTATION: &str = "run.strata.isolation";

/// The name under which the shim puts every task in a VM (a link to it):
/// containerd's runtime `io.containerd.strata-vm.v2`, for a RuntimeClass
/// whose pods all get one without an annotation of their own.
const VM_SHIM_NAME: &str = "containerd-shim-strata-vm-v2";

/// Whether this shim runs as [`VM_SHIM_NAME`].
pub fn every_task_in_a_vm() -> bool {
    static BY_NAME: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BY_NAME.get_or_init(|| {
        std::env::args_os().next().is_some_and(|a| Path::new(&a).file_name() == Some(VM_SHIM_NAME.as_ref()))
    })
}

/// Whether a config asks for a VM.
pub fn wants_vm(spec: &oci_spec::runtime::Spec) -> bool {
    spec.annotations().as_ref().and_then(|a| a.get(ISOLATION_ANNOTATION)).map(String::as_str) == Some("vm")
}

/// Whether a config is a pod's container whose sandbox (a task of this
/// root) runs in a VM: the `strata` binary then creates it in that VM.
pub fn joins_vm(root: &Path, spec: &oci_spec::runtime::Spec) -> bool {
    let Some(ann) = spec.annotations().as_ref() else { return false };
    if ann.get("io.kubernetes.cri.container-type").is_some_and(|t| t == "sandbox") {
        return false;
    }
    ann.get("io.kubernetes.cri.sandbox-id")
        .filter(|id| strata_runtime::id::validate(id).is_ok())
        .and_then(|id| strata_runtime::Container::load(root, id).and_then(|c| c.state()).ok())
        .is_some_and(|st| is_vm(&st))
}

/// Annotation on the state of a container that joined a VM (as the `strata`
/// CLI writes it): its cgroup is in the guest.
const SANDBOX_ANNOTATION: &str = "run.strata.vm.sandbox";

/// Whether a container's state says it joined a VM.
pub fn is_member(state: &strata_runtime::ContainerState) -> bool {
    state.annotations.contains_key(SANDBOX_ANNOTATION)
}

/// A scratch log for one `strata` command that has no bundle to put it in.
fn scratch_log() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("strata-shim-{}-{n}.log", std::process::id()))
}

/// Pauses (or resumes) a task that joined a VM: its guest freezes (thaws)
/// its cgroup there, and its state says so.
pub fn pause(root: &Path, id: &str, pause: bool) -> Result<(), String> {
    let null = || std::process::Stdio::null();
    strata_vm::cli::run(root, &scratch_log(), &[if pause { "pause" } else { "resume" }, id], [null(), null(), null()])
}

/// Updates the limits of a VM task, or of one that joined a VM: its guest
/// applies them to its cgroup there (`strata update`).
pub fn update(root: &Path, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<(), String> {
    let log = scratch_log();
    let file = log.with_extension("json");
    let json = serde_json::to_vec(resources).map_err(|e| format!("resources: {e}"))?;
    std::fs::write(&file, json).map_err(|e| format!("write {}: {e}", file.display()))?;
    let null = || std::process::Stdio::null();
    let result = strata_vm::cli::run(
        root,
        &log,
        &["update", "--resources", &file.to_string_lossy(), id],
        [null(), null(), null()],
    );
    let _ = std::fs::remove_file(&file);
    result
}

/// The statistics of a task that joined a VM, from its cgroup in the guest
/// (the data of `strata events --stats`, in runc's shape).
pub fn stats(root: &Path, id: &str) -> Result<serde_json::Value, String> {
    let out = strata_vm::cli::output(root, &scratch_log(), &["events", "--stats", id])?;
    let event: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| format!("the statistics of {id:?}: {e}"))?;
    Ok(event["data"].clone())
}

/// Whether a container's state says it is a VM.
pub fn is_vm(state: &strata_runtime::ContainerState) -> bool {
    state.annotations.get(ISOLATION_ANNOTATION).map(String::as_str) == Some("vm")
}

/// Runs `strata ARGS` with duplicates of the task's stdio.
fn strata(root: &Path, scratch: &Path, args: &[&str], stdio: &Stdio) -> Result<(), String> {
    let dup = |f: &std::fs::File| {
        f.try_clone().map(std::process::Stdio::from).map_err(|e| format!("duplicate the task's stdio: {e}"))
    };
    strata_vm::cli::run(
        root,
        &scratch.with_extension("log"),
        args,
        [dup(&stdio.stdin)?, dup(&stdio.stdout)?, dup(&stdio.stderr)?],
    )
}

/// A console socket for one `strata` command: the master of the terminal it
/// makes arrives there while it runs. (In the temporary directory: a path in
/// the bundle can be longer than a socket address holds.)
struct Console {
    path: PathBuf,
    master: std::thread::JoinHandle<Option<OwnedFd>>,
}

impl Console {
    fn bind() -> Result<Console, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("strata-shim-console-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| format!("listen on {}: {e}", path.display()))?;
        let master = std::thread::spawn(move || {
            let (conn, _) = listener.accept().ok()?;
            strata_runtime::tty::recv_master(conn.as_raw_fd()).ok()
        });
        Ok(Console { path, master })
    }

    /// The master, once the command is done (None if it sent none).
    fn master(self) -> Option<OwnedFd> {
        // A command that failed before connecting: unblock the accept.
        if !self.master.is_finished() {
            let _ = UnixStream::connect(&self.path);
        }
        let m = self.master.join().ok().flatten();
        let _ = std::fs::remove_file(&self.path);
        m
    }
}

/// Runs `strata ARGS`, with `--console-socket` when `terminal`; returns the
/// terminal's master.
fn strata_with_terminal(
    root: &Path,
    scratch: &Path,
    args: &[&str],
    stdio: &Stdio,
    terminal: bool,
) -> Result<Option<OwnedFd>, String> {
    let console = if terminal { Some(Console::bind()?) } else { None };
    let path = console.as_ref().map(|c| c.path.to_string_lossy().into_owned());
    let mut full: Vec<&str> = Vec::new();
    full.push(args[0]);
    if let Some(p) = &path {
        full.extend(["--console-socket", p.as_str()]);
    }
    full.extend(&args[1..]);
    let result = strata(root, scratch, &full, stdio);
    let master = console.and_then(Console::master);
    result?;
    if terminal && master.is_none() {
        return Err("strata sent no terminal".into());
    }
    Ok(master)
}

/// Creates task `id` in a VM (or in the VM of its pod); its state then
/// names the monitor's (or the proxy's) pid. Returns the master of its
/// terminal, with `terminal`.
pub fn create(root: &Path, id: &str, bundle: &Path, stdio: &Stdio, terminal: bool) -> Result<Option<OwnedFd>, String> {
    let scratch = bundle.join(".strata-vm-create");
    let bundle = bundle.to_string_lossy();
    // (--vm: the config may not say so, when this shim is the VM runtime.)
    strata_with_terminal(root, &scratch, &["create", "--vm", "--bundle", &bundle, id], stdio, terminal)
}

/// Starts `process` in VM task `id`; returns the pid of its proxy on the
/// host (which exits with the process's status, and forwards signals), and
/// the master of its terminal if it has one.
pub fn exec(
    root: &Path,
    id: &str,
    bundle: &Path,
    process: &oci_spec::runtime::Process,
    stdio: &Stdio,
) -> Result<(i32, Option<OwnedFd>), String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let scratch = bundle.join(format!(".strata-vm-exec-{}-{n}", std::process::id()));
    let spec = scratch.with_extension("json");
    let pid_file = scratch.with_extension("pid");
    let json = serde_json::to_vec(process).map_err(|e| format!("process: {e}"))?;
    std::fs::write(&spec, json).map_err(|e| format!("write {}: {e}", spec.display()))?;
    let terminal = process.terminal().unwrap_or(false);
    let result = strata_with_terminal(
        root,
        &scratch,
        &["exec", "--detach", "--pid-file", &pid_file.to_string_lossy(), "--process", &spec.to_string_lossy(), id],
        stdio,
        terminal,
    )
    .and_then(|master| {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map(|pid| (pid, master))
            .ok_or_else(|| format!("{} holds no pid", pid_file.display()))
    });
    let _ = std::fs::remove_file(&spec);
    let _ = std::fs::remove_file(&pid_file);
    result
}
