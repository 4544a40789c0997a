//! `create`: set the container up and leave its init blocked on the exec fifo.

use super::{Container, EXEC_FIFO};
use crate::cgroups::{self, Cgroup};
use crate::namespaces::NamespacePlan;
use crate::process::init::{self, InitContext, MountNs};
use crate::process::plan::ProcessPlan;
use crate::process::{spawn, write_id_maps, CgroupEntry, SpawnSpec};
use crate::rootfs::devices;
use crate::rootfs::mounts::BindSource;
use crate::seccomp::SeccompPlan;
use crate::state::{now_rfc3339, ContainerState, StateDir};
use crate::sync::Msg;
use crate::{config, hooks, Error, Result, Status};
use oci_spec::runtime::LinuxNamespaceType;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Options of `create`.
#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    /// Bundle directory holding config.json.
    pub bundle: PathBuf,
    /// Connected unix socket that receives the terminal master (for `terminal: true`).
    pub console_socket: Option<RawFd>,
    /// File to write the init's host pid to.
    pub pid_file: Option<PathBuf>,
    /// Caller descriptors 3..3+N passed to the container.
    pub preserve_fds: u32,
    /// Use move + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Descriptors for the container's stdin, stdout and stderr (default: the
    /// caller's own). Ignored with a terminal.
    pub stdio: Option<[RawFd; 3]>,
    /// Create no cgroup (`--cgroup-manager disabled`, as crun's): the container
    /// stays in the caller's cgroup, so neither resource limits (refused when the
    /// config has any) nor the device allowlist are enforced, and pause, ps,
    /// update and events have nothing to work on.
    pub no_cgroup: bool,
    /// The bundle's config.json, when the caller has already loaded it (it is
    /// then not read again).
    pub spec: Option<oci_spec::runtime::Spec>,
    /// Connected unix socket that receives a pidfd of the init.
    pub pidfd_socket: Option<RawFd>,
    /// The systemd cgroup driver (`--systemd-cgroup`): the cgroup is a
    /// transient scope unit systemd makes, named by `linux.cgroupsPath`
    /// (`slice:prefix:name`).
    pub systemd_cgroup: bool,
    /// Keep the caller's session keyring (`--no-new-keyring`) instead of
    /// giving the container one of its own.
    pub no_new_keyring: bool,
}

