//! Cluster mode on NATS JetStream: the function registry shared by every
//! strata-fn node.
//!
//! `deploy`, `rm` and `ls` with `--nats` act on a JetStream key-value bucket
//! ([`FUNCTIONS_BUCKET`], one key per function, its validated registration as
//! JSON). Each `serve --nats` node mirrors the bucket into its own state
//! directory (what the single-node server reads), registering a function only
//! where its rootfs exists on that node and saying so in its log where it
//! does not; rootfs distribution is the operator's (the same path on every
//! node). A node that loses NATS goes on serving what it mirrored and catches
//! up when NATS is back: the bucket keeps the last value or delete marker of
//! every key, and the mirror replays them.
//!
//! Everything strata-fn names in NATS starts with `strata_fn` (buckets, and
//! so the `$KV.strata_fn_...` subjects), so an operator can grant a node user
//! exactly those.

use crate::function::Function;
use crate::store;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The key-value bucket holding the registry.
pub const FUNCTIONS_BUCKET: &str = "strata_fn_functions";

/// How to reach and authenticate to the NATS server.
#[derive(Debug, Clone, Default)]
pub struct Nats {
    /// nats://HOST:PORT (or tls://; nats://USER:PASSWORD@HOST:PORT works too,
    /// at the cost of the password showing in `ps`).
    pub url: String,
    /// USER:PASSWORD in a file (first line).
    pub password_file: Option<PathBuf>,
    /// An nkey seed in a file.
    pub nkey_file: Option<PathBuf>,
    /// A credentials file (JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// The CA that signed the server's certificate (TLS on).
    pub ca: Option<PathBuf>,
    /// A client certificate and key for TLS client authentication.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// How long a node may hold an event without a word (default
    /// [`ACK_WAIT`]); the consumer is made with it by the first node.
    pub ack_wait: Option<Duration>,
}

fn other(what: &str, e: impl std::fmt::Display) -> crate::Error {
    crate::Error::Other(format!("{what}: {e}"))
}

fn first_line(path: &Path) -> crate::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::path(path, e))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err(crate::Error::Other(format!("{}: empty", path.display())));
    }
    Ok(line)
}

impl Nats {
    async fn options(&self) -> crate::Result<async_nats::ConnectOptions> {
        let mut o = if let Some(p) = &self.creds_file {
            async_nats::ConnectOptions::with_credentials_file(p).await.map_err(|e| crate::Error::path(p, e))?
        } else if let Some(p) = &self.nkey_file {
            async_nats::ConnectOptions::with_nkey(first_line(p)?)
        } else if let Some(p) = &self.password_file {
            let line = first_line(p)?;
            let (user, password) = line
                .split_once(':')
                .ok_or_else(|| crate::Error::Other(format!("{}: USER:PASSWORD on its first line", p.display())))?;
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        } else {
            async_nats::ConnectOptions::new()
        };
        if let Some(ca) = &self.ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.cert {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(o.name("strata-fn").connection_timeout(Duration::from_secs(5)))
    }

    /// A connection, or an error naming the server.
    pub async fn connect(&self) -> crate::Result<async_nats::Client> {
        self.options().await?.connect(&self.url).await.map_err(|e| other(&format!("NATS at {}", self.url), e))
    }
}

/// The registry bucket, made by whoever comes first.
async fn bucket(client: &async_nats::Client) -> crate::Result<async_nats::jetstream::kv::Store> {
    let js = async_nats::jetstream::new(client.clone());
    if let Ok(kv) = js.get_key_value(FUNCTIONS_BUCKET).await {
        return Ok(kv);
    }
    let made = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: FUNCTIONS_BUCKET.into(),
            description: "strata-fn: deployed functions".into(),
            history: 1,
            ..Default::default()
        })
        .await;
    match made {
        Ok(kv) => Ok(kv),
        // Another node made it meanwhile.
        Err(e) => js.get_key_value(FUNCTIONS_BUCKET).await.map_err(|_| other("JetStream key-value bucket", e)),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = crate::Result<T>>) -> crate::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

/// Registers `f` for the whole cluster.
pub fn deploy(n: &Nats, f: &Function) -> crate::Result<()> {
    block_on(async {
        let kv = bucket(&n.connect().await?).await?;
        kv.put(&f.name, serde_json::to_vec(f)?.into()).await.map_err(|e| other("registry put", e))?;
        Ok(())
    })
}

