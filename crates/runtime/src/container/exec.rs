//! `exec`: run another process in a running container's namespaces.

use super::{wrong_status, Container};
use crate::namespaces::{proc_name, NamespacePlan, ALL};
use crate::process::exec::{self, ExecContext};
use crate::process::plan::ProcessPlan;
use crate::process::{spawn, CgroupEntry, SpawnSpec};
use crate::{Error, Result, Status};
use oci_spec::runtime::Process;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Options of `exec`.
#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    /// Connected unix socket that receives the terminal master.
    pub console_socket: Option<RawFd>,
    /// File to write the new process's host pid to.
    pub pid_file: Option<PathBuf>,
    /// Caller descriptors 3..3+N passed to the process.
    pub preserve_fds: u32,
    /// Descriptors for the process's stdin, stdout and stderr (default: the
    /// caller's own). Ignored with a terminal.
    pub stdio: Option<[RawFd; 3]>,
    /// A cgroup below the container's to run the process in (`exec --cgroup`):
    /// a relative path, optionally after `CONTROLLER:` (cgroup v2 has one tree,
    /// so the controller names only select which entries apply).
    pub cgroup: Option<String>,
    /// Exec into a paused container too (`exec --ignore-paused`): the process
    /// starts once the container is resumed, and exec waits for that.
    pub ignore_paused: bool,
    /// Connected unix socket that receives a pidfd of the process.
    pub pidfd_socket: Option<RawFd>,
}

/// The sub-cgroup `exec --cgroup` names, checked: `PATH` or
/// `CONTROLLER[,CONTROLLER...]:PATH`, a relative path without `..`.
pub fn sub_cgroup(spec: &str) -> Result<PathBuf> {
    let path = spec.rsplit_once(':').map_or(spec, |(_, p)| p);
    let rel = Path::new(path.trim_start_matches('/'));
    let ok = !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !ok {
        return Err(Error::config("--cgroup", format!("{spec:?} is not a cgroup below the container's")));
    }
    Ok(rel.to_path_buf())
}

impl Container {
    /// Starts `process` inside the container; returns its host pid. The process is
    /// a child of the caller, which reaps it.
    pub fn exec(&self, process: &Process, opts: &ExecOptions) -> Result<i32> {
        let plan = ProcessPlan::new(process, "process")?;
        if plan.terminal && opts.console_socket.is_none() {
            return Err(Error::config("process.terminal", "a terminal needs --console-socket"));
        }
        crate::container::check_preserved_fds(opts.preserve_fds)?;
        let st = self.state()?;
        let paused_ok = opts.ignore_paused && st.status == Status::Paused;
        if !matches!(st.status, Status::Created | Status::Running) && !paused_ok {
            let reason = if st.status == Status::Paused {
                "cannot exec in a paused container (resume it, or use --ignore-paused)"
            } else {
                "cannot exec in a container that is not running"
            };
            return Err(wrong_status(&st, reason));
        }
        let namespaces = container_namespaces(st.pid, &st.config)?;
        // The init must still be the same process once its namespaces are open.
        if !crate::state::process_alive(st.pid, st.init_start_time) {
            return Err(Error::WrongStatus {
                id: st.id,
                status: Status::Stopped,
                reason: "cannot exec in a stopped container",
            });
        }
        if crate::exe::has_ptrace(process.capabilities().as_ref()) {
            // Later execs must assume a process that can ptrace them.
            let marker = self.root.join(&self.id).join(crate::exe::PTRACE_EXEC_MARKER);
            std::fs::write(&marker, b"").map_err(|e| Error::io("write", &marker, e))?;
        }
        let mut cgroup_ours = st.cgroup.as_ref().is_some_and(|dir| st.cgroup_created.contains(dir));
        let cgroup_fd = match (st.cgroup(), &opts.cgroup) {
            (None, Some(_)) => return Err(Error::config("--cgroup", "the container has no cgroup")),
            (Some(c), Some(sub)) => {
                // A cgroup the container made for itself: entered by migration
                // (it may have had cgroup.kill written).
                cgroup_ours = false;
                let dir = c.dir.join(sub_cgroup(sub)?);
                let sub_cg = crate::cgroups::Cgroup::at(dir.clone());
                if !dir.is_dir() {
                    return Err(Error::config("--cgroup", format!("{} does not exist", dir.display())));
                }
                Some(sub_cg.open()?)
            }
            (c, None) => c.map(|c| c.open()).transpose()?,
        };
        // Rootless, a container's systemd scope is entered through the user's
        // systemd instance, which moves the intermediate process in.
        let adopter = match &st.systemd_unit {
            Some(_) if crate::rootless() => Some(crate::cgroups::systemd::Systemd::connect()?),
            _ => None,
        };
        let cgroup_fd = if adopter.is_some() { None } else { cgroup_fd };
        let sub = opts.cgroup.as_deref().map(sub_cgroup).transpose()?.map(|p| format!("/{}", p.display()));
        let adopt = adopter
            .as_ref()
            .zip(st.systemd_unit.as_ref())
            .map(|(systemd, unit)| move |pid: i32| systemd.attach(unit, sub.as_deref().unwrap_or(""), pid as u32));
        let rdt_tasks = st.rdt.as_ref().map(crate::rdt::open_tasks).transpose()?;
        // Like runc, exec'd processes get the container's seccomp filter.
        let seccomp = st
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(crate::seccomp::SeccompPlan::new)
            .transpose()?;
        let policies = crate::process::policies::Policies::for_host(st.config.linux().as_ref())?;
        let ctx = ExecContext {
            policies: &policies,
            process: &plan,
            console_socket: opts.console_socket,
            preserve_fds: opts.preserve_fds,
            seccomp: seccomp.as_ref(),
        };
        let spawn_spec = SpawnSpec {
            namespaces: &namespaces,
            time_offsets: None,
            cgroup: cgroup_fd.as_ref().map(|fd| CgroupEntry::new(fd.as_raw_fd(), cgroup_ours)),
            keep_fds: opts.console_socket.into_iter().collect(),
            preserve_fds: opts.preserve_fds,
            stdio: opts.stdio,
            oom_score_adj: plan.oom_score_adj,
            rdt_tasks: rdt_tasks.as_ref().map(|f| f.as_raw_fd()),
            adopt: adopt.as_ref().map(|f| f as &dyn Fn(i32) -> Result<()>),
        };
        let (pid, mut sync) = spawn(&spawn_spec, |sync| exec::main(&ctx, sync))?;
        drop(spawn_spec);
        drop(adopt);
        drop(adopter);
        if let Some(filter) = seccomp.as_ref().filter(|s| s.notify) {
            let sent =
                sync.recv_fd("exec").and_then(|fd| crate::seccomp::send_to_listener(filter, &fd, pid, st.oci_json()));
            if let Err(e) = sent {
                crate::process::reap(pid);
                return Err(e);
            }
        }
        // End-of-file means execve succeeded (the channel is close-on-exec).
        match sync.recv() {
            Ok(None) => {}
            Ok(Some(crate::sync::Msg::Error(e))) => {
                crate::process::reap(pid);
                return Err(Error::Init(e));
            }
            Ok(Some(other)) => {
                crate::process::reap(pid);
                return Err(Error::Init(format!("exec: unexpected message {other:?}")));
            }
            Err(e) => {
                crate::process::reap(pid);
                return Err(Error::io("read", "sync channel", e));
            }
        }
        if let Some(p) = &opts.pid_file {
            super::create::write_pid_file(p, pid)?;
        }
        if let Some(socket) = opts.pidfd_socket {
            crate::process::send_pidfd(socket, pid)?;
        }
        Ok(pid)
    }
}

