//! Containers for invocations, made by the Strata library in-process: one
//! per event, from the function's read-only rootfs, with a private /tmp, new
//! namespaces and its own cgroup. `prepare` is the OCI create (the container
//! waits for `start`: this is what the warm pool holds); `run` starts it, feeds
//! the event to stdin, collects stdout and stderr, enforces the timeout and
//! meters it; `destroy` deletes it.

use crate::function::Function;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_runtime::{Container, CreateOptions};

/// Largest output kept from a run; the rest is read and dropped.
pub const MAX_OUTPUT: usize = 6 << 20;
/// How much of stderr is kept.
pub const STDERR_TAIL: usize = 4096;

/// A created container waiting for `start`, with the host ends of its stdio.
pub struct Prepared {
    pub id: String,
    pid: i32,
    /// Taken (closed) once the event is written.
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    cgroup: Option<PathBuf>,
    /// Whether the init was reaped.
    reaped: bool,
    /// The zygote that created it (and is its init's parent), if one did.
    zygote: Option<usize>,
    /// It runs in a microVM: `pid` is its monitor, which is not our child.
    vm: bool,
    /// The container's mount namespace, held until the container is deleted
    /// (off the request path). Without it the init's exit drops the last
    /// reference, and the kernel unmounts the container's whole tree (with an
    /// RCU grace period) before anyone can see that exit, which the answer
    /// waits for.
    _mounts: Option<OwnedFd>,
    /// Its network namespace, to be checked and reused (see netns.rs) once
    /// its init has exited.
    net: Option<OwnedFd>,
    /// Its init was seen to exit (with it, every process of its pid namespace).
    exited: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The exit code (128+N for signal N); None when the run never started.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_tail: Vec<u8>,
    /// From `start` being called to the process running the function.
    pub start_latency: Duration,
    /// When the process was running the function.
    pub running_at: Option<Instant>,
    /// From the process running to its exit.
    pub duration: Duration,
    pub cpu_usec: u64,
    pub peak_memory: Option<u64>,
    /// Why the run could not happen (start failed).
    pub error: Option<String>,
}

/// A file handed to an invocation, bind-mounted read-only at `target`.
pub struct FileMount {
    pub source: PathBuf,
    pub target: String,
}

/// Where invocations' cgroups go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupParent {
    /// A directory (relative to the cgroup v2 mount) the server made.
    Dir(String),
    /// A systemd slice: each invocation is a scope unit in it (the systemd
    /// cgroup driver), so a systemd host's tree stays systemd's.
    Slice(String),
}

impl CgroupParent {
    /// The `linux.cgroupsPath` of container `id`.
    pub fn cgroups_path(&self, id: &str) -> String {
        match self {
            CgroupParent::Dir(d) => format!("/{d}/{id}"),
            CgroupParent::Slice(s) => format!("{s}:strata-fn:{id}"),
        }
    }

    /// The parent's directory, relative to the cgroup v2 mount.
    pub fn dir(&self) -> PathBuf {
        match self {
            CgroupParent::Dir(d) => PathBuf::from(d),
            CgroupParent::Slice(s) => strata_runtime::cgroups::systemd::slice_path(s).unwrap_or_default(),
        }
    }

    /// Whether containers are made with the systemd cgroup driver.
    pub fn systemd(&self) -> bool {
        matches!(self, CgroupParent::Slice(_))
    }
}

pub struct Runner {
    /// The library's state root for these containers.
    pub root: PathBuf,
    /// Creates go through these when there are any (see `zygote`).
    zygotes: Option<crate::zygote::Zygotes>,
    /// Where every invocation's cgroup goes.
    pub cgroup_parent: CgroupParent,
    prefix: String,
    seq: AtomicU64,
    /// Set at shutdown: no new container is made.
    closed: std::sync::atomic::AtomicBool,
    /// Creates and deletes under way (shutdown waits for them).
    busy: std::sync::atomic::AtomicUsize,
    /// Network namespaces reused between invocations, unless turned off.
    netns: Option<Arc<crate::netns::Pool>>,
}

/// Counts one create or delete under way.
struct Busy<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

fn set_nonblocking(fd: &OwnedFd) {
    let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
}

