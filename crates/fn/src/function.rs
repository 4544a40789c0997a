//! A function: `function.toml` beside a root filesystem, validated into a
//! [`Function`] that every invocation's container is made from.
//!
//! ```toml
//! name = "echo"
//! rootfs = "rootfs"            # or: bundle = "path/to/oci-bundle"
//! command = ["/bin/cat"]
//! timeout_ms = 5000
//! max_concurrency = 8
//! queue = 64
//! [env]
//! GREETING = "hello"
//! [limits]
//! memory_mb = 128
//! pids = 64
//! cpus = 0.5
//! [pool]
//! min_warm = 0
//! max_warm = 4
//! keep_alive_s = 60
//! [retry]
//! attempts = 3
//! backoff_ms = 200
//! [trigger]
//! directory = "/srv/uploads"
//! ```
//!
//! `isolation = "vm"` runs each invocation in a microVM of its own (see
//! docs/vm.md); the default is `"container"`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionToml {
    name: String,
    rootfs: Option<PathBuf>,
    bundle: Option<PathBuf>,
    command: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    timeout_ms: Option<u64>,
    grace_ms: Option<u64>,
    max_concurrency: Option<u32>,
    queue: Option<u32>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    pool: PoolConfig,
    #[serde(default)]
    retry: Retry,
    trigger: Option<Trigger>,
    isolation: Option<String>,
}

/// Resource limits of each invocation's container.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// memory.max in MiB (needs the memory controller).
    pub memory_mb: Option<u64>,
    /// pids.max (needs the pids controller).
    pub pids: Option<u64>,
    /// CPU time as a number of CPUs (cpu.max; needs the cpu controller).
    pub cpus: Option<f64>,
}

/// The warm pool: containers created ahead, waiting for `start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Kept even when idle (0: scale to zero).
    pub min_warm: u32,
    /// Kept while the function is being called (0: no pool, every start is cold).
    pub max_warm: u32,
    /// How long after its last call the pool stays at `max_warm`.
    pub keep_alive_s: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { min_warm: 0, max_warm: 2, keep_alive_s: 60 }
    }
}

/// Retries of asynchronous events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Runs of one event at most, the first included; then it is dead-lettered.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 3, backoff_ms: 200 }
    }
}

/// A directory whose new files are events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub directory: PathBuf,
}

/// A validated function, as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    /// The directory `function.toml` was deployed from.
    pub dir: PathBuf,
    /// Absolute path of the root filesystem (shared read-only by all containers).
    pub rootfs: PathBuf,
    pub command: Vec<String>,
    /// KEY=VALUE, PATH first.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub timeout_ms: u64,
    /// Between SIGTERM at the timeout and cgroup.kill.
    pub grace_ms: u64,
    pub max_concurrency: u32,
    /// Synchronous calls that may wait for a slot; more get 429.
    pub queue: u32,
    pub limits: Limits,
    pub pool: PoolConfig,
    pub retry: Retry,
    pub trigger: Option<Trigger>,
    /// Each invocation in a microVM of its own.
    #[serde(default)]
    pub vm: bool,
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An error in `function.toml`, naming the field.
fn bad(field: &str, why: impl std::fmt::Display) -> crate::Error {
    crate::Error::Function { field: field.to_string(), message: why.to_string() }
}

