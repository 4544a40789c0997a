//! The state directory: registered functions (`functions/NAME.json`) and the
//! invocation log, an append-only file of JSON lines (`invocations.log`), one
//! snapshot of an invocation record per line; the last line of an id wins.
//! An asynchronous event is on disk (fsynced) before it is acknowledged, and
//! so is each change of its state, so a restart finds every accepted event.
//! Past [`ROTATE_BYTES`] the log is sealed as `invocations-MS.log` and a new
//! one starts with the records that are not final yet; sealed segments keep
//! the metering history (`usage` reads them) until an operator removes them.

use crate::function::Function;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The default state directory.
pub const DEFAULT_STATE: &str = "/var/lib/strata-fn";

/// How an invocation came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sync,
    Async,
    File,
}

/// Where an invocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted, waiting for a run (or for its next retry).
    Queued,
    Running,
    /// Exit 0.
    Succeeded,
    /// A synchronous call that exited non-zero or could not run.
    Failed,
    /// A synchronous call that ran out of time.
    Timeout,
    /// An asynchronous event whose every attempt failed: the dead-letter list.
    Dead,
}

impl Status {
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

/// One invocation, with its metering.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub function: String,
    pub mode: Option<Mode>,
    pub status: Option<Status>,
    pub attempts: u32,
    /// Milliseconds since the epoch.
    pub accepted_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the (last) run took a warm container.
    pub warm: bool,
    /// Wall time of the (last) run, start to exit, in milliseconds.
    pub duration_ms: f64,
    /// CPU time of the container (cgroup cpu.stat), milliseconds.
    pub cpu_ms: f64,
    /// memory.peak in bytes; None where the memory controller is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    pub billed_ms: u64,
    pub gb_seconds: f64,
    /// The event (base64), kept until an asynchronous event is final.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_b64: Option<String>,
    /// For a file event: the file on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The token (its id) that invoked it, where the API requires tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Output of an asynchronous run (base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_b64: Option<String>,
    /// The end of stderr.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub stderr_tail: String,
    /// When a queued event is due (a retry waits), milliseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
}

fn event_len(r: &Record) -> usize {
    r.event_b64.as_ref().map_or(0, String::len)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Records kept in memory for `GET /invocations/ID` (the log has them all).
const MEMORY_RECORDS: usize = 100_000;

/// Size at which the log is sealed and a new one started.
pub const ROTATE_BYTES: u64 = 64 << 20;

struct Log {
    file: File,
    size: u64,
    /// ROTATE_BYTES (smaller in tests).
    rotate_at: u64,
    /// The number of the newest sealed segment (its time in ms, made unique).
    last_sealed: u64,
    /// Latest snapshots of records that are not final, carried into a new log
    /// (the only copies of their events held in memory).
    pending: HashMap<String, Record>,
    /// Bytes of the events in `pending`.
    pending_bytes: usize,
}

pub struct Store {
    pub dir: PathBuf,
    log: Mutex<Log>,
    records: Mutex<(HashMap<String, Record>, VecDeque<String>)>,
}

/// The log's files, oldest first: sealed segments, then the current log.
fn log_files(state: &Path) -> Vec<PathBuf> {
    let mut sealed: Vec<(u64, PathBuf)> = std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ms = name.strip_prefix("invocations-")?.strip_suffix(".log")?.parse().ok()?;
            Some((ms, e.path()))
        })
        .collect();
    sealed.sort();
    let mut files: Vec<PathBuf> = sealed.into_iter().map(|(_, p)| p).collect();
    files.push(state.join("invocations.log"));
    files
}

fn functions_dir(state: &Path) -> PathBuf {
    state.join("functions")
}

/// Registers `f` (replacing a function of the same name).
pub fn register(state: &Path, f: &Function) -> crate::Result<()> {
    let dir = functions_dir(state);
    std::fs::create_dir_all(&dir).map_err(|e| crate::Error::path(&dir, e))?;
    let tmp = dir.join(format!(".{}.tmp", f.name));
    std::fs::write(&tmp, serde_json::to_vec_pretty(f)?).map_err(|e| crate::Error::path(&tmp, e))?;
    let path = dir.join(format!("{}.json", f.name));
    std::fs::rename(&tmp, &path).map_err(|e| crate::Error::path(&path, e))?;
    Ok(())
}

/// Unregisters function `name`; false when there is none.
pub fn unregister(state: &Path, name: &str) -> crate::Result<bool> {
    if !crate::function::valid_name(name) {
        return Err(crate::Error::Other(format!("{name:?} is not a function name")));
    }
    let path = functions_dir(state).join(format!("{name}.json"));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(crate::Error::path(&path, e)),
    }
}

