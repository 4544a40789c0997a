//! Pods in one VM: a container that joins the namespaces of a VM container
//! (a Kubernetes pod's containers join their sandbox's) is created in that
//! container's VM, next to it, as Kata does.
//!
//! Its rootfs and bind mounts reach the guest through the VM's shared folder:
//! `create` passes detached copies of them (open_tree) to the VM's monitor,
//! which attaches them in its own mount namespace, where QEMU serves them.
//! The guest agent creates the container with the same runtime code, its
//! namespace paths pointed at the VM's first container. On the host the
//! container's process is a proxy forked by `create`: it waits at the exec
//! fifo for `start`, forwards signals, and exits with the container's status;
//! the monitor relays its stdio. A proxy that dies (`delete --force`) takes
//! its container in the guest with it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{bail, Context};
use strata_runtime::state::{self, StateDir};
use strata_runtime::{ContainerState, Status};
use strata_vm::proto::Msg;

use super::host::{
    connect_monitor, console_terminal, creating, guest_hooks, pass_fds, run_runtime_hooks, write_pid_file, CreateVm,
};
use super::share::{Share, GUEST_SHARE};
use super::{check_supported, is_vm};

/// The prefix a joining container's namespace paths get in the guest, for
/// the agent to replace with the first container's pid there.
pub(super) const POD_INIT: &str = "/proc/strata-pod-init/";

/// Annotation on a joining container's state: the id of the VM container
/// whose VM it runs in.
pub(super) const SANDBOX_ANNOTATION: &str = "run.strata.vm.sandbox";

/// The process name of a VM's monitor, by which a namespace path is known
/// to lead to one without reading every state.
pub(super) const MONITOR_NAME: &str = "strata-vm";

/// Annotations that name a container's pod sandbox: containerd's CRI and
/// CRI-O's.
const SANDBOX_ID_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID"];
const CONTAINER_TYPE_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"];

/// The pids a config's namespace paths name (`/proc/PID/ns/KIND`).
fn namespace_pids(spec: &oci_spec::runtime::Spec) -> Vec<i32> {
    let mut pids: Vec<i32> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|ns| ns.path().as_ref()?.to_str()?.strip_prefix("/proc/")?.split('/').next()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The VM container `spec` joins, if it joins one: the sandbox its CRI
/// annotations name, or the container whose monitor's namespaces its paths
/// name, when that container is a VM.
pub fn sandbox_of(root: &Path, spec: &oci_spec::runtime::Spec) -> anyhow::Result<Option<ContainerState>> {
    let no_annotations = std::collections::HashMap::new();
    let ann = spec.annotations().as_ref().unwrap_or(&no_annotations);
    let is_sandbox = CONTAINER_TYPE_ANNOTATIONS.iter().any(|k| ann.get(*k).is_some_and(|t| t == "sandbox"));
    if is_sandbox {
        return Ok(None);
    }
    let load = |id: &str| {
        strata_runtime::Container::load(root, id).and_then(|c| c.state()).ok().filter(|st| is_vm(st) && st.pid > 0)
    };
    if let Some(id) = SANDBOX_ID_ANNOTATIONS.iter().find_map(|k| ann.get(*k)) {
        if strata_runtime::id::validate(id).is_ok() {
            if let Some(st) = load(id) {
                return Ok(Some(st));
            }
        }
    }
    for pid in namespace_pids(spec) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() != MONITOR_NAME {
            continue;
        }
        for id in state::list_ids(root).unwrap_or_default() {
            if let Some(st) = load(&id).filter(|st| st.pid == pid) {
                return Ok(Some(st));
            }
        }
    }
    Ok(None)
}

/// Whether `spec` makes a container that joins a VM container's VM.
pub fn joins_vm(root: &Path, spec: &oci_spec::runtime::Spec) -> anyhow::Result<bool> {
    Ok(sandbox_of(root, spec)?.is_some())
}

