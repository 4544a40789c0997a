//! The shim's task service: every Task RPC, run on the Strata library
//! in-process, with events published in the order containerd requires.

use crate::events::{Event, Publisher};
use crate::io::{copy_terminal, Stdio};
use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, Empty,
    ExecProcessRequest, KillRequest, PidsRequest, PidsResponse, ResizePtyRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, Status, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::shim::{CloseIORequest, PauseRequest, ResumeRequest, ShutdownRequest};
use containerd_shim::protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Flags, StartOpts};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use strata_runtime::{Container, CreateOptions, ExecOptions};

/// Where the library keeps container state for the shims of one namespace.
fn state_root(namespace: &str) -> PathBuf {
    PathBuf::from("/run/containerd/strata").join(namespace)
}

fn err(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.to_string()))
}

fn internal(e: impl std::fmt::Display) -> ttrpc::Error {
    err(Code::UNKNOWN, e)
}

/// The file in the bundle where the shim records the init's exit status
/// (`CODE SECONDS NANOS`) before publishing it: containerd reads it back
/// through `delete_shim` if the shim dies before containerd has read it.
const EXIT_RECORD: &str = "strata-init-exit";

fn read_exit_record(path: &Path) -> Option<(u32, Timestamp)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut f = text.split_whitespace().map(str::parse::<i64>);
    let (Some(Ok(code)), Some(Ok(seconds)), Some(Ok(nanos))) = (f.next(), f.next(), f.next()) else { return None };
    let mut at = Timestamp::new();
    at.seconds = seconds;
    at.nanos = i32::try_from(nanos).ok()?;
    Some((u32::try_from(code).ok()?, at))
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut t = Timestamp::new();
    t.seconds = d.as_secs() as i64;
    t.nanos = d.subsec_nanos() as i32;
    t
}

/// One process of a task (its init or an exec) once it runs.
struct Proc {
    /// 0 until an exec is started.
    pid: std::sync::atomic::AtomicI32,
    exit: Mutex<Option<(u32, Timestamp)>>,
    exited: Condvar,
}

impl Proc {
    fn new(pid: i32) -> Arc<Proc> {
        Arc::new(Proc { pid: std::sync::atomic::AtomicI32::new(pid), exit: Mutex::new(None), exited: Condvar::new() })
    }

