//! `create` and `exec` of a VM container, on the host.
//!
//! `create` prepares the guest's files, records the container `creating`,
//! makes its host cgroup and forks the monitor, which boots the guest and has
//! the agent create the container there. The monitor's pid becomes the
//! container's: `kill` signals it (it forwards to the workload), `start` opens
//! the exec fifo it waits at, and it exits with the workload's status.
//!
//! `exec` hands the caller's stdio to the monitor over the state directory's
//! socket and waits there for the process's status.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use strata_runtime::cgroups::{self, Cgroup};
use strata_runtime::state::{self, StateDir};
use strata_runtime::{ContainerState, Status};
use strata_vm::proto::Msg;
use strata_vm::qemu;

use super::monitor::{self, Monitor};
use super::{check_supported, guest_size, ISOLATION_ANNOTATION};

/// The socket in a VM container's state directory where its monitor takes
/// `exec`s.
pub(super) const EXEC_SOCKET: &str = "vm.sock";

/// Options of `create` (and `run`) for a VM.
pub struct CreateVm<'a> {
    /// Container id.
    pub id: &'a str,
    /// The bundle.
    pub bundle: &'a Path,
    /// The loaded config.
    pub spec: oci_spec::runtime::Spec,
    /// `--vm-kernel`.
    pub kernel: Option<&'a Path>,
    /// The state root.
    pub root: &'a Path,
    /// `--pid-file`: gets the monitor's pid.
    pub pid_file: Option<PathBuf>,
    /// No host cgroup (`--cgroup-manager disabled`, or the systemd driver,
    /// whose scopes do not hold VMs yet).
    pub no_cgroup: bool,
    /// The connected `--console-socket`: gets the master of the terminal
    /// that stands for the guest's, with `process.terminal`.
    pub console_socket: Option<RawFd>,
}

/// A pty on the host for a process in the guest with a terminal: its slave,
/// raw (the guest's terminal does the line discipline), is what the monitor
/// relays; its master is the caller's.
fn host_terminal() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(None, None).context("openpty")?;
    let mut t = nix::sys::termios::tcgetattr(&pty.slave).context("tcgetattr")?;
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t).context("tcsetattr")?;
    Ok((pty.master, pty.slave))
}

/// With a terminal and a console socket: a host pty whose master goes to the
/// socket; its slave, returned, is the stdio the monitor relays to the
/// guest's terminal.
pub(super) fn console_terminal(terminal: bool, console: Option<RawFd>) -> anyhow::Result<Option<OwnedFd>> {
    match (terminal, console) {
        (true, Some(sock)) => {
            let (master, slave) = host_terminal()?;
            strata_runtime::tty::send_master(sock, master.as_raw_fd())?;
            Ok(Some(slave))
        }
        _ => Ok(None),
    }
}

