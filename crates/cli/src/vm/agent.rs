//! The guest agent: strata as a VM's `/init`.
//!
//! It mounts what a container runtime needs (proc, sys, dev, /run, cgroup2),
//! says it is ready on the console channel, and on the host's `Config`
//! mounts the rootfs image and runs `strata create` with the same config.
//! `Start` runs `strata start`, `Exec` runs `strata exec --detach`. As pid 1
//! it reaps every process; the container's processes (re-parented to it)
//! are reported by number when they exit. When the init exits, the agent
//! reports its status and resets the machine.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use strata_vm::proto::{Msg, INIT};

const GUEST_STATE: &str = "/run/strata/state";
const GUEST_BUNDLE: &str = "/run/strata/bundle";
const GUEST_ROOTFS: &str = "/run/strata/rootfs";
/// The bundles of the containers that join the first one's pod.
const GUEST_BUNDLES: &str = "/run/strata/bundles";

fn mount(src: &str, target: &str, fstype: &str, flags: nix::mount::MsFlags, data: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("mkdir {target}"))?;
    nix::mount::mount(Some(src), target, Some(fstype), flags, data)
        .with_context(|| format!("mount {fstype} on {target}"))
}

fn setup() -> anyhow::Result<File> {
    use nix::mount::MsFlags;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount("proc", "/proc", "proc", nosuid, None)?;
    mount("sysfs", "/sys", "sysfs", nosuid, None)?;
    mount("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None)?;
    mount("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, None)?;
    load_modules()?;
    let hvc = open_device("/dev/hvc0", true)?;
    let mut t = nix::sys::termios::tcgetattr(&hvc).context("tcgetattr /dev/hvc0")?;
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&hvc, nix::sys::termios::SetArg::TCSANOW, &t).context("raw /dev/hvc0")?;
    Ok(hvc)
}

/// Loads the modules of the initramfs, dependencies first, each with the
/// parameters the kernel command line gives it (`name.key=value`, as modprobe
/// would pass them: QEMU names its virtio-mmio devices that way). A kernel
/// built with everything in it has none to load.
fn load_modules() -> anyhow::Result<()> {
    // (Where the initramfs carries them, with the file naming them in order.)
    let dir = Path::new("/").join(strata_vm::initramfs::GUEST_MODULES);
    let Ok(order) = std::fs::read_to_string(dir.join("order")) else {
        return Ok(());
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for file in order.lines().filter(|l| !l.is_empty()) {
        let path = dir.join(file);
        let params = module_params(&cmdline, &module_name(file));
        let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let c = std::ffi::CString::new(params).context("module parameters")?;
        // SAFETY: finit_module reads the open file and the NUL-terminated
        // parameter string for the duration of the call.
        let ret = unsafe { libc::syscall(libc::SYS_finit_module, std::os::fd::AsRawFd::as_raw_fd(&f), c.as_ptr(), 0) };
        if ret < 0 {
            let e = std::io::Error::last_os_error();
            // Loaded already, or for hardware this machine lacks (an accelerated
            // crc32c on a CPU without the instructions, which a generic one
            // listed after it stands in for).
            if !matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENODEV)) {
                return Err(e).with_context(|| format!("load module {}", path.display()));
            }
        }
    }
    Ok(())
}

/// The module name of `file` as the initramfs names it (`03-virtio_mmio.ko`).
fn module_name(file: &str) -> String {
    let base = file.split_once('-').map_or(file, |(_, rest)| rest);
    base.trim_end_matches(".ko").replace('-', "_")
}

/// The parameters the kernel command line gives module `name`, space separated.
fn module_params(cmdline: &str, name: &str) -> String {
    cmdline
        .split_whitespace()
        .filter_map(|arg| {
            let (module, param) = arg.split_once('.')?;
            (module.replace('-', "_") == name && param.contains('=')).then_some(param)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens a device node that a module just loaded may still be bringing up.
fn open_device(path: &str, write: bool) -> anyhow::Result<File> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::OpenOptions::new().read(true).write(write).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("open {path}")),
        }
    }
}

