//! The VM backend from the command line: `strata run --vm` on the host, and
//! the guest agent that strata becomes when it is a VM's `/init`.
//!
//! The host builds (or reuses) the initramfs from this binary and an EROFS
//! image of the bundle's rootfs, starts the guest, sends the bundle's
//! config.json over the console channel, and relays stdio, signals and the
//! exit status. In the guest, strata mounts the image (with a tmpfs overlay
//! unless `root.readonly`) and runs the same config with `strata run`: the
//! same runtime code sets up namespaces, mounts, cgroups, seccomp and
//! capabilities inside the guest.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use strata_vm::proto::Msg;
use strata_vm::qemu;

/// Annotation that asks for a VM.
pub const ISOLATION_ANNOTATION: &str = "run.strata.isolation";
const VCPUS_ANNOTATION: &str = "run.strata.vm.vcpus";
const MEMORY_ANNOTATION: &str = "run.strata.vm.memory_mb";
const DEFAULT_MEMORY_MIB: u32 = 256;
/// How long a guest may take from QEMU's start to its agent's hello
/// (`STRATA_VM_BOOT_TIMEOUT_S` changes it).
fn boot_timeout() -> Duration {
    let secs = std::env::var("STRATA_VM_BOOT_TIMEOUT_S").ok().and_then(|s| s.parse().ok()).unwrap_or(60u64);
    Duration::from_secs(secs.max(1))
}

/// Whether this process is a VM's init (the guest agent).
pub fn is_agent() -> bool {
    std::process::id() == 1 && std::env::args_os().next().is_some_and(|a| a == "/init")
}

/// Whether the config asks for a VM through its annotation.
pub fn wants_vm(spec: &oci_spec::runtime::Spec) -> anyhow::Result<bool> {
    match spec.annotations().as_ref().and_then(|a| a.get(ISOLATION_ANNOTATION)).map(String::as_str) {
        None | Some("container") => Ok(false),
        Some("vm") => Ok(true),
        Some(other) => bail!("annotation {ISOLATION_ANNOTATION}: {other:?} is neither \"vm\" nor \"container\""),
    }
}

/// Guest size: annotations first, then `linux.resources`, then defaults.
pub fn guest_size(spec: &oci_spec::runtime::Spec) -> anyhow::Result<(u8, u32)> {
    let no_annotations = std::collections::HashMap::new();
    let ann = spec.annotations().as_ref().unwrap_or(&no_annotations);
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    let vcpus = match ann.get(VCPUS_ANNOTATION) {
        Some(v) => v
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .with_context(|| format!("annotation {VCPUS_ANNOTATION}: {v:?} is not a vCPU count from 1 to 16"))?,
        None => resources
            .as_ref()
            .and_then(|r| r.cpu().as_ref())
            .and_then(|c| match (c.quota(), c.period()) {
                (Some(q), Some(p)) if q > 0 && p > 0 => Some(((q as u64).div_ceil(p)).clamp(1, 16) as u8),
                _ => None,
            })
            .unwrap_or(1),
    };
    let memory =
        match ann.get(MEMORY_ANNOTATION) {
            Some(v) => v.parse::<u32>().ok().filter(|n| (64..=3072).contains(n)).with_context(|| {
                format!("annotation {MEMORY_ANNOTATION}: {v:?} is not a size in MiB from 64 to 3072")
            })?,
            // The container's limit plus room for the guest kernel and agent.
            None => resources
                .as_ref()
                .and_then(|r| r.memory().as_ref())
                .and_then(|m| m.limit())
                .filter(|l| *l > 0)
                .map(|l| ((l as u64 >> 20) as u32 + 64).clamp(64, 3072))
                .unwrap_or(DEFAULT_MEMORY_MIB),
        };
    Ok((vcpus, memory))
}

/// Options of `run --vm`.
pub struct VmRun<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub kernel: Option<&'a Path>,
    pub root: &'a Path,
}

fn forwarded_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal::*;
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGCONT, SIGWINCH] {
        set.add(s);
    }
    set
}

