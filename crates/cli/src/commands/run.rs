//! `strata run`: create + start, then (unless --detach) wait and delete.

use crate::foreground;
use crate::logging::Logger;
use anyhow::Context;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use strata_runtime::Container;

/// Flags of `run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub create: super::create::CreateArgs,
    /// Return once the container is started.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container's state after it exits.
    #[arg(long)]
    pub keep: bool,
    /// Accepted for runc compatibility: strata never makes itself a subreaper
    /// (the container's init reaps its own orphans).
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
}

/// Runs `strata run`; the exit code is the container process's.
pub fn run(args: Args, root: &Path, log: &Logger) -> anyhow::Result<i32> {
    let id = args.create.id.clone();
    let spec = super::create::load_and_protect(&args.create.bundle)?;
    let vm_asked = match &spec {
        // (A container that joins a VM container's namespaces runs in its VM.)
        Some(s) => crate::vm::wants_vm(s)? || crate::vm::joins_vm(root, s)?,
        None => false,
    };
    if args.create.vm || vm_asked {
        return run_vm(args, spec, root, log);
    }
    if !args.detach {
        foreground::block_signals()?;
    }
    // Without --console-socket, a terminal is proxied by this process: the init
    // sends the master over an internal socket pair.
    let (console, internal) = match &args.create.console_socket {
        Some(p) => (Some(super::connect_console(p)?), None),
        None => {
            let (ours, theirs) = UnixStream::pair().context("socketpair for the terminal")?;
            (Some(theirs.into()), Some(ours))
        }
    };
    let pidfd = args.create.pidfd_socket.as_deref().map(|p| super::connect_socket(p, "pidfd socket")).transpose()?;
    let opts =
        args.create.options(console.as_ref().map(|c| c.as_raw_fd()), pidfd.as_ref().map(|c| c.as_raw_fd()), spec);
    let state = Container::create(root, &id, &opts).with_context(|| format!("create container {id:?}"))?;
    state.warnings.iter().for_each(|w| log.warn(w));
    drop(console);
    let terminal = state.config.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    let container = Container::load(root, &id)?;
    let master = match (&internal, terminal) {
        (Some(sock), true) => {
            if args.detach {
                let _ = container.delete(true);
                anyhow::bail!("a terminal with --detach needs --console-socket");
            }
            // A terminal that does not arrive leaves no container behind.
            match strata_runtime::tty::recv_master(sock.as_raw_fd()) {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = container.delete(true);
                    return Err(e.into());
                }
            }
        }
        _ => None,
    };
    drop(internal);
    start_and_wait(&container, state.pid, master, &args, log)
}

/// Starts a created container and, unless --detach, waits for its process
/// and deletes it (unless --keep); a failed start deletes it.
fn start_and_wait(
    container: &Container,
    pid: i32,
    master: Option<OwnedFd>,
    args: &Args,
    log: &Logger,
) -> anyhow::Result<i32> {
    match container.start() {
        Ok(warnings) => warnings.iter().for_each(|w| log.warn(w)),
        Err(e) => {
            let _ = container.delete(true);
            return Err(anyhow::Error::new(e).context(format!("start container {:?}", container.id())));
        }
    }
    if args.detach {
        return Ok(0);
    }
    let code = foreground::wait(pid, master)?;
    if !args.keep {
        if let Ok(warnings) = container.delete(true) {
            warnings.iter().for_each(|w| log.warn(w));
        }
    }
    Ok(code)
}

/// `run` of a VM container: the same create, start, wait and delete, with
/// the VM's monitor as the container's process.
fn run_vm(args: Args, spec: Option<oci_spec::runtime::Spec>, root: &Path, log: &Logger) -> anyhow::Result<i32> {
    let id = args.create.id.clone();
    let spec = match spec {
        Some(s) => s,
        None => strata_runtime::config::load(&args.create.bundle).context("load config.json")?,
    };
    args.create.refuse_for_vm()?;
    if !args.detach {
        foreground::block_signals()?;
    }
    // As for a container: without --console-socket, a terminal is proxied here.
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    let (console, internal) = match &args.create.console_socket {
        Some(p) => (Some(super::connect_console(p)?), None),
        None if terminal && args.detach => anyhow::bail!("a terminal with --detach needs --console-socket"),
        None if terminal => {
            let (ours, theirs) = UnixStream::pair().context("socketpair for the terminal")?;
            (Some(OwnedFd::from(theirs)), Some(ours))
        }
        None => (None, None),
    };
    let state = crate::vm::create(args.create.vm_options(spec, root, console.as_ref().map(|c| c.as_raw_fd())))
        .with_context(|| format!("create container {id:?}"))?;
    state.warnings.iter().for_each(|w| log.warn(w));
    drop(console);
    let container = Container::load(root, &id)?;
    // A terminal that does not arrive leaves no VM behind.
    let master = match internal.map(|s| strata_runtime::tty::recv_master(s.as_raw_fd())).transpose() {
        Ok(m) => m,
        Err(e) => {
            let _ = container.delete(true);
            return Err(e.into());
        }
    };
    start_and_wait(&container, state.pid, master, &args, log)
}
