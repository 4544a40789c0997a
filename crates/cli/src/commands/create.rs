//! `strata create`.

use anyhow::Context;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use strata_runtime::{Container, CreateOptions};

/// Flags of `create` (shared by `run`).
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Bundle directory (default: the current directory).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the terminal's master fd.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's init pid to.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Pass N extra file descriptors (3..3+N) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Do not use pivot_root (for a rootfs on ramfs).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Keep the caller's session keyring (by default the container gets a new one).
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Unix socket that receives a pidfd of the container's init.
    #[arg(long = "pidfd-socket")]
    pub pidfd_socket: Option<PathBuf>,
    /// Run the bundle in a microVM with its own kernel (also asked for by the
    /// annotation run.strata.isolation: "vm").
    #[arg(long)]
    pub vm: bool,
    /// The VM's guest kernel (default: $STRATA_VM_KERNEL, else the one
    /// hack/vm-assets.sh cached).
    #[arg(long = "vm-kernel", value_name = "PATH")]
    pub vm_kernel: Option<PathBuf>,
    /// Container id.
    pub id: String,
    /// From the global `--cgroup-manager disabled`.
    #[arg(skip)]
    pub no_cgroup: bool,
    /// From the global `--systemd-cgroup` (or `--cgroup-manager systemd`).
    #[arg(skip)]
    pub systemd_cgroup: bool,
}

impl CreateArgs {
    /// Library options; `console` and `pidfd` are the connected console and
    /// pidfd sockets, if any.
    pub fn options(
        &self,
        console: Option<i32>,
        pidfd: Option<i32>,
        spec: Option<oci_spec::runtime::Spec>,
    ) -> CreateOptions {
        CreateOptions {
            pidfd_socket: pidfd,
            no_new_keyring: self.no_new_keyring,
            stdio: None,
            spec,
            no_cgroup: self.no_cgroup,
            systemd_cgroup: self.systemd_cgroup,
            bundle: self.bundle.clone(),
            console_socket: console,
            pid_file: self.pid_file.as_ref().map(|p| absolute(p)),
            preserve_fds: self.preserve_fds,
            no_pivot: self.no_pivot,
        }
    }
}

impl CreateArgs {
    /// Flags a VM container cannot take yet, refused by name.
    pub fn refuse_for_vm(&self) -> anyhow::Result<()> {
        let refused = [(self.preserve_fds > 0, "--preserve-fds"), (self.pidfd_socket.is_some(), "--pidfd-socket")];
        if let Some((_, flag)) = refused.iter().find(|(set, _)| *set) {
            anyhow::bail!("{flag} is not supported for a VM container yet");
        }
        Ok(())
    }

    /// Options of a VM container's create.
    pub fn vm_options<'a>(
        &'a self,
        spec: oci_spec::runtime::Spec,
        root: &'a Path,
        console: Option<i32>,
    ) -> crate::vm::CreateVm<'a> {
        crate::vm::CreateVm {
            id: &self.id,
            bundle: &self.bundle,
            spec,
            kernel: self.vm_kernel.as_deref(),
            root,
            pid_file: self.pid_file.clone(),
            no_cgroup: self.no_cgroup || self.systemd_cgroup,
            console_socket: console,
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Runs `strata create`.
pub fn run(args: CreateArgs, root: &Path, log: &crate::logging::Logger) -> anyhow::Result<i32> {
    let spec = load_and_protect(&args.bundle)?;
    let vm_asked = match &spec {
        // (A container that joins a VM container's namespaces runs in its VM.)
        Some(s) => crate::vm::wants_vm(s)? || crate::vm::joins_vm(root, s)?,
        None => false,
    };
    if args.vm || vm_asked {
        let spec = match spec {
            Some(s) => s,
            None => strata_runtime::config::load(&args.bundle).context("load config.json")?,
        };
        args.refuse_for_vm()?;
        let console = args.console_socket.as_deref().map(super::connect_console).transpose()?;
        let state = crate::vm::create(args.vm_options(spec, root, console.as_ref().map(|c| c.as_raw_fd())))
            .with_context(|| format!("create container {:?}", args.id))?;
        state.warnings.iter().for_each(|w| log.warn(w));
        return Ok(0);
    }
    let console = args.console_socket.as_deref().map(super::connect_console).transpose()?;
    let pidfd = args.pidfd_socket.as_deref().map(|p| super::connect_socket(p, "pidfd socket")).transpose()?;
    let opts = args.options(console.as_ref().map(|c| c.as_raw_fd()), pidfd.as_ref().map(|c| c.as_raw_fd()), spec);
    let state = Container::create(root, &args.id, &opts).with_context(|| format!("create container {:?}", args.id))?;
    state.warnings.iter().for_each(|w| log.warn(w));
    log.debug(&format!(
        "created {:?}: init pid {}, bundle {}, cgroup {}",
        state.id,
        state.pid,
        state.bundle.display(),
        state.cgroup.as_ref().map(|c| c.display().to_string()).unwrap_or_else(|| "none".into())
    ));
    Ok(0)
}

/// Loads the bundle's config and re-executes from a sealed copy of the binary
/// when the container could reach this one through /proc/PID/exe (see
/// `strata_runtime::exe`); before anything is opened or connected. A config that
/// does not load is left for `create` to report.
pub fn load_and_protect(bundle: &Path) -> anyhow::Result<Option<oci_spec::runtime::Spec>> {
    let Ok(spec) = strata_runtime::config::load(bundle) else { return Ok(None) };
    if strata_runtime::exe::spec_exposes_runtime(&spec) {
        strata_runtime::exe::reexec_from_sealed_copy()?;
    }
    Ok(Some(spec))
}