impl Container {
    /// Creates container `id` from `opts.bundle`. On any failure nothing is left
    /// behind: no state directory, no process, no mount.
    pub fn create(root: &Path, id: &str, opts: &CreateOptions) -> Result<ContainerState> {
        crate::id::validate(id)?;
        let bundle = std::fs::canonicalize(&opts.bundle).map_err(|e| Error::io("open bundle", &opts.bundle, e))?;
        let spec = match &opts.spec {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(config::load(&bundle)?),
        };
        let spec: &oci_spec::runtime::Spec = &spec;
        config::validate(spec, &bundle)?;
        let rootfs = std::fs::canonicalize(config::rootfs_path(spec, &bundle)?)
            .map_err(|e| Error::io("open", "root.path", e))?;
        let process = match spec.process() {
            Some(p) => ProcessPlan::new(p, "process")?,
            None => ProcessPlan::without_process(),
        };
        let linux = spec.linux().as_ref().ok_or_else(|| Error::config("linux", "missing"))?;
        let seccomp = linux.seccomp().as_ref().map(SeccompPlan::new).transpose()?;
        let policies = crate::process::policies::Policies::for_host(Some(linux))?;
        let net_devices = crate::network::planned(linux.net_devices().as_ref().unwrap_or(&Default::default()))?;
        let rdt_plan = match linux.intel_rdt() {
            Some(r) => Some((crate::rdt::plan(r)?, crate::rdt::mount()?)),
            None => None,
        };
        // The config's devices replace defaults (and earlier entries) of the same path.
        let mut nodes: Vec<Option<devices::DeviceNode>> = devices::defaults().into_iter().map(Some).collect();
        let mut by_path: std::collections::HashMap<PathBuf, usize> =
            nodes.iter().enumerate().filter_map(|(i, d)| Some((d.as_ref()?.path.clone(), i))).collect();
        for (i, d) in linux.devices().iter().flatten().enumerate() {
            let d = devices::from_spec(d, i)?;
            if let Some(old) = by_path.insert(d.path.clone(), nodes.len()) {
                nodes[old] = None;
            }
            nodes.push(Some(d));
        }
        let device_list: Vec<devices::DeviceNode> = nodes.into_iter().flatten().collect();
        let ns_list = linux.namespaces().clone().unwrap_or_default();
        let namespaces = NamespacePlan::from_spec(&ns_list)?;
        check_preserved_fds(opts.preserve_fds)?;
        let mut cg_writes = match linux.resources() {
            Some(r) => cgroups::resources::plan(r)?,
            None => Vec::new(),
        };
        // Rootless, a cgroup is used only where one is delegated to the user
        // (its parent is writable); otherwise the container runs without one,
        // as with runc: accepted with no limits, refused with some.
        let rootless_cgroup = if crate::rootless() && !opts.no_cgroup && !opts.systemd_cgroup {
            let mount = cgroups::find_mount()?;
            let rel = cgroups::container_path(linux.cgroups_path().as_deref(), id)?;
            Some(cgroups::delegated(&mount, &rel))
        } else {
            None
        };
        let no_cgroup = opts.no_cgroup || rootless_cgroup == Some(false);
        let cg_mount = if no_cgroup { PathBuf::new() } else { cgroups::find_mount()? };
        let unapplied = if no_cgroup { Vec::new() } else { cgroups::drop_unavailable(&cg_mount, &mut cg_writes) };
        let mut cg_controllers: Vec<&str> = cg_writes.iter().filter_map(|w| w.controller).collect();
        cg_controllers.sort_unstable();
        cg_controllers.dedup();
        let device_rules = cgroups::devices::rules(
            linux.resources().as_ref().and_then(|r| r.devices().as_deref()).unwrap_or_default(),
            linux.devices().as_deref().unwrap_or_default(),
        )?;
        if no_cgroup && !cg_writes.is_empty() {
            let why = if opts.no_cgroup {
                "the cgroup manager is disabled".to_string()
            } else {
                format!("no cgroup is delegated to uid {} (rootless)", nix::unistd::geteuid())
            };
            let mut files: Vec<&str> = cg_writes.iter().map(|w| w.file.as_str()).collect();
            files.dedup();
            return Err(Error::config(
                "linux.resources",
                format!("limits ({}) need a cgroup; {why}", files.join(", ")),
            ));
        }
        // Device rules are an eBPF program only root can attach; rootless, the
        // user namespace already keeps the container from every device node
        // it was not given.
        let device_rules = if crate::rootless() { None } else { device_rules };
        let systemd_unit = if opts.systemd_cgroup && !no_cgroup {
            Some(cgroups::systemd::Unit::from_cgroups_path(linux.cgroups_path().as_deref(), id)?)
        } else {
            None
        };
        let (cg_rel, unit_props) = match &systemd_unit {
            Some(unit) => (
                unit.cgroup_path(),
                cgroups::systemd::properties(linux.resources().as_ref().unwrap_or(&Default::default()))?,
            ),
            None => (cgroups::container_path(linux.cgroups_path().as_deref(), id)?, Vec::new()),
        };
        if process.terminal && opts.console_socket.is_none() {
            return Err(Error::config("process.terminal", "a terminal needs --console-socket"));
        }

        let in_user_ns = namespaces.new_user() || namespaces.join.iter().any(|(t, _)| *t == LinuxNamespaceType::User);
        let mount_ns = if namespaces.join.iter().any(|(t, _)| *t == LinuxNamespaceType::Mount) {
            MountNs::Joined
        } else if namespaces.clone_flags.contains(nix::sched::CloneFlags::CLONE_NEWNS) {
            MountNs::New
        } else {
            MountNs::Host
        };
        let mut warnings: Vec<String> = process
            .caps
            .unknown_to_kernel
            .iter()
            .map(|c| format!("process.capabilities: {c} is unknown to the running kernel; dropped"))
            .collect();
        warnings.extend(unapplied);
        if mount_ns == MountNs::Host {
            warnings.extend(config::ignored_without_mount_namespace(spec));
        }
        // In a user namespace the container's root may not reach a bind source
        // (a parent directory only the host's root can enter): the runtime opens
        // them here, with its own privileges. Idmapped mounts are made here too,
        // as detached copies idmapped before the container attaches them.
        let mut idmap_namespaces = crate::rootfs::idmap::Namespaces::default();
        let bind_sources: Vec<Option<BindSource>> = if mount_ns == MountNs::Host {
            Vec::new()
        } else {
            spec.mounts()
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, m)| match crate::rootfs::idmap::of(Some(linux), m, i)? {
                    Some(map) => {
                        let userns = idmap_namespaces.get(&map)?;
                        BindSource::open(&bundle, m, i, Some((map.recursive, userns)))
                    }
                    // (An unprivileged caller cannot clone mount trees: its container binds them itself.)
                    None if in_user_ns && !crate::rootless() => BindSource::open(&bundle, m, i, None),
                    None => Ok(None),
                })
                .collect::<Result<_>>()?
        };
        drop(idmap_namespaces);

        // The state is on disk, `creating`, before anything of the container
        // exists (its cgroup included, with the directories create is about to
        // make): a create killed at any later moment leaves a container that
        // `list` shows and `delete --force` removes entirely.
        let mut state = ContainerState {
            id: id.to_string(),
            pid: 0,
            status: Status::Creating,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            created: now_rfc3339(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            owner: owner(),
            init_start_time: 0,
            creator: crate::process::own_identity(),
            config: spec.clone(),
            cgroup: (!no_cgroup).then(|| cg_mount.join(&cg_rel)),
            cgroup_created: if no_cgroup || systemd_unit.is_some() {
                Vec::new()
            } else {
                cgroups::owned_parents(&cg_mount, &cg_rel, cgroups::missing_dirs(&cg_mount, &cg_rel))
            },
            cgroup_shared: false,
            systemd_unit: systemd_unit.as_ref().map(|u| u.name.clone()),
            rdt: None,
            warnings: Vec::new(),
        };
        // Lock order: the state directory's lock, then (inside Cgroup::create) the
        // cgroup tree; every operation takes the lock first, so a create and a
        // delete of one id never interleave, and a second create of it fails at
        // the rename that reserves the id.
        let dir = StateDir::create(root, id, &state)?;
        let mut pid = 0;
        let mut devices_moved = false;
        let mut cgroup_made: Option<(Cgroup, Vec<PathBuf>)> = None;
        let mut cgroup_shared = false;
        let mut unit_started = false;
        let result = (|| -> Result<ContainerState> {
            let mut cgroup_fd = None;
            // Holds a new systemd scope until the init is in it.
            let mut placeholder = None;
            // Rootless, the scope's cgroup is not the caller's to clone into:
            // systemd moves the intermediate process in, and the init is
            // cloned there (the connection stays open for that: it has no
            // thread of its own for the fork to copy).
            let mut adopter = None;
            if let Some(unit) = &systemd_unit {
                let systemd = cgroups::systemd::Systemd::connect()?;
                let holder = cgroups::systemd::Placeholder::spawn()?;
                // A start that fails undoes itself; one refused (the name is in
                // use) must leave the unit alone.
                let rel = systemd.start_scope(unit, holder.pid(), &unit_props)?;
                unit_started = true;
                if crate::rootless() {
                    adopter = Some(systemd);
                } else {
                    // No thread of the D-Bus client may outlive this point: the init is forked.
                    drop(systemd);
                }
                placeholder = Some(holder);
                let cgroup = Cgroup::at(cg_mount.join(rel));
                if state.cgroup.as_ref() != Some(&cgroup.dir) {
                    state.cgroup = Some(cgroup.dir.clone());
                    dir.save(&state)?;
                }
                // Controllers systemd does not manage (hugetlb, rdma, misc) are
                // enabled along the path, as with cgroupfs.
                cgroup.enable(&cg_mount, &cg_controllers)?;
                cgroup.apply(&cg_writes)?;
                let fd = cgroup.open()?;
                if let Some(rules) = &device_rules {
                    cgroups::devices::attach(fd.as_fd(), &cgroups::devices::compile(rules))?;
                }
                cgroup_made = Some((cgroup, Vec::new()));
                if adopter.is_none() {
                    cgroup_fd = Some((fd, true));
                }
            } else if !no_cgroup {
                let (cgroup, created) = Cgroup::create(&cg_mount, &cg_rel, &cg_controllers)?;
                let created = cgroups::owned_parents(&cg_mount, &cg_rel, created);
                // A cgroup this create made holds nothing yet; one that was
                // there may hold processes or cgroups of others.
                let fresh = created.last() == Some(&cgroup.dir);
                if let Some(w) = if fresh { None } else { cgroup.in_use() } {
                    warnings.push(w);
                    cgroup_shared = true;
                }
                cgroup_made = Some((cgroup.clone(), created));
                if cgroup_shared
                    || state.cgroup_created != cgroup_made.as_ref().map(|c| c.1.clone()).unwrap_or_default()
                {
                    state.cgroup_shared = cgroup_shared;
                    state.cgroup_created = cgroup_made.as_ref().map(|c| c.1.clone()).unwrap_or_default();
                    dir.save(&state)?;
                }
                cgroup.apply(&cg_writes)?;
                let fd = cgroup.open()?;
                // Attached before the init exists, so the rules hold from its first step.
                // A cgroup that existed may still carry the programs of containers
                // that ran in it before: those would add their rules to ours.
                if let Some(rules) = &device_rules {
                    let program = cgroups::devices::compile(rules);
                    if let (true, Some(parent)) = (fresh, cgroups::shared_parent(&cg_mount, &cg_rel)) {
                        cgroups::devices::attach_shared(fd.as_fd(), &parent, &program)?;
                    } else if fresh {
                        cgroups::devices::attach(fd.as_fd(), &program)?;
                    } else {
                        cgroups::devices::replace(fd.as_fd(), &program)?;
                    }
                }
                cgroup_fd = Some((fd, fresh));
            }
            let mut rdt_tasks = None;
            if let Some((plan, mount)) = &rdt_plan {
                let groups = crate::rdt::setup(mount, plan, id)?;
                state.rdt = Some(groups.clone());
                dir.save(&state)?;
                rdt_tasks = Some(crate::rdt::open_tasks(&groups)?);
            }
            let fifo_path = dir.path().join(EXEC_FIFO);
            nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| Error::sys("mkfifo", fifo_path.display(), e))?;
            // Read-write, so the init's blocking read never sees end-of-file while no
            // `start` has opened the fifo yet.
            let fifo = nix::fcntl::open(
                &fifo_path,
                nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| Error::sys("open", fifo_path.display(), e))?;
            // SAFETY: `open` returned a new descriptor that nothing else owns.
            let fifo = unsafe { OwnedFd::from_raw_fd(fifo) };
            let keyring = (!opts.no_new_keyring).then(|| format!("_ses.{id}"));
            #[allow(deprecated)]
            let runtime_hooks = spec.hooks().as_ref().is_some_and(|h| {
                h.prestart().as_ref().is_some_and(|l| !l.is_empty())
                    || h.create_runtime().as_ref().is_some_and(|l| !l.is_empty())
            });
            let ctx = InitContext {
                spec,
                policies: &policies,
                session_keyring: keyring.as_deref(),
                bundle: &bundle,
                rootfs: &rootfs,
                process: &process,
                in_user_ns,
                late_ipc: namespaces.late_ipc,
                new_network: namespaces.clone_flags.contains(nix::sched::CloneFlags::CLONE_NEWNET),
                mount_ns,
                bind_sources: &bind_sources,
                no_pivot: opts.no_pivot,
                exec_fifo: fifo.as_raw_fd(),
                console_socket: opts.console_socket,
                preserve_fds: opts.preserve_fds,
                devices: &device_list,
                seccomp: seccomp.as_ref(),
                state_first: namespaces.new_user() || !net_devices.is_empty(),
                runtime_hooks,
            };
            let mut keep = vec![fifo.as_raw_fd()];
            keep.extend(opts.console_socket);
            keep.extend(bind_sources.iter().flatten().map(|b| b.tree.as_raw_fd()));
            let adopt = adopter
                .as_ref()
                .zip(systemd_unit.as_ref())
                .map(|(systemd, unit)| move |pid: i32| systemd.attach(&unit.name, "", pid as u32));
            let spawn_spec = SpawnSpec {
                namespaces: &namespaces,
                time_offsets: linux.time_offsets().as_ref(),
                cgroup: cgroup_fd.as_ref().map(|(fd, fresh)| CgroupEntry::new(fd.as_raw_fd(), *fresh)),
                keep_fds: keep,
                preserve_fds: opts.preserve_fds,
                stdio: opts.stdio,
                oom_score_adj: process.oom_score_adj,
                rdt_tasks: rdt_tasks.as_ref().map(|f| f.as_raw_fd()),
                adopt: adopt.as_ref().map(|f| f as &dyn Fn(i32) -> Result<()>),
            };
            let (init_pid, mut sync) = spawn(&spawn_spec, |sync| init::main(&ctx, sync))?;
            pid = init_pid;
            drop(placeholder.take());
            drop(spawn_spec);
            drop(adopter.take());
            drop(fifo);
            state.pid = pid;
            state.init_start_time = crate::state::proc_stat(pid).map(|(_, t)| t).unwrap_or(0);
            state.warnings = warnings.clone();
            // Recorded before anything else can fail, so `delete --force` finds the
            // process even if this `create` is killed.
            dir.save(&state)?;
            if namespaces.new_user() {
                write_id_maps(
                    pid,
                    linux.uid_mappings().as_deref().unwrap_or_default(),
                    linux.gid_mappings().as_deref().unwrap_or_default(),
                )?;
            }
            if !net_devices.is_empty() {
                let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                    .map_err(|e| Error::io("open", "the container's network namespace", e))?;
                crate::network::attach(&net_devices, netns.as_fd())?;
                devices_moved = true;
            }
            let state_json = state.oci_json().to_string();
            send_or_why(&mut sync, &Msg::State(state_json.clone()), pid)?;
            if runtime_hooks {
                sync.expect(&Msg::RunRuntimeHooks, "create")?;
                if let Some(h) = spec.hooks() {
                    #[allow(deprecated)]
                    hooks::run_all("prestart", h.prestart().as_deref().unwrap_or_default(), &state_json)?;
                    hooks::run_all("createRuntime", h.create_runtime().as_deref().unwrap_or_default(), &state_json)?;
                }
                send_or_why(&mut sync, &Msg::RuntimeHooksDone, pid)?;
            }
            if let Some(filter) = seccomp.as_ref().filter(|s| s.notify) {
                let fd = sync.recv_fd("create")?;
                crate::seccomp::send_to_listener(filter, &fd, pid, state.oci_json())?;
            }
            sync.expect(&Msg::Ready, "create").map_err(|e| match (&seccomp, e) {
                (Some(f), Error::Init(m)) if f.notify && m.ends_with("exited during setup") => Error::Init(format!(
                    "{m} (a linux.seccomp notify filter is loaded before the ready report: it must let write through)"
                )),
                (_, e) => e,
            })?;
            state.status = Status::Created;
            dir.save(&state)?;
            if let Some(pid_file) = &opts.pid_file {
                write_pid_file(pid_file, pid)?;
            }
            if let Some(socket) = opts.pidfd_socket {
                crate::process::send_pidfd(socket, pid)?;
            }
            Ok(state.clone())
        })();
        match result {
            Ok(state) => Ok(state),
            Err(e) => {
                if pid > 0 {
                    // Devices go back before their namespace ends (virtual ones
                    // would be destroyed with it).
                    if devices_moved {
                        if let Ok(netns) = std::fs::File::open(format!("/proc/{pid}/ns/net")) {
                            crate::network::detach(&net_devices, netns.as_fd());
                        }
                    }
                    crate::process::reap(pid);
                    // The spec continues a failed create at delete: poststop hooks
                    // undo what earlier hooks (networking, say) set up.
                    if let Ok(Some(mut st)) = dir.load() {
                        st.status = Status::Stopped;
                        let json = st.oci_json().to_string();
                        for h in st.config.hooks().as_ref().and_then(|h| h.poststop().clone()).unwrap_or_default() {
                            let _ = hooks::run("poststop", &h, &json);
                        }
                    }
                }
                if let Some(groups) = &state.rdt {
                    crate::rdt::remove(groups);
                }
                match &cgroup_made {
                    Some((cg, _)) if unit_started => {
                        let _ = cg.kill_all();
                    }
                    Some((cg, created)) => {
                        let _ = cg.remove(created);
                    }
                    // Failed on the way to making it: the directories made so far.
                    None => cgroups::remove_empty(&state.cgroup_created),
                }
                if let (Some(unit), true) = (&systemd_unit, unit_started) {
                    // The scope goes with everything in it; a failed create leaves no unit.
                    let _ = cgroups::systemd::Systemd::connect().and_then(|s| s.stop_unit(&unit.name));
                }
                let _ = dir.remove();
                Err(e)
            }
        }
    }
}