/// Creates a VM container: on success its guest is up, the container is
/// created inside it, and the state says `created` with the monitor's pid.
/// On failure nothing is left: no QEMU, no monitor, no cgroup, no state.
pub fn create(opts: CreateVm) -> anyhow::Result<ContainerState> {
    // A container that joins a VM container's namespaces runs in its VM.
    if let Some(sandbox) = super::pod::sandbox_of(opts.root, &opts.spec)? {
        return super::pod::create_member(opts, sandbox);
    }
    strata_runtime::id::validate(opts.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = opts.spec;
    check_supported(&spec)?;
    let bundle = std::path::absolute(opts.bundle).context("bundle path")?;
    // The guest's config: bind mounts come from the shared folder.
    let mut guest_spec = spec.clone();
    let shares = super::share::plan(&mut guest_spec, &bundle)?;
    guest_spec.set_hooks(guest_hooks(&spec));
    let netns = own_namespaces(&mut guest_spec)?;
    let root_spec = spec.root().as_ref().context("config.json has no root")?;
    let rootfs = if root_spec.path().is_absolute() { root_spec.path().clone() } else { bundle.join(root_spec.path()) };
    if !rootfs.is_dir() {
        bail!("root.path: {} is not a directory", rootfs.display());
    }
    let readonly = root_spec.readonly().unwrap_or(false);
    let (vcpus, memory_mib) = guest_size(&spec)?;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    if terminal && opts.console_socket.is_none() {
        bail!("process.terminal: create of a container with a terminal needs --console-socket");
    }

    let cache = qemu::cache_dir();
    let kernel = qemu::kernel_path(opts.kernel);
    if !kernel.exists() {
        bail!("guest kernel {} does not exist: run hack/vm-assets.sh, or pass --vm-kernel", kernel.display());
    }
    let exe = std::env::current_exe().context("this binary's path")?;
    let modules = strata_vm::initramfs::modules_of(&kernel);
    let initrd = strata_vm::initramfs::cached(&exe, &cache, modules.as_deref())?;
    let image = strata_vm::image::cached(&rootfs, &cache)?;
    let accel = match std::env::var("STRATA_VM_ACCEL").as_deref() {
        Ok("tcg") => qemu::Accel::Tcg,
        Ok("kvm") => qemu::Accel::Kvm,
        _ => qemu::choose_accel(),
    };
    let cgroup_at = if opts.no_cgroup {
        None
    } else {
        let linux = spec.linux().as_ref();
        Some((
            cgroups::find_mount()?,
            cgroups::container_path(linux.and_then(|l| l.cgroups_path().as_deref()), opts.id)?,
        ))
    };

    let mut st = creating(opts.id, bundle, rootfs, &spec);
    st.cgroup = cgroup_at.as_ref().map(|(m, rel)| m.join(rel));
    st.cgroup_created = cgroup_at
        .as_ref()
        .map(|(m, rel)| cgroups::owned_parents(m, rel, cgroups::missing_dirs(m, rel)))
        .unwrap_or_default();
    std::fs::create_dir_all(opts.root).with_context(|| format!("create {}", opts.root.display()))?;
    let dir = StateDir::create(opts.root, opts.id, &st)?;
    let state_dir = dir.path().to_path_buf();
    let mut made: Option<(Cgroup, Vec<PathBuf>)> = None;
    let result = (|| -> anyhow::Result<ContainerState> {
        if let Some((mount, rel)) = &cgroup_at {
            let (cg, created) = Cgroup::create(mount, rel, &[])?;
            let created = cgroups::owned_parents(mount, rel, created);
            if let Some(w) = cg.in_use() {
                st.warnings.push(w);
                st.cgroup_shared = true;
            }
            st.cgroup_created = created.clone();
            made = Some((cg, created));
            dir.save(&st)?;
        }
        let fifo = state_dir.join(strata_runtime::container::EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_context(|| format!("mkfifo {}", fifo.display()))?;
        let tty = console_terminal(terminal, opts.console_socket)?;
        let monitor = Monitor {
            tty,
            id: opts.id.to_string(),
            spec: guest_spec,
            netns,
            net: None,
            readonly,
            shares,
            state_dir: state_dir.clone(),
            cgroup: made.as_ref().map(|(cg, _)| cg.dir.clone()),
            qemu: qemu::QemuConfig {
                kernel,
                initrd,
                cmdline: String::new(),
                memory_mib,
                vcpus,
                disks: vec![(image, true)],
                // (Always: containers that join this one's VM come through it.)
                share: Some(state_dir.join(super::share::SHARE_DIR)),
                net: None,
                // A kernel that comes with modules is a distribution's.
                acpi: modules.is_some(),
                run_dir: state_dir.clone(),
                accel,
            },
        };
        let (pid, ack) = monitor::spawn(monitor)?;
        let start_time = state::proc_stat(pid).map(|(_, t)| t).unwrap_or(0);
        st.pid = pid;
        st.init_start_time = start_time;
        let saved = (|| -> anyhow::Result<()> {
            // Recorded first, so that `delete --force` finds the monitor
            // while the hooks run.
            dir.save(&st)?;
            run_runtime_hooks(&spec, &st)?;
            st.status = Status::Created;
            dir.save(&st)?;
            if let Some(p) = &opts.pid_file {
                write_pid_file(p, pid)?;
            }
            Ok(())
        })();
        if let Err(e) = saved {
            strata_runtime::process::reap_foreign(pid, start_time);
            // A failed create goes on at delete, as a container's does:
            // poststop hooks undo what the earlier hooks set up.
            st.status = Status::Stopped;
            let json = st.oci_json().to_string();
            for h in spec.hooks().as_ref().and_then(|h| h.poststop().clone()).unwrap_or_default() {
                let _ = strata_runtime::hooks::run("poststop", &h, &json);
            }
            return Err(e);
        }
        // The monitor holds on to its creator until the state is written:
        // killed before this, the create takes its VM with it.
        ack.release();
        Ok(st.clone())
    })();
    match result {
        Ok(st) => Ok(st),
        Err(e) => {
            if let Some((cg, created)) = made {
                let _ = cg.kill_all();
                let _ = cg.remove(&created);
            }
            let _ = dir.remove();
            Err(e)
        }
    }
}

/// The namespaces of a VM's first container are the guest kernel's: a
/// path to one of the host's cannot be joined there. A network namespace's
/// (the one a CNI plugin set up for a pod) is returned: its network is
/// handed to the VM, and the container uses the guest's, where the VM's NIC
/// is. Any other is refused by field.
fn own_namespaces(guest: &mut oci_spec::runtime::Spec) -> anyhow::Result<Option<PathBuf>> {
    let Some(mut linux) = guest.linux().clone() else { return Ok(None) };
    let Some(nss) = linux.namespaces().clone() else { return Ok(None) };
    let mut netns = None;
    let mut kept = Vec::new();
    for (i, ns) in nss.into_iter().enumerate() {
        let Some(path) = ns.path().clone() else {
            kept.push(ns);
            continue;
        };
        if ns.typ() != oci_spec::runtime::LinuxNamespaceType::Network {
            bail!(
                "linux.namespaces[{i}].path: {} is the host's, and a VM's namespaces are its guest kernel's",
                path.display()
            );
        }
        netns = Some(path);
    }
    linux.set_namespaces(Some(kept));
    guest.set_linux(Some(linux));
    Ok(netns)
}

/// The state of VM container `id` as its create begins: `creating`, no
/// process and no cgroup yet, the annotation that says it is a VM.
pub(super) fn creating(id: &str, bundle: PathBuf, rootfs: PathBuf, spec: &oci_spec::runtime::Spec) -> ContainerState {
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(ISOLATION_ANNOTATION.to_string(), "vm".to_string());
    let uid = nix::unistd::geteuid();
    ContainerState {
        id: id.to_string(),
        pid: 0,
        status: Status::Creating,
        bundle,
        rootfs,
        created: state::now_rfc3339(),
        annotations,
        owner: if uid.is_root() { String::new() } else { uid.to_string() },
        init_start_time: 0,
        creator: strata_runtime::process::own_identity(),
        config: spec.clone(),
        cgroup: None,
        cgroup_created: Vec::new(),
        cgroup_shared: false,
        systemd_unit: None,
        rdt: None,
        warnings: Vec::new(),
    }
}

/// The hooks a VM container's guest gets: startContainer hooks run there
/// (their paths are the container's); every other kind runs on the host.
pub(super) fn guest_hooks(spec: &oci_spec::runtime::Spec) -> Option<oci_spec::runtime::Hooks> {
    spec.hooks().as_ref().and_then(|h| h.start_container().clone()).filter(|l| !l.is_empty()).map(|list| {
        let mut h = oci_spec::runtime::Hooks::default();
        h.set_start_container(Some(list));
        h
    })
}

/// The hooks of a create that run in the runtime's namespace (prestart, then
/// createRuntime), once the guest has created the container: the state they
/// read says `creating`, with the monitor's pid.
pub(super) fn run_runtime_hooks(spec: &oci_spec::runtime::Spec, st: &ContainerState) -> anyhow::Result<()> {
    let Some(h) = spec.hooks() else { return Ok(()) };
    let json = st.oci_json().to_string();
    #[allow(deprecated)]
    strata_runtime::hooks::run_all("prestart", h.prestart().as_deref().unwrap_or_default(), &json)?;
    strata_runtime::hooks::run_all("createRuntime", h.create_runtime().as_deref().unwrap_or_default(), &json)?;
    Ok(())
}

pub(super) fn write_pid_file(path: &Path, pid: i32) -> anyhow::Result<()> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))
}