/// Unregisters `name` cluster-wide; false when it was not registered.
pub fn remove(n: &Nats, name: &str) -> crate::Result<bool> {
    if !crate::function::valid_name(name) {
        return Err(crate::Error::Other(format!("{name:?} is not a function name")));
    }
    block_on(async {
        let kv = bucket(&n.connect().await?).await?;
        let there = kv.get(name).await.map_err(|e| other("registry get", e))?.is_some();
        if there {
            kv.delete(name).await.map_err(|e| other("registry delete", e))?;
        }
        Ok(there)
    })
}

/// The cluster's functions, by name.
pub fn functions(n: &Nats) -> crate::Result<Vec<Function>> {
    block_on(async {
        let kv = bucket(&n.connect().await?).await?;
        let mut names: Vec<String> = Vec::new();
        let mut keys = kv.keys().await.map_err(|e| other("registry keys", e))?;
        while let Some(k) = keys.next().await {
            names.push(k.map_err(|e| other("registry keys", e))?);
        }
        names.sort();
        let mut out = Vec::new();
        for k in names {
            if let Some(v) = kv.get(&k).await.map_err(|e| other("registry get", e))? {
                out.push(serde_json::from_slice(&v)?);
            }
        }
        Ok(out)
    })
}

/// Functions whose missing rootfs was reported ("NAME\0ROOTFS").
fn reported() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static REPORTED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    REPORTED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies one registry entry to the local state: what the node serves.
fn apply(state: &Path, entry: &async_nats::jetstream::kv::Entry) {
    use async_nats::jetstream::kv::Operation;
    match entry.operation {
        Operation::Put => match serde_json::from_slice::<Function>(&entry.value) {
            Ok(f) if f.name != entry.key => {
                eprintln!("strata-fn: registry: key {} holds function {}", entry.key, f.name)
            }
            Ok(f) if !f.rootfs.is_dir() => {
                let was = store::unregister(state, &f.name).unwrap_or(false);
                // Said once per function and rootfs, not at every read of the bucket.
                let said = format!("{}\0{}", f.name, f.rootfs.display());
                if reported().insert(said) || was {
                    eprintln!(
                        "strata-fn: registry: {} is not served on this node: its rootfs {} is not here",
                        f.name,
                        f.rootfs.display()
                    );
                }
            }
            // A replay (after a reconnection) of what is registered already.
            Ok(f) if store::functions(state).unwrap_or_default().contains(&f) => {}
            Ok(f) => {
                // Served here now: a later missing rootfs is reported again.
                let prefix = format!("{}\0", f.name);
                reported().retain(|k| !k.starts_with(&prefix));
                match store::register(state, &f) {
                    Ok(()) => eprintln!("strata-fn: registry: {} deployed", f.name),
                    Err(e) => eprintln!("strata-fn: registry: {}: {e}", f.name),
                }
            }
            Err(e) => eprintln!("strata-fn: registry: {}: {e}", entry.key),
        },
        Operation::Delete | Operation::Purge => {
            if crate::function::valid_name(&entry.key) && store::unregister(state, &entry.key).unwrap_or(false) {
                eprintln!("strata-fn: registry: {} removed", entry.key);
            }
        }
    }
}

/// Mirrors the registry into `state` for as long as the process lives,
/// starting again with backoff whenever the watch fails.
pub async fn mirror(link: std::sync::Arc<Link>, state: PathBuf) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match mirror_once(link.client(), &state, &link.reconnected).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                eprintln!("strata-fn: registry: {e}; again in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn mirror_once(
    client: &async_nats::Client,
    state: &Path,
    reconnected: &tokio::sync::Notify,
) -> crate::Result<()> {
    let kv = bucket(client).await?;
    let js = async_nats::jetstream::new(client.clone());
    // The watch brings changes within milliseconds; a full read of the bucket
    // every few seconds makes the mirror right whatever the watch missed (it
    // starts after the first read, so a change in between is caught by the
    // next one; and a watch started on an empty bucket was seen to end at
    // once or miss puts).
    let mut watch = None;
    let mut next_sync = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_sync {
            let entries = resync(&js, &kv, state).await?;
            next_sync = tokio::time::Instant::now() + Duration::from_secs(2);
            if watch.is_none() && entries > 0 {
                watch = Some(kv.watch_all().await.map_err(|e| other("registry watch", e))?);
            }
        }
        let entry = match watch.as_mut() {
            Some(w) => tokio::select! {
                e = w.next() => e,
                _ = tokio::time::sleep_until(next_sync) => continue,
                // A new connection (nats-server restarted, say): everything
                // starts again from the bucket's state.
                _ = reconnected.notified() => return Ok(()),
            },
            None => tokio::select! {
                _ = tokio::time::sleep_until(next_sync) => continue,
                _ = reconnected.notified() => return Ok(()),
            },
        };
        match entry {
            Some(Ok(entry)) => apply(state, &entry),
            Some(Err(e)) => return Err(other("registry watch", e)),
            None => return Err(crate::Error::Other("the registry watch ended".into())),
        }
    }
}

