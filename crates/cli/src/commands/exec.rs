//! `strata exec`.

use crate::foreground;
use anyhow::Context;
use oci_spec::runtime::{Capabilities, Capability, Process};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use strata_runtime::{Container, ExecOptions};

/// Flags of `exec`, as runc's.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON file with the process to run (overrides the other process flags).
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket that receives the terminal's master fd.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (KEY=VALUE).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// User as uid[:gid].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Supplementary group ids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Extra capabilities.
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Return once the process is started.
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Pass N extra file descriptors (3..3+N) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// SELinux label of the process.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// AppArmor profile of the process.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Run the process in this (existing) cgroup below the container's:
    /// [CONTROLLER[,CONTROLLER]:]PATH.
    #[arg(long)]
    pub cgroup: Vec<String>,
    /// Exec into a paused container too (the process starts once it is resumed).
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// Unix socket that receives a pidfd of the process.
    #[arg(long = "pidfd-socket")]
    pub pidfd_socket: Option<PathBuf>,
    /// Accepted for runc compatibility: strata never makes itself a subreaper.
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs `strata exec`; the exit code is the process's.
pub fn run(args: Args, root: &Path) -> anyhow::Result<i32> {
    let container = Container::load(root, &args.id)?;
    let process = build_process(&args, &container)?;
    let state = container.state()?;
    if crate::vm::is_vm(&state) {
        let refused = [
            (args.preserve_fds > 0, "--preserve-fds"),
            (args.pidfd_socket.is_some(), "--pidfd-socket"),
            (!args.cgroup.is_empty(), "--cgroup"),
        ];
        if let Some((_, flag)) = refused.iter().find(|(set, _)| *set) {
            anyhow::bail!("{flag} is not supported in a VM container yet");
        }
        let console = args.console_socket.as_deref().map(super::connect_console).transpose()?;
        return crate::vm::exec(crate::vm::ExecVm {
            console_socket: console.as_ref().map(|c| c.as_raw_fd()),
            state: &state,
            root,
            process: &process,
            detach: args.detach,
            pid_file: args.pid_file.clone(),
        })
        .with_context(|| format!("exec in container {:?}", args.id));
    }
    if container.exec_exposes_runtime(&process) {
        strata_runtime::exe::reexec_from_sealed_copy()?;
    }
    let terminal = process.terminal().unwrap_or(false);
    if !args.detach {
        foreground::block_signals()?;
    }
    let (console, internal) = match (&args.console_socket, terminal) {
        (Some(p), _) => (Some(super::connect_console(p)?), None),
        (None, true) if args.detach => {
            anyhow::bail!("a terminal with --detach needs --console-socket")
        }
        (None, true) => {
            let (ours, theirs) = UnixStream::pair().context("socketpair for the terminal")?;
            (Some(theirs.into()), Some(ours))
        }
        (None, false) => (None, None),
    };
    // cgroup v2 has one tree: every --cgroup must name the same path.
    let mut paths: Vec<std::path::PathBuf> =
        args.cgroup.iter().map(|c| strata_runtime::container::sub_cgroup(c)).collect::<Result<_, _>>()?;
    paths.dedup();
    if paths.len() > 1 {
        anyhow::bail!("--cgroup: cgroup v2 has one tree, so every --cgroup must name the same path: {paths:?}");
    }
    let pidfd = args.pidfd_socket.as_deref().map(|p| super::connect_socket(p, "pidfd socket")).transpose()?;
    let opts = ExecOptions {
        cgroup: args.cgroup.first().cloned(),
        ignore_paused: args.ignore_paused,
        pidfd_socket: pidfd.as_ref().map(|c| c.as_raw_fd()),
        stdio: None,
        console_socket: console.as_ref().map(|c: &std::os::fd::OwnedFd| c.as_raw_fd()),
        pid_file: args.pid_file.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        preserve_fds: args.preserve_fds,
    };
    let pid = container.exec(&process, &opts).with_context(|| format!("exec in container {:?}", args.id))?;
    if let Ok(plan) = strata_runtime::capabilities::CapabilityPlan::new(process.capabilities().as_ref()) {
        for c in plan.unknown_to_kernel {
            eprintln!("strata: warning: process.capabilities: {c} is unknown to the running kernel; dropped");
        }
    }
    drop(console);
    if args.detach {
        return Ok(0);
    }
    let master = internal.map(|s| strata_runtime::tty::recv_master(s.as_raw_fd())).transpose()?;
    foreground::wait(pid, master)
}

/// The process to run: from --process, or the container's own process with the
/// command line's changes (as runc does).
fn build_process(args: &Args, container: &Container) -> anyhow::Result<Process> {
    let mut p = build_base_process(args, container)?;
    if let Some(label) = &args.process_label {
        p.set_selinux_label(Some(label.clone()));
    }
    if let Some(profile) = &args.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    Ok(p)
}

fn build_base_process(args: &Args, container: &Container) -> anyhow::Result<Process> {
    if let Some(path) = &args.process {
        let data = strata_runtime::config::read_regular_file(path, 16 << 20)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
        return Ok(strata_runtime::config::parse_process(&data, path)?);
    }
    if args.command.is_empty() {
        anyhow::bail!("exec needs a command (or --process)");
    }
    let state = container.state()?;
    let mut p = state.config.process().clone().unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    for e in &args.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p.set_env(Some(env));
    if let Some(u) = &args.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        let user = p.user_mut();
        user.set_uid(uid.parse().with_context(|| format!("--user {u:?}: uid must be a number"))?);
        user.set_gid(
            gid.map(|g| g.parse())
                .transpose()
                .with_context(|| format!("--user {u:?}: gid must be a number"))?
                .unwrap_or(0),
        );
    }
    if !args.additional_gids.is_empty() {
        p.user_mut().set_additional_gids(Some(args.additional_gids.clone()));
    }
    if !args.cap.is_empty() {
        // Without capabilities in the config, start from none (the library type's
        // default would grant a few in every set, ambient included).
        let none = || Some(Capabilities::new());
        let mut caps = p.capabilities().clone().unwrap_or_else(|| {
            let mut c = oci_spec::runtime::LinuxCapabilities::default();
            c.set_bounding(none());
            c.set_effective(none());
            c.set_permitted(none());
            c.set_inheritable(none());
            c.set_ambient(none());
            c
        });
        let mut extra = Capabilities::new();
        for c in &args.cap {
            let cap: Capability = serde_json::from_value(serde_json::Value::String(c.clone()))
                .map_err(|_| anyhow::anyhow!("--cap: unknown capability {c:?}"))?;
            extra.insert(cap);
        }
        let add = |set: &Option<Capabilities>| {
            Some(set.clone().unwrap_or_default().union(&extra).copied().collect::<Capabilities>())
        };
        caps.set_bounding(add(caps.bounding()));
        caps.set_effective(add(caps.effective()));
        caps.set_permitted(add(caps.permitted()));
        p.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}
