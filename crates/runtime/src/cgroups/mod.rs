//! The cgroup v2 manager: where the container's cgroup is, creating it with the
//! controllers its resources need, writing resource limits, freezing, killing,
//! listing processes and removing it.
//!
//! Only cgroup v2 is used. Its mount is found in /proc/self/mountinfo, so a pure v2
//! host (/sys/fs/cgroup) and a hybrid host (/sys/fs/cgroup/unified) both work; the
//! v1 hierarchies are never touched.

pub mod devices;
pub mod resources;
pub mod stats;
pub mod systemd;

use crate::{Error, Result};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// Finds the cgroup v2 mount point: /sys/fs/cgroup when it is one (a host
/// with cgroup v2 alone), else from the process's mounts. When several are
/// mounted there (a hybrid host's /sys/fs/cgroup/unified, another mounted in a
/// private mount namespace), the last one that is reachable wins.
pub fn find_mount() -> Result<PathBuf> {
    // The usual place, on a host with cgroup v2 alone: one statfs instead of
    // reading and parsing every mount of the process.
    const STANDARD: &str = "/sys/fs/cgroup";
    if nix::sys::statfs::statfs(STANDARD).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    {
        return Ok(PathBuf::from(STANDARD));
    }
    find_mount_in(
        &std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?,
    )
    .ok_or_else(|| {
        Error::Init(
            "no cgroup v2 hierarchy is mounted: strata needs cgroup v2 (a v1-only host is not supported)".into(),
        )
    })
}

fn find_mount_in(mountinfo: &str) -> Option<PathBuf> {
    let mut all = mountinfo.lines().rev().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split(' ').next()?;
        if fstype != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(|p| PathBuf::from(unescape_mountinfo(p)))
    });
    let first = all.next()?;
    if first.join("cgroup.controllers").exists() {
        return Some(first);
    }
    all.find(|p| p.join("cgroup.controllers").exists()).or(Some(first))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and a few other bytes).
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup v2 path (the `0::` line of /proc/self/cgroup).
pub fn own_cgroup() -> PathBuf {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("0::").map(PathBuf::from)))
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The cgroup path of a container, relative to the v2 root: `linux.cgroupsPath`
/// when absolute, relative to the runtime's own cgroup when relative, else
/// `/strata/<id>`. `..` is refused: the path must stay inside the hierarchy.
pub fn container_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let p = match cgroups_path {
        None => return Ok(PathBuf::from("strata").join(id)),
        Some(p) if p.as_os_str().is_empty() => return Ok(PathBuf::from("strata").join(id)),
        Some(p) => p,
    };
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::config("linux.cgroupsPath", format!("{} contains ..", p.display())));
    }
    // systemd-style "slice:prefix:name" paths need the systemd cgroup driver.
    if p.to_string_lossy().contains(':') {
        return Err(Error::config(
            "linux.cgroupsPath",
            format!("{} is a systemd path (slice:prefix:name): it needs --systemd-cgroup", p.display()),
        ));
    }
    let base = if p.is_absolute() { PathBuf::new() } else { own_cgroup() };
    let joined: PathBuf = base.join(p).components().filter(|c| matches!(c, Component::Normal(_))).collect();
    if joined.as_os_str().is_empty() {
        return Err(Error::config("linux.cgroupsPath", "must name a cgroup below the root"));
    }
    Ok(joined)
}

/// The environment variable with which an operator lets limits whose
/// controller the host's cgroup v2 lacks go unapplied, with a warning, instead
/// of refusing the container: `warn`. For hybrid hosts, whose controllers are
/// bound to cgroup v1 hierarchies strata does not use.
pub const UNAVAILABLE_ENV: &str = "STRATA_CGROUP_UNAVAILABLE";