/// Mounts the image, under a tmpfs overlay unless `readonly` and `fixed`
/// (the config mounts nothing whose mountpoint the image may lack: a
/// read-only root gets its mountpoints made in the overlay, as a host
/// container's are made in its rootfs, and the runtime makes it read-only
/// once its mounts are in place).
fn mount_rootfs(readonly: bool, fixed: bool) -> anyhow::Result<()> {
    use nix::mount::MsFlags;
    let bare = readonly && fixed;
    let lower = if bare { GUEST_ROOTFS } else { "/run/strata/lower" };
    drop(open_device("/dev/vda", false)?);
    mount("/dev/vda", lower, "erofs", MsFlags::MS_RDONLY, None)?;
    if !bare {
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

/// Whether the config mounts anything beyond what every image has a
/// mountpoint for (the ones the runtime's default config lists).
fn mounts_need_mountpoints(spec: &serde_json::Value) -> bool {
    const EVERY_IMAGE: [&str; 7] = ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"];
    spec["mounts"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| !EVERY_IMAGE.contains(&m["destination"].as_str().unwrap_or_default())))
}

/// What the host sends for a process's stdin, on its way to the pipe.
type StdinQueue = mpsc::Sender<Vec<u8>>;

/// Who waits for a pid the reaper collects.
enum Waiter {
    /// A strata command the agent ran: its status goes to the channel.
    Helper(mpsc::Sender<i32>),
    /// A container process, by number: its exit goes to the host.
    Process(u32),
}

/// A strata command run for one of the container's processes.
struct Spawned {
    child: std::process::Child,
    /// Its status, from the reaper.
    status: mpsc::Receiver<i32>,
    /// The process's stdin queue, for its terminal (see `attach`).
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    /// Where its terminal's master arrives.
    console: Option<(std::os::unix::net::UnixListener, String)>,
}

/// The agent's processes and its end of the channel.
struct Agent {
    id: String,
    channel: Mutex<File>,
    /// Pid → who waits for it.
    waiters: Mutex<Waiters>,
    /// Process number → its pid (0 until it is known) and the writer of its
    /// stdin (`None` once closed).
    procs: Mutex<HashMap<u32, (i32, Option<StdinQueue>)>>,
    /// Process number → its stdin queue, made before its process.
    queues: Mutex<HashMap<u32, mpsc::Receiver<Vec<u8>>>>,
    /// Process number → the master of its terminal, if it has one.
    masters: Mutex<HashMap<u32, File>>,
    /// Process number → the threads copying its stdout and stderr.
    pumps: Mutex<HashMap<u32, Vec<JoinHandle<()>>>>,
    /// Process number → the id of the container it is the init of, for
    /// the containers that joined the first one's pod.
    joined: Mutex<HashMap<u32, String>>,
    /// Whether the shared folder is mounted.
    share: Mutex<bool>,
}

#[derive(Default)]
struct Waiters {
    by_pid: HashMap<i32, Waiter>,
    /// Statuses of pids reaped before anyone waited for them.
    early: HashMap<i32, i32>,
}

fn code_of(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, c) => Some((pid.as_raw(), c)),
        WaitStatus::Signaled(pid, s, _) => Some((pid.as_raw(), 128 + s as i32)),
        _ => None,
    }
}