fn cpu_usec(cgroup: Option<&Path>) -> u64 {
    cgroup
        .and_then(|d| std::fs::read_to_string(d.join("cpu.stat")).ok())
        .and_then(|s| {
            strata_runtime::cgroups::stats::flat_keyed(&s).get("usage_usec").and_then(serde_json::Value::as_u64)
        })
        .unwrap_or(0)
}

fn peak_memory(cgroup: Option<&Path>) -> Option<u64> {
    cgroup.and_then(|d| std::fs::read_to_string(d.join("memory.peak")).ok()).and_then(|s| s.trim().parse().ok())
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

impl Runner {
    /// A runner keeping container state under `root` and cgroups under
    /// `cgroup_parent`; container ids start with `prefix`.
    pub fn new(
        root: PathBuf,
        cgroup_parent: CgroupParent,
        prefix: &str,
        zygotes: Option<crate::zygote::Zygotes>,
    ) -> Runner {
        Runner {
            root,
            zygotes,
            cgroup_parent,
            prefix: prefix.into(),
            seq: AtomicU64::new(0),
            closed: Default::default(),
            busy: Default::default(),
            netns: None,
        }
    }

    /// Reuses network namespaces that provably hold nothing of the invocation
    /// before (see netns.rs).
    pub fn reuse_network_namespaces(&mut self, pool: Arc<crate::netns::Pool>) {
        self.netns = Some(pool);
    }

    /// Network namespaces ready for reuse and the pool's counts, when reuse
    /// is on.
    pub fn netns_ready_and_counts(&self) -> Option<(usize, crate::netns::Counts)> {
        self.netns.as_ref().map(|p| (p.ready(), p.counts()))
    }

    fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(&self.busy)
    }

    /// Refuses new containers and waits (up to 10 s) for creates and deletes
    /// under way, so that a sweep after it sees every container.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reaps the init of `p` (through its zygote when one made it).
    fn reap_init(&self, p: &mut Prepared) -> i32 {
        p.reaped = true;
        if p.vm {
            return crate::vm::exit_status(&self.root, &p.id);
        }
        match (&self.zygotes, p.zygote) {
            (Some(z), Some(i)) => z.reap(i, p.pid),
            _ => crate::zygote::reap(p.pid),
        }
    }

    /// The OCI config of one invocation's container.
    pub(crate) fn spec(&self, f: &Function, id: &str, file: Option<&FileMount>) -> crate::Result<serde_json::Value> {
        let mut s = strata_runtime::config::default_spec_json();
        s["process"]["terminal"] = false.into();
        s["process"]["args"] = serde_json::json!(f.command);
        s["process"]["env"] = serde_json::json!(f.env);
        s["process"]["cwd"] = f.cwd.clone().into();
        s["process"]["user"] = serde_json::json!({ "uid": f.uid, "gid": f.gid });
        s["root"] = serde_json::json!({ "path": f.rootfs, "readonly": true });
        s["hostname"] = f.name.clone().into();
        let mounts =
            s["mounts"].as_array_mut().ok_or_else(|| crate::Error::Other("default spec without mounts".into()))?;
        mounts.push(serde_json::json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]
        }));
        if let Some(m) = file {
            mounts.push(serde_json::json!({
                "destination": m.target, "type": "bind", "source": m.source,
                "options": ["bind", "ro", "nosuid", "nodev", "noexec"]
            }));
        }
        s["linux"]["cgroupsPath"] = self.cgroup_parent.cgroups_path(id).into();
        let r = &mut s["linux"]["resources"];
        if let Some(mb) = f.limits.memory_mb {
            r["memory"] = serde_json::json!({ "limit": mb << 20 });
        }
        if let Some(p) = f.limits.pids {
            r["pids"] = serde_json::json!({ "limit": p });
        }
        if let Some(c) = f.limits.cpus {
            r["cpu"] = serde_json::json!({ "quota": (c * 100_000.0) as i64, "period": 100_000 });
        }
        Ok(s)
    }

    /// Creates a container for `f` (not started). On failure nothing is left.
    pub fn prepare(&self, f: &Function, file: Option<&FileMount>) -> crate::Result<Prepared> {
        let _busy = self.busy();
        if self.closed.load(Ordering::SeqCst) {
            return Err(crate::Error::Other("the server is shutting down".into()));
        }
        let id = format!("{}-{}-{}", self.prefix, f.name, self.seq.fetch_add(1, Ordering::Relaxed));
        let mut spec = self.spec(f, &id, file)?;
        // A ready network namespace is joined (the zygote gets it as a
        // descriptor and names its own number).
        let pool = self.netns.as_ref().filter(|_| !f.vm);
        let joined = pool.and_then(|p| p.take());
        if let Some(ns) = &joined {
            join_network(&mut spec, ns.as_raw_fd())?;
        }
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let stdio = [stdin_r.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()];
        let (pid, zygote, cgroup) = match &self.zygotes {
            _ if f.vm => {
                let (pid, cgroup) = crate::vm::create(&self.root, &id, spec, stdio, self.cgroup_parent.systemd())?;
                (pid, None, cgroup)
            }
            Some(z) => {
                let fds: Vec<i32> = stdio.into_iter().chain(joined.as_ref().map(|ns| ns.as_raw_fd())).collect();
                let (pid, index, cgroup) =
                    z.create(&self.root, &id, &f.dir, spec, &fds, self.cgroup_parent.systemd())?;
                (pid, Some(index), cgroup)
            }
            None => {
                let opts = CreateOptions {
                    bundle: f.dir.clone(),
                    stdio: Some(stdio),
                    spec: Some(serde_json::from_value(spec)?),
                    systemd_cgroup: self.cgroup_parent.systemd(),
                    ..Default::default()
                };
                let st = Container::create(&self.root, &id, &opts)
                    .map_err(|e| crate::Error::Other(format!("create: {e}")))?;
                (st.pid, None, st.cgroup().map(|c| c.dir))
            }
        };
        let mounts =
            if f.vm { None } else { std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok().map(OwnedFd::from) };
        let net = match (pool, joined) {
            (_, Some(ns)) => Some(ns),
            (Some(_), None) => std::fs::File::open(format!("/proc/{pid}/ns/net")).ok().map(OwnedFd::from),
            (None, None) => None,
        };
        // Only the container holds its ends now.
        drop((stdin_r, stdout_w, stderr_w));
        for fd in [&stdin_w, &stdout_r, &stderr_r] {
            set_nonblocking(fd);
        }
        Ok(Prepared {
            id,
            pid,
            stdin: Some(stdin_w),
            stdout: stdout_r,
            stderr: stderr_r,
            cgroup,
            reaped: false,
            zygote,
            vm: f.vm,
            _mounts: mounts,
            net,
            exited: false,
        })
    }

    /// Deletes a container, started or not, and reaps its init.
    pub fn destroy(&self, mut p: Prepared) {
        let _busy = self.busy();
        if let Ok(c) = Container::load(&self.root, &p.id) {
            let _ = c.delete(true);
        }
        if p.vm {
            crate::vm::forget(&self.root, &p.id);
            p.reaped = true;
        }
        // Its init, ended by the delete if it was still waiting, is reaped here
        // (by its zygote, when it gets to it). Should the delete have failed,
        // the init is killed first, so the reap never waits on a live process
        // (the pid is still ours to signal: it is not reaped yet).
        if !p.reaped {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), Signal::SIGKILL);
            match (&self.zygotes, p.zygote) {
                (Some(z), Some(i)) => z.reap_later(i, p.pid),
                _ => {
                    self.reap_init(&mut p);
                }
            }
            p.reaped = true;
        }
        if let (true, Some(pool), Some(ns)) = (p.exited, &self.netns, p.net.take()) {
            pool.give_back(ns);
        }
    }

    /// Starts `p`, writes `input` to its stdin, collects its output until it
    /// exits or `timeout` passes (then SIGTERM, `grace`, and cgroup.kill).
    /// The container stays for [`Runner::destroy`].
    pub fn run(&self, p: &mut Prepared, input: &[u8], timeout: Duration, grace: Duration) -> Outcome {
        let mut out = Outcome::default();
        let cpu_before = cpu_usec(p.cgroup.as_deref());
        let container = match Container::load(&self.root, &p.id) {
            Ok(c) => c,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
        let asked = Instant::now();
        if let Err(e) = container.start() {
            out.error = Some(format!("start: {e}"));
            return out;
        }
        let running = Instant::now();
        out.start_latency = running - asked;
        out.running_at = Some(running);
        let pidfd = match pidfd_open(p.pid) {
            Ok(fd) => fd,
            Err(e) => {
                out.error = Some(format!("pidfd_open: {e}"));
                let _ = container.kill(Signal::SIGKILL, true);
                self.reap_init(p);
                return out;
            }
        };
        let deadline = running + timeout;
        let mut killed_at: Option<Instant> = None;
        let mut written = 0usize;
        let mut stdin = p.stdin.take().filter(|_| !input.is_empty());
        let (mut out_open, mut err_open, mut exited) = (true, true, false);
        let mut exit_seen: Option<Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if exited && (!out_open && !err_open || exit_seen.is_some_and(|t| t.elapsed() > Duration::from_millis(200)))
            {
                break;
            }
            let now = Instant::now();
            if !exited && now >= deadline && !out.timed_out {
                out.timed_out = true;
                // Every process of it: the init is pid 1 of its namespace and gets
                // SIGTERM only if it handles it.
                // (A VM's cgroup holds its VMM: its monitor forwards to the workload.)
                let _ = container.kill(Signal::SIGTERM, !p.vm);
                killed_at = Some(now);
            }
            if let Some(k) = killed_at {
                if !exited && now >= k + grace {
                    let _ = container.kill(Signal::SIGKILL, true);
                    killed_at = None;
                }
            }
            let wait_until = match (out.timed_out, killed_at) {
                (false, _) => deadline,
                (true, Some(k)) => k + grace,
                (true, None) => now + Duration::from_millis(100),
            };
            let wait_ms = wait_until.saturating_duration_since(now).as_millis().min(1000) as u16;
            let mut fds = Vec::with_capacity(4);
            let mut which = Vec::with_capacity(4);
            if let Some(fd) = &stdin {
                fds.push(nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLOUT));
                which.push(0);
            }
            if out_open {
                fds.push(nix::poll::PollFd::new(p.stdout.as_fd(), nix::poll::PollFlags::POLLIN));
                which.push(1);
            }
            if err_open {
                fds.push(nix::poll::PollFd::new(p.stderr.as_fd(), nix::poll::PollFlags::POLLIN));
                which.push(2);
            }
            if !exited {
                fds.push(nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN));
                which.push(3);
            }
            let timeout_ms = if exited { 50u16 } else { wait_ms.max(1) };
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(timeout_ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(_) => break,
            }
            let ready: Vec<(usize, bool)> =
                fds.iter().zip(&which).map(|(f, w)| (*w, f.revents().is_some_and(|r| !r.is_empty()))).collect();
            drop(fds);
            for (w, is_ready) in ready {
                if !is_ready {
                    continue;
                }
                match w {
                    0 => {
                        let Some(fd) = &stdin else { continue };
                        match nix::unistd::write(fd, &input[written..]) {
                            Ok(n) => written += n,
                            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
                            // EPIPE: the function does not read its event.
                            Err(_) => written = input.len(),
                        }
                        if written >= input.len() {
                            // Closing our end is the end of the event.
                            stdin = None;
                        }
                    }
                    1 | 2 => match nix::unistd::read(
                        if w == 1 { p.stdout.as_raw_fd() } else { p.stderr.as_raw_fd() },
                        &mut buf,
                    ) {
                        Ok(0) => {
                            if w == 1 {
                                out_open = false
                            } else {
                                err_open = false
                            }
                        }
                        Ok(n) if w == 1 => {
                            let room = MAX_OUTPUT.saturating_sub(out.stdout.len());
                            out.stdout.extend_from_slice(&buf[..n.min(room)]);
                            out.stdout_truncated |= n > room;
                        }
                        Ok(n) => {
                            out.stderr_tail.extend_from_slice(&buf[..n]);
                            let len = out.stderr_tail.len();
                            if len > 2 * STDERR_TAIL {
                                out.stderr_tail.drain(..len - STDERR_TAIL);
                            }
                        }
                        Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
                        Err(_) => {
                            if w == 1 {
                                out_open = false
                            } else {
                                err_open = false
                            }
                        }
                    },
                    _ => {
                        exited = true;
                        p.exited = true;
                        exit_seen = Some(Instant::now());
                        out.duration = running.elapsed();
                        // A zygote's child: its status is read while it is a
                        // zombie, and the zygote reaps it at destroy, off this path.
                        out.exit_code = match p.zygote.and_then(|_| crate::zygote::zombie_exit_code(p.pid)) {
                            Some(code) => Some(code),
                            None => Some(self.reap_init(p)),
                        };
                    }
                }
            }
        }
        let len = out.stderr_tail.len();
        if len > STDERR_TAIL {
            out.stderr_tail.drain(..len - STDERR_TAIL);
        }
        out.cpu_usec = cpu_usec(p.cgroup.as_deref()).saturating_sub(cpu_before);
        out.peak_memory = peak_memory(p.cgroup.as_deref());
        out
    }

    /// Deletes containers of an earlier run of the server (it was killed):
    /// every container under the root whose id starts with a prefix of ours.
    /// Also removes what a create cut short by a kill leaves (a state
    /// directory without state, a cgroup): only while no create runs.
    pub fn sweep(&self) -> usize {
        let mut n = 0;
        for st in Container::list(&self.root).unwrap_or_default() {
            if let Ok(c) = Container::load(&self.root, &st.id) {
                if c.delete(true).is_ok() {
                    n += 1;
                }
            }
        }
        for e in std::fs::read_dir(&self.root).into_iter().flatten().flatten() {
            if std::fs::remove_dir_all(e.path()).is_ok() {
                n += 1;
            }
        }
        if let Ok(mount) = strata_runtime::cgroups::find_mount() {
            for e in std::fs::read_dir(mount.join(self.cgroup_parent.dir())).into_iter().flatten().flatten() {
                let dir = e.path();
                if !dir.is_dir() {
                    continue;
                }
                if self.cgroup_parent.systemd() {
                    // A scope is systemd's: emptied, it goes by itself.
                    let ours = e.file_name().to_string_lossy().starts_with("strata-fn-");
                    if ours && std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                        n += 1;
                    }
                    continue;
                }
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                for _ in 0..100 {
                    if std::fs::remove_dir(&dir).is_ok() {
                        n += 1;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        n
    }
}

/// Makes `spec` join the network namespace open as descriptor `fd` (of the
/// process that creates the container) instead of making one.
pub(crate) fn join_network(spec: &mut serde_json::Value, fd: i32) -> crate::Result<()> {
    let ns = spec["linux"]["namespaces"]
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|n| n["type"] == "network"))
        .ok_or_else(|| crate::Error::Other("the config has no network namespace to join".into()))?;
    ns["path"] = format!("/proc/self/fd/{fd}").into();
    Ok(())
}

/// The naive baseline for benchmarks: one `RUNTIME run` per invocation, from a
/// bundle written for it, stdin and stdout through pipes.
pub fn run_naive(runtime: &Path, runner: &Runner, f: &Function, input: &[u8]) -> Outcome {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut out = Outcome::default();
    let id = format!("naive-{}-{}", f.name, runner.seq.fetch_add(1, Ordering::Relaxed));
    let bundle = runner.root.join("naive").join(&id);
    let result = (|| -> crate::Result<()> {
        std::fs::create_dir_all(&bundle)?;
        let spec = runner.spec(f, &id, None)?;
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        // The baseline's state, created before the first run.
        let started = Instant::now();
        let mut child = Command::new(runtime)
            .args(["--root", &runner.root.join("naive-state").to_string_lossy(), "run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input);
        }
        let o = child.wait_with_output()?;
        out.duration = started.elapsed();
        out.exit_code = Some(o.status.code().unwrap_or(255));
        out.stdout = o.stdout;
        out.stderr_tail = o.stderr;
        Ok(())
    })();
    if let Err(e) = result {
        out.error = Some(e.to_string());
    }
    let _ = std::fs::remove_dir_all(&bundle);
    out
}