/// Connects to a VM container's monitor (through the directory's descriptor,
/// so that no socket path is longer than a sockaddr holds).
pub(super) fn connect_monitor(state_dir: &Path) -> anyhow::Result<UnixStream> {
    let dir = std::fs::File::open(state_dir).with_context(|| format!("open {}", state_dir.display()))?;
    let path = format!("/proc/self/fd/{}/{EXEC_SOCKET}", dir.as_raw_fd());
    UnixStream::connect(&path).with_context(|| format!("connect to the VM's monitor at {}", state_dir.display()))
}

/// Sends the first byte of a request to a VM's monitor, carrying `fds`.
pub(super) fn pass_fds(sock: &UnixStream, fds: &[RawFd]) -> nix::Result<()> {
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"x")],
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
}

/// Options of `exec` in a VM container.
pub struct ExecVm<'a> {
    /// The container's state.
    pub state: &'a ContainerState,
    /// The state root.
    pub root: &'a Path,
    /// The process to run.
    pub process: &'a oci_spec::runtime::Process,
    /// `--detach`: return once it runs, leaving a proxy process that exits
    /// with its status.
    pub detach: bool,
    /// `--pid-file`: gets the pid of the process that stands for it here.
    pub pid_file: Option<PathBuf>,
    /// The connected `--console-socket` (with a terminal).
    pub console_socket: Option<RawFd>,
}