impl Agent {
    fn send(&self, m: Msg) {
        let _ = m.write_to(&mut *self.channel.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Runs this binary with `args`; the reaper hands its status to the
    /// returned channel. Registered under the lock, so the reaper cannot
    /// collect it first.
    fn spawn_helper(
        &self,
        args: &[&str],
        stdio: [Stdio; 3],
    ) -> anyhow::Result<(std::process::Child, mpsc::Receiver<i32>)> {
        let [i, o, e] = stdio;
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let child = Command::new("/init")
            .args(["--root", GUEST_STATE])
            .args(args)
            .stdin(i)
            .stdout(o)
            .stderr(e)
            .spawn()
            .with_context(|| format!("run strata {}", args.first().copied().unwrap_or_default()))?;
        let (tx, rx) = mpsc::channel();
        w.by_pid.insert(child.id() as i32, Waiter::Helper(tx));
        Ok((child, rx))
    }

    /// Watches container process `n` (pid `pid`): its exit is reported.
    fn watch(&self, n: u32, pid: i32) {
        let early = {
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            let early = w.early.remove(&pid);
            if early.is_none() {
                w.by_pid.insert(pid, Waiter::Process(n));
            }
            early
        };
        if let Some(code) = early {
            self.exited(n, code);
        }
    }

    /// Process `n` exited: once its output is relayed (or after a grace
    /// period, when something it left behind holds its pipes), the host
    /// learns its status.
    fn exited(&self, n: u32, code: i32) {
        self.finish_pumps(n);
        let joined = self.joined.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
        if let Some(id) = joined {
            // A container of the pod is gone: so is its record here, and
            // with it every process it left.
            if let Ok((_, status)) =
                self.spawn_helper(&["delete", "--force", &id], [Stdio::null(), Stdio::null(), Stdio::null()])
            {
                let _ = status.recv();
            }
            let _ = std::fs::remove_dir_all(Path::new(GUEST_BUNDLES).join(&id));
        }
        self.masters.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
        self.send(Msg::Exit(n, code));
    }

    /// Makes `child`'s stdio process `n`'s: what the host sends for its stdin
    /// is written there (by a thread of its own, so a process that does not
    /// read cannot stall the agent), its output goes to the host.
    /// Returns the stdin queue when `child` has no stdin pipe (a process
    /// with a terminal: its input goes to the terminal once it is known).
    fn attach(self: &Arc<Self>, n: u32, child: &mut std::process::Child) -> Option<mpsc::Receiver<Vec<u8>>> {
        let rx = self.stdin_queue(n);
        self.pump(n, child);
        match child.stdin.take() {
            Some(stdin) => {
                feed(stdin, rx);
                None
            }
            None => Some(rx),
        }
    }

    /// Process `n`'s terminal: what the host sends is typed into it, what it
    /// shows goes to the host as stdout, and the host's resizes reach it.
    fn attach_terminal(
        self: &Arc<Self>,
        n: u32,
        master: File,
        rx: Option<mpsc::Receiver<Vec<u8>>>,
    ) -> anyhow::Result<()> {
        if let Some(rx) = rx {
            feed(master.try_clone()?, rx);
        }
        let mut from = master.try_clone()?;
        let me = self.clone();
        let pump = std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            // EIO once the last process holding the terminal is gone.
            while let Ok(k) = from.read(&mut buf) {
                if k == 0 {
                    break;
                }
                me.send(Msg::Stdout(n, buf[..k].to_vec()));
            }
        });
        self.pumps.lock().unwrap_or_else(|e| e.into_inner()).entry(n).or_default().push(pump);
        self.masters.lock().unwrap_or_else(|e| e.into_inner()).insert(n, master);
        Ok(())
    }