/// With `STRATA_CGROUP_UNAVAILABLE=warn`, removes from `writes` those whose
/// controller the hierarchy at `mount` does not offer, and returns a warning
/// for each; otherwise leaves them (the create then fails naming the
/// controller).
pub fn drop_unavailable(mount: &Path, writes: &mut Vec<resources::Write>) -> Vec<String> {
    if std::env::var(UNAVAILABLE_ENV).as_deref() != Ok("warn") {
        return Vec::new();
    }
    let available = read(mount, "cgroup.controllers").unwrap_or_default();
    let mut warnings = Vec::new();
    writes.retain(|w| match w.controller {
        Some(c) if !available.split_whitespace().any(|a| a == c) => {
            warnings.push(format!(
                "{} {:?} not applied: this host's cgroup v2 has no {c} controller ({UNAVAILABLE_ENV}=warn)",
                w.file, w.value
            ));
            false
        }
        _ => true,
    });
    warnings
}

/// Whether the cgroup `rel` below `mount` is the caller's to make: the nearest
/// existing directory on its way (itself, or an ancestor to create it in) is
/// writable by the caller, as a subtree delegated to a user is.
pub fn delegated(mount: &Path, rel: &Path) -> bool {
    let mut p = mount.join(rel);
    loop {
        if p.is_dir() {
            let file = if p == mount.join(rel) { p.join("cgroup.procs") } else { p.clone() };
            return nix::unistd::access(&file, nix::unistd::AccessFlags::W_OK).is_ok();
        }
        if !p.pop() || !p.starts_with(mount) {
            return false;
        }
    }
}

/// The directories `delete` may remove once empty: those `create` made, plus the
/// default `/strata` parent, which containers share (whichever is deleted last
/// removes it).
pub fn owned_parents(mount: &Path, rel: &Path, mut created: Vec<PathBuf>) -> Vec<PathBuf> {
    if let Some(shared) = shared_parent(mount, rel) {
        if !created.contains(&shared) {
            created.insert(0, shared);
        }
    }
    created
}

/// The parent this runtime makes for the cgroups of containers that name
/// none (`strata/ID`), when `rel` is one of those.
pub fn shared_parent(mount: &Path, rel: &Path) -> Option<PathBuf> {
    (rel.starts_with("strata") && rel.components().count() == 2).then(|| mount.join("strata"))
}

/// The directories on the way to `mount`/`rel` (the cgroup included) that do
/// not exist yet: what a create is about to make, recorded before it does.
pub fn missing_dirs(mount: &Path, rel: &Path) -> Vec<PathBuf> {
    let mut cur = mount.to_path_buf();
    let mut out = Vec::new();
    for comp in rel.components() {
        cur.push(comp);
        if !cur.is_dir() {
            out.push(cur.clone());
        }
    }
    out
}

/// Removes those of `dirs` that exist and are empty cgroups, deepest first (a
/// create that failed, or was killed, on the way to making them all).
pub fn remove_empty(dirs: &[PathBuf]) {
    let mut dirs: Vec<&PathBuf> = dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// A container's cgroup directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// Absolute directory path (under the v2 mount).
    pub dir: PathBuf,
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).map_err(|e| Error::io("read", p, e))
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|e| Error::io("write", p, e))
}

impl Cgroup {
    /// A handle on an existing (or to be created) cgroup directory.
    pub fn at(dir: PathBuf) -> Cgroup {
        Cgroup { dir }
    }

