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

/// Applies one registry entry to the local state: what the node serves.
fn apply(state: &Path, entry: &async_nats::jetstream::kv::Entry) {
    use async_nats::jetstream::kv::Operation;
    match entry.operation {
        Operation::Put => match serde_json::from_slice::<Function>(&entry.value) {
            Ok(f) if f.name != entry.key => {
                eprintln!("strata-fn: registry: key {} holds function {}", entry.key, f.name)
            }
            Ok(f) if !f.rootfs.is_dir() => {
                let _ = store::unregister(state, &f.name);
                eprintln!(
                    "strata-fn: registry: {} is not served on this node: its rootfs {} is not here",
                    f.name,
                    f.rootfs.display()
                );
            }
            Ok(f) => match store::register(state, &f) {
                Ok(()) => eprintln!("strata-fn: registry: {} deployed", f.name),
                Err(e) => eprintln!("strata-fn: registry: {}: {e}", f.name),
            },
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
/// reconnecting with backoff whenever NATS goes away.
pub async fn mirror(n: Nats, state: PathBuf) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match mirror_once(&n, &state).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                eprintln!("strata-fn: registry: {e}; again in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn mirror_once(n: &Nats, state: &Path) -> crate::Result<()> {
    let client = n.connect().await?;
    let kv = bucket(&client).await?;
    let messages = |kv: async_nats::jetstream::kv::Store| async move {
        kv.status().await.map(|s| s.info.state.messages).map_err(|e| other("registry status", e))
    };
    let mut known: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut current = false;
    // Every key's last value or delete marker, then each change as it comes.
    // (A watch with history of an empty bucket ends at once: an empty bucket
    // is watched for new entries only, and checked again after, so that a
    // put in between is not missed.)
    let mut watch = if messages(kv.clone()).await? == 0 {
        let w = kv.watch_all().await.map_err(|e| other("registry watch", e))?;
        if messages(kv.clone()).await? != 0 {
            return Err(crate::Error::Other("the registry changed while the watch started".into()));
        }
        current = true;
        prune(state, &known);
        w
    } else {
        kv.watch_with_history(">").await.map_err(|e| other("registry watch", e))?
    };
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| other("registry watch", e))?;
        known.insert(entry.key.clone());
        apply(state, &entry);
        if !current && entry.delta == 0 {
            // The replay is over: functions the bucket no longer names at all
            // (purged while this node was away) go too.
            current = true;
            prune(state, &known);
        }
    }
    Err(crate::Error::Other("the registry watch ended".into()))
}

/// Unregisters local functions the bucket does not name.
fn prune(state: &Path, known: &std::collections::HashSet<String>) {
    for f in store::functions(state).unwrap_or_default() {
        if !known.contains(&f.name) && store::unregister(state, &f.name).unwrap_or(false) {
            eprintln!("strata-fn: registry: {} removed (not in the cluster's registry)", f.name);
        }
    }
}
