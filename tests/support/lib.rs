//! Helpers for the end-to-end suite: locating the runtime binary and the busybox
//! rootfs, building bundles in temporary directories, running containers, and
//! cleaning up after every test, whatever its outcome.

pub mod http;

use serde_json::{json, Value};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Top of the source tree.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The runtime under test: `$STRATA_TEST_RUNTIME` (e.g. `runc`, to validate the
/// suite's checks against it), else the freshly built `target/debug/strata`.
pub fn runtime_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("STRATA_TEST_RUNTIME") {
        return PathBuf::from(bin);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target"));
    let bin = target.join("debug/strata");
    assert!(bin.exists(), "{} is missing: run `cargo build` first (hack/test.sh does)", bin.display());
    bin
}

/// How the runtime is run: a command to run it through and global flags
/// (a suite that runs it inside a private systemd sets them).
static RUNTIME_WRAPPER: std::sync::OnceLock<(Vec<String>, Vec<String>)> = std::sync::OnceLock::new();

/// Runs every runtime command through `wrapper` (a command prefix) with the
/// global `flags`; set once, before the first command.
pub fn set_runtime_wrapper(wrapper: Vec<String>, flags: Vec<String>) {
    assert!(RUNTIME_WRAPPER.set((wrapper, flags)).is_ok(), "the runtime wrapper is set once");
}

/// A command running the runtime under test (through the wrapper, if any).
pub fn runtime_cmd() -> Command {
    match RUNTIME_WRAPPER.get() {
        Some((wrapper, flags)) if !wrapper.is_empty() => {
            let mut c = Command::new(&wrapper[0]);
            c.args(&wrapper[1..]).arg(runtime_bin()).args(flags);
            c
        }
        Some((_, flags)) => {
            let mut c = Command::new(runtime_bin());
            c.args(flags);
            c
        }
        None => Command::new(runtime_bin()),
    }
}

/// Whether the runtime under test is strata (some checks are strata-specific).
pub fn is_strata() -> bool {
    runtime_bin().file_name().is_some_and(|n| n == "strata")
}

/// The shared busybox rootfs (built by hack/mkrootfs.sh when missing).
pub fn shared_rootfs() -> PathBuf {
    let dir = repo_root().join("bundles/hello/rootfs");
    if !dir.join("bin/busybox").exists() {
        let st = Command::new(repo_root().join("hack/mkrootfs.sh")).arg(&dir).status().expect("run hack/mkrootfs.sh");
        assert!(st.success(), "hack/mkrootfs.sh failed");
    }
    dir
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under /tmp.
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("strata-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// Path of the directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The config every test starts from: busybox, no terminal, the usual namespaces,
/// mounts, masked and read-only paths.
pub fn base_config(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "e2e",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// A bundle in a temporary directory, with its own state root. Dropping it
/// force-deletes every container left in that root and checks nothing leaked.
pub struct Bundle {
    /// Bundle directory.
    pub dir: TempDir,
    /// The runtime's --root for this test.
    pub root: TempDir,
    /// The config written on each run.
    pub config: Value,
}

impl Bundle {
    /// A bundle whose rootfs is the shared busybox rootfs (read-only in the config).
    pub fn new(args: &[&str]) -> Bundle {
        let dir = TempDir::new("bundle");
        let mut config = base_config(args);
        // An absolute root.path (runc refuses a rootfs that is a symlink).
        config["root"]["path"] = json!(shared_rootfs());
        Bundle { dir, root: TempDir::new("root"), config }
    }

    /// A bundle with a private copy of the busybox rootfs (the test may change it).
    pub fn private_rootfs(args: &[&str]) -> Bundle {
        let dir = TempDir::new("bundle");
        let rootfs = dir.path().join("rootfs");
        let st = Command::new("cp").arg("-a").arg(shared_rootfs()).arg(&rootfs).status().expect("cp");
        assert!(st.success());
        Bundle { dir, root: TempDir::new("root"), config: base_config(args) }
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        match self.config["root"]["path"].as_str() {
            Some(p) if p.starts_with('/') => PathBuf::from(p),
            _ => self.dir.path().join("rootfs"),
        }
    }

    /// Writes config.json.
    pub fn write_config(&self) {
        std::fs::write(self.dir.path().join("config.json"), serde_json::to_vec_pretty(&self.config).expect("json"))
            .expect("write config");
    }

    /// A runtime command with this bundle's --root.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = runtime_cmd();
        c.arg("--root").arg(self.root.path()).args(args);
        c
    }

    /// Runs a runtime command to completion with no stdin. Output goes through
    /// files, not pipes: a created container inherits the caller's stdio and keeps
    /// it open long after the runtime command has exited.
    pub fn rt(&self, args: &[&str]) -> Out {
        run_to_files(self.cmd(args).stdin(Stdio::null()))
    }

    /// `run` of this bundle as container `id` (config written first).
    pub fn run(&self, id: &str) -> Out {
        self.write_config();
        let b = self.dir.path().to_string_lossy().into_owned();
        self.rt(&["run", "--bundle", &b, id])
    }

    /// `create` of this bundle as container `id` (config written first).
    pub fn create(&self, id: &str) -> Out {
        self.write_config();
        let b = self.dir.path().to_string_lossy().into_owned();
        self.rt(&["create", "--bundle", &b, id])
    }

    /// `state` of `id` parsed, or None when the command fails.
    pub fn state(&self, id: &str) -> Option<Value> {
        let o = self.rt(&["state", id]);
        if o.code != 0 {
            return None;
        }
        serde_json::from_str(&o.stdout).ok()
    }

    /// Status string of `id`.
    pub fn status(&self, id: &str) -> String {
        self.state(id).and_then(|s| s["status"].as_str().map(str::to_string)).unwrap_or_default()
    }

    /// Ids present in the state root.
    pub fn leftover_state(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default()
    }

    /// Runs `sh -c SCRIPT` in a fresh container of this bundle and returns its output.
    pub fn sh(&mut self, script: &str) -> Out {
        self.config["process"]["args"] = json!(["sh", "-c", script]);
        let id = format!("sh{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        self.run(&id)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for id in self.leftover_state() {
            let _ = self.rt(&["delete", "--force", &id]);
        }
    }
}

/// Runs `cmd` with stdout and stderr sent to temporary files and collects them.
pub fn run_to_files(cmd: &mut Command) -> Out {
    let dir = TempDir::new("out");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let status = cmd
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .status()
        .expect("spawn runtime");
    Out::from(Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    })
}

/// Output of a finished command.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code (128+N for a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        use std::os::unix::process::ExitStatusExt;
        let code = o.status.code().unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
        Out {
            code,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn failed(&self) -> &str {
        assert_ne!(self.code, 0, "command unexpectedly succeeded: {self:?}");
        &self.stderr
    }
}

/// Mount points whose path mentions `needle` in the host's mount table.
pub fn host_mounts_mentioning(needle: &str) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
}

/// Prints that a test is skipped and why (the test then returns early).
pub fn skip(test: &str, why: &str) {
    // Straight to fd 2: the test harness captures eprintln! of passing tests, and a
    // skip must be seen.
    let line = format!("skipped: {test}: {why}\n");
    let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
}

/// Whether we run as root (the suite needs it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A `--console-socket` and a thread that takes the first terminal master sent
/// to it.
pub struct ConsoleSocket {
    _dir: TempDir,
    /// The socket's path.
    pub path: PathBuf,
    master: Option<std::thread::JoinHandle<Option<std::os::fd::OwnedFd>>>,
}

impl ConsoleSocket {
    /// Binds a new console socket in a temporary directory.
    pub fn new() -> ConsoleSocket {
        use std::os::fd::{FromRawFd, OwnedFd};
        let dir = TempDir::new("console");
        let path = dir.path().join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind console socket");
        // None when the runtime connected but sent no terminal (its create failed).
        let master = std::thread::spawn(move || {
            let (conn, _) = listener.accept().ok()?;
            let (_, fd) = recv_fd(&conn).ok()?;
            // SAFETY: the kernel installed this descriptor for us.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        });
        ConsoleSocket { _dir: dir, path, master: Some(master) }
    }

    /// The path as a string, for the command line.
    pub fn arg(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Waits for the master and reads the terminal's output until the
    /// container side closes it (carriage returns dropped).
    pub fn output(&mut self) -> String {
        use std::os::fd::AsRawFd;
        let Some(master) = self.master.take().expect("output read once").join().expect("console thread") else {
            return String::new();
        };
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).replace('\r', "")
    }
}

impl Default for ConsoleSocket {
    fn default() -> Self {
        Self::new()
    }
}

/// A static helper from `tests/probe/NAME.c`, compiled once into the target
/// directory (gcc and glibc's static libc come with Debian's gcc).
pub fn probe_binary(name: &str) -> PathBuf {
    let src = repo_root().join(format!("tests/probe/{name}.c"));
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target"));
    let out = target.join("probe").join(name);
    let fresh = |o: &Path| {
        let (Ok(a), Ok(b)) = (std::fs::metadata(o), std::fs::metadata(&src)) else { return false };
        a.modified().ok() >= b.modified().ok()
    };
    if !fresh(&out) {
        std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir probe dir");
        // Built under a temporary name and renamed: tests running in parallel
        // never see a half-written binary.
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let st = Command::new("cc").args(["-static", "-O2", "-o"]).arg(&tmp).arg(&src).status().expect("run cc");
        assert!(st.success(), "cc {} failed", src.display());
        std::fs::rename(&tmp, &out).expect("rename probe");
    }
    out
}

/// A small deterministic generator (splitmix64) for the seeded suites: the
/// same seed gives the same configs and kill points on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub fn subset<T: Clone>(&mut self, items: &[T], percent: u64) -> Vec<T> {
        items.iter().filter(|_| self.chance(percent)).cloned().collect()
    }
}

/// Receives what a runtime sends a seccomp agent on `conn`: the container's
/// state (JSON) and the notification listener's descriptor.
pub fn receive_seccomp_listener(conn: &std::os::unix::net::UnixStream) -> Result<(Vec<u8>, RawFd), String> {
    recv_fd(conn)
}

/// Receives one message on `conn` with the descriptor it carries (a console
/// master, a seccomp listener).
pub fn recv_fd(conn: &std::os::unix::net::UnixStream) -> Result<(Vec<u8>, RawFd), String> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 1 << 16];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .map_err(|e| e.to_string())?;
    let mut fd = -1;
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            fd = fds[0];
        }
    }
    let n = msg.bytes;
    if fd < 0 {
        return Err("no descriptor".into());
    }
    buf.truncate(n);
    Ok((buf, fd))
}

