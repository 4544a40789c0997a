//! The container's init process, from clone to execve.
//!
//! Order matters and follows the OCI runtime spec's lifecycle:
//! 1. wait for the runtime to write uid/gid maps and send the state;
//! 2. prepare the rootfs in the new mount namespace (mounts, devices, console);
//! 3. let the runtime run `prestart`/`createRuntime` hooks, then run
//!    `createContainer` hooks here, still before pivot_root;
//! 4. sysctls, masked and read-only paths, limits, pivot_root, read-only root;
//! 5. hostname, cwd, user, capabilities; check the program exists; mark every
//!    descriptor but the preserved ones close-on-exec;
//! 6. report ready, block on the exec fifo until `start`, run `startContainer`
//!    hooks, load the seccomp filter, execve.
//!
//! The seccomp filter comes last so that a profile written for the workload
//! alone (an allowlist without close_range, getcwd, capset...) never refuses a
//! step of the runtime: nothing but execve runs under it. The one exception is
//! `SCMP_ACT_NOTIFY`: the listener descriptor must reach its agent during
//! `create`, so such a filter is loaded before the ready report, and only the
//! hand-over, the ready report, the wait for `start`, the startContainer hooks
//! and execve follow it.

use super::plan::ProcessPlan;
use crate::rootfs::{devices, mounts, paths, pivot};
use crate::sync::{Msg, SyncChannel};
use crate::{hooks, Error, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::SFlag;
use oci_spec::runtime::{Hook, Spec};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Which mount namespace a container has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountNs {
    /// A new one: mounts, devices, masks, pivot_root.
    New,
    /// An existing one joined by path: the rootfs is set up in it as in a new
    /// one (as runc does), so it becomes the container's.
    Joined,
    /// None in the config: the runtime's own (the spec's "inherit"). Nothing is
    /// mounted (that would change the host); the process is chrooted into the
    /// rootfs, as runc does.
    Host,
}

/// Everything the init process needs, prepared by the runtime before the fork.
pub struct InitContext<'a> {
    /// The container's config.
    pub spec: &'a Spec,
    /// Personality and memory policy, checked.
    pub policies: &'a super::policies::Policies,
    /// The name of a new session keyring for the container (None: keep the
    /// caller's, `--no-new-keyring`).
    pub session_keyring: Option<&'a str>,
    /// Bundle directory (relative bind sources resolve against it).
    pub bundle: &'a Path,
    /// Absolute rootfs path.
    pub rootfs: &'a Path,
    /// The process to run.
    pub process: &'a ProcessPlan,
    /// Whether the container has a user namespace of its own (new or joined).
    pub in_user_ns: bool,
    /// The container has a network namespace of its own, made for it: its
    /// loopback interface is brought up.
    pub new_network: bool,
    /// Unshare the ipc namespace once root in the new user namespace (see
    /// [`crate::namespaces::NamespacePlan::late_ipc`]).
    pub late_ipc: bool,
    /// The container's mount namespace: new or joined (the rootfs is set up in
    /// it), or the runtime's own (the process is chrooted).
    pub mount_ns: MountNs,
    /// Bind mount sources opened by the runtime, by mount index (for a
    /// container in a user namespace, whose root may not reach them).
    pub bind_sources: &'a [Option<mounts::BindSource>],
    /// Use move + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// The exec fifo, opened read-write.
    pub exec_fifo: RawFd,
    /// Connected console socket for a terminal.
    pub console_socket: Option<RawFd>,
    /// Number of caller descriptors after stdio to pass on.
    pub preserve_fds: u32,
    /// Device nodes to create.
    pub devices: &'a [devices::DeviceNode],
    /// The compiled seccomp filter.
    pub seccomp: Option<&'a crate::seccomp::SeccompPlan>,
    /// The runtime works on the process before it may set itself up (it
    /// writes the id maps of its user namespace, it moves network devices into
    /// its namespace): the process waits for the state first. Otherwise it
    /// sets itself up while the runtime records it, and takes the state when
    /// it reaches its hooks.
    pub state_first: bool,
    /// The config has prestart or createRuntime hooks, which the runtime runs
    /// when the process asks (in its mount namespace, before pivot_root).
    pub runtime_hooks: bool,
}