/// Runs a process in a VM container. The caller's stdin, stdout and stderr
/// become the process's; the returned status is the process's, and signals
/// sent to this process (or, with `--detach`, to the proxy left behind) go to
/// it.
pub fn exec(opts: ExecVm) -> anyhow::Result<i32> {
    let terminal = opts.process.terminal().unwrap_or(false);
    if terminal && opts.detach && opts.console_socket.is_none() {
        bail!("a terminal with --detach needs --console-socket");
    }
    if !matches!(opts.state.status, Status::Created | Status::Running) {
        bail!("container {:?} is {}: exec needs it created or running", opts.state.id, opts.state.status);
    }
    // A container that joined another's VM is reached through that one's
    // monitor.
    let joined = opts.state.annotations.get(super::pod::SANDBOX_ANNOTATION);
    if joined.is_some() {
        super::pod::check_vm_not_paused(opts.root, opts.state)?;
    }
    let state_dir = opts.root.join(joined.unwrap_or(&opts.state.id));
    let mut sock = connect_monitor(&state_dir)?;
    // With a terminal, the guest process's is relayed to a pty of ours,
    // whose master goes to the console socket or is proxied here.
    let tty = if terminal { Some(host_terminal()?) } else { None };
    // The first byte carries the process's stdio; then the request, framed.
    let fds = match &tty {
        Some((_, slave)) => [slave.as_raw_fd(); 3],
        None => [0, 1, 2],
    };
    pass_fds(&sock, &fds).context("pass stdio to the VM's monitor")?;
    let request = match joined {
        Some(_) => Msg::ExecIn(
            0,
            serde_json::to_vec(&serde_json::json!({ "container": opts.state.id, "process": opts.process }))?,
        ),
        None => Msg::Exec(0, serde_json::to_vec(opts.process)?),
    };
    request.write_to(&mut sock).context("send exec to the VM's monitor")?;
    match Msg::read_from(&mut sock).context("the VM's monitor")? {
        Some(Msg::Started(_)) => {}
        Some(Msg::Error(_, e)) => bail!("exec in the VM: {e}"),
        Some(other) => bail!("the VM's monitor said {other:?} to exec"),
        None => bail!("the VM's monitor went away before the process started"),
    }
    let master = match tty {
        Some((master, slave)) => {
            drop(slave);
            match opts.console_socket {
                Some(sock) => {
                    strata_runtime::tty::send_master(sock, master.as_raw_fd())?;
                    None
                }
                None => Some(master),
            }
        }
        None => None,
    };
    if let Some(master) = master {
        // In the foreground with a terminal: a proxy child waits for the
        // process; this one copies between the caller's terminal and ours.
        crate::foreground::block_signals()?;
        // SAFETY: this process has no other threads; the child only waits on
        // its socket and exits.
        return match unsafe { nix::unistd::fork() }.context("fork the exec's proxy")? {
            nix::unistd::ForkResult::Child => {
                drop(master);
                let code = proxy(sock);
                // SAFETY: _exit ends the forked child without running the
                // parent's destructors or atexit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(sock);
                if let Some(p) = &opts.pid_file {
                    write_pid_file(p, child.as_raw())?;
                }
                crate::foreground::wait(child.as_raw(), Some(master))
            }
        };
    }
    if opts.detach {
        // SAFETY: this process has no other threads; the child only waits on
        // its socket and exits.
        match unsafe { nix::unistd::fork() }.context("fork the exec's proxy")? {
            nix::unistd::ForkResult::Child => {
                let _ = nix::unistd::setsid();
                let code = proxy(sock);
                // SAFETY: _exit ends the forked child without running the
                // parent's destructors or atexit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                if let Some(p) = &opts.pid_file {
                    write_pid_file(p, child.as_raw())?;
                }
                return Ok(0);
            }
        }
    }
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, std::process::id() as i32)?;
    }
    Ok(proxy(sock))
}