/// Sends `msg` to the container process; when it is gone, says why: the
/// error it sent before it exited (it sets itself up while the runtime
/// records it, so it can fail before reading anything), or how it ended.
fn send_or_why(sync: &mut crate::sync::SyncChannel, msg: &Msg, pid: i32) -> Result<()> {
    sync.send(msg).map_err(|e| match sync.recv() {
        Ok(Some(Msg::Error(why))) => Error::Init(why),
        _ => crate::process::setup_failure(pid, "create", e),
    })
}

/// Upper bound of `--preserve-fds` (far above any fd limit a caller can have).
pub const MAX_PRESERVE_FDS: u32 = 1 << 20;

/// Descriptors the caller promised to pass must really be open: otherwise the
/// runtime's own descriptors could land on those numbers and leak into the container.
pub fn check_preserved_fds(n: u32) -> Result<()> {
    if n > MAX_PRESERVE_FDS {
        return Err(Error::config("--preserve-fds", format!("{n} is more than {MAX_PRESERVE_FDS}")));
    }
    for fd in 3..3 + n as RawFd {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)
            .map_err(|e| Error::sys("fcntl", format!("--preserve-fds: fd {fd}"), e))?;
    }
    Ok(())
}

/// Writes `pid` to `path` atomically (temporary file, then rename).
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, pid.to_string()).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

/// The owner field of the state: empty for root, as runc reports it, else the uid.
fn owner() -> String {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        String::new()
    } else {
        uid.to_string()
    }
}