    /// Creates the cgroup at `rel` below `mount`, enabling `controllers` in
    /// `cgroup.subtree_control` of every ancestor (and, where they can be,
    /// the others each ancestor has). Returns the cgroup and the directories
    /// this call created (deepest last), for cleanup.
    pub fn create(mount: &Path, rel: &Path, controllers: &[&str]) -> Result<(Cgroup, Vec<PathBuf>)> {
        check_available(mount, controllers)?;
        let mut created = Vec::new();
        let mut cur;
        // A parent may vanish between our mkdirs when another container's delete
        // removes it as empty: start over a few times.
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            cur = mount.to_path_buf();
            let r = (|| -> Result<()> {
                for comp in rel.components() {
                    enable_controllers(&cur, controllers, true)?;
                    cur.push(comp);
                    match std::fs::create_dir(&cur) {
                        Ok(()) => created.push(cur.clone()),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io("create cgroup", &cur, e)),
                    }
                }
                Ok(())
            })();
            match r {
                // ENOENT: the parent went before our mkdir; ENODEV: before a write to one
                // of its files.
                Err(Error::Io { err, .. })
                    if (err.kind() == std::io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ENODEV))
                        && attempts < 5 =>
                {
                    continue
                }
                other => break other,
            }
        };
        if let Err(e) = result {
            remove_dirs(&created);
            return Err(e);
        }
        let cg = Cgroup { dir: cur };
        // A frozen cgroup would stop the container's init the moment it exists.
        if cg.is_frozen() {
            remove_dirs(&created);
            return Err(Error::Init(format!("cgroup {} is frozen", cg.dir.display())));
        }
        Ok((cg, created))
    }

    /// Why the cgroup is already in use (processes, or child cgroups), if it is:
    /// tools group containers by sharing a cgroup, so like runc the runtime warns
    /// and goes on. Limits, device rules and `kill --all` then reach the others
    /// too; `delete` leaves their processes alone.
    pub fn in_use(&self) -> Option<String> {
        let procs = read(&self.dir, "cgroup.procs").unwrap_or_default();
        let n = procs.lines().filter(|l| !l.trim().is_empty()).count();
        if n > 0 {
            return Some(format!(
                "cgroup {} already has {n} process(es): they share the container's limits and kill --all",
                self.dir.display()
            ));
        }
        let populated =
            read(&self.dir, "cgroup.events").map(|e| e.lines().any(|l| l.trim() == "populated 1")).unwrap_or(false);
        let has_children = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir())))
            .unwrap_or(false);
        if populated || has_children {
            return Some(format!("cgroup {} already has child cgroups", self.dir.display()));
        }
        None
    }

    /// Enables `controllers` for this cgroup (in every ancestor's subtree_control
    /// below `mount`), as `update` needs for limits not asked for at create time.
    pub fn enable(&self, mount: &Path, controllers: &[&str]) -> Result<()> {
        check_available(mount, controllers)?;
        let rel = self
            .dir
            .strip_prefix(mount)
            .map_err(|_| Error::Init(format!("{} is outside {}", self.dir.display(), mount.display())))?;
        let mut cur = mount.to_path_buf();
        for comp in rel.components() {
            // (Only what is asked: systemd manages the controllers of its
            // own cgroups, which this path may cross.)
            enable_controllers(&cur, controllers, false)?;
            cur.push(comp);
        }
        Ok(())
    }

    /// Applies resource writes (see [`resources::plan`]).
    pub fn apply(&self, writes: &[resources::Write]) -> Result<()> {
        for w in writes {
            let path = self.dir.join(&w.file);
            if let Err(e) = std::fs::write(&path, &w.value) {
                if e.kind() == std::io::ErrorKind::NotFound {
                    let what = w.controller.map(|c| format!("the {c} controller is not enabled")).unwrap_or_default();
                    return Err(Error::Init(format!("cgroup file {} does not exist: {what}", path.display())));
                }
                return Err(Error::io("write", path, e));
            }
        }
        Ok(())
    }

    /// Opens the directory (for CLONE_INTO_CGROUP).
    pub fn open(&self) -> Result<OwnedFd> {
        let fd = nix::fcntl::open(
            &self.dir,
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys("open", self.dir.display(), e))?;
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Host pids of the processes in the cgroup.
    /// Host pids of the processes in the cgroup and in every cgroup below it (a
    /// container may make child cgroups of its own).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut pids: Vec<i32> =
            read(&self.dir, "cgroup.procs")?.lines().filter_map(|l| l.trim().parse().ok()).collect();
        collect_child_pids(&self.dir, &mut pids);
        Ok(pids)
    }

    /// Whether `cgroup.events` says the cgroup is frozen.
    pub fn is_frozen(&self) -> bool {
        read(&self.dir, "cgroup.events").map(|e| e.lines().any(|l| l.trim() == "frozen 1")).unwrap_or(false)
    }

    /// Freezes or thaws the cgroup and waits (up to 5 s) until the kernel confirms.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        write(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.is_frozen() != frozen {
            if Instant::now() > deadline {
                // Leave the cgroup as it was rather than half-frozen.
                let _ = write(&self.dir, "cgroup.freeze", if frozen { "0" } else { "1" });
                return Err(Error::Init(format!(
                    "cgroup {} did not become {} within 5s",
                    self.dir.display(),
                    if frozen { "frozen" } else { "thawed" }
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// SIGKILLs every process in the cgroup and below (cgroup.kill, Linux 5.14;
    /// older kernels get a signal per process).
    pub fn kill_all(&self) -> Result<()> {
        match write(&self.dir, "cgroup.kill", "1") {
            Ok(()) => Ok(()),
            Err(_) => {
                for pid in self.pids()? {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                Ok(())
            }
        }
    }

    /// SIGKILLs every process in the cgroup without cgroup.kill: for a cgroup
    /// that outlives the container. After cgroup.kill some kernels (6.18 among
    /// them) kill every process later cloned into the cgroup from outside it
    /// (CLONE_INTO_CGROUP, as runtimes and systemd do), so whoever uses it next
    /// would find it poisoned.
    pub fn kill_each(&self) -> Result<()> {
        let was_frozen = self.is_frozen();
        let froze = !was_frozen && self.freeze(true).is_ok();
        let pids = self.pids();
        for &pid in pids.iter().flatten() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        if froze || was_frozen {
            // A frozen process dies only once thawed.
            self.freeze(false)?;
        }
        pids.map(|_| ())
    }

    /// Sends `signal` to every process in the cgroup (`None`: signal 0, which
    /// only checks they exist).
    pub fn signal_all(&self, signal: Option<nix::sys::signal::Signal>) -> Result<()> {
        if signal == Some(nix::sys::signal::Signal::SIGKILL) {
            return self.kill_all();
        }
        // Frozen while the list is read and signalled, so a process forked in
        // between cannot escape the signal; thawed after unless it was paused.
        let was_frozen = self.is_frozen();
        let froze = !was_frozen && self.freeze(true).is_ok();
        let pids = self.pids();
        for &pid in pids.iter().flatten() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
        if froze {
            self.freeze(false)?;
        }
        pids.map(|_| ())
    }

    /// Removes the cgroup (waiting up to 1 s for the kernel to release it once its
    /// processes are gone) and the empty parents listed in `created_parents`.
    pub fn remove(&self, created_parents: &[PathBuf]) -> Result<()> {
        // A cgroup the runtime did not create (an empty one named by cgroupsPath)
        // is left in place.
        if !created_parents.contains(&self.dir) {
            return Ok(());
        }
        // Cgroups the container made below its own go first, deepest first.
        remove_children(&self.dir);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(Error::io("remove cgroup", &self.dir, e)),
            }
        }
        let parents: Vec<PathBuf> = created_parents.iter().filter(|p| **p != self.dir).cloned().collect();
        remove_dirs(&parents);
        Ok(())
    }
}

fn collect_child_pids(dir: &Path, pids: &mut Vec<i32>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            collect_child_pids(&e.path(), pids);
        }
    }
}

