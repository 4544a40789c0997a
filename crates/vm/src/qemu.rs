//! The portable VMM: QEMU's `microvm` machine as a child process, with the
//! same kernel, initramfs, root disk and agent channel as the in-process one.
//! `accel=kvm` where this host's KVM runs Linux guests, TCG otherwise.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// How QEMU runs the guest's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (slow, works everywhere).
    Tcg,
}

/// A guest to start.
pub struct QemuConfig {
    /// Uncompressed `vmlinux` with a PVH note.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Arguments added to the kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// Disks: image and read-only flag, `vda` first.
    pub disks: Vec<(PathBuf, bool)>,
    /// A folder shared with the guest (virtio-9p, tagged [`SHARE_TAG`]).
    pub share: Option<PathBuf>,
    /// A NIC: the descriptor of a tap device of this process's, and the
    /// guest's MAC address.
    pub net: Option<(RawFd, [u8; 6])>,
    /// Describe the devices in ACPI tables too. A distribution kernel (Debian's)
    /// takes virtio-mmio devices only from there: it is built without
    /// command-line devices, which the minimal kernel uses and boots faster with.
    pub acpi: bool,
    /// Where the serial log and QEMU's own messages go.
    pub run_dir: PathBuf,
    /// How to run it.
    pub accel: Accel,
}

/// A running QEMU and the host end of its agent channel.
pub struct QemuVm {
    /// The QEMU process (it dies with its parent).
    pub child: Child,
    /// The agent channel.
    pub agent: UnixStream,
    /// The kernel's log (the 8250).
    pub serial_log: PathBuf,
    /// QEMU's own messages.
    pub qemu_log: PathBuf,
}

/// The mount tag of the shared folder: `mount -t 9p -o trans=virtio strata DIR`.
pub const SHARE_TAG: &str = "strata";

/// `path` as a value in QEMU's option syntax, where a comma is written twice.
fn option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The descriptor QEMU finds its end of the agent channel on.
const AGENT_FD: i32 = 3;
/// The descriptor QEMU finds the NIC's tap device on.
const TAP_FD: i32 = 4;

/// The command line QEMU gets for `cfg`.
pub fn args(cfg: &QemuConfig) -> Vec<String> {
    let accel = match cfg.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    let mut cmdline = String::from("console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2000000 strata.agent=hvc0");
    if !cfg.cmdline.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&cfg.cmdline);
    }
    let mut a: Vec<String> = vec![
        "-M".into(),
        format!(
            "microvm,accel={accel},acpi={},pit=on,pic=on,rtc=off,x-option-roms=off",
            if cfg.acpi { "on" } else { "off" }
        ),
        "-m".into(),
        format!("{}M", cfg.memory_mib),
        "-smp".into(),
        cfg.vcpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        cfg.kernel.display().to_string(),
        "-initrd".into(),
        cfg.initrd.display().to_string(),
        "-append".into(),
        cmdline,
        "-serial".into(),
        format!("file:{}", cfg.run_dir.join("serial.log").display()),
        "-device".into(),
        "virtio-serial-device".into(),
        "-chardev".into(),
        // A connected socket QEMU inherits: no path (whose length the state
        // directory's could exceed), no listener and nothing to wait for.
        format!("socket,id=agent,fd={AGENT_FD}"),
        "-device".into(),
        "virtconsole,chardev=agent".into(),
    ];
    if cfg.accel == Accel::Kvm {
        a.extend(["-cpu".into(), "host".into()]);
    }
    for (i, (disk, ro)) in cfg.disks.iter().enumerate() {
        a.push("-drive".into());
        a.push(format!(
            "id=disk{i},file={},format=raw,if=none,readonly={}",
            option_value(disk),
            if *ro { "on" } else { "off" }
        ));
        a.push("-device".into());
        a.push(format!("virtio-blk-device,drive=disk{i}"));
    }
    if let Some(dir) = &cfg.share {
        // passthrough: the guest's owners and modes are the files' own (QEMU
        // runs as root); remap: the mounts below a shared bind are told apart.
        a.push("-fsdev".into());
        a.push(format!("local,id=share,path={},security_model=passthrough,multidevs=remap", option_value(dir)));
        a.push("-device".into());
        a.push(format!("virtio-9p-device,fsdev=share,mount_tag={SHARE_TAG}"));
    }
    if let Some((_, mac)) = &cfg.net {
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        a.push("-netdev".into());
        a.push(format!("tap,id=net0,fd={TAP_FD}"));
        a.push("-device".into());
        a.push(format!("virtio-net-device,netdev=net0,mac={}", mac.join(":")));
    }
    a
}

