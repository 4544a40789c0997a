//! The per-container state directory: `<root>/<id>/state.json`, written atomically
//! (write to a temporary file, then rename) while holding an exclusive `flock` on the
//! directory, so concurrent front ends never see or produce a torn file.

use crate::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const STATE_FILE: &str = "state.json";

/// Lifecycle status of a container, as the OCI runtime spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is still setting the container up.
    Creating,
    /// Set up and waiting for `start`.
    Created,
    /// The user process has been started and is alive.
    Running,
    /// The container's processes are frozen.
    Paused,
    /// The container's init process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What the runtime remembers about one container between CLI calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init process (0 before it exists).
    pub pid: i32,
    /// Status recorded by the last lifecycle operation.
    pub status: Status,
    /// Absolute path of the bundle.
    pub bundle: PathBuf,
    /// Absolute path of the root filesystem on the host.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 in UTC.
    pub created: String,
    /// Annotations from the config.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// User that created the container.
    pub owner: String,
    /// Start time of the init process in clock ticks since boot (field 22 of
    /// `/proc/PID/stat`), to tell our process from a later one reusing its pid.
    #[serde(default)]
    pub init_start_time: u64,
    /// The process that runs `create` (pid, start time), so a container left
    /// `creating` by a creator that was killed reads as `stopped`.
    #[serde(default)]
    pub creator: (i32, u64),
    /// The config the container was created from.
    pub config: Spec,
    /// The container's cgroup directory.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// Cgroup directories `create` made (removed again by `delete` when empty).
    #[serde(default)]
    pub cgroup_created: Vec<PathBuf>,
    /// The cgroup already held other processes at create: `delete` then kills
    /// only the container's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cgroup_shared: bool,
    /// The systemd scope unit holding the cgroup (the systemd cgroup driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// The resctrl groups of `linux.intelRdt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdt: Option<crate::rdt::Groups>,
    /// Warnings of the operation that returned this state (not stored).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl ContainerState {
    /// The state JSON the OCI spec defines (what `strata state` prints and hooks read).
    /// Keys in the order runc prints them; `annotations` only when there are some.
    pub fn oci_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "ociVersion": crate::OCI_VERSION,
            "id": self.id,
            "pid": self.pid,
            "status": self.status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
        });
        if !self.annotations.is_empty() {
            let mut sorted: Vec<(&String, &String)> = self.annotations.iter().collect();
            sorted.sort();
            v["annotations"] = serde_json::Value::Object(
                sorted.into_iter().map(|(k, val)| (k.clone(), serde_json::Value::String(val.clone()))).collect(),
            );
        }
        v["owner"] = serde_json::Value::String(self.owner.clone());
        v
    }

    /// Re-derives the status from the kernel: an init that exited (or whose pid was
    /// reused) means `stopped`.
    pub fn refresh_status(&mut self) {
        if self.status == Status::Creating {
            // Creating for as long as the creator lives; once it is gone nothing
            // will finish the container (its init, if any, exits on its own).
            let (pid, start) = self.creator;
            if pid <= 0 || !process_alive(pid, start) {
                self.status = Status::Stopped;
            }
            return;
        }
        if matches!(self.status, Status::Stopped) || self.pid <= 0 {
            return;
        }
        if !process_alive(self.pid, self.init_start_time) {
            self.status = Status::Stopped;
        } else if matches!(self.status, Status::Running | Status::Created)
            && self.cgroup().is_some_and(|c| c.is_frozen())
        {
            self.status = Status::Paused;
        }
    }

    /// The container's cgroup, if it has one.
    pub fn cgroup(&self) -> Option<crate::cgroups::Cgroup> {
        self.cgroup.clone().map(crate::cgroups::Cgroup::at)
    }
}

/// Reads the start time (field 22) and the state letter of `/proc/PID/stat`.
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether `pid` is a live (not zombie) process that started at `start_time`.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    match proc_stat(pid) {
        Some((state, start)) => state != 'Z' && state != 'X' && (start_time == 0 || start == start_time),
        None => false,
    }
}

/// An open, locked container state directory.
pub struct StateDir {
    path: PathBuf,
    lock: Flock<File>,
}

/// Prefix of the directories where states are prepared before they get
/// their container's id, and where they go to be removed: `~c.ID.PID.STAMP`
/// and `~d.ID.PID.STAMP` beside the containers' (`~` is not allowed in ids,
/// so they never name a container). They sit in the root itself, so that
/// neither a create nor a delete makes or removes a parent directory for them.
const PREPARING: &str = "~c.";
const DELETING: &str = "~d.";

/// Where earlier versions prepared and removed state directories.
const LEGACY: [&str; 2] = ["~creating", "~deleting"];

/// Removes what creates and deletes killed mid-way left in `root` (the
/// directories of creators that are gone and hold no lock).
pub fn sweep(root: &Path) {
    for d in LEGACY {
        let dir = root.join(d);
        if dir.is_dir() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                sweep_one(&e.path());
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PREPARING) || name.starts_with(DELETING) {
            sweep_one(&e.path());
        }
    }
}