/// Removes every cgroup below `dir`, deepest first (errors are left to the final
/// rmdir of `dir` to report).
fn remove_children(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_children(&e.path());
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Fails, naming the controller, when the hierarchy lacks one of `controllers`.
fn check_available(mount: &Path, controllers: &[&str]) -> Result<()> {
    let available = read(mount, "cgroup.controllers").unwrap_or_default();
    for c in controllers {
        if !available.split_whitespace().any(|a| a == *c) {
            return Err(Error::Init(format!(
                "the cgroup v2 controller {c:?} is not available on this host (cgroup.controllers: {:?})",
                available.trim()
            )));
        }
    }
    Ok(())
}

/// Enables `asked` for the children of `dir` (those not yet enabled); an
/// error names the one that cannot be. With `every`, also every other
/// controller `dir` has, where it can be: as with runc, a container without
/// limits still has its memory, pids and io accounted, which is what tools
/// that read its statistics expect.
fn enable_controllers(dir: &Path, asked: &[&str], every: bool) -> Result<()> {
    if asked.is_empty() && !every {
        return Ok(());
    }
    let enabled = read(dir, "cgroup.subtree_control").unwrap_or_default();
    let is_on = |c: &str| enabled.split_whitespace().any(|e| e == c);
    let available = if every { read(dir, "cgroup.controllers").unwrap_or_default() } else { String::new() };
    let mut missing: Vec<&str> = available.split_whitespace().filter(|c| !is_on(c)).collect();
    for c in asked {
        if !is_on(c) && !missing.contains(c) {
            missing.push(c);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if missing.len() > 1 && write(dir, "cgroup.subtree_control", &all.join(" ")).is_ok() {
        return Ok(());
    }
    // The kernel takes all or none: one at a time, so that one that cannot
    // be (cpu beside a realtime thread, a domain controller below a cgroup
    // with processes) leaves the others enabled.
    for c in missing {
        let r = write(dir, "cgroup.subtree_control", &format!("+{c}"));
        if r.is_err() && asked.contains(&c) {
            return r;
        }
    }
    Ok(())
}

/// Removes directories deepest first, stopping at the first that is not empty
/// (another container may share the parent).
fn remove_dirs(dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v2_mount_on_hybrid_and_pure_hosts() {
        let hybrid = "25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro\n41 25 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n42 25 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert_eq!(find_mount_in(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let pure = "30 20 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(find_mount_in(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let v1 = "42 25 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert_eq!(find_mount_in(v1), None);
        let spaced = "30 20 0:26 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw";
        assert_eq!(find_mount_in(spaced), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn container_paths() {
        assert_eq!(container_path(None, "c1").expect("default"), PathBuf::from("strata/c1"));
        assert_eq!(container_path(Some(Path::new("/a/b")), "c1").expect("abs"), PathBuf::from("a/b"));
        let rel = container_path(Some(Path::new("x/y")), "c1").expect("rel");
        assert!(rel.ends_with("x/y"));
        assert!(container_path(Some(Path::new("/a/../../etc")), "c1").is_err());
        assert!(container_path(Some(Path::new("system.slice:strata:c1")), "c1").is_err());
        assert!(container_path(Some(Path::new("/")), "c1").is_err());
    }

    /// A fake cgroup tree: directories with the interface files a kernel would show.
    fn fake_tree(tag: &str, controllers: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-cgtree-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("cgroup.controllers"), controllers).expect("write");
        std::fs::write(d.join("cgroup.subtree_control"), "").expect("write");
        d
    }

    #[test]
    fn create_enables_controllers_and_apply_writes_files() {
        let root = fake_tree("create", "cpu memory pids hugetlb");
        // A real kernel creates the interface files; here each new directory gets them
        // as soon as it exists, by pre-creating the path.
        let (cg, created) = Cgroup::create(&root, Path::new("strata/c1"), &["memory", "pids"]).expect("create");
        assert_eq!(created, vec![root.join("strata"), root.join("strata/c1")]);
        // Every controller the level has, not only those the limits need.
        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).expect("read"),
            "+cpu +memory +pids +hugetlb"
        );
        assert_eq!(std::fs::read_to_string(root.join("strata/cgroup.subtree_control")).expect("read"), "+memory +pids");
        let r: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({ "memory": { "limit": 4096 }, "pids": { "limit": 10 } }))
                .expect("json");
        cg.apply(&resources::plan(&r).expect("plan")).expect("apply");
        assert_eq!(std::fs::read_to_string(cg.dir.join("memory.max")).expect("read"), "4096");
        assert_eq!(std::fs::read_to_string(cg.dir.join("pids.max")).expect("read"), "10");
        for f in ["memory.max", "pids.max"] {
            std::fs::remove_file(cg.dir.join(f)).expect("rm");
        }
        for d in [&root.join("strata/c1"), &root.join("strata")] {
            std::fs::remove_file(d.join("cgroup.subtree_control")).ok();
        }
        cg.remove(&created).expect("remove");
        assert!(!root.join("strata").exists());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn missing_controller_is_named() {
        let root = fake_tree("missing", "hugetlb");
        let err = Cgroup::create(&root, Path::new("strata/c2"), &["memory"]).expect_err("memory missing").to_string();
        assert!(err.contains("\"memory\""), "{err}");
        assert!(!root.join("strata").exists(), "nothing created");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