/// The joining container's config for the guest: its namespace paths point
/// at the VM's first container, its rootfs and bind mounts at the shared
/// folder. Returns it with the shares it needs (the rootfs first).
fn guest_config(
    spec: &oci_spec::runtime::Spec,
    id: &str,
    bundle: &Path,
    rootfs: &Path,
    sandbox: &ContainerState,
) -> anyhow::Result<(oci_spec::runtime::Spec, Vec<Share>)> {
    let mut guest = spec.clone();
    let mut shares = vec![Share {
        source: rootfs.to_path_buf(),
        name: format!("{id}-rootfs"),
        dir: true,
        recursive: true,
        readonly: false,
    }];
    shares.extend(super::share::plan_named(&mut guest, bundle, &format!("{id}-"))?);
    if let Some(mut root) = guest.root().clone() {
        root.set_path(Path::new(GUEST_SHARE).join(&shares[0].name));
        guest.set_root(Some(root));
    }
    guest.set_hooks(guest_hooks(spec));
    if let Some(mut linux) = guest.linux().clone() {
        let own = format!("/proc/{}/", sandbox.pid);
        if let Some(mut nss) = linux.namespaces().clone() {
            for (i, ns) in nss.iter_mut().enumerate() {
                let Some(path) = ns.path().clone() else { continue };
                let text = path.to_string_lossy();
                match text.strip_prefix(&own) {
                    Some(rest) => {
                        ns.set_path(Some(PathBuf::from(format!("{POD_INIT}{rest}"))));
                    }
                    None => bail!(
                        "linux.namespaces[{i}].path: {text} is not a namespace of {:?}, whose VM this container joins",
                        sandbox.id
                    ),
                }
            }
            linux.set_namespaces(Some(nss));
        }
        // A systemd driver's slice:prefix:name means nothing in the guest,
        // whose runtime places the container by its id.
        if linux.cgroups_path().as_ref().is_some_and(|p| !p.is_absolute() && p.to_string_lossy().contains(':')) {
            linux.set_cgroups_path(None);
        }
        guest.set_linux(Some(linux));
    }
    Ok((guest, shares))
}