/// Runs the init process; returns only with the error that stopped it.
pub fn main(ctx: &InitContext<'_>, sync: &mut SyncChannel) -> Error {
    let mut state = None;
    if ctx.state_first {
        match recv_state(sync) {
            Ok(s) => state = Some(s),
            Err(e) => return e,
        }
    }
    match setup(ctx, sync, &mut state) {
        Ok(ready) => {
            let state = state.unwrap_or_default();
            let err = wait_and_exec(ctx, ready, &state);
            // Nobody listens on the channel any more: tell the container's stderr.
            let _ = nix::unistd::write(std::io::stderr(), format!("strata: {err}\n").as_bytes());
            // And tell `start`, which reads what is left in the fifo once we are gone:
            // the failure mark and the error, in one write below PIPE_BUF (atomic).
            // SAFETY: the fifo descriptor is still open (it is only closed by execve).
            let fifo = unsafe { std::os::fd::BorrowedFd::borrow_raw(ctx.exec_fifo) };
            let mut report = START_FAILED.to_vec();
            let text = err.to_string();
            let mut end = text.len().min(START_REPORT_MAX);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            report.extend_from_slice(&text.as_bytes()[..end]);
            let _ = nix::unistd::write(fifo, &report);
            crate::sys::exit_now(127)
        }
        Err(e) => e,
    }
}

/// Written to the exec fifo by an init that failed after `start` (a failing
/// startContainer hook, a failed execve), followed by the error.
pub const START_FAILED: &[u8] = b"E";

/// Longest error text sent back to `start` (the whole report stays below
/// PIPE_BUF, so it is written at once).
pub const START_REPORT_MAX: usize = 4000;

/// What is left to do after the container is created.
struct Ready {
    target: super::plan::ExecTarget,
    /// Whether the seccomp filter is in place already (notify filters).
    seccomp_loaded: bool,
}

/// The state the runtime sends once it has recorded the process (and written
/// its id maps, moved its network devices).
fn recv_state(sync: &mut SyncChannel) -> Result<String> {
    match sync.recv() {
        Ok(Some(Msg::State(s))) => {
            // The id maps are written: nothing outside may read this process
            // from now on (rootless, it was dumpable until now).
            let _ = nix::sys::prctl::set_dumpable(false);
            Ok(s)
        }
        Ok(Some(Msg::Error(e))) => Err(Error::Init(e)),
        // The runtime went away: abandon the half-created container.
        _ => crate::sys::exit_now(1),
    }
}