    /// The receiving end of process `n`'s stdin queue. The listener makes
    /// the queue when the host first names `n` (stdin the host sends before
    /// the process exists waits there) and parks this end for the process's
    /// thread, whose own call takes it.
    fn stdin_queue(&self, n: u32) -> mpsc::Receiver<Vec<u8>> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = queues.remove(&n) {
            return rx;
        }
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        procs.entry(n).or_insert((0, Some(tx)));
        rx
    }

    fn set_pid(&self, n: u32, pid: i32) {
        if let Some(p) = self.procs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&n) {
            p.0 = pid;
        }
    }

    /// Copies a process's stdout and stderr to the host as process `n`'s.
    fn pump(self: &Arc<Self>, n: u32, child: &mut std::process::Child) {
        let mut handles = Vec::new();
        let streams: [(Option<Box<dyn Read + Send>>, bool); 2] = [
            (child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), false),
            (child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>), true),
        ];
        for (stream, err) in streams {
            let Some(mut from) = stream else { continue };
            let me = self.clone();
            handles.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 << 10];
                while let Ok(k) = from.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    let b = buf[..k].to_vec();
                    me.send(if err { Msg::Stderr(n, b) } else { Msg::Stdout(n, b) });
                }
            }));
        }
        self.pumps.lock().unwrap_or_else(|e| e.into_inner()).insert(n, handles);
    }

    /// Runs `strata ARGS ID` for process `n` (its create or exec), with a
    /// console socket when it has a terminal, and attaches its stdio.
    fn spawn_process(self: &Arc<Self>, n: u32, id: &str, args: Vec<&str>, terminal: bool) -> anyhow::Result<Spawned> {
        let console = if terminal { Some(console_socket(n)?) } else { None };
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        if let Some((_, path)) = &console {
            args.extend(["--console-socket".to_string(), path.clone()]);
        }
        args.push(id.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stdio = if terminal {
            [Stdio::null(), Stdio::null(), Stdio::piped()]
        } else {
            [Stdio::piped(), Stdio::piped(), Stdio::piped()]
        };
        let (mut child, status) = self.spawn_helper(&args, stdio)?;
        let stdin = self.attach(n, &mut child);
        Ok(Spawned { child, status, stdin, console })
    }

    /// Creates the container; returns its init's pid.
    fn create(self: &Arc<Self>, terminal: bool) -> anyhow::Result<i32> {
        let pid_file = "/run/strata/init.pid";
        let args = vec!["create", "--no-pivot", "--bundle", GUEST_BUNDLE, "--pid-file", pid_file];
        // The init inherits the pipes (or its terminal): the container's stdio.
        let Spawned { child, status, stdin: rx, console } = self.spawn_process(INIT, &self.id, args, terminal)?;
        let code = reap_one(child.id() as i32);
        drop(status);
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).by_pid.remove(&(child.id() as i32));
        if code != 0 {
            self.finish_pumps(INIT);
            bail!("strata create exited with status {code}");
        }
        if let Some((listener, path)) = console {
            self.attach_terminal(INIT, take_master(listener, &path)?, rx)?;
        }
        let pid = read_pid(pid_file)?;
        self.set_pid(INIT, pid);
        Ok(pid)
    }

    /// Waits a moment for process `n`'s output to be relayed.
    fn finish_pumps(&self, n: u32) {
        let pumps = self.pumps.lock().unwrap_or_else(|e| e.into_inner()).remove(&n).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(2);
        while pumps.iter().any(|p| !p.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn start(self: &Arc<Self>) {
        let result = (|| -> anyhow::Result<()> {
            let (mut child, status) =
                self.spawn_helper(&["start", &self.id], [Stdio::null(), Stdio::null(), Stdio::piped()])?;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let code = status.recv().unwrap_or(255);
            if code != 0 {
                bail!("{}", err.trim().trim_start_matches("strata: ").trim());
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.send(Msg::Started(INIT)),
            Err(e) => self.send(Msg::Error(INIT, format!("{e:#}"))),
        }
    }

    fn exec(self: &Arc<Self>, n: u32, process: Vec<u8>, id: &str) {
        let result = (|| -> anyhow::Result<i32> {
            let spec = format!("/run/strata/exec-{n}.json");
            let pid_file = format!("/run/strata/exec-{n}.pid");
            std::fs::write(&spec, &process).with_context(|| format!("write {spec}"))?;
            let terminal = serde_json::from_slice::<serde_json::Value>(&process)
                .ok()
                .and_then(|p| p["terminal"].as_bool())
                .unwrap_or(false);
            let args = vec!["exec", "--detach", "--pid-file", &pid_file, "--process", &spec];
            let Spawned { status, stdin: rx, console, .. } = self.spawn_process(n, id, args, terminal)?;
            let code = status.recv().unwrap_or(255);
            let _ = std::fs::remove_file(&spec);
            if code != 0 {
                self.finish_pumps(n);
                bail!("strata exec exited with status {code}");
            }
            if let Some((listener, path)) = console {
                self.attach_terminal(n, take_master(listener, &path)?, rx)?;
            }
            let pid = read_pid(&pid_file);
            let _ = std::fs::remove_file(&pid_file);
            let pid = pid?;
            self.set_pid(n, pid);
            Ok(pid)
        })();
        match result {
            Ok(pid) => {
                self.send(Msg::Started(n));
                self.watch(n, pid);
            }
            Err(e) => {
                self.procs.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
                self.send(Msg::Error(n, format!("{e:#}")))
            }
        }
    }

    /// Mounts the shared folder, once.
    fn mount_share(&self) -> anyhow::Result<()> {
        let mut mounted = self.share.lock().unwrap_or_else(|e| e.into_inner());
        if !*mounted {
            mount(
                strata_vm::qemu::SHARE_TAG,
                super::share::GUEST_SHARE,
                "9p",
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some("trans=virtio,version=9p2000.L,msize=262144,cache=mmap"),
            )?;
            *mounted = true;
        }
        Ok(())
    }

    /// Creates the container of `Join` N: its rootfs and bind mounts come
    /// from the shared folder, and the namespaces it names by the pod's
    /// placeholder are the first container's.
    fn join(self: &Arc<Self>, n: u32, body: Vec<u8>) {
        let mut id = String::new();
        let result = (|| -> anyhow::Result<i32> {
            let v: serde_json::Value = serde_json::from_slice(&body).context("the container to join")?;
            id = v["id"].as_str().context("a container to join without id")?.to_string();
            strata_runtime::id::validate(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut spec = v["spec"].clone();
            self.mount_share()?;
            let init = self.procs.lock().unwrap_or_else(|e| e.into_inner()).get(&INIT).map(|p| p.0).unwrap_or(0);
            if init <= 0 {
                bail!("the pod's first container has no process");
            }
            if let Some(nss) = spec["linux"]["namespaces"].as_array_mut() {
                for ns in nss {
                    if let Some(p) = ns["path"].as_str().and_then(|p| p.strip_prefix(super::pod::POD_INIT)) {
                        ns["path"] = serde_json::Value::String(format!("/proc/{init}/{p}"));
                    }
                }
            }
            if let Some(a) = spec["annotations"].as_object_mut() {
                a.remove(super::ISOLATION_ANNOTATION);
            }
            let bundle = Path::new(GUEST_BUNDLES).join(&id);
            std::fs::create_dir_all(&bundle).with_context(|| format!("mkdir {}", bundle.display()))?;
            std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
            let pid_file = bundle.join("init.pid").to_string_lossy().into_owned();
            let dir = bundle.to_string_lossy().into_owned();
            let args = vec!["create", "--no-pivot", "--bundle", &dir, "--pid-file", &pid_file];
            let terminal = spec["process"]["terminal"].as_bool().unwrap_or(false);
            let Spawned { status, stdin: rx, console, .. } = self.spawn_process(n, &id, args, terminal)?;
            let code = status.recv().unwrap_or(255);
            if code != 0 {
                self.finish_pumps(n);
                bail!("strata create exited with status {code}");
            }
            if let Some((listener, path)) = console {
                self.attach_terminal(n, take_master(listener, &path)?, rx)?;
            }
            let pid = read_pid(&pid_file)?;
            self.set_pid(n, pid);
            Ok(pid)
        })();
        match result {
            Ok(pid) => {
                self.joined.lock().unwrap_or_else(|e| e.into_inner()).insert(n, id);
                self.send(Msg::Joined(n));
                self.watch(n, pid);
            }
            Err(e) => {
                self.procs.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
                if !id.is_empty() {
                    let _ = std::fs::remove_dir_all(Path::new(GUEST_BUNDLES).join(&id));
                }
                self.send(Msg::Error(n, format!("{e:#}")))
            }
        }
    }

    /// Starts the container of `Join` N.
    fn begin(self: &Arc<Self>, n: u32) {
        let id = self.joined.lock().unwrap_or_else(|e| e.into_inner()).get(&n).cloned();
        let result = (|| -> anyhow::Result<()> {
            let id = id.context("no such container in this VM")?;
            let (mut child, status) =
                self.spawn_helper(&["start", &id], [Stdio::null(), Stdio::null(), Stdio::piped()])?;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            if status.recv().unwrap_or(255) != 0 {
                bail!("{}", err.trim().trim_start_matches("strata: ").trim());
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.send(Msg::Started(n)),
            Err(e) => self.send(Msg::Error(n, format!("{e:#}"))),
        }
    }

    /// Answers `Ask` N: pauses, resumes or updates one of the VM's
    /// containers (its cgroup in the guest), or reports its cgroup's
    /// statistics.
    fn ask(&self, n: u32, body: &[u8]) {
        let result = (|| -> anyhow::Result<serde_json::Value> {
            let v: serde_json::Value = serde_json::from_slice(body).context("the question")?;
            let id = v["container"].as_str().context("a question without its container")?;
            let c = strata_runtime::Container::load(Path::new(GUEST_STATE), id)?;
            Ok(match v["op"].as_str() {
                Some("pause") => c.pause().map(|()| serde_json::Value::Null)?,
                Some("resume") => c.resume().map(|()| serde_json::Value::Null)?,
                Some("stats") => c.stats()?,
                Some("update") => {
                    let r: oci_spec::runtime::LinuxResources =
                        serde_json::from_value(v["resources"].clone()).context("the resources to update")?;
                    c.update(&r).map(|()| serde_json::Value::Null)?
                }
                op => bail!("no operation {op:?} on a container"),
            })
        })();
        match result.and_then(|v| Ok(serde_json::to_vec(&v)?)) {
            Ok(b) => self.send(Msg::Answer(n, b)),
            Err(e) => self.send(Msg::Error(n, format!("{e:#}"))),
        }
    }

    /// What the host sends once the container exists.
    fn listen(self: Arc<Self>, mut reader: File) {
        loop {
            let msg = match Msg::read_from(&mut reader) {
                Ok(Some(m)) => m,
                _ => return,
            };
            match msg {
                Msg::Start => {
                    let me = self.clone();
                    std::thread::spawn(move || me.start());
                }
                Msg::Exec(n, process) if n != INIT => {
                    let rx = self.stdin_queue(n);
                    self.queues.lock().unwrap_or_else(|e| e.into_inner()).insert(n, rx);
                    let me = self.clone();
                    std::thread::spawn(move || {
                        let id = me.id.clone();
                        me.exec(n, process, &id)
                    });
                }
                Msg::ExecIn(n, body) if n != INIT => {
                    let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| {
                        let id = v["container"].as_str()?.to_string();
                        Some((id, serde_json::to_vec(&v["process"]).ok()?))
                    });
                    let Some((id, process)) = parsed else {
                        self.send(Msg::Error(n, "an exec without its container or process".into()));
                        continue;
                    };
                    let rx = self.stdin_queue(n);
                    self.queues.lock().unwrap_or_else(|e| e.into_inner()).insert(n, rx);
                    let me = self.clone();
                    std::thread::spawn(move || me.exec(n, process, &id));
                }
                Msg::Join(n, body) if n != INIT => {
                    let rx = self.stdin_queue(n);
                    self.queues.lock().unwrap_or_else(|e| e.into_inner()).insert(n, rx);
                    let me = self.clone();
                    std::thread::spawn(move || me.join(n, body));
                }
                Msg::Begin(n) if n != INIT => {
                    let me = self.clone();
                    std::thread::spawn(move || me.begin(n));
                }
                Msg::Ask(n, body) if n != INIT => {
                    let me = self.clone();
                    std::thread::spawn(move || me.ask(n, &body));
                }
                Msg::Stdin(n, b) => {
                    if let Some((_, Some(s))) = self.procs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&n) {
                        let _ = s.send(b);
                    }
                }
                Msg::StdinEof(n) => {
                    if let Some((_, s)) = self.procs.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&n) {
                        *s = None;
                    }
                }
                Msg::Resize(n, rows, cols) => {
                    if let Some(m) = self.masters.lock().unwrap_or_else(|e| e.into_inner()).get(&n) {
                        let _ = strata_runtime::tty::resize(std::os::fd::AsRawFd::as_raw_fd(m), cols, rows);
                    }
                }
                Msg::Signal(n, s) => {
                    let pid = self.procs.lock().unwrap_or_else(|e| e.into_inner()).get(&n).map(|p| p.0);
                    // (0 until the process is known: never kill(0), the agent's own group.)
                    if let (Some(pid @ 1..), Ok(sig)) = (pid, nix::sys::signal::Signal::try_from(s)) {
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
                    }
                }
                _ => {}
            }
        }
    }

    /// Reaps every process until the init is gone; returns its status.
    fn reap(self: &Arc<Self>, init: i32) -> i32 {
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), None) {
                Ok(s) => match code_of(s) {
                    Some(pc) => pc,
                    None => continue,
                },
                Err(nix::Error::EINTR) => continue,
                // No child at all: the init is gone without a status we saw.
                Err(_) => return 255,
            };
            let waiter = {
                let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
                let waiter = w.by_pid.remove(&pid);
                if waiter.is_none() && pid != init {
                    w.early.insert(pid, code);
                }
                waiter
            };
            match waiter {
                Some(Waiter::Helper(tx)) => {
                    let _ = tx.send(code);
                }
                Some(Waiter::Process(n)) => {
                    let me = self.clone();
                    std::thread::spawn(move || me.exited(n, code));
                }
                None => {}
            }
            if pid == init {
                return code;
            }
        }
    }
}