/// Whether `name` may name a function: 1 to 63 of [a-z0-9-_], starting with a
/// letter or digit (it appears in container ids, cgroup paths and URLs).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// Controllers the host's cgroup v2 root offers.
fn available_controllers() -> Vec<String> {
    strata_runtime::cgroups::find_mount()
        .ok()
        .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

impl Function {
    /// Reads and validates `DIR/function.toml`.
    pub fn load(dir: &Path) -> crate::Result<Function> {
        let dir = std::fs::canonicalize(dir).map_err(|e| crate::Error::path(dir, e))?;
        let path = dir.join("function.toml");
        let meta = std::fs::metadata(&path).map_err(|e| crate::Error::path(&path, e))?;
        if !meta.is_file() || meta.len() > 1 << 20 {
            return Err(crate::Error::Other(format!("{}: not a regular file of at most 1 MiB", path.display())));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::path(&path, e))?;
        Self::parse(&text, &dir)
    }

    /// Validates the text of a `function.toml` found in `dir`.
    pub fn parse(text: &str, dir: &Path) -> crate::Result<Function> {
        let t: FunctionToml = toml::from_str(text).map_err(|e| {
            // toml's message spans lines (the offending source and a caret).
            let msg = e.message().to_string();
            // Named by its line, and the line itself (which names the field).
            let start = e.span().map(|s| s.start.min(text.len()));
            match start {
                Some(at) => {
                    let line_no = text[..at].matches('\n').count() + 1;
                    let line: String = text.lines().nth(line_no - 1).unwrap_or("").trim().chars().take(60).collect();
                    crate::Error::Function {
                        field: format!("line {line_no} ({line})"),
                        message: msg.trim().to_string(),
                    }
                }
                None => crate::Error::Function { field: "document".into(), message: msg.trim().to_string() },
            }
        })?;
        if !valid_name(&t.name) {
            return Err(bad(
                "name",
                format!("{:?} is not 1-63 of a-z, 0-9, '-' and '_', starting with a letter or digit", t.name),
            ));
        }
        let (rootfs, mut command, mut env, mut cwd, mut uid, mut gid) = match (&t.rootfs, &t.bundle) {
            (Some(_), Some(_)) => return Err(bad("bundle", "give either rootfs or bundle, not both")),
            (None, None) => return Err(bad("rootfs", "missing (or give bundle)")),
            (Some(r), None) => (dir.join(r), None, Vec::new(), None, 0, 0),
            (None, Some(b)) => {
                let bundle = dir.join(b);
                let spec = strata_runtime::config::load(&bundle).map_err(|e| bad("bundle", e))?;
                let root = spec.root().as_ref().ok_or_else(|| bad("bundle", "its config.json has no root"))?;
                let p = spec.process().as_ref();
                (
                    bundle.join(root.path()),
                    p.and_then(|p| p.args().clone()),
                    p.and_then(|p| p.env().clone()).unwrap_or_default(),
                    p.map(|p| p.cwd().to_string_lossy().into_owned()),
                    p.map(|p| p.user().uid()).unwrap_or(0),
                    p.map(|p| p.user().gid()).unwrap_or(0),
                )
            }
        };
        let rootfs = std::fs::canonicalize(&rootfs).map_err(|e| bad("rootfs", format!("{}: {e}", rootfs.display())))?;
        if !rootfs.is_dir() {
            return Err(bad("rootfs", format!("{} is not a directory", rootfs.display())));
        }
        // The private tmpfs goes there; nothing is ever made in the shared rootfs.
        if !rootfs.join("tmp").is_dir() {
            return Err(bad(
                "rootfs",
                format!("{} has no /tmp directory (each invocation mounts a tmpfs there)", rootfs.display()),
            ));
        }
        if let Some(c) = t.command {
            command = Some(c);
        }
        let command = command.unwrap_or_default();
        if command.is_empty() || command[0].is_empty() {
            return Err(bad("command", "missing or empty"));
        }
        if command.iter().any(|a| a.contains('\0')) {
            return Err(bad("command", "contains a NUL byte"));
        }
        // execve's limit on one string.
        const MAX_ARG: usize = 131_072;
        if let Some(i) = command.iter().position(|a| a.len() >= MAX_ARG) {
            return Err(bad(&format!("command[{i}]"), format!("is over {} bytes", MAX_ARG - 1)));
        }
        if !program_exists(&rootfs, &command[0]) {
            return Err(bad("command", format!("{:?} is not an executable file in {}", command[0], rootfs.display())));
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_string());
        }
        for (k, v) in &t.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(bad(&format!("env.{k}"), "a name must be non-empty without '=' or NUL"));
            }
            env.retain(|e| !e.starts_with(&format!("{k}=")));
            env.push(format!("{k}={v}"));
        }
        if let Some(e) = env.iter().find(|e| e.len() >= MAX_ARG) {
            let name = e.split('=').next().unwrap_or("");
            return Err(bad(&format!("env.{name}"), format!("is over {} bytes with its name", MAX_ARG - 1)));
        }
        if let Some(c) = t.cwd {
            cwd = Some(c);
        }
        let cwd = cwd.unwrap_or_else(|| "/".into());
        if !cwd.starts_with('/') {
            return Err(bad("cwd", "must be absolute"));
        }
        if let Some(u) = &t.user {
            let (u, g) = u.split_once(':').unwrap_or((u, u));
            (uid, gid) = match (u.parse(), g.parse()) {
                (Ok(u), Ok(g)) => (u, g),
                _ => return Err(bad("user", format!("{:?} is not UID[:GID]", t.user.as_deref().unwrap_or("")))),
            };
        }
        let timeout_ms = t.timeout_ms.unwrap_or(30_000);
        if !(1..=900_000).contains(&timeout_ms) {
            return Err(bad("timeout_ms", "must be 1 to 900000"));
        }
        let grace_ms = t.grace_ms.unwrap_or(1000);
        if grace_ms > 60_000 {
            return Err(bad("grace_ms", "must be at most 60000"));
        }
        let max_concurrency = t.max_concurrency.unwrap_or(16);
        if !(1..=1024).contains(&max_concurrency) {
            return Err(bad("max_concurrency", "must be 1 to 1024"));
        }
        let queue = t.queue.unwrap_or(64);
        if queue > 100_000 {
            return Err(bad("queue", "must be at most 100000"));
        }
        let vm = match t.isolation.as_deref() {
            None | Some("container") => false,
            Some("vm") => true,
            Some(other) => return Err(bad("isolation", format!("{other:?} is neither \"container\" nor \"vm\""))),
        };
        if vm && t.trigger.is_some() {
            return Err(bad(
                "trigger",
                "a file event cannot reach a VM yet (it is bind-mounted); use isolation = \"container\"",
            ));
        }
        // In a VM the limits hold in the guest's own cgroups.
        let controllers = if vm { vec!["memory".into(), "pids".into(), "cpu".into()] } else { available_controllers() };
        let need = |field: &str, controller: &str| -> crate::Result<()> {
            if controllers.iter().any(|c: &String| c == controller) {
                Ok(())
            } else {
                Err(bad(field, format!("this host's cgroup v2 has no {controller} controller to enforce it")))
            }
        };
        if let Some(m) = t.limits.memory_mb {
            if !(4..=1 << 20).contains(&m) {
                return Err(bad("limits.memory_mb", "must be 4 to 1048576"));
            }
            need("limits.memory_mb", "memory")?;
        }
        if let Some(p) = t.limits.pids {
            if p == 0 {
                return Err(bad("limits.pids", "must be at least 1"));
            }
            need("limits.pids", "pids")?;
        }
        if let Some(c) = t.limits.cpus {
            if !(c.is_finite() && (0.01..=1024.0).contains(&c)) {
                return Err(bad("limits.cpus", "must be 0.01 to 1024"));
            }
            need("limits.cpus", "cpu")?;
        }
        if t.pool.min_warm > t.pool.max_warm {
            return Err(bad("pool.min_warm", "must not exceed pool.max_warm"));
        }
        if t.pool.max_warm > 256 {
            return Err(bad("pool.max_warm", "must be at most 256"));
        }
        if t.pool.keep_alive_s > 86_400 {
            return Err(bad("pool.keep_alive_s", "must be at most 86400"));
        }
        if !(1..=100).contains(&t.retry.attempts) {
            return Err(bad("retry.attempts", "must be 1 to 100"));
        }
        if t.retry.backoff_ms > 3_600_000 {
            return Err(bad("retry.backoff_ms", "must be at most 3600000"));
        }
        if let Some(tr) = &t.trigger {
            if !tr.directory.is_absolute() {
                return Err(bad("trigger.directory", "must be absolute"));
            }
            if !tr.directory.is_dir() {
                return Err(bad("trigger.directory", format!("{} is not a directory", tr.directory.display())));
            }
        }
        Ok(Function {
            name: t.name,
            dir: dir.to_path_buf(),
            rootfs,
            command,
            env,
            cwd,
            uid,
            gid,
            timeout_ms,
            grace_ms,
            max_concurrency,
            queue,
            limits: t.limits,
            pool: t.pool,
            retry: t.retry,
            trigger: t.trigger,
            vm,
        })
    }

    /// Memory billed per invocation: the limit, or 128 MiB without one.
    pub fn billed_memory_mb(&self) -> u64 {
        self.limits.memory_mb.unwrap_or(128)
    }
}