/// Runs the bundle in a VM and returns the workload's exit status.
pub fn run(opts: &VmRun) -> anyhow::Result<i32> {
    let spec = strata_runtime::config::load(opts.bundle).context("load config.json")?;
    strata_runtime::id::validate(opts.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    if spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false) {
        bail!("process.terminal: a terminal inside a VM is not supported yet; run without a terminal");
    }
    for m in spec.mounts().iter().flatten() {
        let bind =
            m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
        if bind {
            bail!(
                "mounts: the bind mount of {} onto {} cannot reach a VM guest yet (QEMU here offers no shared filesystem)",
                m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_default(),
                m.destination().display()
            );
        }
    }
    let root_spec = spec.root().as_ref().context("config.json has no root")?;
    let rootfs =
        if root_spec.path().is_absolute() { root_spec.path().clone() } else { opts.bundle.join(root_spec.path()) };
    let readonly = root_spec.readonly().unwrap_or(false);
    let (vcpus, memory_mib) = guest_size(&spec)?;

    let cache = qemu::cache_dir();
    let kernel = qemu::kernel_path(opts.kernel);
    if !kernel.exists() {
        bail!("guest kernel {} does not exist: run hack/vm-assets.sh, or pass --vm-kernel", kernel.display());
    }
    let exe = std::env::current_exe().context("this binary's path")?;
    let initrd = strata_vm::initramfs::cached(&exe, &cache)?;
    let image = strata_vm::image::cached(&rootfs, &cache)?;

    let run_dir = opts.root.join(format!(".vm-{}", opts.id));
    std::fs::create_dir_all(opts.root).with_context(|| format!("create {}", opts.root.display()))?;
    claim_run_dir(&run_dir, opts.id)?;
    let result = run_in(&spec, opts.id, readonly, vcpus, memory_mib, kernel, initrd, image, &run_dir);
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

/// Makes the VM's run directory, owned by this process: it is made under a
/// temporary name with this process's pid in `owner`, then renamed into
/// place. One left by a strata that was killed (its owner gone) is removed
/// first; one whose owner lives means the name is taken.
fn claim_run_dir(run_dir: &Path, id: &str) -> anyhow::Result<()> {
    let tmp = PathBuf::from(format!("{}.new{}", run_dir.display(), std::process::id()));
    std::fs::create_dir(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let claimed = (|| -> anyhow::Result<()> {
        std::fs::write(tmp.join("owner"), std::process::id().to_string())
            .with_context(|| format!("write {}/owner", tmp.display()))?;
        for _ in 0..2 {
            match std::fs::rename(&tmp, run_dir) {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => {
                    let owner =
                        std::fs::read_to_string(run_dir.join("owner")).ok().and_then(|s| s.trim().parse::<i32>().ok());
                    let alive = owner.is_some_and(|pid| {
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH)
                    });
                    if alive {
                        bail!("a VM named {id:?} is already running ({} exists)", run_dir.display());
                    }
                    std::fs::remove_dir_all(run_dir).with_context(|| format!("remove stale {}", run_dir.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("rename to {}", run_dir.display())),
            }
        }
        bail!("{} keeps coming back; another strata is racing for VM {id:?}", run_dir.display())
    })();
    if claimed.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    claimed
}

#[allow(clippy::too_many_arguments)]
fn run_in(
    spec: &oci_spec::runtime::Spec,
    id: &str,
    readonly: bool,
    vcpus: u8,
    memory_mib: u32,
    kernel: PathBuf,
    initrd: PathBuf,
    image: PathBuf,
    run_dir: &Path,
) -> anyhow::Result<i32> {
    let accel = match std::env::var("STRATA_VM_ACCEL").as_deref() {
        Ok("tcg") => qemu::Accel::Tcg,
        Ok("kvm") => qemu::Accel::Kvm,
        _ => qemu::choose_accel(),
    };
    // Signals are blocked before any thread exists, then taken by one thread.
    let signals = forwarded_signals();
    signals.thread_block().context("block signals")?;
    let cfg = qemu::QemuConfig {
        kernel,
        initrd,
        cmdline: String::new(),
        memory_mib,
        vcpus,
        disks: vec![(image, true)],
        run_dir: run_dir.to_path_buf(),
        accel,
    };
    let mut vm = qemu::launch(&cfg)?;
    let outcome = drive(&mut vm, spec, id, readonly);
    // The guest resets itself once the workload is gone; a guest that does
    // not is stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm.child.try_wait().ok().flatten().is_none() {
        if outcome.is_err() || Instant::now() > deadline {
            let _ = vm.child.kill();
            let _ = vm.child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    outcome.map_err(|e| {
        let log = std::fs::read_to_string(&vm.serial_log).unwrap_or_default();
        let tail: Vec<_> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        if tail.is_empty() {
            e
        } else {
            e.context(format!("guest kernel log (last lines):\n{}", tail.join("\n")))
        }
    })
}

fn drive(vm: &mut qemu::QemuVm, spec: &oci_spec::runtime::Spec, id: &str, readonly: bool) -> anyhow::Result<i32> {
    let agent = vm.agent.try_clone().context("agent channel")?;
    let mut reader = vm.agent.try_clone().context("agent channel")?;
    let timeout = boot_timeout();
    reader.set_read_timeout(Some(timeout))?;
    match Msg::read_from(&mut reader) {
        Ok(Some(Msg::Ready)) => {}
        Ok(Some(other)) => bail!("guest agent said {other:?} before it was ready"),
        Ok(None) => bail!("the guest closed its agent channel before it came up"),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            bail!("the guest did not come up within {} s", timeout.as_secs())
        }
        Err(e) => return Err(e).context("agent channel"),
    }
    reader.set_read_timeout(None)?;
    let writer = Arc::new(Mutex::new(agent));
    let config = serde_json::json!({ "id": id, "readonly": readonly, "spec": spec });
    Msg::Config(serde_json::to_vec(&config)?).write_to(&mut *writer.lock().unwrap_or_else(|e| e.into_inner()))?;

    // stdin → guest
    let w = writer.clone();
    std::thread::spawn(move || {
        // SAFETY: fd 0 stays open for the life of the process; ManuallyDrop
        // keeps this thread from closing it.
        let mut stdin = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let msg = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => Msg::StdinEof,
                Ok(n) => Msg::Stdin(buf[..n].to_vec()),
            };
            let eof = msg == Msg::StdinEof;
            if msg.write_to(&mut *w.lock().unwrap_or_else(|e| e.into_inner())).is_err() || eof {
                return;
            }
        }
    });
    // signals → guest
    let w = writer.clone();
    std::thread::spawn(move || loop {
        if let Ok(sig) = forwarded_signals().wait() {
            if Msg::Signal(sig as i32).write_to(&mut *w.lock().unwrap_or_else(|e| e.into_inner())).is_err() {
                return;
            }
        }
    });
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    loop {
        match Msg::read_from(&mut reader).context("agent channel")? {
            Some(Msg::Stdout(b)) => {
                let _ = out.write_all(&b).and_then(|_| out.flush());
            }
            Some(Msg::Stderr(b)) => {
                let _ = err.write_all(&b).and_then(|_| err.flush());
            }
            Some(Msg::Exit(code)) => return Ok(code),
            Some(Msg::Error(e)) => bail!("in the guest: {e}"),
            Some(other) => bail!("guest agent sent {other:?} out of turn"),
            None => bail!("the guest closed its agent channel before the workload exited"),
        }
    }
}

// ---------------------------------------------------------------- the agent

const GUEST_STATE: &str = "/run/strata/state";
const GUEST_BUNDLE: &str = "/run/strata/bundle";
const GUEST_ROOTFS: &str = "/run/strata/rootfs";

fn mount(src: &str, target: &str, fstype: &str, flags: nix::mount::MsFlags, data: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("mkdir {target}"))?;
    nix::mount::mount(Some(src), target, Some(fstype), flags, data)
        .with_context(|| format!("mount {fstype} on {target}"))
}