/// Writes what arrives on `rx` to `to` until either end goes.
fn feed(mut to: impl Write + Send + 'static, rx: mpsc::Receiver<Vec<u8>>) {
    std::thread::spawn(move || {
        while let Ok(b) = rx.recv() {
            if to.write_all(&b).is_err() {
                return;
            }
        }
    });
}

/// Where a strata command sends the master of process `n`'s terminal.
fn console_socket(n: u32) -> anyhow::Result<(std::os::unix::net::UnixListener, String)> {
    let path = format!("/run/strata/console-{n}.sock");
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path).with_context(|| format!("listen on {path}"))?;
    Ok((l, path))
}

/// The master a strata command that has exited sent to its console socket.
fn take_master(listener: std::os::unix::net::UnixListener, path: &str) -> anyhow::Result<File> {
    listener.set_nonblocking(true)?;
    let got = listener.accept().context("the terminal's master never came");
    let _ = std::fs::remove_file(path);
    let (conn, _) = got?;
    conn.set_nonblocking(false)?;
    let master = strata_runtime::tty::recv_master(std::os::fd::AsRawFd::as_raw_fd(&conn))?;
    Ok(File::from(master))
}

/// Waits for one child (nothing else runs yet).
fn reap_one(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(s) => {
                if let Some((_, c)) = code_of(s) {
                    return c;
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(_) => return 255,
        }
    }
}