/// Creates a container in `sandbox`'s VM. On success it is `created`, its
/// proxy's pid in the state; on failure nothing is left, here or in the
/// guest.
pub fn create_member(opts: CreateVm, sandbox: ContainerState) -> anyhow::Result<ContainerState> {
    strata_runtime::id::validate(opts.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = opts.spec;
    check_supported(&spec)?;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    if terminal && opts.console_socket.is_none() {
        bail!("process.terminal: create of a container with a terminal needs --console-socket");
    }
    if !matches!(sandbox.status, Status::Created | Status::Running) {
        bail!("container {:?}, whose VM this one joins, is {}", sandbox.id, sandbox.status);
    }
    let bundle = std::path::absolute(opts.bundle).context("bundle path")?;
    let root_spec = spec.root().as_ref().context("config.json has no root")?;
    let rootfs = if root_spec.path().is_absolute() { root_spec.path().clone() } else { bundle.join(root_spec.path()) };
    if !rootfs.is_dir() {
        bail!("root.path: {} is not a directory", rootfs.display());
    }
    let (guest_spec, shares) = guest_config(&spec, opts.id, &bundle, &rootfs, &sandbox)?;
    // Detached copies of what the guest gets, made here, in the caller's
    // view of the mounts (the monitor's may not have seen the newest).
    let mut trees = Vec::new();
    for s in &shares {
        let f = nix::fcntl::open(
            &s.source,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .with_context(|| format!("open {}", s.source.display()))?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        let f = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(f) };
        trees.push(
            strata_runtime::sys::open_tree_clone(f.as_fd(), s.recursive)
                .with_context(|| format!("a copy of {} for the guest", s.source.display()))?,
        );
    }

    // (No host cgroup of its own: the VM's is its first container's.)
    let mut st = creating(opts.id, bundle, rootfs, &spec);
    st.annotations.insert(SANDBOX_ANNOTATION.to_string(), sandbox.id.clone());
    std::fs::create_dir_all(opts.root).with_context(|| format!("create {}", opts.root.display()))?;
    let dir = StateDir::create(opts.root, opts.id, &st)?;
    let state_dir = dir.path().to_path_buf();
    let mut proxy: Option<(i32, u64)> = None;
    let result = (|| -> anyhow::Result<ContainerState> {
        let fifo_path = state_dir.join(strata_runtime::container::EXEC_FIFO);
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_context(|| format!("mkfifo {}", fifo_path.display()))?;
        // Open before the proxy exists: `start` finds a reader from now on.
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo_path)
            .with_context(|| format!("open {}", fifo_path.display()))?;
        let mut sock = connect_monitor(&opts.root.join(&sandbox.id))?;
        let tty = console_terminal(terminal, opts.console_socket)?;
        let mut fds: Vec<RawFd> = match &tty {
            Some(slave) => vec![slave.as_raw_fd(); 3],
            None => vec![0, 1, 2],
        };
        fds.extend(trees.iter().map(|t| t.as_raw_fd()));
        pass_fds(&sock, &fds).context("pass the container's stdio and files to the VM's monitor")?;
        drop(trees);
        drop(tty);
        let body = serde_json::json!({
            "id": opts.id,
            "spec": guest_spec,
            "shares": shares.iter().map(|s| serde_json::json!({
                "name": s.name, "dir": s.dir, "readonly": s.readonly,
            })).collect::<Vec<_>>(),
        });
        Msg::Join(0, serde_json::to_vec(&body)?).write_to(&mut sock).context("send the container to the VM")?;
        match Msg::read_from(&mut sock).context("the VM's monitor")? {
            Some(Msg::Joined(_)) => {}
            Some(Msg::Error(_, e)) => bail!("in the VM of {:?}: {e}", sandbox.id),
            Some(other) => bail!("the VM's monitor said {other:?} to the container"),
            None => bail!("the VM of {:?} went away while creating the container", sandbox.id),
        }
        // SAFETY: this process has no other threads; the child runs the
        // proxy and leaves through _exit.
        let pid = match unsafe { nix::unistd::fork() }.context("fork the container's proxy")? {
            nix::unistd::ForkResult::Child => {
                let code = proxy_main(sock, fifo);
                // SAFETY: ends the forked child without the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => child.as_raw(),
        };
        drop(sock);
        drop(fifo);
        let start_time = state::proc_stat(pid).map(|(_, t)| t).unwrap_or(0);
        proxy = Some((pid, start_time));
        st.pid = pid;
        st.init_start_time = start_time;
        dir.save(&st)?;
        run_runtime_hooks(&spec, &st)?;
        st.status = Status::Created;
        dir.save(&st)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(st.clone())
    })();
    match result {
        Ok(st) => Ok(st),
        Err(e) => {
            // The proxy's end takes the container in the guest with it.
            if let Some((pid, start_time)) = proxy {
                strata_runtime::process::reap_foreign(pid, start_time);
                st.status = Status::Stopped;
                let json = st.oci_json().to_string();
                for h in spec.hooks().as_ref().and_then(|h| h.poststop().clone()).unwrap_or_default() {
                    let _ = strata_runtime::hooks::run("poststop", &h, &json);
                }
            }
            let _ = dir.remove();
            Err(e)
        }
    }
}

/// How long the guest may take to answer a question about a container.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The state of a container that joined a VM (`None` for any other).
pub fn member(c: &strata_runtime::Container) -> Option<ContainerState> {
    c.state().ok().filter(|st| st.annotations.contains_key(SANDBOX_ANNOTATION))
}

/// Fails when the VM that `st`'s container runs in (its own, or the one it
/// joined) is paused: its guest answers nothing until it is resumed.
pub(super) fn check_vm_not_paused(root: &Path, st: &ContainerState) -> anyhow::Result<()> {
    let vm = st.annotations.get(SANDBOX_ANNOTATION).unwrap_or(&st.id);
    let status = if *vm == st.id { st.status } else { strata_runtime::Container::load(root, vm)?.state()?.status };
    if status == Status::Paused {
        bail!("the VM of {vm:?} is paused: its guest cannot act until it is resumed");
    }
    Ok(())
}

/// Has the guest do `op` on a VM container, or on one that joined a VM,
/// with `args` (more fields of the question); returns the guest's answer.
fn ask(root: &Path, st: &ContainerState, op: &str, args: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    check_vm_not_paused(root, st)?;
    // A VM container's own monitor, or that of the VM it joined.
    let sandbox = st.annotations.get(SANDBOX_ANNOTATION).unwrap_or(&st.id);
    let mut sock = connect_monitor(&root.join(sandbox))?;
    // A first byte without descriptors: a question follows.
    sock.write_all(b"?").context("the VM's monitor")?;
    sock.set_read_timeout(Some(ASK_TIMEOUT))?;
    let mut body = serde_json::json!({ "container": st.id, "op": op });
    if let (Some(b), serde_json::Value::Object(more)) = (body.as_object_mut(), args) {
        b.extend(more);
    }
    Msg::Ask(0, serde_json::to_vec(&body)?).write_to(&mut sock).context("the VM's monitor")?;
    match Msg::read_from(&mut sock) {
        Ok(Some(Msg::Answer(_, b))) => serde_json::from_slice(&b).context("the guest's answer"),
        Ok(Some(Msg::Error(_, e))) => bail!("in the VM of {sandbox:?}: {e}"),
        Ok(Some(other)) => bail!("the VM's monitor said {other:?} to a question"),
        Ok(None) => bail!("the VM of {sandbox:?} went away before it answered"),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            bail!("the VM of {sandbox:?} did not answer within {} s", ASK_TIMEOUT.as_secs())
        }
        Err(e) => Err(e).context("the VM's monitor"),
    }
}