fn setup(ctx: &InitContext<'_>, sync: &mut SyncChannel, state: &mut Option<String>) -> Result<Ready> {
    if ctx.in_user_ns {
        let root_gid = nix::unistd::Gid::from_raw(0);
        let root_uid = nix::unistd::Uid::from_raw(0);
        nix::unistd::setresgid(root_gid, root_gid, root_gid)
            .map_err(|e| Error::sys("setresgid", "0 in user namespace", e))?;
        nix::unistd::setresuid(root_uid, root_uid, root_uid)
            .map_err(|e| Error::sys("setresuid", "0 in user namespace", e))?;
        if ctx.late_ipc {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC)
                .map_err(|e| Error::sys("unshare", "ipc namespace", e))?;
        }
    }
    // A session of its own: the container is not part of the caller's job control.
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", "init", e))?;
    if ctx.new_network {
        crate::network::loopback_up()?;
    }
    let labels = ctx.process.open_labels()?;

    let linux = ctx.spec.linux().as_ref();
    let mut console: Option<OwnedFd> = None;
    match ctx.mount_ns {
        MountNs::Host => {
            if ctx.process.terminal {
                console = Some(host_console(ctx)?);
            }
            run_hook_handshake(ctx, sync, state)?;
            write_sysctls(ctx)?;
            ctx.process.apply_limits()?;
            pivot::chroot(ctx.rootfs)?;
        }
        MountNs::New | MountNs::Joined => {
            let (root, read_only_later) = prepare_rootfs(ctx)?;
            if ctx.process.terminal {
                console = Some(setup_console(ctx, &root)?);
            }
            paths::mkdir_all_in_root(&root, &ctx.process.cwd)
                .map_err(|e| Error::config("process.cwd", format!("{}: {e}", ctx.process.cwd.display())))?;
            run_hook_handshake(ctx, sync, state)?;
            write_sysctls(ctx)?;
            let null = mounts::open_null()?;
            for p in linux.and_then(|l| l.masked_paths().as_ref()).into_iter().flatten() {
                mounts::mask(&root, Path::new(p), &null)?;
            }
            for p in linux.and_then(|l| l.readonly_paths().as_ref()).into_iter().flatten() {
                mounts::make_readonly(&root, Path::new(p))?;
            }
            drop(null);
            // Mounts with `ro` that had to stay writable while what lies below them
            // was created (/dev/pts in a read-only /dev, say).
            for dest in &read_only_later {
                mounts::make_mount_readonly(&root, dest)?;
            }
            drop(root);
            ctx.process.apply_limits()?;
            if ctx.no_pivot {
                pivot::move_root(ctx.rootfs)?;
            } else {
                pivot::pivot_root(ctx.rootfs)?;
            }
            if let Some(prop) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
                let flags = crate::rootfs::options::propagation(prop).unwrap_or(MsFlags::empty());
                mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
                    .map_err(|e| Error::sys("mount", format!("rootfsPropagation {prop}"), e))?;
            }
            if ctx.spec.root().as_ref().is_some_and(|r| r.readonly() == Some(true)) {
                mounts::remount_bind_path("/", MsFlags::MS_RDONLY)?;
            }
        }
    }
    if let Some(h) = ctx.spec.hostname() {
        nix::unistd::sethostname(h).map_err(|e| Error::sys("sethostname", h, e))?;
    }
    if let Some(d) = ctx.spec.domainname() {
        // SAFETY: the pointer and length describe `d`'s bytes for the duration of the call.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(Error::sys("setdomainname", d, nix::Error::last()));
        }
    }
    ctx.policies.apply()?;
    if let Some(name) = ctx.session_keyring {
        join_session_keyring(name)?;
    }
    if let Some(slave) = &console {
        crate::tty::make_controlling(slave)?;
    }
    drop(console);
    labels.apply()?;
    drop(labels);
    let target = ctx.process.become_process(ctx.seccomp.is_some() && !ctx.process.no_new_privs)?;
    prepare_fds(ctx.preserve_fds)?;
    // Created from here on: the init outlives its creator and waits for `start`
    // (a creator killed now leaves a `stopped` container that delete removes).
    nix::sys::prctl::set_pdeathsig(None).map_err(|e| Error::sys("prctl", "PR_SET_PDEATHSIG", e))?;
    let mut seccomp_loaded = false;
    if let Some(filter) = ctx.seccomp.filter(|f| f.notify) {
        if let Some(fd) = filter.load()? {
            sync.send_fd(std::os::fd::AsFd::as_fd(&fd))
                .map_err(|e| Error::io("send", "seccomp notify descriptor", e))?;
        }
        seccomp_loaded = true;
    }
    sync.send(&Msg::Ready).map_err(|e| Error::io("write", "sync channel", e))?;
    Ok(Ready { target, seccomp_loaded })
}

/// setgroups(2) is refused in a user namespace whose /proc/self/setgroups says deny.
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() != "deny").unwrap_or(true)
}

/// Writes `linux.sysctl` (the keys were checked to belong to namespaces of the
/// container's own).
fn write_sysctls(ctx: &InitContext<'_>) -> Result<()> {
    for (key, value) in ctx.spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()).into_iter().flatten() {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| Error::io("write sysctl", path, e))?;
    }
    Ok(())
}