fn agent_setup() -> anyhow::Result<File> {
    use nix::mount::MsFlags;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount("proc", "/proc", "proc", nosuid, None)?;
    mount("sysfs", "/sys", "sysfs", nosuid, None)?;
    mount("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None)?;
    mount("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, None)?;
    let hvc = std::fs::OpenOptions::new().read(true).write(true).open("/dev/hvc0").context("open /dev/hvc0")?;
    let mut t = nix::sys::termios::tcgetattr(&hvc).context("tcgetattr /dev/hvc0")?;
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&hvc, nix::sys::termios::SetArg::TCSANOW, &t).context("raw /dev/hvc0")?;
    Ok(hvc)
}

fn agent_rootfs(readonly: bool) -> anyhow::Result<()> {
    use nix::mount::MsFlags;
    let lower = if readonly { GUEST_ROOTFS } else { "/run/strata/lower" };
    mount("/dev/vda", lower, "erofs", MsFlags::MS_RDONLY, None)?;
    if !readonly {
        mount("tmpfs", "/run/strata/rw", "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
        std::fs::create_dir_all("/run/strata/rw/upper")?;
        std::fs::create_dir_all("/run/strata/rw/work")?;
        mount(
            "overlay",
            GUEST_ROOTFS,
            "overlay",
            MsFlags::empty(),
            Some("lowerdir=/run/strata/lower,upperdir=/run/strata/rw/upper,workdir=/run/strata/rw/work"),
        )?;
    }
    Ok(())
}

fn agent_run(hvc: File) -> anyhow::Result<()> {
    let mut reader = hvc.try_clone()?;
    let writer = Arc::new(Mutex::new(hvc));
    let send = |w: &Arc<Mutex<File>>, m: Msg| m.write_to(&mut *w.lock().unwrap_or_else(|e| e.into_inner()));
    send(&writer, Msg::Ready)?;
    let config = match Msg::read_from(&mut reader)? {
        Some(Msg::Config(c)) => c,
        other => bail!("expected the configuration, got {other:?}"),
    };
    let config: serde_json::Value = serde_json::from_slice(&config).context("configuration")?;
    let id = config["id"].as_str().context("configuration without id")?.to_string();
    let readonly = config["readonly"].as_bool().unwrap_or(false);
    let mut spec = config["spec"].clone();
    agent_rootfs(readonly)?;
    spec["root"]["path"] = serde_json::Value::String(GUEST_ROOTFS.into());
    std::fs::create_dir_all(GUEST_BUNDLE)?;
    std::fs::write(Path::new(GUEST_BUNDLE).join("config.json"), serde_json::to_vec(&spec)?)?;

    // The initramfs is the guest's root, where pivot_root cannot work:
    // --no-pivot moves the container's root over it and chroots.
    let mut child = std::process::Command::new("/init")
        .args(["--root", GUEST_STATE, "run", "--no-pivot", "--bundle", GUEST_BUNDLE, &id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("start strata run in the guest")?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut stdin = child.stdin.take();
    fn pump(mut from: impl Read + Send + 'static, w: Arc<Mutex<File>>, err: bool) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let m = if err { Msg::Stderr(buf[..n].to_vec()) } else { Msg::Stdout(buf[..n].to_vec()) };
                let _ = m.write_to(&mut *w.lock().unwrap_or_else(|e| e.into_inner()));
            }
        })
    }
    let out = pump(child.stdout.take().context("stdout")?, writer.clone(), false);
    let err = pump(child.stderr.take().context("stderr")?, writer.clone(), true);
    // host → workload
    std::thread::spawn(move || loop {
        match Msg::read_from(&mut reader) {
            Ok(Some(Msg::Stdin(b))) => {
                if let Some(s) = stdin.as_mut() {
                    let _ = s.write_all(&b);
                }
            }
            Ok(Some(Msg::StdinEof)) => stdin = None,
            Ok(Some(Msg::Signal(s))) => {
                if let Ok(sig) = nix::sys::signal::Signal::try_from(s) {
                    let _ = nix::sys::signal::kill(pid, sig);
                }
            }
            _ => return,
        }
    });
    let status = child.wait().context("wait for strata run")?;
    let _ = out.join();
    let _ = err.join();
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    send(&writer, Msg::Exit(code))?;
    Ok(())
}

/// strata as a VM's `/init`: set the guest up, run the container, report,
/// and reset the machine. Never returns.
pub fn agent_main() -> ! {
    let result = agent_setup().and_then(|hvc| {
        let spare = hvc.try_clone();
        let r = agent_run(hvc);
        if let (Err(e), Ok(mut channel)) = (&r, spare) {
            // The channel may still work: say why, in full.
            let _ = Msg::Error(format!("{e:#}")).write_to(&mut channel);
        }
        r
    });
    if let Err(e) = result {
        eprintln!("strata agent: {e:#}");
    }
    // SAFETY: sync and reboot take no pointers; with reboot=t the guest's
    // reset is a triple fault, which ends the VMM's run.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