/// `update` of a VM container, or of one that joined a VM: the guest applies
/// the limits to the container's cgroup there (the VM's size stays).
pub fn update(root: &Path, st: &ContainerState, resources: &oci_spec::runtime::LinuxResources) -> anyhow::Result<()> {
    if st.status == Status::Stopped {
        let reason = "a stopped container cannot be updated";
        return Err(strata_runtime::Error::WrongStatus { id: st.id.clone(), status: st.status, reason }.into());
    }
    ask(root, st, "update", serde_json::json!({ "resources": resources })).map(drop)
}

/// `pause` (or `resume`) of a container that joined a VM: the guest freezes
/// (thaws) its cgroup there, and its state says so. (Its host process, the
/// proxy, only waits: it is not frozen.)
pub fn pause_member(root: &Path, id: &str, pause: bool) -> anyhow::Result<()> {
    let dir = StateDir::open(root, id)?;
    let st = strata_runtime::Container::load(root, id)?.state()?;
    let (allowed, reason) = if pause {
        (matches!(st.status, Status::Created | Status::Running), "only a created or running container can be paused")
    } else {
        (st.status == Status::Paused, "only a paused container can be resumed")
    };
    if !allowed {
        return Err(strata_runtime::Error::WrongStatus { id: st.id.clone(), status: st.status, reason }.into());
    }
    ask(root, &st, if pause { "pause" } else { "resume" }, serde_json::Value::Null)?;
    let mut stored = dir.load()?.context("the container's state")?;
    // Resumed, it is what it was: `created`, or `running` once started
    // (which the state finds by the exec fifo, as for any container).
    stored.status = if pause { Status::Paused } else { Status::Created };
    dir.save(&stored)?;
    Ok(())
}

/// The statistics of a container that joined a VM: its cgroup's, in the
/// guest.
pub fn member_stats(c: &strata_runtime::Container, root: &Path) -> anyhow::Result<serde_json::Value> {
    let st = c.state()?;
    if st.status == Status::Stopped {
        let reason = "a stopped container has no statistics";
        return Err(strata_runtime::Error::WrongStatus { id: st.id.clone(), status: st.status, reason }.into());
    }
    ask(root, &st, "stats", serde_json::Value::Null)
}

