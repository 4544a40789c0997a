//! `strata-fn serve`: the HTTP front, concurrency limits, asynchronous events
//! with retries and a dead-letter list, file triggers, metering and metrics.

use crate::function::Function;
use crate::http::{self, Request, Response};
use crate::metrics::Metrics;
use crate::pool::Pools;
use crate::runner::{CgroupParent, FileMount, Outcome, Runner};
use crate::store::{self, b64, now_ms, unb64, Mode, Record, Status, Store};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Settings of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub state: PathBuf,
    /// Billing granularity: durations are rounded up to a multiple of it.
    pub bill_ms: u64,
    /// Invocations running at once, over all functions (protects the host).
    pub max_running: u32,
    /// Synchronous calls waiting for the global limit; more get 429.
    pub max_waiting: u32,
    pub async_workers: usize,
    pub pool_workers: usize,
    /// Open connections at most; more get 503.
    pub max_connections: usize,
    /// Run each invocation with `RUNTIME run` (a naive baseline for benchmarks)
    /// instead of the library and the pool.
    pub naive_runtime: Option<PathBuf>,
    /// The cgroup (relative to the v2 mount) holding every invocation's cgroup.
    pub cgroup_parent: String,
    /// The systemd cgroup driver: `cgroup_parent` is a slice, each
    /// invocation a scope unit in it.
    pub systemd_cgroup: bool,
    /// Every invocation makes a new network namespace: none is reused (see
    /// netns.rs).
    pub fresh_network_namespaces: bool,
    /// How long a reusable network namespace is kept unused.
    pub netns_keep: Duration,
}

impl Config {
    /// Settings for `state` with every other value at its default.
    pub fn new(state: PathBuf) -> Config {
        Config {
            listen: "127.0.0.1:8080".into(),
            state,
            bill_ms: 1,
            max_running: 64,
            max_waiting: 1024,
            async_workers: 4,
            pool_workers: 2,
            max_connections: 1024,
            naive_runtime: None,
            cgroup_parent: "strata-fn".into(),
            systemd_cgroup: false,
            fresh_network_namespaces: false,
            netns_keep: crate::netns::KEEP_IDLE,
        }
    }
}

/// A counting gate: `max` holders at once, up to `waiters` waiting.
struct Gate {
    state: Mutex<(u32, u32)>,
    cv: Condvar,
}

struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).0 -= 1;
        self.0.cv.notify_one();
    }
}

impl Gate {
    fn new() -> Gate {
        Gate { state: Mutex::new((0, 0)), cv: Condvar::new() }
    }

    /// A pass when fewer than `max` hold one, after waiting if fewer than
    /// `waiters` wait already; None means "too many".
    fn enter(&self, max: u32, waiters: Option<u32>) -> Option<Pass<'_>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 >= max {
            if waiters.is_some_and(|w| s.1 >= w) {
                return None;
            }
            s.1 += 1;
            while s.0 >= max {
                s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.1 -= 1;
        }
        s.0 += 1;
        Some(Pass(self))
    }

    /// A pass if fewer than `max` hold one, without waiting.
    fn try_enter(&self, max: u32) -> Option<Pass<'_>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 >= max {
            return None;
        }
        s.0 += 1;
        Some(Pass(self))
    }

    fn running(&self) -> u32 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// Asynchronous events due to run: (due, sequence, id), soonest first.
struct Queue {
    heap: Mutex<BinaryHeap<std::cmp::Reverse<(u64, u64, String)>>>,
    cv: Condvar,
    seq: AtomicUsize,
}