fn run_hook_handshake(ctx: &InitContext<'_>, sync: &mut SyncChannel, state: &mut Option<String>) -> Result<()> {
    let state: &str = match state {
        Some(s) => s,
        None => state.insert(recv_state(sync)?),
    };
    if ctx.runtime_hooks {
        sync.send(&Msg::RunRuntimeHooks).map_err(|e| Error::io("write", "sync channel", e))?;
        sync.expect(&Msg::RuntimeHooksDone, "runtime hooks")?;
    }
    let hooks: &[Hook] = ctx.spec.hooks().as_ref().and_then(|h| h.create_container().as_deref()).unwrap_or_default();
    hooks::run_all("createContainer", hooks, state)
}

/// Mounts, devices and /dev symlinks in the new mount namespace. Returns the
/// rootfs and the mounts to make read-only once everything below them exists.
fn prepare_rootfs(ctx: &InitContext<'_>) -> Result<(OwnedFd, Vec<std::path::PathBuf>)> {
    let linux = ctx.spec.linux().as_ref();
    // Our mount events must never reach the host: everything we inherited
    // becomes slave (private when asked). The requested propagation itself is
    // applied to the new root after pivot_root: shared would leak our mounts,
    // and unbindable now would forbid the rootfs bind below.
    let prop = match linux.and_then(|l| l.rootfs_propagation().as_deref()).and_then(crate::rootfs::options::propagation)
    {
        Some(f) if f.contains(MsFlags::MS_PRIVATE) => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
        .map_err(|e| Error::sys("mount", "/ (propagation)", e))?;
    // pivot_root needs the new root to be a mount point.
    mount(Some(ctx.rootfs), ctx.rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| Error::sys("mount", format!("bind rootfs {}", ctx.rootfs.display()), e))?;
    let root = open_path(ctx.rootfs)?;
    let mut dev_is_bound = false;
    let mut read_only_later = Vec::new();
    let label = linux.and_then(|l| l.mount_label().as_deref()).filter(|l| !l.is_empty());
    for (i, m) in ctx.spec.mounts().iter().flatten().enumerate() {
        let source = ctx.bind_sources.get(i).and_then(Option::as_ref);
        if mounts::apply(&root, ctx.bundle, m, i, label, source)? == mounts::Applied::ReadOnlyLater {
            read_only_later.push(m.destination().clone());
        }
        if m.destination() == Path::new("/dev") && m.options().iter().flatten().any(|o| o == "bind" || o == "rbind") {
            dev_is_bound = true;
        }
    }
    // A /dev bound from elsewhere (the host's, usually) is used as it is: creating
    // nodes there would change the host.
    if !dev_is_bound {
        devices::create_all(&root, ctx.devices, ctx.in_user_ns || crate::rootless())?;
        if paths::exists_in_root(&root, Path::new("/dev"))? {
            devices::create_symlinks(&root)?;
        }
    }
    Ok((root, read_only_later))
}

/// A terminal for a container without a mount namespace of its own: from the
/// runtime's devpts (nothing is bound over the rootfs's /dev/console, which is
/// the host's file). Returns the slave.
fn host_console(ctx: &InitContext<'_>) -> Result<OwnedFd> {
    let socket =
        ctx.console_socket.ok_or_else(|| Error::config("process.terminal", "a terminal needs --console-socket"))?;
    let fd = nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys("open", "/dev/ptmx", e))?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::tty::unlock(&master)?;
    let slave = crate::tty::open_peer(&master)?;
    crate::tty::give_to(&slave, ctx.process.uid, ctx.process.gid)?;
    if let Some((w, h)) = ctx.process.console_size {
        crate::tty::resize(slave.as_raw_fd(), w, h)?;
    }
    crate::tty::send_master(socket, master.as_raw_fd())?;
    Ok(slave)
}