/// A scratch name for `id`'s directory: `PREFIX ID.PID.STAMP`, the id cut
/// to its first 200 bytes (ids are ASCII) so that the name of the longest id
/// (255 bytes) still fits in a file name.
fn scratch(root: &Path, prefix: &str, id: &str) -> PathBuf {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let id = id.get(..200).unwrap_or(id);
    root.join(format!("{prefix}{id}.{}.{stamp}", std::process::id()))
}

impl StateDir {
    /// Creates `<root>/<id>`, locked, holding `initial` as its state: the
    /// directory is made and filled under a scratch name and renamed into
    /// place (never over an existing one, which is what reserves the id), so a
    /// container's directory always has a state, even if `create` is killed the
    /// next moment. Scratch directories of creates killed before the rename
    /// are removed by the next `list` ([`sweep`]).
    pub fn create(root: &Path, id: &str, initial: &ContainerState) -> Result<Self> {
        let tmp = scratch(root, PREPARING, id);
        std::fs::create_dir_all(root).map_err(|e| Error::io("create", root, e))?;
        std::fs::create_dir(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let placed = Self::lock(tmp.clone()).and_then(|dir| {
            dir.save(initial)?;
            let path = root.join(id);
            match rename_noreplace(&tmp, &path) {
                Ok(()) => Ok(StateDir { path, lock: dir.lock }),
                Err(nix::Error::EEXIST) | Err(nix::Error::ENOTEMPTY) => Err(Error::AlreadyExists(id.to_string())),
                Err(e) => Err(Error::sys("rename", path.display(), e)),
            }
        });
        if placed.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        placed
    }

    /// Opens and locks an existing `<root>/<id>`.
    pub fn open(root: &Path, id: &str) -> Result<Self> {
        let path = root.join(id);
        if !path.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        Self::lock(path)
    }

    fn lock(path: PathBuf) -> Result<Self> {
        let lock = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let lock =
            Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| Error::sys("flock", path.display(), e))?;
        Ok(StateDir { path, lock })
    }

    /// Directory path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `state.json`; `None` when `create` died before writing it.
    pub fn load(&self) -> Result<Option<ContainerState>> {
        let id = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        read_file(&self.path, &id)
    }

    /// Writes `state.json` atomically.
    pub fn save(&self, state: &ContainerState) -> Result<()> {
        let tmp = self.path.join(".state.json.tmp");
        let data =
            serde_json::to_vec(state).map_err(|e| Error::State { id: state.id.clone(), reason: e.to_string() })?;
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&data).map_err(|e| Error::io("write", &tmp, e))?;
        drop(f);
        let target = self.path.join(STATE_FILE);
        // An existing state is swapped with the new one (RENAME_EXCHANGE), and
        // the old one, now under the temporary name, unlinked. Readers see the
        // old file or the new one, as with a rename over it; but ext4 (whose
        // /run is not a tmpfs on some hosts) starts writing back a file
        // renamed over another, a disk write per state change that this
        // runtime state, gone at reboot anyway, has no use for.
        match exchange(&tmp, &target) {
            Ok(()) => {
                let _ = std::fs::remove_file(&tmp);
                Ok(())
            }
            // No state yet (the first save), or a filesystem without exchange.
            Err(_) => std::fs::rename(&tmp, &target).map_err(|e| Error::io("rename", &tmp, e)),
        }
    }

    /// Removes the directory and everything in it.
    ///
    /// It is first renamed out of the way (to a scratch name with our pid in
    /// it), so the container's name is gone at once: a `delete` killed while
    /// removing files leaves no half-removed container, only a directory that
    /// the next `list` sweeps away.
    pub fn remove(self) -> Result<()> {
        let (Some(root), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Err(Error::io("remove", &self.path, std::io::ErrorKind::InvalidInput.into()));
        };
        let gone = scratch(root, DELETING, &name.to_string_lossy());
        std::fs::rename(&self.path, &gone).map_err(|e| Error::io("rename", &self.path, e))?;
        std::fs::remove_dir_all(&gone).map_err(|e| Error::io("remove", &gone, e))?;
        drop(self.lock);
        Ok(())
    }
}

/// renameat2(RENAME_NOREPLACE): a directory is never renamed over another.
fn rename_noreplace(from: &Path, to: &Path) -> nix::Result<()> {
    renameat2(from, to, libc::RENAME_NOREPLACE)
}

/// renameat2(RENAME_EXCHANGE): swaps two existing names atomically.
fn exchange(a: &Path, b: &Path) -> nix::Result<()> {
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let f = std::ffi::CString::new(from.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    let t = std::ffi::CString::new(to.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let ret = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) };
    if ret < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Removes a scratch directory whose creator (the pid in its name) is gone
/// and that nobody holds the lock of. (A live creator's directory may not be
/// locked yet.)
fn sweep_one(path: &Path) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let creator: Option<i32> = name.rsplit('.').nth(1).and_then(|p| p.parse().ok());
    if creator.is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        return;
    }
    let Ok(f) = File::open(path) else { return };
    if let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        let _ = std::fs::remove_dir_all(path);
        drop(lock);
    }
}