/// Reads the whole bucket into `state`: what it holds is registered (where
/// its rootfs is), what it does not is removed. Returns how many keys it has.
async fn resync(
    js: &async_nats::jetstream::Context,
    kv: &async_nats::jetstream::kv::Store,
    state: &Path,
) -> crate::Result<usize> {
    // Read fresh: the key-value store's own status is the stream's state as
    // it was when the store was opened.
    let stream = js.get_stream(format!("KV_{FUNCTIONS_BUCKET}")).await.map_err(|e| other("registry stream", e))?;
    let messages = stream.cached_info().state.messages;
    let mut known = std::collections::HashSet::new();
    if messages > 0 {
        let mut keys = kv.keys().await.map_err(|e| other("registry keys", e))?;
        while let Some(k) = keys.next().await {
            known.insert(k.map_err(|e| other("registry keys", e))?);
        }
        for k in &known {
            if let Some(entry) = kv.entry(k).await.map_err(|e| other("registry get", e))? {
                apply(state, &entry);
            }
        }
    }
    prune(state, &known);
    Ok(known.len())
}

/// Unregisters local functions the bucket does not name.
fn prune(state: &Path, known: &std::collections::HashSet<String>) {
    for f in store::functions(state).unwrap_or_default() {
        if !known.contains(&f.name) && store::unregister(state, &f.name).unwrap_or(false) {
            eprintln!("strata-fn: registry: {} removed (not in the cluster's registry)", f.name);
        }
    }
}

/// The stream of asynchronous events: subject `strata_fn.events.NAME`, a work
/// queue (an event is gone once a node acknowledged its outcome).
pub const EVENTS_STREAM: &str = "strata_fn_events";
/// Events whose every attempt failed: subject `strata_fn.dead.NAME`.
pub const DEAD_STREAM: &str = "strata_fn_dead";
/// Invocation records, by id, from every node.
pub const RECORDS_BUCKET: &str = "strata_fn_records";
/// The invocation id, on each event message.
const ID_HEADER: &str = "Strata-Fn-Id";
/// How long a node may hold an event without a word; a node running one
/// longer says "in progress" every third of it.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// A serving node's connection to the cluster: one NATS client, used from
/// the server's blocking threads through the runtime's handle.
pub struct Link {
    pub handle: tokio::runtime::Handle,
    /// Told on each connection to NATS.
    reconnected: std::sync::Arc<tokio::sync::Notify>,
    ack_wait: Duration,
    js: async_nats::jetstream::Context,
    client: async_nats::Client,
    records: tokio::sync::OnceCell<async_nats::jetstream::kv::Store>,
    streams: tokio::sync::OnceCell<()>,
}

/// An event taken from the queue for one attempt.
pub struct Event {
    pub id: String,
    pub payload: Vec<u8>,
    /// Deliveries so far, this one included.
    pub delivered: u32,
    msg: async_nats::jetstream::Message,
}

impl Link {
    /// Connects in the background (a node starts and serves synchronous
    /// calls with NATS down; JetStream calls fail until it is up).
    pub async fn start(n: &Nats) -> crate::Result<Link> {
        Link::open(n, true).await
    }