/// The registered functions, by name.
pub fn functions(state: &Path) -> crate::Result<Vec<Function>> {
    let mut out = Vec::new();
    let dir = functions_dir(state);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(crate::Error::path(&dir, e)),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read(e.path()).map_err(|err| crate::Error::path(e.path(), err))?;
        match serde_json::from_slice::<Function>(&text) {
            Ok(f) => out.push(f),
            Err(err) => eprintln!("warning: {}: {err}", e.path().display()),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Modification time of the registry, to notice deploys and removals.
pub fn functions_stamp(state: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(functions_dir(state)).and_then(|m| m.modified()).ok()
}

/// Every record of the log at `state` (all segments), last snapshot per id,
/// in log order.
pub fn read_log(state: &Path) -> crate::Result<Vec<Record>> {
    let mut order = Vec::new();
    let mut by_id: HashMap<String, Record> = HashMap::new();
    for path in log_files(state) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(crate::Error::path(&path, e)),
        };
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line?;
            // A torn last line (the server was killed mid-write) is skipped.
            let Ok(r) = serde_json::from_slice::<Record>(&line) else { continue };
            if !by_id.contains_key(&r.id) {
                order.push(r.id.clone());
            }
            by_id.insert(r.id.clone(), r);
        }
    }
    Ok(order.into_iter().filter_map(|id| by_id.remove(&id)).collect())
}

impl Store {
    /// Opens the store at `dir` (cutting a torn last line off the log).
    /// Returns the store and the records that are not final.
    pub fn open(dir: &Path) -> crate::Result<(Store, Vec<Record>)> {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::path(dir, e))?;
        let path = dir.join("invocations.log");
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| crate::Error::path(&path, e))?;
        // A line cut short by a kill would swallow the next append: cut it off.
        let text_len = file.metadata()?.len();
        if text_len > 0 {
            let data = std::fs::read(&path)?;
            let keep = data.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0) as u64;
            if keep < text_len {
                file.set_len(keep)?;
                file.sync_data()?;
            }
        }
        let records = read_log(dir)?;
        let pending: Vec<Record> =
            records.iter().filter(|r| !r.status.is_some_and(Status::is_final)).cloned().collect();
        let mut map = HashMap::new();
        let mut order = VecDeque::new();
        for mut r in records.into_iter().rev().take(MEMORY_RECORDS).collect::<Vec<_>>().into_iter().rev() {
            order.push_back(r.id.clone());
            r.event_b64 = None;
            map.insert(r.id.clone(), r);
        }
        let _ = std::fs::remove_file(dir.join("invocations.log.new"));
        let last_sealed = log_files(dir)
            .iter()
            .filter_map(|p| p.file_name()?.to_str()?.strip_prefix("invocations-")?.strip_suffix(".log")?.parse().ok())
            .max()
            .unwrap_or(0);
        let log = Log {
            last_sealed,
            rotate_at: ROTATE_BYTES,
            size: file.metadata()?.len(),
            file,
            pending_bytes: pending.iter().map(event_len).sum(),
            pending: pending.iter().map(|r| (r.id.clone(), r.clone())).collect(),
        };
        Ok((Store { dir: dir.to_path_buf(), log: Mutex::new(log), records: Mutex::new((map, order)) }, pending))
    }

    /// Seals the current log and starts a new one holding the pending records.
    fn rotate(&self, log: &mut Log) -> crate::Result<()> {
        let path = self.dir.join("invocations.log");
        log.last_sealed = now_ms().max(log.last_sealed + 1);
        let sealed = self.dir.join(format!("invocations-{}.log", log.last_sealed));
        let tmp = self.dir.join("invocations.log.new");
        let mut out = std::io::BufWriter::new(File::create(&tmp)?);
        let mut size = 0;
        for r in log.pending.values() {
            let mut line = serde_json::to_vec(r)?;
            line.push(b'\n');
            size += line.len() as u64;
            out.write_all(&line)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        // Sealed first: a crash between the renames leaves the pending records
        // in the sealed segment, read before the (then missing) current log.
        std::fs::rename(&path, &sealed)?;
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        log.file = OpenOptions::new().append(true).open(&path)?;
        log.size = size;
        Ok(())
    }

    /// Appends a snapshot of `r`; with `durable`, returns only once it is on disk.
    pub fn put(&self, r: &Record, durable: bool) -> crate::Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let written = log.file.write_all(&line).and_then(|()| if durable { log.file.sync_data() } else { Ok(()) });
            if let Err(e) = written {
                // A fragment left by a short write (a full disk) would swallow
                // the next line: cut the log back to its last whole line.
                let _ = log.file.set_len(log.size);
                return Err(e.into());
            }
            log.size += line.len() as u64;
            let old = if r.status.is_some_and(Status::is_final) {
                log.pending.remove(&r.id)
            } else {
                log.pending_bytes += event_len(r);
                log.pending.insert(r.id.clone(), r.clone())
            };
            log.pending_bytes -= old.as_ref().map(event_len).unwrap_or(0);
            if log.size > log.rotate_at {
                // The record is on disk either way; a failed rotation is
                // tried again at the next write.
                if let Err(e) = self.rotate(&mut log) {
                    eprintln!("strata-fn: rotate the invocation log: {e}");
                }
            }
        }
        // In memory without the event: the pending set holds those still needed.
        let mut slim = r.clone();
        slim.event_b64 = None;
        let mut recs = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *recs;
        if map.insert(r.id.clone(), slim).is_none() {
            order.push_back(r.id.clone());
            if order.len() > MEMORY_RECORDS {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        Ok(())
    }

    /// The record `id`: from memory, or (an unfinished one that memory let
    /// go of) from the log's pending set.
    /// An unfinished record comes with its event.
    pub fn get(&self, id: &str) -> Option<Record> {
        if let Some(r) = self.log.lock().unwrap_or_else(|e| e.into_inner()).pending.get(id) {
            return Some(r.clone());
        }
        self.records.lock().unwrap_or_else(|e| e.into_inner()).0.get(id).cloned()
    }

    /// Records not final yet (queued or running), and the bytes of their events.
    pub fn pending(&self) -> (usize, usize) {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        (log.pending.len(), log.pending_bytes)
    }
}