fn read_pid(path: &str) -> anyhow::Result<i32> {
    std::fs::read_to_string(path)
        .with_context(|| format!("read {path}"))?
        .trim()
        .parse()
        .with_context(|| format!("{path} holds no pid"))
}

fn run(hvc: File, booted_ms: u64) -> anyhow::Result<()> {
    let mut reader = hvc.try_clone()?;
    Msg::Ready(booted_ms).write_to(&mut &hvc)?;
    let config = match Msg::read_from(&mut reader)? {
        Some(Msg::Config(c)) => c,
        other => bail!("expected the configuration, got {other:?}"),
    };
    let config: serde_json::Value = serde_json::from_slice(&config).context("configuration")?;
    let id = config["id"].as_str().context("configuration without id")?.to_string();
    let readonly = config["readonly"].as_bool().unwrap_or(false);
    let mut spec = config["spec"].clone();
    if !config["net"].is_null() {
        // The network the host handed over: the container uses the guest's
        // own namespace, where the NIC is.
        let net: strata_runtime::network::VmInterface =
            serde_json::from_value(config["net"].clone()).context("the network configuration")?;
        strata_runtime::network::take_over(&net, "eth0")?;
    }
    mount_rootfs(readonly, !mounts_need_mountpoints(&spec))?;
    spec["root"]["path"] = serde_json::Value::String(GUEST_ROOTFS.into());
    // In the guest it is a container: one VM, not one inside another.
    if let Some(a) = spec["annotations"].as_object_mut() {
        a.remove(super::ISOLATION_ANNOTATION);
    }
    std::fs::create_dir_all(GUEST_BUNDLE)?;
    std::fs::write(Path::new(GUEST_BUNDLE).join("config.json"), serde_json::to_vec(&spec)?)?;

    let agent = Arc::new(Agent {
        id,
        channel: Mutex::new(hvc),
        waiters: Mutex::new(Waiters::default()),
        procs: Mutex::new(HashMap::new()),
        queues: Mutex::new(HashMap::new()),
        masters: Mutex::new(HashMap::new()),
        pumps: Mutex::new(HashMap::new()),
        joined: Mutex::new(HashMap::new()),
        share: Mutex::new(false),
    });
    if config["share"].as_bool().unwrap_or(false) {
        // The bind mounts' sources, which the config's mounts now name.
        agent.mount_share()?;
    }
    // The initramfs is the guest's root, where pivot_root cannot work:
    // --no-pivot moves the container's root over it and chroots.
    let terminal = spec["process"]["terminal"].as_bool().unwrap_or(false);
    let init = agent.create(terminal)?;
    agent.send(Msg::Created);
    let a = agent.clone();
    std::thread::spawn(move || a.listen(reader));
    let code = agent.reap(init);
    agent.exited(INIT, code);
    Ok(())
}