/// A private systemd booted by `hack/systemd-rig.sh` (this host's init is not
/// systemd), stopped, with its cgroups removed, on drop.
pub struct SystemdRig {
    dir: PathBuf,
}

impl SystemdRig {
    fn script() -> PathBuf {
        repo_root().join("hack/systemd-rig.sh")
    }

    /// Boots one with its files in `dir` (outside /tmp, /run and /var), with
    /// the `keep` paths visible inside.
    pub fn start(dir: &Path, keep: &[&Path]) -> Result<SystemdRig, String> {
        let out = run_to_files(Command::new(Self::script()).arg("start").arg(dir).args(keep).stdin(Stdio::null()));
        if out.code != 0 {
            return Err(format!("hack/systemd-rig.sh start failed: {}{}", out.stdout, out.stderr));
        }
        Ok(SystemdRig { dir: dir.to_path_buf() })
    }

    /// A scratch directory for a suite run inside a rig (its /tmp is its
    /// own): under the cargo target's tmp, and made this process's TMPDIR so
    /// that bundles and state roots land there.
    pub fn scratch(suite: &str) -> PathBuf {
        let base = std::env::var("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target/tmp"))
            .join(format!("{suite}-{}", std::process::id()));
        let scratch = base.join("scratch");
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        std::env::set_var("TMPDIR", &scratch);
        scratch
    }

    /// Boots one beside `scratch` that sees it, the checkout and the runtime's
    /// build directory.
    pub fn start_with_scratch(scratch: &Path) -> Result<SystemdRig, String> {
        let target = runtime_bin().canonicalize().ok().and_then(|b| b.parent().map(Path::to_path_buf));
        let root = repo_root();
        let mut keep: Vec<&Path> = vec![scratch, &root];
        if let Some(t) = target.as_deref().filter(|t| !t.starts_with(&root)) {
            keep.push(t);
        }
        SystemdRig::start(&scratch.with_file_name("rig"), &keep)
    }

    /// Removes what `scratch` made.
    pub fn remove_scratch(scratch: &Path) {
        if let Some(base) = scratch.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }

    /// The command prefix that runs a program inside it.
    pub fn prefix(&self) -> Vec<String> {
        vec![Self::script().to_string_lossy().into_owned(), "exec".into(), self.dir.to_string_lossy().into_owned()]
    }
}

impl Drop for SystemdRig {
    fn drop(&mut self) {
        let _ = Command::new(Self::script()).arg("stop").arg(&self.dir).status();
    }
}

/// Makes a config rootless for the user `uid`:`gid`, as `strata spec
/// --rootless` does: a user namespace mapping those ids to 0, no cgroup
/// namespace, no uid=/gid= mount options (ids the namespace does not map).
pub fn make_rootless(config: &mut Value, uid: u32, gid: u32) {
    let ns: Vec<Value> = config["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter(|n| n["type"] != "cgroup")
        .cloned()
        .chain([json!({ "type": "user" })])
        .collect();
    config["linux"]["namespaces"] = ns.into();
    config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": uid, "size": 1 }]);
    config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": gid, "size": 1 }]);
    for m in config["mounts"].as_array_mut().expect("mounts") {
        if let Some(opts) = m["options"].as_array_mut() {
            opts.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("gid=") || o.starts_with("uid=")));
        }
    }
}