    /// A connection that must be up now (`background` false: a command
    /// line that reads and exits), or may come up later (a serving node).
    async fn open(n: &Nats, background: bool) -> crate::Result<Link> {
        // Each (re)connection restarts the registry watch (see `mirror`).
        let reconnected = std::sync::Arc::new(tokio::sync::Notify::new());
        let with_events = |o: async_nats::ConnectOptions| {
            let r = reconnected.clone();
            o.event_callback(move |event| {
                let r = r.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        r.notify_one();
                    }
                }
            })
        };
        let client = match with_events(n.options().await?).connect(&n.url).await {
            Ok(c) => c,
            // Credentials NATS refuses are an error of the command line.
            Err(e) if !background || e.to_string().contains("authorization") => {
                return Err(other(&format!("NATS at {}", n.url), e))
            }
            Err(e) => {
                eprintln!("strata-fn: NATS at {}: {e}; connecting in the background", n.url);
                with_events(n.options().await?)
                    .retry_on_initial_connect()
                    .connect(&n.url)
                    .await
                    .map_err(|e| other(&format!("NATS at {}", n.url), e))?
            }
        };
        Ok(Link {
            reconnected,
            handle: tokio::runtime::Handle::current(),
            ack_wait: n.ack_wait.unwrap_or(ACK_WAIT),
            js: async_nats::jetstream::new(client.clone()),
            client,
            records: Default::default(),
            streams: Default::default(),
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    async fn records(&self) -> crate::Result<&async_nats::jetstream::kv::Store> {
        self.records
            .get_or_try_init(|| async {
                if let Ok(kv) = self.js.get_key_value(RECORDS_BUCKET).await {
                    return Ok(kv);
                }
                let made = self
                    .js
                    .create_key_value(async_nats::jetstream::kv::Config {
                        bucket: RECORDS_BUCKET.into(),
                        description: "strata-fn: invocation records".into(),
                        history: 1,
                        max_age: Duration::from_secs(30 * 86_400),
                        ..Default::default()
                    })
                    .await;
                match made {
                    Ok(kv) => Ok(kv),
                    Err(e) => self.js.get_key_value(RECORDS_BUCKET).await.map_err(|_| other("records bucket", e)),
                }
            })
            .await
    }

    async fn streams(&self) -> crate::Result<()> {
        use async_nats::jetstream::stream::{Config, RetentionPolicy};
        self.streams
            .get_or_try_init(|| async {
                self.js
                    .get_or_create_stream(Config {
                        name: EVENTS_STREAM.into(),
                        description: Some("strata-fn: asynchronous events".into()),
                        subjects: vec!["strata_fn.events.>".into()],
                        retention: RetentionPolicy::WorkQueue,
                        duplicate_window: Duration::from_secs(120),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| other("events stream", e))?;
                self.js
                    .get_or_create_stream(Config {
                        name: DEAD_STREAM.into(),
                        description: Some("strata-fn: dead letters".into()),
                        subjects: vec!["strata_fn.dead.>".into()],
                        max_age: Duration::from_secs(30 * 86_400),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| other("dead-letter stream", e))?;
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Queues `event` for `r.function`; Ok only once JetStream stored it.
    pub fn accept(&self, r: &crate::store::Record, event: &[u8]) -> crate::Result<()> {
        // Not connected: refused now, rather than buffered by the client
        // library and stored after a 503 was answered.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(crate::Error::Other("not connected to NATS".into()));
        }
        self.handle.block_on(async {
            self.streams().await?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(ID_HEADER, r.id.as_str());
            // A publish retried by the client library is stored once.
            headers.insert("Nats-Msg-Id", r.id.as_str());
            let subject = format!("strata_fn.events.{}", r.function);
            let ack = self
                .js
                .publish_with_headers(subject, headers, event.to_vec().into())
                .await
                .map_err(|e| other("publish", e))?;
            tokio::time::timeout(Duration::from_secs(5), ack)
                .await
                .map_err(|_| crate::Error::Other("JetStream did not confirm within 5 s".into()))?
                .map_err(|e| other("publish", e))?;
            // The record is a view; the event is safe once stored above.
            if let Ok(kv) = self.records().await {
                let _ = kv.put(&r.id, serde_json::to_vec(r)?.into()).await;
            }
            Ok(())
        })
    }

    /// Stores `r` for every node to read (in the background: the caller
    /// does not wait for it).
    pub fn put_record_later(self: &std::sync::Arc<Self>, r: &crate::store::Record) {
        let Ok(value) = serde_json::to_vec(r) else { return };
        let (link, id) = (self.clone(), r.id.clone());
        self.handle.spawn(async move {
            if let Ok(kv) = link.records().await {
                let _ = kv.put(&id, value.into()).await;
            }
        });
    }

    /// Stores `r`, waiting for JetStream.
    pub fn put_record(&self, r: &crate::store::Record) -> crate::Result<()> {
        self.handle.block_on(async {
            let kv = self.records().await?;
            kv.put(&r.id, serde_json::to_vec(r)?.into()).await.map_err(|e| other("records put", e))?;
            Ok(())
        })
    }

    pub fn record(&self, id: &str) -> Option<crate::store::Record> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        self.handle.block_on(async {
            let kv = self.records().await.ok()?;
            let v = kv.get(id).await.ok()??;
            serde_json::from_slice(&v).ok()
        })
    }

    /// Every record of the cluster (for usage and dead letters).
    pub fn all_records(&self) -> crate::Result<Vec<crate::store::Record>> {
        self.handle.block_on(async {
            let kv = self.records().await?;
            let mut keys = kv.keys().await.map_err(|e| other("records keys", e))?;
            let mut out = Vec::new();
            while let Some(k) = keys.next().await {
                let k = k.map_err(|e| other("records keys", e))?;
                if let Ok(Some(v)) = kv.get(&k).await {
                    if let Ok(r) = serde_json::from_slice(&v) {
                        out.push(r);
                    }
                }
            }
            Ok(out)
        })
    }

    /// The durable consumer shared by every node for function `name`.
    pub fn consumer(&self, name: &str) -> crate::Result<async_nats::jetstream::consumer::PullConsumer> {
        self.handle.block_on(async {
            self.streams().await?;
            let stream = self.js.get_stream(EVENTS_STREAM).await.map_err(|e| other("events stream", e))?;
            let durable = format!("strata_fn_{name}");
            stream
                .get_or_create_consumer(
                    &durable,
                    async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some(durable.clone()),
                        filter_subject: format!("strata_fn.events.{name}"),
                        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: self.ack_wait,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| other(&format!("consumer {durable}"), e))
        })
    }

    /// One event, if one is waiting (within a second).
    pub fn fetch(&self, c: &async_nats::jetstream::consumer::PullConsumer) -> crate::Result<Option<Event>> {
        self.handle.block_on(async {
            let mut batch = c
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| other("fetch", e))?;
            let Some(msg) = batch.next().await else { return Ok(None) };
            let msg = msg.map_err(|e| other("fetch", e))?;
            let info = msg.info().map_err(|e| other("fetch", e))?;
            let delivered = info.delivered.max(1) as u32;
            let seq = info.stream_sequence;
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(ID_HEADER))
                .map(|v| v.to_string())
                .unwrap_or_else(|| format!("seq-{seq}"));
            Ok(Some(Event { id, payload: msg.payload.to_vec(), delivered, msg }))
        })
    }

    /// Tells JetStream, every third of the ack wait, that `e` is still being
    /// worked on, until the returned sender is dropped.
    pub fn keep_alive(&self, e: &Event) -> tokio::sync::oneshot::Sender<()> {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let msg = e.msg.clone();
        let every = self.ack_wait / 3;
        self.handle.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {
                        let _ = msg.ack_with(async_nats::jetstream::AckKind::Progress).await;
                    }
                    _ = &mut rx => return,
                }
            }
        });
        tx
    }

    /// The outcome is recorded: the event leaves the queue.
    pub fn ack(&self, e: &Event) {
        let _ = self.handle.block_on(e.msg.double_ack());
    }

    /// Deliver `e` again after `delay` (to any node).
    pub fn retry(&self, e: &Event, delay: Option<Duration>) {
        let _ = self.handle.block_on(e.msg.ack_with(async_nats::jetstream::AckKind::Nak(delay)));
    }

    /// Moves `e` to the dead-letter stream, then out of the queue.
    pub fn dead_letter(&self, function: &str, e: &Event) -> crate::Result<()> {
        self.handle.block_on(async {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(ID_HEADER, e.id.as_str());
            headers.insert("Nats-Msg-Id", format!("dead-{}", e.id).as_str());
            let ack = self
                .js
                .publish_with_headers(format!("strata_fn.dead.{function}"), headers, e.payload.clone().into())
                .await
                .map_err(|err| other("dead letter", err))?;
            ack.await.map_err(|err| other("dead letter", err))?;
            // Acknowledged, not terminated: a work queue keeps a terminated
            // message (nats-server 2.9), and the outcome is recorded.
            let _ = e.msg.double_ack().await;
            Ok(())
        })
    }

    /// Events of functions `names` that the cluster has still to run or
    /// finish: what their consumers have not delivered yet, and what is
    /// delivered but not acknowledged. (The stream's own message count is
    /// not it: after a hard kill of nats-server a work queue can keep
    /// messages its consumer has already acknowledged.)
    pub fn queue_depth(&self, names: &[String]) -> Option<u64> {
        self.handle.block_on(async {
            let s = self.js.get_stream(EVENTS_STREAM).await.ok()?;
            let mut depth = 0;
            for name in names {
                if let Ok(i) = s.consumer_info(format!("strata_fn_{name}")).await {
                    depth += i.num_pending + i.num_ack_pending as u64;
                }
            }
            Some(depth)
        })
    }
}

/// Every invocation record of the cluster, for the CLI.
pub fn records(n: &Nats) -> crate::Result<Vec<crate::store::Record>> {
    // A worker thread drives the connection while the records are read.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let link = rt.block_on(Link::open(n, false))?;
    link.all_records()
}