impl Queue {
    fn push(&self, due_ms: u64, id: String) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) as u64;
        self.heap.lock().unwrap_or_else(|e| e.into_inner()).push(std::cmp::Reverse((due_ms, seq, id)));
        self.cv.notify_one();
    }

    fn pop(&self) -> String {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = now_ms();
            match heap.peek() {
                Some(std::cmp::Reverse((due, _, _))) if *due <= now => {
                    if let Some(std::cmp::Reverse((_, _, id))) = heap.pop() {
                        return id;
                    }
                }
                Some(std::cmp::Reverse((due, _, _))) => {
                    let wait = Duration::from_millis(due - now);
                    heap = self.cv.wait_timeout(heap, wait).unwrap_or_else(|e| e.into_inner()).0;
                }
                None => heap = self.cv.wait(heap).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    fn len(&self) -> usize {
        self.heap.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

struct Registry {
    stamp: Option<SystemTime>,
    functions: HashMap<String, Arc<Function>>,
}

pub struct Server {
    cfg: Config,
    store: Store,
    runner: Arc<Runner>,
    pools: Arc<Pools>,
    registry: RwLock<Registry>,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    /// Who may call what (tokens and their scopes).
    auth: crate::auth::Gatekeeper,
    global: Gate,
    queue: Queue,
    metrics: Metrics,
    watched_dirs: Mutex<HashSet<PathBuf>>,
    connections: AtomicUsize,
    ids: AtomicUsize,
    /// Set at shutdown: no event starts.
    stopping: std::sync::atomic::AtomicBool,
    /// Cluster mode: the connection to NATS JetStream (see cluster.rs).
    cluster: std::sync::OnceLock<Arc<crate::cluster::Link>>,
    /// Cluster event worker threads running, per function.
    cluster_workers: Mutex<HashMap<String, usize>>,
    id_prefix: String,
}

type HyperResponse = hyper::Response<http_body_util::Full<bytes::Bytes>>;

/// Asynchronous and file events not final yet, at most, and the bytes of
/// their events (held in memory until they are final); more get 503.
const MAX_PENDING: usize = 100_000;
const MAX_PENDING_BYTES: usize = 512 << 20;

/// Used containers waiting for deletion before callers delete their own.
const MAX_CLEANUP_BACKLOG: usize = 16;

/// FNV-1a, to name a state directory's run directory stably.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Server {
    /// Opens the state, cleans up after an earlier run, and starts the
    /// background workers. Call [`Server::serve`] to answer requests.
    /// `zygotes` (forked while the process had one thread) make the containers.
    pub fn start(cfg: Config, zygotes: Option<crate::zygote::Zygotes>) -> crate::Result<Arc<Server>> {
        std::fs::create_dir_all(&cfg.state).map_err(|e| crate::Error::path(&cfg.state, e))?;
        // One server per state directory: a second would delete the first's containers.
        let lock = std::fs::File::create(cfg.state.join("serve.lock"))?;
        // SAFETY: flock on a descriptor we own; it changes no memory.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(crate::Error::Other(format!("another strata-fn serve uses {}", cfg.state.display())));
        }
        // Held (and so locked) for the life of the process.
        std::mem::forget(lock);
        let (store, pending) = Store::open(&cfg.state)?;
        let mount =
            strata_runtime::cgroups::find_mount().map_err(|e| crate::Error::Other(format!("cgroup v2: {e}")))?;
        let cgroup_parent = if cfg.systemd_cgroup {
            // systemd makes the slice with the first scope in it.
            strata_runtime::cgroups::systemd::slice_path(&cfg.cgroup_parent).map_err(|e| {
                crate::Error::Other(format!("--cgroup-parent with the systemd cgroup driver names a slice: {e}"))
            })?;
            CgroupParent::Slice(cfg.cgroup_parent.clone())
        } else {
            // Ours, made before any container, so no container owns (and removes) it.
            if !cfg.cgroup_parent.split('/').all(|c| !c.is_empty() && c != "." && c != "..") {
                return Err(crate::Error::Other(format!(
                    "--cgroup-parent {:?}: a relative path of plain names",
                    cfg.cgroup_parent
                )));
            }
            let parent = mount.join(&cfg.cgroup_parent);
            std::fs::create_dir_all(&parent).map_err(|e| crate::Error::path(&parent, e))?;
            CgroupParent::Dir(cfg.cgroup_parent.trim_matches('/').into())
        };
        let stamp = now_ms();
        // Container state is runtime state: under /run (a tmpfs on a usual
        // host), one directory per state directory; `containers` in the state
        // directory points at it.
        let canonical = std::fs::canonicalize(&cfg.state)?;
        let run_root =
            PathBuf::from("/run/strata-fn").join(format!("{:016x}", fnv1a(canonical.as_os_str().as_encoded_bytes())));
        std::fs::create_dir_all(&run_root).map_err(|e| crate::Error::path(&run_root, e))?;
        let link = cfg.state.join("containers");
        if std::fs::read_link(&link).ok().as_deref() != Some(run_root.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&run_root, &link).map_err(|e| crate::Error::path(&link, e))?;
        }
        let mut runner = Runner::new(run_root, cgroup_parent, &format!("{:x}", stamp % 0xfffff), zygotes);
        if !cfg.fresh_network_namespaces && cfg.naive_runtime.is_none() {
            if let Some(pool) = crate::netns::Pool::start(cfg.netns_keep) {
                runner.reuse_network_namespaces(pool);
            }
        }
        let runner = Arc::new(runner);
        let swept = runner.sweep();
        if swept > 0 {
            eprintln!("strata-fn: deleted {swept} container(s) left by an earlier run");
        }
        let workers = cfg.pool_workers;
        let server = Arc::new(Server {
            pools: Pools::start(runner.clone(), workers, 2),
            runner,
            store,
            registry: RwLock::new(Registry { stamp: None, functions: HashMap::new() }),
            gates: Mutex::new(HashMap::new()),
            auth: crate::auth::Gatekeeper::new(&cfg.state),
            global: Gate::new(),
            queue: Queue { heap: Mutex::new(BinaryHeap::new()), cv: Condvar::new(), seq: AtomicUsize::new(0) },
            metrics: Metrics::default(),
            watched_dirs: Mutex::new(HashSet::new()),
            connections: AtomicUsize::new(0),
            ids: AtomicUsize::new(0),
            stopping: Default::default(),
            cluster: Default::default(),
            cluster_workers: Default::default(),
            id_prefix: format!("{stamp:x}"),
            cfg,
        });
        server.reload(true);
        // Accepted events the last run did not finish run again.
        for mut r in pending {
            r.status = Some(Status::Queued);
            let due = r.due_ms.unwrap_or(0);
            server.store.put(&r, true)?;
            server.queue.push(due, r.id);
        }
        for _ in 0..server.cfg.async_workers {
            let s = server.clone();
            std::thread::spawn(move || loop {
                let id = s.queue.pop();
                s.run_async(&id);
            });
        }
        let s = server.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            s.reload(false);
        });
        Ok(server)
    }

    /// Re-reads the registry when it changed (its directory's mtime moved).
    fn reload(self: &Arc<Self>, force: bool) {
        let stamp = store::functions_stamp(&self.cfg.state);
        if !force && self.registry.read().unwrap_or_else(|e| e.into_inner()).stamp == stamp {
            return;
        }
        let mut r = self.registry.write().unwrap_or_else(|e| e.into_inner());
        if !force && stamp == r.stamp {
            return;
        }
        r.stamp = stamp;
        let list = match store::functions(&self.cfg.state) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("strata-fn: registry: {e}");
                return;
            }
        };
        let mut map = HashMap::new();
        for f in list {
            let f = match r.functions.get(&f.name) {
                Some(old) if **old == f => old.clone(),
                _ => Arc::new(f),
            };
            map.insert(f.name.clone(), f);
        }
        r.functions = map;
        self.pools.set_functions(&r.functions);
        let names: Vec<String> = r.functions.keys().cloned().collect();
        let triggers: Vec<Arc<Function>> = r.functions.values().filter(|f| f.trigger.is_some()).cloned().collect();
        drop(r);
        for f in triggers {
            self.watch_trigger(f);
        }
        self.start_cluster_workers(&names);
    }

    /// In cluster mode, event workers for each function served here that has
    /// none yet: `async_workers` threads (at most its concurrency) that fetch
    /// from the function's shared consumer while this node has room.
    fn start_cluster_workers(self: &Arc<Self>, names: &[String]) {
        let Some(link) = self.cluster.get() else { return };
        let mut running = self.cluster_workers.lock().unwrap_or_else(|e| e.into_inner());
        for name in names {
            // Workers still running (of a function removed and deployed
            // again meanwhile) go on serving it: no second set.
            if running.contains_key(name) {
                continue;
            }
            let Some(f) = self.registry.read().unwrap_or_else(|e| e.into_inner()).functions.get(name).cloned() else {
                continue;
            };
            let n = self.cfg.async_workers.min(f.max_concurrency.max(1) as usize);
            running.insert(name.clone(), n);
            for _ in 0..n {
                let (s, link, name) = (self.clone(), link.clone(), name.clone());
                std::thread::spawn(move || s.cluster_worker(&link, &name));
            }
        }
    }

    /// Takes events of function `name` from the cluster's queue and runs
    /// them, until the function is no longer served here.
    fn cluster_worker(self: &Arc<Self>, link: &crate::cluster::Link, name: &str) {
        let mut consumer = None;
        let mut backoff = Duration::from_millis(250);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let Some(f) = self.function(name) else {
                // The last worker of a function no longer served leaves.
                let mut running = self.cluster_workers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = running.get_mut(name) {
                    *n -= 1;
                    if *n == 0 {
                        running.remove(name);
                    }
                }
                return;
            };
            // Fetch only with room for it here (a race is settled below).
            let gate = self.gate(&f.name);
            if gate.running() >= f.max_concurrency || self.global.running() >= self.cfg.max_running {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if consumer.is_none() {
                match link.consumer(&f.name) {
                    Ok(c) => consumer = Some(c),
                    Err(e) => {
                        eprintln!("strata-fn: cluster: {}: {e}", f.name);
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                }
            }
            let Some(c) = consumer.as_ref() else { continue };
            let event = match link.fetch(c) {
                Ok(Some(e)) => e,
                Ok(None) => continue,
                Err(_) => {
                    consumer = None;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(250);
            let (Some(_fn_pass), Some(_pass)) =
                (gate.try_enter(f.max_concurrency), self.global.try_enter(self.cfg.max_running))
            else {
                // Taken meanwhile by a synchronous call: another node (or a
                // later fetch) has it.
                link.retry(&event, None);
                continue;
            };
            self.run_cluster_event(link, &f, event);
        }
    }

    /// One attempt of a cluster event: its record updated for every node to
    /// read, then acknowledged, retried with backoff, or dead-lettered.
    fn run_cluster_event(&self, link: &crate::cluster::Link, f: &Function, event: crate::cluster::Event) {
        let mut r = link.record(&event.id).unwrap_or_else(|| Record {
            id: event.id.clone(),
            function: f.name.clone(),
            mode: Some(Mode::Async),
            accepted_ms: now_ms(),
            ..Default::default()
        });
        if matches!(r.status, Some(Status::Succeeded) | Some(Status::Dead)) {
            // Final already (the acknowledgement was lost): not run twice.
            link.ack(&event);
            return;
        }
        if self.stopping.load(Ordering::SeqCst) {
            link.retry(&event, None);
            return;
        }
        // In cluster mode every delivery is an attempt, one cut short by a
        // node's death included.
        r.attempts = event.delivered;
        r.status = Some(Status::Running);
        let _ = link.put_record(&r);
        let started = Instant::now();
        let alive = link.keep_alive(&event);
        let (out, warm) = self.run_once(f, &event.payload, None);
        drop(alive);
        let ok = out.error.is_none() && !out.timed_out && !out.stdout_truncated && out.exit_code == Some(0);
        if self.stopping.load(Ordering::SeqCst) && !ok {
            // Cut short by this node's shutdown: another node runs it.
            r.status = Some(Status::Queued);
            r.attempts = event.delivered.saturating_sub(1);
            let _ = link.put_record(&r);
            link.retry(&event, None);
            return;
        }
        self.conclude(f, &mut r, &out, warm, started, ok);
        if ok {
            if let Err(e) = link.put_record(&r) {
                eprintln!("strata-fn: cluster: record {}: {e}", r.id);
            }
            link.ack(&event);
        } else if event.delivered < f.retry.attempts {
            let backoff = f.retry.backoff_ms.saturating_mul(1 << (event.delivered - 1).min(20));
            r.status = Some(Status::Queued);
            r.due_ms = Some(now_ms() + backoff);
            let _ = link.put_record(&r);
            link.retry(&event, Some(Duration::from_millis(backoff)));
        } else {
            r.status = Some(Status::Dead);
            r.due_ms = None;
            r.event_b64 = Some(b64(&event.payload));
            match link.dead_letter(&f.name, &event) {
                Ok(()) => {
                    let _ = link.put_record(&r);
                }
                // Not moved: it is delivered again and dead-lettered then.
                Err(e) => eprintln!("strata-fn: cluster: dead letter {}: {e}", r.id),
            }
        }
    }

    fn function(self: &Arc<Self>, name: &str) -> Option<Arc<Function>> {
        self.reload(false);
        self.registry.read().unwrap_or_else(|e| e.into_inner()).functions.get(name).cloned()
    }

    fn gate(&self, name: &str) -> Arc<Gate> {
        self.gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Gate::new()))
            .clone()
    }

    fn new_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.id_prefix)
    }

    /// One run of `f` on `event` (a cold container with `file` mounted, if given).
    fn run_once(&self, f: &Function, event: &[u8], file: Option<&FileMount>) -> (Outcome, bool) {
        if let Some(rt) = &self.cfg.naive_runtime {
            return (crate::runner::run_naive(rt, &self.runner, f, event), false);
        }
        let taken = if file.is_none() { self.pools.take(&f.name) } else { None };
        let warm = taken.is_some();
        let mut p = match taken {
            Some(p) => p,
            None => match self.runner.prepare(f, file) {
                Ok(p) => p,
                Err(e) => return (Outcome { error: Some(e.to_string()), ..Default::default() }, false),
            },
        };
        let out =
            self.runner.run(&mut p, event, Duration::from_millis(f.timeout_ms), Duration::from_millis(f.grace_ms));
        // Deletes happen off the request path, unless they fall behind: then
        // the caller deletes its own, so that used containers never pile up.
        if self.pools.trash_len() < MAX_CLEANUP_BACKLOG {
            self.pools.discard(p);
        } else {
            self.runner.destroy(p);
        }
        (out, warm)
    }

    /// Fills the metering fields of `r` from a run.
    fn meter(&self, f: &Function, r: &mut Record, out: &Outcome, warm: bool) {
        r.warm = warm;
        r.duration_ms = ms(out.duration);
        r.cpu_ms = out.cpu_usec as f64 / 1000.0;
        r.peak_memory_bytes = out.peak_memory;
        r.exit_code = out.exit_code;
        // Billed: every attempt that ran (a run that never started is free),
        // rounded up to the billing granularity.
        if out.running_at.is_some() || out.exit_code.is_some() {
            let units = (out.duration.as_micros() as u64).div_ceil(self.cfg.bill_ms * 1000).max(1);
            let billed = units * self.cfg.bill_ms;
            r.billed_ms += billed;
            r.gb_seconds += billed as f64 / 1000.0 * f.billed_memory_mb() as f64 / 1024.0;
        }
        r.stderr_tail = String::from_utf8_lossy(&out.stderr_tail).into_owned();
        r.finished_ms = Some(now_ms());
        r.error = if let Some(e) = &out.error {
            Some(e.clone())
        } else if out.timed_out {
            Some(format!("timed out after {} ms", f.timeout_ms))
        } else if out.stdout_truncated {
            Some(format!("output over {} bytes", crate::runner::MAX_OUTPUT))
        } else if out.exit_code != Some(0) {
            Some(format!("exit code {}", out.exit_code.unwrap_or(-1)))
        } else {
            None
        };
    }

    /// Ends an attempt of an asynchronous event: metered, counted, and, where
    /// it succeeded (`ok`), `r` final with its output (the event dropped).
    fn conclude(&self, f: &Function, r: &mut Record, out: &Outcome, warm: bool, started: Instant, ok: bool) {
        self.meter(f, r, out, warm);
        let outcome = if ok {
            Status::Succeeded
        } else if out.timed_out {
            Status::Timeout
        } else {
            Status::Failed
        };
        self.metrics.observe(&f.name, outcome, warm, started.elapsed(), out.duration);
        if ok {
            r.status = Some(Status::Succeeded);
            r.event_b64 = None;
            r.output_b64 = Some(b64(&out.stdout[..out.stdout.len().min(1 << 20)]));
            r.due_ms = None;
        }
    }

    /// POST /functions/NAME/invoke
    fn invoke(self: &Arc<Self>, req: &Request, name: &str, received: Instant, principal: Option<String>) -> Response {
        let Some(f) = self.function(name) else {
            return Response::error(404, &format!("no function {name:?}"));
        };
        let id = self.new_id();
        let mut r =
            Record { id: id.clone(), function: f.name.clone(), accepted_ms: now_ms(), principal, ..Default::default() };
        match req.query("async") {
            None | Some("false") | Some("0") => {}
            Some("true") | Some("1") | Some("") => {
                let (events, bytes) = self.store.pending();
                if events >= MAX_PENDING || bytes + req.body.len() * 4 / 3 > MAX_PENDING_BYTES {
                    return Response::error(503, "too many events are waiting already").header("Retry-After", 5);
                }
                r.mode = Some(Mode::Async);
                r.status = Some(Status::Queued);
                if let Some(link) = self.cluster.get() {
                    // Cluster mode: queued in JetStream, run by any node.
                    if let Err(e) = link.accept(&r, &req.body) {
                        return Response::error(503, &format!("the event was not queued: {e}"))
                            .header("Retry-After", 1);
                    }
                    return Response::json(202, &serde_json::json!({ "id": id, "status": "queued" }))
                        .header("Location", format!("/invocations/{id}"))
                        .header("X-Invocation-Id", &id);
                }
                r.event_b64 = Some(b64(&req.body));
                // On disk before the answer: a restart runs it.
                if let Err(e) = self.store.put(&r, true) {
                    return Response::error(503, &format!("cannot persist the event: {e}"));
                }
                self.queue.push(0, id.clone());
                return Response::json(202, &serde_json::json!({ "id": id, "status": "queued" }))
                    .header("Location", format!("/invocations/{id}"))
                    .header("X-Invocation-Id", &id);
            }
            Some(other) => return Response::error(400, &format!("async={other:?}: use true or false")),
        }
        r.mode = Some(Mode::Sync);
        let gate = self.gate(&f.name);
        let Some(_fn_pass) = gate.enter(f.max_concurrency, Some(f.queue)) else {
            self.metrics.rejected(&f.name);
            return Response::error(
                429,
                &format!("{} is at its concurrency limit ({}) and its queue is full", f.name, f.max_concurrency),
            )
            .header("Retry-After", 1);
        };
        let Some(_pass) = self.global.enter(self.cfg.max_running, Some(self.cfg.max_waiting)) else {
            self.metrics.rejected(&f.name);
            return Response::error(429, "the server is at its global concurrency limit").header("Retry-After", 1);
        };
        if self.stopping.load(Ordering::SeqCst) {
            return Response::error(503, "the server is shutting down").header("Retry-After", 1);
        }
        let (out, warm) = self.run_once(&f, &req.body, None);
        let to_running = out.running_at.map(|t| t.saturating_duration_since(received));
        self.meter(&f, &mut r, &out, warm);
        let (status, resp) = if let Some(e) = &out.error {
            (Status::Failed, Response::error(500, &format!("{}: {e}", f.name)))
        } else if out.timed_out {
            let mut body = format!("timed out after {} ms\n", f.timeout_ms).into_bytes();
            body.extend_from_slice(&out.stderr_tail);
            (Status::Timeout, Response::new(504, "text/plain", body))
        } else if out.stdout_truncated {
            (Status::Failed, Response::error(502, &format!("output over {} bytes", crate::runner::MAX_OUTPUT)))
        } else if out.exit_code == Some(0) {
            (Status::Succeeded, Response::new(200, "application/octet-stream", out.stdout))
        } else {
            (Status::Failed, Response::new(502, "text/plain", out.stderr_tail.clone()))
        };
        r.status = Some(status);
        r.attempts = 1;
        let _ = self.store.put(&r, false);
        if let Some(link) = self.cluster.get() {
            link.put_record_later(&r);
        }
        self.metrics.observe(&f.name, status, warm, received.elapsed(), out.duration);
        let resp = resp
            .header("X-Invocation-Id", &id)
            .header("X-Start", if warm { "warm" } else { "cold" })
            .header("X-Exit-Code", out.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()))
            .header("X-Duration-Ms", format!("{:.3}", r.duration_ms));
        // From the request received to the function's process running.
        let resp = match to_running {
            Some(d) => resp.header("X-Start-Latency-Ms", format!("{:.3}", ms(d))),
            None => resp,
        };
        resp.header("X-Billed-Ms", r.billed_ms)
            .header("X-Cpu-Ms", format!("{:.3}", r.cpu_ms))
            .header("X-Peak-Memory", r.peak_memory_bytes.map(|b| b.to_string()).unwrap_or_else(|| "unavailable".into()))
    }

    /// Runs one attempt of queued event `id`; requeues or dead-letters on failure.
    fn run_async(self: &Arc<Self>, id: &str) {
        let Some(mut r) = self.store.get(id) else { return };
        if r.status != Some(Status::Queued) {
            return;
        }
        let Some(f) = self.function(&r.function) else {
            r.status = Some(Status::Dead);
            r.error = Some(format!("function {:?} is not deployed", r.function));
            let _ = self.store.put(&r, true);
            return;
        };
        // A function at its limit does not hold the worker: the event waits
        // its turn in the queue, and other functions' events go on.
        let gate = self.gate(&f.name);
        let (Some(_fn_pass), Some(_pass)) =
            (gate.try_enter(f.max_concurrency), self.global.try_enter(self.cfg.max_running))
        else {
            self.queue.push(now_ms() + 20, r.id.clone());
            return;
        };
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let before = r.clone();
        // `attempts` counts attempts that ended: one cut short by a kill of
        // the server is not one.
        r.status = Some(Status::Running);
        let _ = self.store.put(&r, false);
        r.attempts += 1;
        let started = Instant::now();
        let (out, warm) = match (&r.source, &r.event_b64) {
            (Some(src), _) => {
                let name = Path::new(src).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                // Under the container's private /tmp: nothing is made in the
                // shared rootfs for it.
                let target = format!("/tmp/event/{name}");
                let m = FileMount { source: PathBuf::from(src), target: target.clone() };
                // A regular file only: a symlink dropped into the directory
                // must not hand the function some other host file.
                if is_regular(Path::new(src)) {
                    self.run_once(&f, format!("{target}\n").as_bytes(), Some(&m))
                } else {
                    (Outcome { error: Some(format!("{src} is gone")), ..Default::default() }, false)
                }
            }
            (None, Some(data)) => {
                let event = unb64(data).unwrap_or_default();
                self.run_once(&f, &event, None)
            }
            (None, None) => (Outcome { error: Some("the event is missing".into()), ..Default::default() }, false),
        };
        let ok = out.error.is_none() && !out.timed_out && !out.stdout_truncated && out.exit_code == Some(0);
        if self.stopping.load(Ordering::SeqCst) && !ok {
            // Cut short by the shutdown (which kills running containers): not
            // an attempt. It stays queued on disk and runs after the restart.
            let _ = self.store.put(&before, true);
            return;
        }
        self.conclude(&f, &mut r, &out, warm, started, ok);
        if !ok && r.attempts < f.retry.attempts {
            r.status = Some(Status::Queued);
            let backoff = f.retry.backoff_ms.saturating_mul(1 << (r.attempts - 1).min(20));
            r.due_ms = Some(now_ms() + backoff);
        } else if !ok {
            // Dead-lettered, with its event kept for inspection.
            r.status = Some(Status::Dead);
            r.due_ms = None;
        }
        if let Err(e) = self.store.put(&r, true) {
            eprintln!("strata-fn: persist {}: {e}", r.id);
        }
        if r.status == Some(Status::Queued) {
            self.queue.push(r.due_ms.unwrap_or(0), r.id.clone());
        }
    }

    /// Queues a file event for `path` (persisted first).
    fn file_event(&self, f: &Function, path: &Path) {
        let r = Record {
            id: self.new_id(),
            function: f.name.clone(),
            mode: Some(Mode::File),
            status: Some(Status::Queued),
            accepted_ms: now_ms(),
            source: Some(path.to_string_lossy().into_owned()),
            ..Default::default()
        };
        if let Err(e) = self.store.put(&r, true) {
            eprintln!("strata-fn: persist file event {}: {e}", path.display());
            return;
        }
        self.queue.push(0, r.id);
    }

    /// Watches `f`'s trigger directory (once per directory): each file closed
    /// after writing, or moved in, is an event. Files that arrived while the
    /// server was down (no record names them) are queued at once.
    fn watch_trigger(self: &Arc<Self>, f: Arc<Function>) {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let Some(dir) = f.trigger.as_ref().map(|t| t.directory.clone()) else { return };
        if !self.watched_dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(dir.clone()) {
            return;
        }
        let inotify = match Inotify::init(InitFlags::IN_CLOEXEC) {
            Ok(i) => i,
            Err(e) => return eprintln!("strata-fn: trigger {}: inotify: {e}", dir.display()),
        };
        if let Err(e) = inotify.add_watch(&dir, AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO) {
            return eprintln!("strata-fn: trigger {}: {e}", dir.display());
        }
        // Files already there (arrived while no one watched) are queued now,
        // unless a record names them; the watcher skips the one event it may
        // also see for a file queued here.
        let scanned = Arc::new(Mutex::new(self.scan_trigger(&f, &dir)));
        let s = self.clone();
        let name = f.name.clone();
        std::thread::spawn(move || loop {
            let events = match inotify.read_events() {
                Ok(e) => e,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    eprintln!("strata-fn: trigger {}: {e}", dir.display());
                    s.watched_dirs.lock().unwrap_or_else(|e| e.into_inner()).remove(&dir);
                    return;
                }
            };
            // The function as registered now (it may have changed or gone).
            let Some(f) = s.function(&name).filter(|f| f.trigger.as_ref().is_some_and(|t| t.directory == dir)) else {
                s.watched_dirs.lock().unwrap_or_else(|e| e.into_inner()).remove(&dir);
                return;
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were dropped: whatever has no record yet is queued.
                    let more = s.scan_trigger(&f, &dir);
                    scanned.lock().unwrap_or_else(|e| e.into_inner()).extend(more);
                    continue;
                }
                if let Some(n) = ev.name {
                    let p = dir.join(n);
                    if scanned.lock().unwrap_or_else(|e| e.into_inner()).remove(&p) {
                        continue;
                    }
                    if is_regular(&p) {
                        s.file_event(&f, &p);
                    }
                }
            }
        });
    }

    /// Queues every regular file in `dir` that no record of `f` names yet;
    /// returns them.
    fn scan_trigger(&self, f: &Function, dir: &Path) -> HashSet<PathBuf> {
        let seen: HashSet<String> = store::read_log(&self.cfg.state)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.function == f.name)
            .filter_map(|r| r.source)
            .collect();
        let mut missed: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_regular(p) && !seen.contains(&*p.to_string_lossy()))
            .collect();
        missed.sort();
        for p in &missed {
            self.file_event(f, p);
        }
        missed.into_iter().collect()
    }

    /// Lets a request in, or answers why not: 401 (with how to authenticate)
    /// for missing, unknown or revoked credentials, 403 for a scope that
    /// does not allow the call, 429 for an address that failed too often.
    /// Nothing runs and nothing is queued for a request refused here.
    fn admit(
        &self,
        req: &Request,
        peer: Option<IpAddr>,
        need: crate::auth::Need<'_>,
    ) -> std::result::Result<Option<crate::auth::Token>, Response> {
        use crate::auth::Denied;
        self.auth.check(peer, req.header("Authorization"), need).map_err(|d| {
            self.metrics.denied(d.label());
            match d {
                Denied::Forbidden => Response::error(403, "the token's scopes do not allow this"),
                Denied::Throttled => {
                    Response::error(429, "too many failed attempts from this address").header("Retry-After", 10)
                }
                _ => Response::error(401, "a valid bearer token is required")
                    .header("WWW-Authenticate", "Bearer realm=\"strata-fn\""),
            }
        })
    }

    fn route(self: &Arc<Self>, req: &Request, received: Instant, peer: Option<IpAddr>) -> Response {
        use crate::auth::Need;
        let parts: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
        let method = req.method.as_str();
        let need = match (method, parts.as_slice()) {
            ("GET", ["metrics"]) => Some(Need::Metrics),
            ("GET", ["functions"]) | ("GET", ["dead-letters"]) => Some(Need::Read),
            ("POST", ["functions", name, "invoke"]) => Some(Need::Invoke(name)),
            _ => None,
        };
        let principal = match need.map(|n| self.admit(req, peer, n)) {
            Some(Err(resp)) => return resp,
            Some(Ok(p)) => p,
            None => None,
        };
        match (method, parts.as_slice()) {
            ("GET", ["healthz"]) => Response::new(200, "text/plain", "ok\n"),
            ("GET", ["metrics"]) => {
                let body = self.metrics.render(
                    &self.pools.sizes(),
                    self.queue.len(),
                    self.global.running(),
                    self.pools.trash_len(),
                    self.cluster
                        .get()
                        .and_then(|l| {
                            let names: Vec<String> = self
                                .registry
                                .read()
                                .unwrap_or_else(|e| e.into_inner())
                                .functions
                                .keys()
                                .cloned()
                                .collect();
                            l.queue_depth(&names)
                        })
                        .unwrap_or(0),
                    self.runner.netns_ready_and_counts(),
                );
                Response::new(200, crate::metrics::CONTENT_TYPE, body)
            }
            ("GET", ["functions"]) => {
                self.reload(false);
                let sizes: HashMap<String, usize> = self.pools.sizes().into_iter().collect();
                let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
                let mut list: Vec<serde_json::Value> = reg
                    .functions
                    .values()
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name, "command": f.command, "timeout_ms": f.timeout_ms,
                            "max_concurrency": f.max_concurrency, "pool": f.pool,
                            "warm": sizes.get(&f.name).copied().unwrap_or(0),
                            "trigger": f.trigger.as_ref().map(|t| &t.directory),
                        })
                    })
                    .collect();
                list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                Response::json(200, &serde_json::Value::Array(list))
            }
            ("POST", ["functions", name, "invoke"]) => {
                self.invoke(req, name, received, principal.as_ref().map(|t| t.id.clone()))
            }
            ("GET", ["invocations", id]) => {
                // Anyone with `read`; a principal also reads its own records.
                let reader = match self.admit(req, peer, Need::Read) {
                    Ok(t) => Ok(t),
                    Err(resp) if resp.status == 403 => Err(resp),
                    Err(resp) => return resp,
                };
                let own = |r: &Record| match &reader {
                    Ok(_) => true,
                    Err(_) => self
                        .auth
                        .check(peer, req.header("Authorization"), Need::Invoke(&r.function))
                        .ok()
                        .flatten()
                        .is_some_and(|t| r.principal.as_deref() == Some(t.id.as_str())),
                };
                let found = self.store.get(id).or_else(|| self.cluster.get().and_then(|l| l.record(id)));
                match found {
                    Some(r) if own(&r) => Response::json(200, &record_json(&r)),
                    Some(_) => match reader {
                        Err(resp) => resp,
                        Ok(_) => Response::error(403, "the token's scopes do not allow this"),
                    },
                    None => match reader {
                        // Whether an id exists is not told to those who may not read it.
                        Err(resp) => resp,
                        Ok(_) => Response::error(404, &format!("no invocation {id:?}")),
                    },
                }
            }
            ("GET", ["dead-letters"]) => {
                let records = match self.cluster.get() {
                    Some(link) => link.all_records().unwrap_or_default(),
                    None => store::read_log(&self.cfg.state).unwrap_or_default(),
                };
                let dead: Vec<serde_json::Value> = records
                    .iter()
                    .filter(|r| r.status == Some(Status::Dead))
                    .map(|r| {
                        // With the event, to inspect or send again.
                        let mut v = record_json(r);
                        if let (Some(obj), Some(e)) = (v.as_object_mut(), &r.event_b64) {
                            obj.insert("event_b64".into(), e.clone().into());
                        }
                        v
                    })
                    .collect();
                Response::json(200, &serde_json::Value::Array(dead))
            }
            (
                _,
                ["healthz"]
                | ["metrics"]
                | ["functions"]
                | ["functions", _, "invoke"]
                | ["invocations", _]
                | ["dead-letters"],
            ) => Response::error(405, &format!("{method} is not allowed on {}", req.path)),
            _ => Response::error(404, &format!("no route {}", req.path)),
        }
    }

    /// One request, from hyper to a route and back. Routes block (they run
    /// containers and wait for concurrency slots), so they run on tokio's
    /// blocking threads; connections themselves cost no thread.
    async fn handle<B>(self: Arc<Self>, req: hyper::Request<B>, peer: Option<IpAddr>) -> HyperResponse
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let received = Instant::now();
        // Liveness needs no blocking thread (and no credentials).
        if req.method() == hyper::Method::GET && req.uri().path() == "/healthz" {
            return http::into_hyper(Response::new(200, "text/plain", "ok\n"));
        }
        let req = match http::read(req).await {
            Ok(r) => r,
            Err(http::HttpError(status, msg)) => return http::into_hyper(Response::error(status, &msg)),
        };
        match tokio::task::spawn_blocking(move || self.route(&req, received, peer)).await {
            Ok(resp) => http::into_hyper(resp),
            Err(_) => http::into_hyper(Response::error(500, "the request failed inside the server")),
        }
    }

    /// Serves one accepted connection: TLS first if configured, then
    /// HTTP/1.1 or HTTP/2 (hyper tells them apart by the client's preface).
    async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        http: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
        tls: Option<Arc<crate::tls::Server>>,
    ) {
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let s = self.clone();
        let svc = hyper::service::service_fn(move |req| {
            let s = s.clone();
            async move { Ok::<_, std::convert::Infallible>(s.handle(req, peer).await) }
        });
        match tls {
            None => {
                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
            }
            Some(tls) => {
                let Ok(Ok(stream)) = tokio::time::timeout(http::HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await
                else {
                    return;
                };
                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
            }
        }
    }

    /// Answers requests on `listener` until the process ends (over TLS when
    /// `tls` is given).
    /// With `nats`, the cluster's function registry is mirrored into the
    /// state directory meanwhile (see cluster.rs).
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<crate::tls::Server>>,
        nats: Option<crate::cluster::Nats>,
    ) -> crate::Result<()> {
        // Every synchronous call waiting for a slot holds a blocking thread.
        let blocking = (self.cfg.max_running + self.cfg.max_waiting) as usize + 64;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(blocking)
            .thread_name("strata-fn-http")
            .enable_io()
            .enable_time()
            .build()?;
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(http::HEAD_TIMEOUT)
            // A client that half-closes after its request still gets the answer.
            .half_close(true)
            .max_buf_size(http::MAX_HEAD.max(8192))
            .max_headers(http::MAX_HEADERS);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(http::MAX_HEAD as u32)
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let builder = Arc::new(builder);
        listener.set_nonblocking(true)?;
        rt.block_on(async {
            if let Some(n) = nats {
                let link = Arc::new(crate::cluster::Link::start(&n).await?);
                let _ = self.cluster.set(link.clone());
                tokio::spawn(crate::cluster::mirror(link, self.cfg.state.clone()));
                let s = self.clone();
                let names: Vec<String> =
                    s.registry.read().unwrap_or_else(|e| e.into_inner()).functions.keys().cloned().collect();
                tokio::task::spawn_blocking(move || s.start_cluster_workers(&names));
            }
            let listener = tokio::net::TcpListener::from_std(listener)?;
            loop {
                let (mut stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => {
                        // Out of descriptors (or another passing failure): do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if self.connections.load(Ordering::SeqCst) >= self.cfg.max_connections {
                    if tls.is_none() {
                        use tokio::io::AsyncWriteExt;
                        let body = "{\"error\":\"too many connections\"}\n";
                        let answer = format!(
                            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        tokio::spawn(async move {
                            let _ =
                                tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
                        });
                    }
                    continue;
                }
                self.connections.fetch_add(1, Ordering::SeqCst);
                let s = self.clone();
                let (http, tls) = (builder.clone(), tls.clone());
                tokio::spawn(async move {
                    s.clone().connection(stream, http, tls).await;
                    s.connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
        })
    }

    /// On SIGTERM: no invocation starts any more (synchronous calls get 503;
    /// asynchronous events are still accepted, for after the restart), and
    /// those running get up to `grace` to finish.
    pub fn drain(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while self.global.running() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Deletes every warm and used container and the cgroup parent.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.runner.close();
        self.pools.drain();
        self.runner.sweep();
        let _ = std::fs::remove_dir(&self.runner.root);
        if let Some(top) = self.runner.root.parent() {
            let _ = std::fs::remove_dir(top);
        }
        let _ = std::fs::remove_file(self.cfg.state.join("containers"));
        match &self.runner.cgroup_parent {
            CgroupParent::Dir(d) => {
                if let Ok(m) = strata_runtime::cgroups::find_mount() {
                    let _ = std::fs::remove_dir(m.join(d));
                }
            }
            // The slice goes as systemd's (empty by now).
            CgroupParent::Slice(s) => {
                let _ = strata_runtime::cgroups::systemd::Systemd::connect().and_then(|sd| sd.stop_unit(s));
            }
        }
    }
}

/// Whether `p` is a regular file itself (not a symlink to one: a link dropped
/// into a trigger directory must not hand the function another host file).
fn is_regular(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

/// An invocation record as the API shows it: the output decoded when it is
/// text, the event left out.
fn record_json(r: &Record) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("event_b64");
        if let Some(out) = r.output_b64.as_deref().and_then(unb64) {
            if let Ok(text) = String::from_utf8(out) {
                obj.remove("output_b64");
                obj.insert("output".into(), text.into());
            }
        }
    }
    v
}