/// Starts QEMU with the host's end of its agent channel.
pub fn launch(cfg: &QemuConfig) -> Result<QemuVm, Error> {
    for p in [&cfg.kernel, &cfg.initrd] {
        if !p.exists() {
            return Err(Error::Kernel {
                path: p.clone(),
                what: "does not exist (hack/vm-assets.sh builds the kernel)".into(),
            });
        }
    }
    let (ours, theirs) = UnixStream::pair().map_err(|e| Error::Host(format!("socketpair: {e}")))?;
    let theirs_fd = theirs.as_raw_fd();
    let tap_fd = cfg.net.map(|(fd, _)| fd);
    let mut cmd = Command::new(QEMU);
    // QEMU's own messages go to a file: a pipe nobody reads could fill and
    // stall it.
    let qemu_log = cfg.run_dir.join("qemu.log");
    let log = std::fs::File::create(&qemu_log).map_err(|e| Error::Host(format!("{}: {e}", qemu_log.display())))?;
    cmd.args(args(cfg)).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    // SAFETY: prctl, dup2 and fcntl only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Each to its place, by way of descriptors above both (either
            // may sit where the other goes); dup2 leaves them inheritable.
            // (No allocation between fork and exec: fixed arrays.)
            let moves = [Some((theirs_fd, AGENT_FD)), tap_fd.map(|fd| (fd, TAP_FD))];
            let mut high = [None; 2];
            for (slot, (fd, to)) in high.iter_mut().zip(moves).filter_map(|(s, m)| m.map(|m| (s, m))) {
                let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 16);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                *slot = Some((h, to));
            }
            for (h, to) in high.into_iter().flatten() {
                if libc::dup2(h, to) != to {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(h);
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::Host(format!("{QEMU}: {e} (Debian's qemu-system-x86; hack/vm-assets.sh installs it)")))?;
    drop(theirs);
    Ok(QemuVm { child, agent: ours, serial_log: cfg.run_dir.join("serial.log"), qemu_log })
}

impl QemuVm {
    /// Why QEMU is gone, if it is: its exit status and last messages.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        let log = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        Some(format!("{QEMU} exited ({status}): {}", log.trim()))
    }

    /// The last lines of the guest kernel's log.
    pub fn serial_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.serial_log).unwrap_or_default();
        let tail: Vec<_> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Waits up to `grace` for the guest to end itself, then kills QEMU.
    pub fn finish(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Which accelerator to use: KVM when it runs Linux guests here, else TCG.
pub fn choose_accel() -> Accel {
    match crate::kvm::probe() {
        Ok(()) => Accel::Kvm,
        Err(_) => Accel::Tcg,
    }
}

/// Where the VM backend keeps kernels, initramfs and images.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("STRATA_VM_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/strata/vm"))
}

/// The guest kernel: `explicit`, else `$STRATA_VM_KERNEL`, else the one
/// hack/vm-assets.sh cached.
pub fn kernel_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("STRATA_VM_KERNEL").map(PathBuf::from))
        .unwrap_or_else(|| cache_dir().join("vmlinux"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(share: Option<&str>) -> QemuConfig {
        QemuConfig {
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: String::new(),
            memory_mib: 128,
            vcpus: 1,
            disks: vec![("/img/a,b.erofs".into(), true)],
            share: share.map(PathBuf::from),
            net: None,
            acpi: false,
            run_dir: "/run/x".into(),
            accel: Accel::Tcg,
        }
    }

    #[test]
    fn a_shared_folder_is_one_9p_device_and_commas_in_paths_are_escaped() {
        let a = args(&config(None));
        assert!(a.contains(&"id=disk0,file=/img/a,,b.erofs,format=raw,if=none,readonly=on".to_string()), "{a:?}");
        assert!(!a.iter().any(|x| x.contains("9p")), "{a:?}");
        let a = args(&config(Some("/run/strata/c,1/share")));
        let at = a.iter().position(|x| x == "-fsdev").expect("an -fsdev");
        assert_eq!(a[at + 1], "local,id=share,path=/run/strata/c,,1/share,security_model=passthrough,multidevs=remap");
        assert!(a.contains(&"virtio-9p-device,fsdev=share,mount_tag=strata".to_string()), "{a:?}");
    }

    #[test]
    fn a_nic_is_the_tap_on_its_descriptor_with_the_mac_given() {
        assert!(!args(&config(None)).iter().any(|x| x.contains("netdev")));
        let mut cfg = config(None);
        cfg.net = Some((9, [0x02, 0, 0xab, 1, 2, 3]));
        let a = args(&cfg);
        let at = a.iter().position(|x| x == "-netdev").expect("a -netdev");
        assert_eq!(a[at + 1], "tap,id=net0,fd=4");
        assert!(a.contains(&"virtio-net-device,netdev=net0,mac=02:00:ab:01:02:03".to_string()), "{a:?}");
    }
}