    fn pid(&self) -> i32 {
        self.pid.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_exit(&self, code: u32, at: Timestamp) {
        *self.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some((code, at));
        self.exited.notify_all();
    }

    fn wait(&self) -> (u32, Timestamp) {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = exit.clone() {
                return e;
            }
            exit = self.exited.wait(exit).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn exit_status(&self) -> Option<(u32, Timestamp)> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An exec registered by Exec and run by Start.
struct ExecEntry {
    spec: oci_spec::runtime::Process,
    stdio: (String, String, String),
    terminal: bool,
    proc: Arc<Proc>,
    started: bool,
    master: Option<File>,
}

struct Task {
    bundle: PathBuf,
    stdio: (String, String, String),
    terminal: bool,
    init: Arc<Proc>,
    started: bool,
    master: Option<File>,
    execs: HashMap<String, ExecEntry>,
    rootfs_mounted: bool,
}

pub struct Shim {
    namespace: String,
    id: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for Shim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut containerd_shim::Config) -> Self {
        Shim { namespace: args.namespace.clone(), id: args.id.clone(), exit: Arc::new(ExitSignal::default()) }
    }

    fn start_shim(&mut self, _opts: StartOpts) -> containerd_shim::Result<String> {
        // `main` answers `start` itself (crate::daemon), before the crate's bootstrap.
        Err(containerd_shim::Error::Unimplemented("start goes through the shim's own bootstrap".into()))
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // containerd lost the shim: clean up what it left of this container.
        let root = state_root(&self.namespace);
        if let Ok(c) = Container::load(&root, &self.id) {
            let _ = c.delete(true);
        }
        let bundle = std::env::current_dir().unwrap_or_default();
        let _ = containerd_shim::mount::umount_recursive(bundle.join("rootfs").to_str(), 0);
        let mut resp = DeleteResponse::new();
        // An init that exited before the shim died keeps its own status (the
        // shim wrote it down before telling anyone); one the delete above
        // killed died of SIGKILL.
        match read_exit_record(&bundle.join(EXIT_RECORD)) {
            Some((code, at)) => {
                resp.exit_status = code;
                resp.exited_at = Some(at).into();
            }
            None => {
                resp.exit_status = 128 + libc::SIGKILL as u32;
                resp.exited_at = Some(now()).into();
            }
        }
        Ok(resp)
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, _publisher: RemotePublisher) -> Service {
        // (Reached only through the library's own bootstrap, which `start` no
        // longer takes: events go through this shim's publisher all the same.)
        let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        let publisher = Publisher::connect(&address, &self.namespace)
            .inspect_err(|e| log::error!("no events: connect to {address}: {e}"))
            .ok();
        self.task_service(publisher)
    }
}

impl Shim {
    /// The task service, sending its events through `publisher` (dropping
    /// them without one).
    pub(crate) fn task_service(&self, publisher: Option<Publisher>) -> Service {
        // Events go out from one thread, in the order they were made, and never
        // from inside an RPC: containerd handles some (the task's create) only
        // after the RPC that caused them has returned.
        let (events, queue) = std::sync::mpsc::channel::<Event>();
        std::thread::spawn(move || {
            for event in queue {
                let topic = event.topic();
                if let Some(Err(e)) = publisher.as_ref().map(|p| p.publish(event)) {
                    log::warn!("publish {topic}: {e}");
                }
            }
        });
        let oom = match crate::oom::OomWatcher::start(events.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!("no OOM events: inotify: {e}");
                None
            }
        };
        let service = Service {
            oom,
            root: state_root(&self.namespace),
            tasks: Arc::new(Mutex::new(HashMap::new())),
            events: Mutex::new(events),
            exit: self.exit.clone(),
            watched: Arc::new(Mutex::new(HashSet::new())),
            children: Arc::new(RwLock::new(())),
        };
        let (tasks, watched, children) = (service.tasks.clone(), service.watched.clone(), service.children.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(2));
            reap_orphans(&tasks, &watched, &children);
        });
        service
    }
}

/// The sandbox or group a container belongs to, from its config's annotations.
pub(crate) fn group_of(bundle: &Path) -> Option<String> {
    let spec = strata_runtime::config::load(bundle).ok()?;
    let a = spec.annotations().as_ref()?;
    a.get("io.kubernetes.cri.sandbox-id").or_else(|| a.get("io.containerd.strata.v2.group")).cloned()
}

pub struct Service {
    root: PathBuf,
    tasks: Arc<Mutex<HashMap<String, Task>>>,
    events: Mutex<std::sync::mpsc::Sender<Event>>,
    exit: Arc<ExitSignal>,
    oom: Option<crate::oom::OomWatcher>,
    /// Pids a waiter thread is reaping.
    watched: Arc<Mutex<HashSet<i32>>>,
    /// Held (shared) by every RPC that may fork through the library, whose
    /// children the library reaps itself; the orphan reaper runs only when it
    /// can hold it alone.
    children: Arc<RwLock<()>>,
}