/// The proxy: stands for a container in the guest until it exits.
fn proxy_main(sock: UnixStream, fifo: File) -> i32 {
    let _ = nix::unistd::setsid();
    // The container's stdio went to the monitor: the proxy holds none of
    // its creator's descriptors.
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    super::monitor::close_other_fds(&[0, 1, 2, sock.as_raw_fd(), fifo.as_raw_fd()]);
    let signals = crate::foreground::forwarded();
    let _ = signals.thread_block();
    let Ok(mut writer) = sock.try_clone() else { return 255 };
    let Ok(mut signal_writer) = sock.try_clone() else { return 255 };
    std::thread::spawn(move || loop {
        match signals.wait() {
            Ok(nix::sys::signal::Signal::SIGCHLD | nix::sys::signal::Signal::SIGPIPE) => {}
            Ok(sig) => {
                if Msg::Signal(0, sig as i32).write_to(&mut signal_writer).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    // The gate: `start` writes a byte, the guest starts the container, and
    // `start` learns how it went from what is left in the fifo once it closes.
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    std::thread::spawn(move || {
        let mut fifo = fifo;
        let mut byte = [0u8; 1];
        if !matches!(fifo.read(&mut byte), Ok(1)) {
            return;
        }
        if Msg::Begin(0).write_to(&mut writer).is_err() {
            return;
        }
        if let Ok(Err(why)) = rx.recv() {
            let mut report = strata_runtime::process::init::START_FAILED.to_vec();
            report.extend_from_slice(why.as_bytes());
            let _ = fifo.write_all(&report);
        }
    });
    let mut r = sock;
    loop {
        match Msg::read_from(&mut r) {
            Ok(Some(Msg::Started(_))) => {
                let _ = tx.send(Ok(()));
            }
            Ok(Some(Msg::Error(_, e))) => {
                let _ = tx.send(Err(e));
            }
            Ok(Some(Msg::Exit(_, code))) => return code,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return 255,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(namespaces: serde_json::Value) -> oci_spec::runtime::Spec {
        serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2", "linux": {"namespaces": namespaces}})).unwrap()
    }

    #[test]
    fn the_pids_a_config_joins_are_read_from_its_namespace_paths() {
        let spec = spec_with(serde_json::json!([
            {"type": "pid"},
            {"type": "network", "path": "/proc/42/ns/net"},
            {"type": "ipc", "path": "/proc/42/ns/ipc"},
            {"type": "uts", "path": "/proc/7/ns/uts"},
            {"type": "mount", "path": "/var/run/netns/cni-1"},
            {"type": "cgroup", "path": "/proc/self/ns/cgroup"},
        ]));
        assert_eq!(namespace_pids(&spec), vec![7, 42]);
        assert!(namespace_pids(&spec_with(serde_json::json!([]))).is_empty());
    }

    #[test]
    fn a_vm_sandbox_is_not_looked_for_without_annotations_or_a_monitors_pid() {
        let root = std::env::temp_dir().join(format!("strata-pod-none-{}", std::process::id()));
        // Our own pid: not a monitor (its name says so), so no state is read.
        let spec = spec_with(serde_json::json!([
            {"type": "network", "path": format!("/proc/{}/ns/net", std::process::id())},
        ]));
        assert!(sandbox_of(&root, &spec).unwrap().is_none());
        // A sandbox itself joins nothing, whatever it names.
        let mut spec = spec;
        spec.set_annotations(Some(
            [
                ("io.kubernetes.cri.container-type".to_string(), "sandbox".to_string()),
                ("io.kubernetes.cri.sandbox-id".to_string(), "x".to_string()),
            ]
            .into(),
        ));
        assert!(sandbox_of(&root, &spec).unwrap().is_none());
    }
}