/// Whether `program` names an executable regular file inside `rootfs`
/// (absolute, or found on the default PATH), following no link out of it.
fn program_exists(rootfs: &Path, program: &str) -> bool {
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.to_string()]
    } else {
        DEFAULT_PATH["PATH=".len()..].split(':').map(|d| format!("{d}/{program}")).collect()
    };
    candidates.iter().any(|c| {
        let Ok(p) = resolve_in(rootfs, c) else { return false };
        std::fs::metadata(&p)
            .map(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// `path` resolved inside `rootfs`, with symlinks followed as the container
/// would see them (absolute targets relative to `rootfs`).
fn resolve_in(rootfs: &Path, path: &str) -> Result<PathBuf, ()> {
    let mut cur = rootfs.to_path_buf();
    let mut parts: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(String::from).rev().collect();
    let mut hops = 0;
    while let Some(part) = parts.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                if cur != rootfs {
                    cur.pop();
                }
                continue;
            }
            _ => {}
        }
        let next = cur.join(&part);
        match std::fs::read_link(&next) {
            Ok(target) => {
                hops += 1;
                if hops > 40 {
                    return Err(());
                }
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    cur = rootfs.to_path_buf();
                }
                parts.extend(t.split('/').filter(|s| !s.is_empty()).map(String::from).rev());
            }
            Err(_) => cur = next,
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-fn-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("rootfs/bin")).expect("mkdir");
        std::fs::create_dir_all(d.join("rootfs/tmp")).expect("mkdir");
        std::fs::write(d.join("rootfs/bin/busybox"), "").expect("write");
        std::fs::set_permissions(d.join("rootfs/bin/busybox"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink("/bin/busybox", d.join("rootfs/bin/cat")).expect("symlink");
        d
    }

    fn err(tag: &str, text: &str) -> String {
        let d = dir(tag);
        let r = Function::parse(text, &d);
        let _ = std::fs::remove_dir_all(&d);
        match r {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_minimal_function_gets_defaults() {
        let d = dir("min");
        let f = Function::parse("name = \"echo\"\nrootfs = \"rootfs\"\ncommand = [\"cat\"]\n", &d).expect("valid");
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(f.command, ["cat"]);
        assert!(f.env[0].starts_with("PATH="));
        assert_eq!((f.timeout_ms, f.max_concurrency, f.pool.max_warm, f.retry.attempts), (30_000, 16, 2, 3));
    }

    #[test]
    fn every_bad_field_is_named() {
        let base = "name = \"f\"\nrootfs = \"rootfs\"\ncommand = [\"cat\"]\n";
        let cases = [
            ("name = \"Bad Name\"\nrootfs = \"rootfs\"\ncommand = [\"cat\"]\n", "name:"),
            ("rootfs = \"rootfs\"\ncommand = [\"cat\"]\n", "missing field `name`"),
            ("name = \"f\"\ncommand = [\"cat\"]\n", "rootfs: missing"),
            ("name = \"f\"\nrootfs = \"nope\"\ncommand = [\"cat\"]\n", "rootfs: "),
            ("name = \"f\"\nrootfs = \"rootfs\"\ncommand = [\"/bin/nope\"]\n", "command:"),
            ("name = \"f\"\nrootfs = \"rootfs\"\ncommand = []\n", "command: missing or empty"),
            ("name = \"f\"\nrootfs = \"rootfs\"\ncommand = [\"cat\"]\nnmae = 1\n", "unknown field `nmae`"),
            ("name = \"f\"\nrootfs = \"rootfs\"\ncommand = \"cat\"\n", "line 3 (command = \"cat\")"),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let got = err(&format!("c{i}"), text);
            assert!(got.contains(want), "case {i}: want {want:?} in {got:?}");
        }
        let extra = [
            ("timeout_ms = 0", "timeout_ms:"),
            ("max_concurrency = 0", "max_concurrency:"),
            ("cwd = \"rel\"", "cwd: must be absolute"),
            ("user = \"x\"", "user:"),
            ("[pool]\nmin_warm = 3\nmax_warm = 1", "pool.min_warm"),
            ("[retry]\nattempts = 0", "retry.attempts"),
            ("[trigger]\ndirectory = \"rel\"", "trigger.directory: must be absolute"),
            ("[limits]\ncpus = -1.0", "limits.cpus"),
            ("[env]\n\"A=B\" = \"x\"", "env.A=B"),
            (&format!("[env]\nBIG = \"{}\"", "x".repeat(131_072)), "env.BIG: is over 131071 bytes"),
        ];
        for (i, (more, want)) in extra.iter().enumerate() {
            let got = err(&format!("e{i}"), &format!("{base}{more}\n"));
            assert!(got.contains(want), "extra {i}: want {want:?} in {got:?}");
        }
    }

    #[test]
    fn a_bundle_gives_rootfs_and_process() {
        let d = dir("bundle");
        let mut spec = strata_runtime::config::default_spec_json();
        spec["process"]["args"] = serde_json::json!(["cat", "-"]);
        spec["process"]["env"] = serde_json::json!(["PATH=/bin", "A=1"]);
        spec["process"]["cwd"] = "/tmp".into();
        spec["process"]["user"] = serde_json::json!({ "uid": 7, "gid": 8 });
        std::fs::write(d.join("config.json"), spec.to_string()).expect("write");
        let f = Function::parse("name = \"b\"\nbundle = \".\"\n[env]\nA = \"2\"\n", &d);
        let _ = std::fs::remove_dir_all(&d);
        let f = f.expect("valid");
        assert_eq!(f.command, ["cat", "-"]);
        assert_eq!(f.env, ["PATH=/bin", "A=2"]);
        assert_eq!((f.cwd.as_str(), f.uid, f.gid), ("/tmp", 7, 8));
        assert!(f.rootfs.ends_with("rootfs"));
    }

    #[test]
    fn names() {
        assert!(valid_name("echo-2_x"));
        for n in ["", "-x", "A", "a/b", "a.b", &"x".repeat(64)] {
            assert!(!valid_name(n), "{n:?}");
        }
    }
}