/// Allocates the container's terminal from its own devpts, binds it over
/// /dev/console and hands the master to the caller. Returns the slave.
fn setup_console(ctx: &InitContext<'_>, root: &OwnedFd) -> Result<OwnedFd> {
    let socket =
        ctx.console_socket.ok_or_else(|| Error::config("process.terminal", "a terminal needs --console-socket"))?;
    let master = paths::open_in_root(root, Path::new("/dev/pts/ptmx"), OFlag::O_RDWR | OFlag::O_NOCTTY)
        .map_err(|e| Error::Init(format!("process.terminal needs a devpts mount at /dev/pts: {e}")))?;
    crate::tty::unlock(&master)?;
    let slave = crate::tty::open_peer(&master)?;
    crate::tty::give_to(&slave, ctx.process.uid, ctx.process.gid)?;
    if let Some((w, h)) = ctx.process.console_size {
        crate::tty::resize(slave.as_raw_fd(), w, h)?;
    }
    // /dev/console must be a plain file we created: a symlink planted by the rootfs
    // could otherwise redirect the bind mount (CVE-2025-52565).
    let dev = paths::open_in_root(root, Path::new("/dev"), OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
    let is_symlink =
        nix::sys::stat::fstatat(Some(dev.as_raw_fd()), "console", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
            .unwrap_or(false);
    if is_symlink {
        nix::unistd::unlinkat(Some(dev.as_raw_fd()), "console", nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| Error::sys("unlink", "/dev/console (a symlink)", e))?;
    }
    let target = paths::create_file_in_root(root, Path::new("/dev/console"))?;
    mount(
        Some(paths::fd_path(&slave).as_str()),
        paths::fd_path(&target).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount", "terminal on /dev/console", e))?;
    crate::tty::send_master(socket, master.as_raw_fd())?;
    Ok(slave)
}

fn wait_and_exec(ctx: &InitContext<'_>, ready: Ready, state: &str) -> Error {
    // SAFETY: the runtime opened the fifo for us and nothing else in this process
    // owns or closes this descriptor.
    let mut fifo = unsafe { std::fs::File::from_raw_fd(ctx.exec_fifo) };
    let mut byte = [0u8; 1];
    loop {
        match fifo.read(&mut byte) {
            Ok(1) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(_) => return Error::Init("exec fifo closed before start".into()),
            Err(e) => return Error::io("read", "exec fifo", e),
        }
    }
    // The fifo stays open (close-on-exec) until execve: `start` watches for the
    // last writer to go away to know the process runs, before poststart hooks.
    std::mem::forget(fifo);
    if let Some(hooks) = ctx.spec.hooks().as_ref().and_then(|h| h.start_container().as_deref()) {
        let state = state.replacen("\"status\":\"creating\"", "\"status\":\"running\"", 1);
        if let Err(e) = hooks::run_all_with_env("startContainer", hooks, &state, &ctx.process.env) {
            return e;
        }
    }
    if !ready.seccomp_loaded {
        if let Some(filter) = ctx.seccomp {
            if let Err(e) = filter.load() {
                return e;
            }
        }
    }
    ctx.process.exec(&ready.target)
}

/// Marks every descriptor past stdio and the preserved ones close-on-exec, so
/// nothing of the runtime leaks into the container (CVE-2024-21626).
pub fn prepare_fds(preserve_fds: u32) -> Result<()> {
    crate::sys::cloexec_from(3 + preserve_fds).map_err(|e| Error::sys("mark descriptors close-on-exec", "", e))?;
    for fd in 3..3 + preserve_fds as RawFd {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
            .map_err(|e| Error::sys("fcntl", format!("preserved fd {fd}"), e))?;
    }
    Ok(())
}

fn open_path(p: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| Error::sys("open", p.display(), e))?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives the process a new session keyring called `name`, so the container
/// cannot reach the keys of the session it was started from (as runc does).
/// Kernels or seccomp profiles without keyctl are left as they are.
fn join_session_keyring(name: &str) -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let cname = std::ffi::CString::new(name).map_err(|_| Error::Init(format!("keyring name {name:?}")))?;
    // SAFETY: keyctl reads the NUL-terminated name for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, cname.as_ptr()) };
    if ret < 0 {
        let e = nix::Error::last();
        if !matches!(e, nix::Error::ENOSYS | nix::Error::EPERM | nix::Error::EACCES | nix::Error::EDQUOT) {
            return Err(Error::sys("keyctl", "join a new session keyring", e));
        }
    }
    Ok(())
}