/// Stands for a process in the guest: forwards the signals this process gets
/// and returns its status (255 when the VM went away first).
fn proxy(sock: UnixStream) -> i32 {
    let signals = crate::foreground::forwarded();
    let _ = signals.thread_block();
    if let Ok(mut w) = sock.try_clone() {
        std::thread::spawn(move || loop {
            match signals.wait() {
                Ok(nix::sys::signal::Signal::SIGCHLD) => {}
                Ok(sig) => {
                    if Msg::Signal(0, sig as i32).write_to(&mut w).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        });
    }
    let mut r = sock;
    loop {
        match Msg::read_from(&mut r) {
            Ok(Some(Msg::Exit(_, code))) => return code,
            Ok(Some(Msg::Error(_, e))) => {
                eprintln!("strata: exec in the VM: {e}");
                return 255;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                eprintln!("strata: exec in the VM: the VM went away before the process exited");
                return 255;
            }
        }
    }
}

/// A pipe end that, written to (or closed), lets the monitor go on.
pub(super) struct Ack(pub(super) OwnedFd);

impl Ack {
    fn release(self) {
        let mut f = std::fs::File::from(self.0);
        let _ = f.write_all(b"k");
    }
}

/// Reads what the monitor reports from its boot, to its end.
pub(super) fn read_report(fd: OwnedFd) -> String {
    let mut s = String::new();
    let _ = std::fs::File::from(fd).read_to_string(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vms_first_container_hands_its_network_namespace_over_and_joins_no_other() {
        let mut spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]},
        }))
        .unwrap();
        let netns = own_namespaces(&mut spec).unwrap();
        assert_eq!(netns.as_deref(), Some(Path::new("/var/run/netns/cni-1")));
        // The container uses the guest's own network, where the VM's NIC is.
        let nss = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert_eq!(nss.len(), 1, "{nss:?}");
        assert_eq!(nss[0].typ(), oci_spec::runtime::LinuxNamespaceType::Pid);
        let mut spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "ipc", "path": "/proc/1/ns/ipc"}]},
        }))
        .unwrap();
        let e = format!("{:#}", own_namespaces(&mut spec).unwrap_err());
        assert!(e.contains("linux.namespaces[0].path: /proc/1/ns/ipc"), "{e}");
    }
}