impl Container {
    /// Whether container processes could reach the runtime's binary while `exec`
    /// sets `process` up (see [`crate::exe`]): the container's config says so, or
    /// this or an earlier exec hands CAP_SYS_PTRACE to a process outside a user
    /// namespace.
    pub fn exec_exposes_runtime(&self, process: &Process) -> bool {
        let Ok(st) = self.state() else { return false };
        if crate::exe::spec_exposes_runtime(&st.config) {
            return true;
        }
        let userns = st
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User));
        !userns
            && (crate::exe::has_ptrace(process.capabilities().as_ref())
                || self.root.join(&self.id).join(crate::exe::PTRACE_EXEC_MARKER).exists())
    }
}

/// The namespaces of `pid` to join: those the config made for the container,
/// and any other of its namespaces that differs from the runtime's own.
fn container_namespaces(pid: i32, config: &oci_spec::runtime::Spec) -> Result<NamespacePlan> {
    // The pidfd pins the process: the caller checks it is still the init.
    let pidfd = crate::sys::pidfd_open(pid).map_err(|e| Error::sys("pidfd_open", format!("process {pid}"), e))?;
    let listed = config.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    let mut types = Vec::new();
    for t in ALL {
        // A new one differs from ours; a user namespace is compared anyway
        // (joining one's own is refused).
        let new = t != oci_spec::runtime::LinuxNamespaceType::User
            && listed.iter().any(|n| n.typ() == t && n.path().is_none());
        if new || differs(pid, t) {
            types.push(t);
        }
    }
    Ok(NamespacePlan {
        join_process: Some(crate::namespaces::ProcessNamespaces { pid, pidfd, types }),
        ..Default::default()
    })
}

/// Whether namespace `t` of `pid` is another than the runtime's (false when
/// the kernel has none of that type).
fn differs(pid: i32, t: oci_spec::runtime::LinuxNamespaceType) -> bool {
    let name = proc_name(t);
    let Ok(theirs) = std::fs::metadata(format!("/proc/{pid}/ns/{name}")) else {
        return false;
    };
    let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).ok();
    !ours.is_some_and(|m| m.ino() == theirs.ino() && m.dev() == theirs.dev())
}