/// Base64 (standard alphabet, padded).
pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes base64 as [`b64`] writes it.
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_and_keeps_pending_records() {
        let d = std::env::temp_dir().join(format!("strata-fn-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        {
            let (s, _) = Store::open(&d).expect("open");
            s.log.lock().expect("lock").rotate_at = 600;
            let queued =
                Record { id: "q".into(), function: "f".into(), status: Some(Status::Queued), ..Default::default() };
            s.put(&queued, true).expect("put");
            for i in 0..20 {
                let r = Record {
                    id: format!("r{i}"),
                    function: "f".into(),
                    status: Some(Status::Succeeded),
                    ..Default::default()
                };
                s.put(&r, false).expect("put");
            }
        }
        let segments = log_files(&d).len() - 1;
        let (s, pending) = Store::open(&d).expect("reopen");
        let all = read_log(&d).expect("read");
        let current = std::fs::read_to_string(d.join("invocations.log")).expect("read");
        let _ = std::fs::remove_dir_all(&d);
        assert!(segments >= 2, "sealed segments: {segments}");
        assert_eq!(all.len(), 21);
        assert_eq!(pending.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["q"]);
        assert!(current.len() < 600 + 200, "the current log stays small: {}", current.len());
        assert!(s.get("r19").is_some());
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unb64(&b64(&data)).as_deref(), Some(&data[..]), "{n}");
        }
        assert_eq!(b64(b"hi!"), "aGkh");
        assert_eq!(b64(b"h"), "aA==");
        assert_eq!(unb64("a*=="), None);
    }

    #[test]
    fn the_log_survives_a_torn_line_and_keeps_the_last_snapshot() {
        let d = std::env::temp_dir().join(format!("strata-fn-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        {
            let (s, pending) = Store::open(&d).expect("open");
            assert!(pending.is_empty());
            let mut r = Record {
                id: "a".into(),
                function: "f".into(),
                status: Some(Status::Queued),
                event_b64: Some("aGkh".into()),
                ..Default::default()
            };
            s.put(&r, true).expect("put");
            assert_eq!(s.pending(), (1, 4));
            // Memory keeps the event only while the record is unfinished.
            assert_eq!(s.get("a").and_then(|r| r.event_b64).as_deref(), Some("aGkh"));
            let b = Record { id: "b".into(), function: "f".into(), status: Some(Status::Queued), ..Default::default() };
            s.put(&b, true).expect("put");
            r.status = Some(Status::Succeeded);
            s.put(&r, false).expect("put");
            assert_eq!(s.pending(), (1, 0));
            assert_eq!(s.get("a").and_then(|r| r.event_b64), None);
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("invocations.log"))
            .and_then(|mut f| f.write_all(b"{\"id\":\"c\",\"func"))
            .expect("tear");
        let (s, pending) = Store::open(&d).expect("reopen");
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, "b");
        assert_eq!(s.get("a").and_then(|r| r.status), Some(Status::Succeeded));
        assert!(s.get("c").is_none());
    }
}