/// Reads `<root>/<id>/state.json` without locking (writers replace it atomically).
pub fn read(root: &Path, id: &str) -> Result<Option<ContainerState>> {
    let dir = root.join(id);
    if !dir.is_dir() {
        return Err(Error::NotFound(id.to_string()));
    }
    read_file(&dir, id)
}

fn read_file(dir: &Path, id: &str) -> Result<Option<ContainerState>> {
    let file = dir.join(STATE_FILE);
    let data = match std::fs::read(&file) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", file, e)),
    };
    serde_json::from_slice(&data).map(Some).map_err(|e| Error::State { id: id.to_string(), reason: e.to_string() })
}

/// Lists the ids of all containers under `root`, sorted.
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", root, e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| crate::id::validate(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The current time as RFC 3339 with nanoseconds, in UTC.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The (year, month, day) of a count of days since 1970-01-01 (proleptic
/// Gregorian, UTC), valid for the whole i64 day range we use.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The state root when none is given: /run/strata as root; for another user
/// (or root of a user namespace, as rootless podman runs it), the user's runtime directory ($XDG_RUNTIME_DIR, else /run/user/UID), never a
/// path of root's.
pub fn default_root() -> Result<PathBuf> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() && !crate::in_user_namespace() {
        return Ok(PathBuf::from(crate::DEFAULT_ROOT));
    }
    // Root of a user namespace (rootless podman runs the runtime so) uses the
    // runtime directory of the user it really is, when there is one.
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    let base = match xdg {
        Some(d) => d,
        None if uid.is_root() => return Ok(PathBuf::from(crate::DEFAULT_ROOT)),
        None => PathBuf::from(format!("/run/user/{uid}")),
    };
    if !base.is_dir() {
        return Err(Error::Init(format!(
            "rootless state needs a runtime directory: {} does not exist (set XDG_RUNTIME_DIR or pass --root)",
            base.display()
        )));
    }
    Ok(base.join("strata"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes a test's state root when the test ends, failed or not.
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sample(id: &str) -> ContainerState {
        ContainerState {
            id: id.into(),
            pid: 0,
            status: Status::Creating,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            annotations: HashMap::new(),
            owner: String::new(),
            init_start_time: 0,
            creator: (0, 0),
            config: Spec::default(),
            cgroup: None,
            cgroup_created: Vec::new(),
            cgroup_shared: false,
            systemd_unit: None,
            rdt: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(format_rfc3339(1_795_000_000, 0), "2026-11-18T11:06:40.000000000Z");
    }

    /// Readers without the lock (`state`, `list`) see every saved state
    /// whole, never a missing or torn file, while it changes under them.
    #[test]
    fn saves_replace_the_state_whole_under_readers() {
        let root = std::env::temp_dir().join(format!("strata-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let _gone = Gone(root.clone());
        let mut st = sample("c1");
        let dir = StateDir::create(&root, "c1", &st).expect("create");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = read(&root, "c1").expect("readable").expect("present");
                    assert!(got.pid >= seen, "went back from {seen} to {}", got.pid);
                    seen = got.pid;
                }
            })
        };
        for pid in 1..=300 {
            st.pid = pid;
            st.status = if pid % 2 == 0 { Status::Running } else { Status::Created };
            dir.save(&st).expect("save");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("reader");
        assert_eq!(read(&root, "c1").unwrap().unwrap().pid, 300);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)], "only the state file is left");
        dir.remove().expect("remove");
    }

    /// Create and remove leave nothing in the root; what a killed create or
    /// delete left (its creator gone) is swept, what a live one has is not.
    #[test]
    fn scratch_directories_are_swept_only_when_their_creator_is_gone() {
        let root = std::env::temp_dir().join(format!("strata-sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let _gone = Gone(root.clone());
        let st = sample("c2");
        let dir = StateDir::create(&root, "c2", &st).expect("create");
        assert!(matches!(StateDir::create(&root, "c2", &st), Err(Error::AlreadyExists(_))));
        dir.remove().expect("remove");
        let longest = "l".repeat(crate::id::MAX_ID_LEN);
        StateDir::create(&root, &longest, &st).expect("create the longest id").remove().expect("remove");
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "nothing left in the root");
        let dead = root.join(format!("{PREPARING}c3.{}.1", i32::MAX));
        let dead_delete = root.join(format!("{DELETING}c4.{}.1", i32::MAX));
        let live = root.join(format!("{PREPARING}c5.{}.1", std::process::id()));
        let legacy = root.join("~creating");
        for d in [&dead, &dead_delete, &live] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join(STATE_FILE), "{").unwrap();
        }
        std::fs::create_dir_all(legacy.join(format!("c6.{}.1", i32::MAX))).unwrap();
        sweep(&root);
        let mut left: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
        left.sort();
        assert_eq!(left, vec![live]);
    }

    #[test]
    fn proc_stat_of_self() {
        let (state, start) = proc_stat(std::process::id() as i32).expect("own stat");
        assert!(state == 'R' || state == 'S');
        assert!(process_alive(std::process::id() as i32, start));
        assert!(!process_alive(std::process::id() as i32, start + 1));
    }
}