/// The shim is the subreaper of its containers: a process of a container in
/// the host's pid namespace whose parent dies is handed to the shim. Reaps those
/// that have exited, touching no child that a waiter or the library owns.
fn reap_orphans(tasks: &Mutex<HashMap<String, Task>>, watched: &Mutex<HashSet<i32>>, children: &RwLock<()>) {
    let Ok(_alone) = children.try_write() else { return };
    let mut known: HashSet<i32> = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for t in tasks.lock().unwrap_or_else(|e| e.into_inner()).values() {
        known.insert(t.init.pid());
        known.extend(t.execs.values().map(|e| e.proc.pid()));
    }
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else { return };
    for thread in threads.flatten() {
        let Ok(list) = std::fs::read_to_string(thread.path().join("children")) else { continue };
        for pid in list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
                .unwrap_or(false);
            if zombie && !known.contains(&pid) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
                log::debug!("reaped orphan {pid}");
            }
        }
    }
}

impl Service {
    /// Keeps the master of an exec's terminal (for ResizePty).
    fn set_exec_master(&self, req: &StartRequest, master: Option<File>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = tasks.get_mut(&req.id).and_then(|t| t.execs.get_mut(&req.exec_id)) {
            e.master = master;
        }
    }

    /// An exec runs: containerd hears of it, and its exit is watched for.
    fn exec_started(&self, req: &StartRequest, proc: Arc<Proc>, pid: i32) -> StartResponse {
        self.publish(
            "/tasks/exec-started",
            TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        self.watch(req.id.clone(), req.exec_id.clone(), proc, None);
        let mut resp = StartResponse::new();
        resp.pid = pid as u32;
        resp
    }

    fn publish<M: Message>(&self, topic: &'static str, event: M) {
        let _ = self.events.lock().unwrap_or_else(|e| e.into_inner()).send(Event::new(topic, &event));
    }

    fn container(&self, id: &str) -> ttrpc::Result<Container> {
        Container::load(&self.root, id).map_err(|e| err(Code::NOT_FOUND, e))
    }

    /// Reaps `proc` when it exits (waiting for that pid alone, so no other
    /// child of the shim is touched) and publishes its exit, after writing it
    /// to `record` when given (the init's, for `delete_shim`).
    fn watch(&self, id: String, exec_id: String, proc: Arc<Proc>, record: Option<PathBuf>) {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let watched = self.watched.clone();
        watched.lock().unwrap_or_else(|e| e.into_inner()).insert(proc.pid());
        std::thread::spawn(move || {
            let code = wait_for(proc.pid());
            watched.lock().unwrap_or_else(|e| e.into_inner()).remove(&proc.pid());
            let at = now();
            if let Some(path) = record {
                if let Err(e) = std::fs::write(&path, format!("{code} {} {}", at.seconds, at.nanos)) {
                    log::warn!("record the exit status in {}: {e}", path.display());
                }
            }
            proc.set_exit(code, at.clone());
            let ev = TaskExit {
                container_id: id.clone(),
                id: if exec_id.is_empty() { id } else { exec_id },
                pid: proc.pid() as u32,
                exit_status: code,
                exited_at: Some(at).into(),
                ..Default::default()
            };
            let _ = events.send(Event::new("/tasks/exit", &ev));
        });
    }
}

/// Mounts one of the rootfs mounts containerd sends (an overlay from the
/// snapshotter, or a bind) on `target`. (The shim crate's helper forks and waits
/// through its own reaper, which this shim does not run.)
fn mount_rootfs(typ: &str, source: &str, options: &[String], target: &Path) -> Result<(), String> {
    let opts = strata_runtime::rootfs::options::parse(options, "rootfs").map_err(|e| e.to_string())?;
    let fstype = if typ == "bind" || typ.is_empty() { None } else { Some(typ) };
    let data = if opts.data.is_empty() { None } else { Some(opts.data.as_str()) };
    nix::mount::mount(Some(source), target, fstype, opts.flags, data).map_err(|e| e.to_string())?;
    if !opts.propagation.is_empty() {
        nix::mount::mount(None::<&str>, target, None::<&str>, opts.propagation, None::<&str>)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Waits for child `pid` to exit and reaps it; its exit code (128+N for a signal).
fn wait_for(pid: i32) -> u32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code as u32,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as u32,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

fn status_of(task: &Task, container: &Container) -> Status {
    if task.init.exit_status().is_some() {
        return Status::STOPPED;
    }
    match container.state().map(|s| s.status) {
        Ok(strata_runtime::Status::Created) | Ok(strata_runtime::Status::Creating) => Status::CREATED,
        Ok(strata_runtime::Status::Running) => Status::RUNNING,
        Ok(strata_runtime::Status::Paused) => Status::PAUSED,
        _ => Status::STOPPED,
    }
}

impl containerd_shim::Task for Service {
    fn create(&self, _ctx: &TtrpcContext, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        log::debug!("create {:?}", req.id);
        let _children = self.children.read().unwrap_or_else(|e| e.into_inner());
        if !req.checkpoint.is_empty() {
            return Err(err(Code::UNIMPLEMENTED, "checkpoint restore is not supported"));
        }
        // The runtime's options from containerd's config, as the runc shim reads them.
        let runtime_options = match req.options.as_ref() {
            Some(any) => {
                crate::options::parse(&any.type_url, &any.value).map_err(|e| err(Code::INVALID_ARGUMENT, e))?
            }
            None => crate::options::RuntimeOptions::default(),
        };
        let bundle = PathBuf::from(&req.bundle);
        // (A bundle directory used again must not report an earlier exit.)
        let _ = std::fs::remove_file(bundle.join(EXIT_RECORD));
        let rootfs = bundle.join("rootfs");
        let mut mounted = false;
        for m in &req.rootfs {
            std::fs::create_dir_all(&rootfs).map_err(internal)?;
            mount_rootfs(&m.type_, &m.source, &m.options, &rootfs)
                .map_err(|e| internal(format!("mount rootfs ({} {}): {e}", m.type_, m.source)))?;
            mounted = true;
        }
        let unmount = || {
            if mounted {
                let _ = containerd_shim::mount::umount_recursive(rootfs.to_str(), 0);
            }
        };
        let stdio = match Stdio::open(&req.stdin, &req.stdout, &req.stderr) {
            Ok(s) => s,
            Err(e) => {
                unmount();
                return Err(internal(format!("open stdio: {e}")));
            }
        };
        let console = if req.terminal { Some(std::os::unix::net::UnixStream::pair().map_err(internal)?) } else { None };
        // The systemd driver when the options ask for it, or when the cgroup
        // path has its form: containerd's CRI writes `slice:prefix:id` for pods
        // whose cgroup parent is a slice (kubelet's systemd driver), and passes
        // runc's options only to runc's shim type.
        let spec = strata_runtime::config::load(&bundle).ok();
        let systemd_path = spec
            .as_ref()
            .and_then(|s| s.linux().as_ref()?.cgroups_path().clone())
            .is_some_and(|p| strata_runtime::cgroups::systemd::is_systemd_path(&p.to_string_lossy()));
        let opts = CreateOptions {
            bundle: bundle.clone(),
            console_socket: console.as_ref().map(|(_, theirs)| theirs.as_raw_fd()),
            stdio: Some(stdio.fds()),
            spec,
            systemd_cgroup: runtime_options.systemd_cgroup || systemd_path,
            no_pivot: runtime_options.no_pivot_root,
            no_new_keyring: runtime_options.no_new_keyring,
            ..Default::default()
        };
        let in_vm = crate::vm::every_task_in_a_vm()
            || opts.spec.as_ref().is_some_and(|s| crate::vm::wants_vm(s) || crate::vm::joins_vm(&self.root, s));
        // A VM's terminal master comes from the strata binary, not the library.
        let mut vm_master = None;
        let created = if in_vm {
            crate::vm::create(&self.root, &req.id, &bundle, &stdio, req.terminal).and_then(|m| {
                vm_master = m;
                Container::load(&self.root, &req.id).and_then(|c| c.state()).map_err(|e| e.to_string())
            })
        } else {
            Container::create(&self.root, &req.id, &opts).map_err(|e| e.to_string())
        };
        let state = match created {
            Ok(s) => s,
            Err(e) => {
                unmount();
                return Err(err(Code::UNKNOWN, e));
            }
        };
        let received = match (vm_master, console) {
            (Some(m), _) => Some(Ok(m)),
            (None, Some((ours, _theirs))) if !in_vm => Some(strata_runtime::tty::recv_master(ours.as_raw_fd())),
            _ if req.terminal => Some(Err(strata_runtime::Error::Init("no terminal came from the VM".into()))),
            _ => None,
        };
        let master = match received {
            Some(m) => {
                let terminal = m.map_err(internal).and_then(|m: OwnedFd| copy_terminal(m, stdio).map_err(internal));
                match terminal {
                    Ok(master) => Some(master),
                    Err(e) => {
                        // Nothing of a task that failed to come up may stay.
                        if let Ok(c) = Container::load(&self.root, &req.id) {
                            let _ = c.delete(true);
                        }
                        wait_for(state.pid);
                        unmount();
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        if let (Some(oom), Some(cg)) = (&self.oom, state.cgroup()) {
            oom.watch(&req.id, &cg.dir);
        }
        let init = Proc::new(state.pid);
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).insert(
            req.id.clone(),
            Task {
                bundle,
                stdio: (req.stdin.clone(), req.stdout.clone(), req.stderr.clone()),
                terminal: req.terminal,
                init,
                started: false,
                master,
                execs: HashMap::new(),
                rootfs_mounted: mounted,
            },
        );
        self.publish(
            "/tasks/create",
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(containerd_shim::protos::events::task::TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                pid: state.pid as u32,
                ..Default::default()
            },
        );
        let mut resp = CreateTaskResponse::new();
        resp.pid = state.pid as u32;
        Ok(resp)
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        log::debug!("start {:?}", req.id);
        let _children = self.children.read().unwrap_or_else(|e| e.into_inner());
        let container = self.container(&req.id)?;
        let mut resp = StartResponse::new();
        if req.exec_id.is_empty() {
            let (init, bundle) = {
                let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                let task = tasks.get(&req.id).ok_or_else(|| err(Code::NOT_FOUND, &req.id))?;
                (task.init.clone(), task.bundle.clone())
            };
            container.start().map_err(|e| err(Code::FAILED_PRECONDITION, e))?;
            if let Some(t) = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&req.id) {
                t.started = true;
            }
            self.publish(
                "/tasks/start",
                TaskStart { container_id: req.id.clone(), pid: init.pid() as u32, ..Default::default() },
            );
            self.watch(req.id.clone(), String::new(), init.clone(), Some(bundle.join(EXIT_RECORD)));
            resp.pid = init.pid() as u32;
            return Ok(resp);
        }
        let (spec, stdio, terminal, proc) = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let e = tasks
                .get_mut(&req.id)
                .and_then(|t| t.execs.get_mut(&req.exec_id))
                .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {}", req.exec_id)))?;
            if e.started {
                return Err(err(Code::FAILED_PRECONDITION, format!("exec {} was started already", req.exec_id)));
            }
            e.started = true;
            (e.spec.clone(), e.stdio.clone(), e.terminal, e.proc.clone())
        };
        // A waiter is released with the failure's code if the exec cannot start.
        let fail = |e: ttrpc::Error| {
            proc.set_exit(127, now());
            e
        };
        let io = Stdio::open(&stdio.0, &stdio.1, &stdio.2).map_err(|e| fail(internal(format!("open stdio: {e}"))))?;
        if container.state().is_ok_and(|s| crate::vm::is_vm(&s)) {
            let bundle = {
                let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                tasks.get(&req.id).map(|t| t.bundle.clone()).ok_or_else(|| fail(err(Code::NOT_FOUND, &req.id)))?
            };
            let (pid, master) =
                crate::vm::exec(&self.root, &req.id, &bundle, &spec, &io).map_err(|e| fail(err(Code::UNKNOWN, e)))?;
            proc.pid.store(pid, std::sync::atomic::Ordering::SeqCst);
            let master = master.map(|m| copy_terminal(m, io)).transpose().map_err(internal)?;
            self.set_exec_master(&req, master);
            return Ok(self.exec_started(&req, proc, pid));
        }
        let console =
            if terminal { Some(std::os::unix::net::UnixStream::pair().map_err(|e| fail(internal(e)))?) } else { None };
        let opts = ExecOptions {
            console_socket: console.as_ref().map(|(_, theirs)| theirs.as_raw_fd()),
            stdio: Some(io.fds()),
            ..Default::default()
        };
        let pid = container.exec(&spec, &opts).map_err(|e| fail(err(Code::UNKNOWN, e)))?;
        proc.pid.store(pid, std::sync::atomic::Ordering::SeqCst);
        let master = match console {
            Some((ours, _theirs)) => {
                let master = strata_runtime::tty::recv_master(ours.as_raw_fd()).map_err(internal)?;
                Some(copy_terminal(master, io).map_err(internal)?)
            }
            None => None,
        };
        self.set_exec_master(&req, master);
        Ok(self.exec_started(&req, proc, pid))
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        log::debug!("delete {:?}", req.id);
        let _children = self.children.read().unwrap_or_else(|e| e.into_inner());
        let mut resp = DeleteResponse::new();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if !req.exec_id.is_empty() {
            let task = tasks.get_mut(&req.id).ok_or_else(|| err(Code::NOT_FOUND, &req.id))?;
            let e = task.execs.remove(&req.exec_id).ok_or_else(|| err(Code::NOT_FOUND, &req.exec_id))?;
            resp.pid = e.proc.pid() as u32;
            if let Some((code, at)) = e.proc.exit_status() {
                resp.exit_status = code;
                resp.exited_at = Some(at).into();
            }
            return Ok(resp);
        }
        let running = tasks.get(&req.id).ok_or_else(|| err(Code::NOT_FOUND, &req.id))?;
        if running.started && running.init.exit_status().is_none() {
            return Err(err(Code::FAILED_PRECONDITION, format!("task {} is still running", req.id)));
        }
        let task = tasks.remove(&req.id).ok_or_else(|| err(Code::NOT_FOUND, &req.id))?;
        drop(tasks);
        let container = self.container(&req.id)?;
        if !task.started {
            // Never started: the init is still ours to end and reap.
            let _ = container.delete(true);
            let code = wait_for(task.init.pid());
            task.init.set_exit(code, now());
        }
        let (code, at) = task.init.wait();
        container.delete(true).map_err(internal)?;
        if task.rootfs_mounted {
            let _ = containerd_shim::mount::umount_recursive(task.bundle.join("rootfs").to_str(), 0);
        }
        resp.pid = task.init.pid() as u32;
        resp.exit_status = code;
        resp.exited_at = Some(at.clone()).into();
        self.publish(
            "/tasks/delete",
            TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid: task.init.pid() as u32,
                exit_status: code,
                exited_at: Some(at).into(),
                ..Default::default()
            },
        );
        Ok(resp)
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        log::debug!("state {:?}", req.id);
        let container = self.container(&req.id)?;
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let task = tasks.get(&req.id).ok_or_else(|| err(Code::NOT_FOUND, &req.id))?;
        let mut resp = StateResponse::new();
        resp.id = req.id.clone();
        resp.bundle = task.bundle.to_string_lossy().into_owned();
        if req.exec_id.is_empty() {
            resp.pid = task.init.pid() as u32;
            resp.status = status_of(task, &container).into();
            (resp.stdin, resp.stdout, resp.stderr) = task.stdio.clone();
            resp.terminal = task.terminal;
            if let Some((code, at)) = task.init.exit_status() {
                resp.exit_status = code;
                resp.exited_at = Some(at).into();
            }
        } else {
            let e = task.execs.get(&req.exec_id).ok_or_else(|| err(Code::NOT_FOUND, &req.exec_id))?;
            resp.exec_id = req.exec_id.clone();
            (resp.stdin, resp.stdout, resp.stderr) = e.stdio.clone();
            resp.terminal = e.terminal;
            resp.status = match e.proc.exit_status() {
                Some((code, at)) => {
                    resp.exit_status = code;
                    resp.exited_at = Some(at).into();
                    Status::STOPPED
                }
                None if e.started => Status::RUNNING,
                None => Status::CREATED,
            }
            .into();
            resp.pid = e.proc.pid() as u32;
        }
        Ok(resp)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        log::debug!("pids {:?}", req.id);
        let pids = self.container(&req.id)?.pids().map_err(internal)?;
        let mut resp = PidsResponse::new();
        resp.processes = pids
            .into_iter()
            .map(|p| {
                let mut info = ProcessInfo::new();
                info.pid = p as u32;
                info
            })
            .collect();
        Ok(resp)
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        log::debug!("pause {:?}", req.id);
        let container = self.container(&req.id)?;
        if container.state().is_ok_and(|s| crate::vm::is_member(&s)) {
            crate::vm::pause(&self.root, &req.id, true).map_err(|e| err(Code::FAILED_PRECONDITION, e))?;
        } else {
            container.pause().map_err(|e| err(Code::FAILED_PRECONDITION, e))?;
        }
        self.publish("/tasks/paused", TaskPaused { container_id: req.id.clone(), ..Default::default() });
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        log::debug!("resume {:?}", req.id);
        let container = self.container(&req.id)?;
        if container.state().is_ok_and(|s| crate::vm::is_member(&s)) {
            crate::vm::pause(&self.root, &req.id, false).map_err(|e| err(Code::FAILED_PRECONDITION, e))?;
        } else {
            container.resume().map_err(|e| err(Code::FAILED_PRECONDITION, e))?;
        }
        self.publish("/tasks/resumed", TaskResumed { container_id: req.id.clone(), ..Default::default() });
        Ok(Empty::new())
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        log::debug!("kill {:?}", req.id);
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32)
            .map_err(|_| err(Code::INVALID_ARGUMENT, format!("signal {}", req.signal)))?;
        if req.exec_id.is_empty() {
            let container = self.container(&req.id)?;
            // A VM's cgroup holds its monitor and VMM: the monitor forwards
            // the signal to the workload.
            let all = req.all && !container.state().is_ok_and(|s| crate::vm::is_vm(&s));
            container.kill(signal, all).map_err(|e| err(Code::NOT_FOUND, e))?;
            return Ok(Empty::new());
        }
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let proc = tasks
            .get(&req.id)
            .and_then(|t| t.execs.get(&req.exec_id))
            .filter(|e| e.started)
            .map(|e| e.proc.clone())
            .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {} is not running", req.exec_id)))?;
        if proc.exit_status().is_none() && proc.pid() > 0 {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(proc.pid()), signal).map_err(internal)?;
        }
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        log::debug!("exec {:?}", req.id);
        let spec_any = req.spec.as_ref().ok_or_else(|| err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let spec = strata_runtime::config::parse_process(&spec_any.value, Path::new("exec process"))
            .map_err(|e| err(Code::INVALID_ARGUMENT, e))?;
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let task = tasks.get_mut(&req.id).ok_or_else(|| err(Code::NOT_FOUND, &req.id))?;
        if task.execs.contains_key(&req.exec_id) {
            return Err(err(Code::ALREADY_EXISTS, format!("exec {}", req.exec_id)));
        }
        task.execs.insert(
            req.exec_id.clone(),
            ExecEntry {
                spec,
                stdio: (req.stdin.clone(), req.stdout.clone(), req.stderr.clone()),
                terminal: req.terminal,
                proc: Proc::new(0),
                started: false,
                master: None,
            },
        );
        drop(tasks);
        self.publish(
            "/tasks/exec-added",
            TaskExecAdded { container_id: req.id.clone(), exec_id: req.exec_id.clone(), ..Default::default() },
        );
        Ok(Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        log::debug!("resize_pty {:?}", req.id);
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let task = tasks.get(&req.id).ok_or_else(|| err(Code::NOT_FOUND, &req.id))?;
        let master = if req.exec_id.is_empty() {
            task.master.as_ref()
        } else {
            task.execs.get(&req.exec_id).and_then(|e| e.master.as_ref())
        };
        let master = master.ok_or_else(|| err(Code::FAILED_PRECONDITION, "the process has no terminal"))?;
        strata_runtime::tty::resize(master.as_raw_fd(), req.width as u16, req.height as u16).map_err(internal)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, _req: CloseIORequest) -> ttrpc::Result<Empty> {
        log::debug!("close_io {:?}", _req.id);
        // The process holds the stdin fifo itself: containerd closing its end is
        // the end of input. Nothing of ours stays open on it.
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        log::debug!("update {:?}", req.id);
        let any = req.resources.as_ref().ok_or_else(|| err(Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(&any.value).map_err(|e| err(Code::INVALID_ARGUMENT, format!("resources: {e}")))?;
        let container = self.container(&req.id)?;
        if container.state().is_ok_and(|s| crate::vm::is_vm(&s)) {
            // Its limits hold in the guest, where its cgroup is.
            crate::vm::update(&self.root, &req.id, &resources).map_err(|e| err(Code::FAILED_PRECONDITION, e))?;
            return Ok(Empty::new());
        }
        container.update(&resources).map_err(|e| err(Code::FAILED_PRECONDITION, e))?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        log::debug!("wait {:?}", req.id);
        let proc = {
            let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let task = tasks.get(&req.id).ok_or_else(|| err(Code::NOT_FOUND, &req.id))?;
            if req.exec_id.is_empty() {
                task.init.clone()
            } else {
                // Waiting may begin before the exec is started (ctr does that).
                task.execs
                    .get(&req.exec_id)
                    .map(|e| e.proc.clone())
                    .ok_or_else(|| err(Code::NOT_FOUND, &req.exec_id))?
            }
        };
        let (code, at) = proc.wait();
        let mut resp = WaitResponse::new();
        resp.exit_status = code;
        resp.exited_at = Some(at).into();
        Ok(resp)
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let st = self.container(&req.id)?.state().map_err(internal)?;
        let m = if crate::vm::is_member(&st) {
            // Its cgroup is in its VM's guest.
            let data = crate::vm::stats(&self.root, &req.id).map_err(|e| err(Code::FAILED_PRECONDITION, e))?;
            crate::stats::of_events(&data)
        } else {
            let cg = st.cgroup().ok_or_else(|| err(Code::FAILED_PRECONDITION, "the task has no cgroup"))?;
            crate::stats::of_cgroup(&cg.dir)
        };
        let mut any = containerd_shim::protos::protobuf::well_known_types::any::Any::new();
        any.type_url = "io.containerd.cgroups.v2.Metrics".into();
        any.value = m.write_to_bytes().map_err(internal)?;
        let mut resp = StatsResponse::new();
        resp.stats = Some(any).into();
        Ok(resp)
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: containerd_shim::api::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        Err(err(Code::UNIMPLEMENTED, "checkpoint is not supported by strata"))
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        log::debug!("connect {:?}", req.id);
        let mut resp = ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid =
            self.tasks.lock().unwrap_or_else(|e| e.into_inner()).get(&req.id).map(|t| t.init.pid() as u32).unwrap_or(0);
        Ok(resp)
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        log::debug!("shutdown {:?}", _req.id);
        if self.tasks.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}