/// strata as a VM's `/init`: set the guest up, run the container, report,
/// and reset the machine. Never returns.
pub fn agent_main() -> ! {
    // How long the kernel took to get here, for the host's time split.
    let booted_ms = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0);
    let result = setup().and_then(|hvc| {
        let spare = hvc.try_clone();
        let r = run(hvc, booted_ms);
        if let (Err(e), Ok(mut channel)) = (&r, spare) {
            // The channel may still work: say why, in full.
            let _ = Msg::Error(INIT, format!("{e:#}")).write_to(&mut channel);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_get_their_parameters_from_the_kernel_command_line() {
        let cmdline = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 virtio-mmio.device=512@0xfeb00c00:11 \
                       quiet erofs.x=1 virtio_mmio.flag";
        assert_eq!(module_name("03-virtio_mmio.ko"), "virtio_mmio");
        assert_eq!(module_name("10-virtio-blk.ko"), "virtio_blk");
        assert_eq!(module_params(cmdline, "virtio_mmio"), "device=512@0xfeb00e00:12 device=512@0xfeb00c00:11");
        assert_eq!(module_params(cmdline, "virtio_blk"), "");
        assert_eq!(module_params(cmdline, "erofs"), "x=1");
    }

    #[test]
    fn only_mounts_beyond_the_usual_ones_need_a_writable_layer_for_their_mountpoints() {
        let usual = serde_json::json!({"mounts": [{"destination": "/proc"}, {"destination": "/dev/pts"}]});
        assert!(!mounts_need_mountpoints(&usual));
        assert!(!mounts_need_mountpoints(&serde_json::json!({})));
        let more = serde_json::json!({"mounts": [{"destination": "/proc"}, {"destination": "/data"}]});
        assert!(mounts_need_mountpoints(&more));
    }
}
