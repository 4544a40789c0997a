//! The config's `mounts`, masked paths and read-only paths, applied inside the
//! container's mount namespace before pivot_root. Targets are always resolved inside
//! the rootfs (see [`super::paths`]).

use super::options::{self, MountOptions};
use super::paths::{create_file_in_root, exists_in_root, fd_path, mkdir_all_in_root, open_in_root};
use crate::sys::mount_setattr;
use crate::{Error, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::Mount;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

fn mount_err(what: &str, dest: &Path, e: nix::Error) -> Error {
    Error::sys("mount", format!("{what} on {}", dest.display()), e)
}

/// The source of a bind mount, opened by the runtime on the host as a detached
/// copy of its mount tree (open_tree(OPEN_TREE_CLONE)): a container in a user
/// namespace attaches it with move_mount, even when its root could not reach the
/// source path (a parent directory only the host's root may enter).
pub struct BindSource {
    /// The detached mount tree.
    pub tree: OwnedFd,
    /// Whether the source is a directory (else a file is the mount point).
    pub is_dir: bool,
}

impl BindSource {
    /// Opens the source of mount `m` (index `i`) if it is a bind mount; `bundle`
    /// anchors relative sources. `idmap`: idmap the copy (recursively or not)
    /// with the mappings of that user namespace.
    pub fn open(
        bundle: &Path,
        m: &Mount,
        i: usize,
        idmap: Option<(bool, BorrowedFd<'_>)>,
    ) -> Result<Option<BindSource>> {
        let field = format!("mounts[{i}]");
        let opts = options::parse(m.options().as_deref().unwrap_or_default(), &field)?;
        if !opts.is_bind() {
            return Ok(None);
        }
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| Error::config(format!("{field}.source"), "a bind mount needs a source"))?;
        let src = if src.is_relative() { bundle.join(src) } else { src.clone() };
        let dir = nix::fcntl::open(&src, OFlag::O_PATH | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|e| Error::config(format!("{field}.source"), format!("{}: {e}", src.display())))?;
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        let dir = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dir) };
        let st = fstat(dir.as_raw_fd()).map_err(|e| Error::sys("fstat", src.display(), e))?;
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        let tree = crate::sys::open_tree_clone(dir.as_fd(), opts.flags.contains(MsFlags::MS_REC))
            .map_err(|e| Error::sys("open_tree", format!("{field}.source {}", src.display()), e))?;
        if let Some((recursive, userns)) = idmap {
            crate::sys::mount_setattr_idmap(tree.as_fd(), recursive, userns).map_err(|e| match e {
                nix::Error::EINVAL | nix::Error::EPERM => Error::config(
                    format!("{field}.source"),
                    format!(
                        "{} cannot be idmapped ({e}): its filesystem does not support idmapped mounts, or it is \
                         idmapped already",
                        src.display()
                    ),
                ),
                e => Error::sys("mount_setattr", format!("idmap {field}.source {}", src.display()), e),
            })?;
        }
        Ok(Some(BindSource { tree, is_dir }))
    }
}

/// What [`apply`] left to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing.
    Done,
    /// The mount asked for `ro` but is mounted writable for now: other mounts
    /// and device nodes go below it (a read-only /dev, say). The caller makes it
    /// read-only with [`make_mount_readonly`] once they exist.
    ReadOnlyLater,
}

/// Makes the single mount at `dest` read-only (not the mounts below it).
pub fn make_mount_readonly(root: &OwnedFd, dest: &Path) -> Result<()> {
    let mounted = open_in_root(root, dest, OFlag::O_PATH)?;
    mount_setattr(mounted.as_fd(), false, options::attr::RDONLY, 0)
        .map_err(|e| Error::sys("mount_setattr", format!("read-only {}", dest.display()), e))
}

/// Mounts one entry of the config's `mounts` (index `i`) inside `root`.
/// `label` is `linux.mountLabel`, given to the filesystems created here that
/// take a context. `pre` is the bind source the runtime opened, if it did.
pub fn apply(
    root: &OwnedFd,
    bundle: &Path,
    m: &Mount,
    i: usize,
    label: Option<&str>,
    pre: Option<&BindSource>,
) -> Result<Applied> {
    let field = format!("mounts[{i}]");
    let mut opts = options::parse(m.options().as_deref().unwrap_or_default(), &field)?;
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or(if opts.is_bind() { "bind" } else { "" });
    let source: Option<PathBuf> =
        m.source().as_ref().map(|s| if s.is_relative() && opts.is_bind() { bundle.join(s) } else { s.clone() });

    // A symlink in the rootfs must not move /proc or /sys somewhere the masks and
    // read-only paths do not cover (CVE-2019-19921 class).
    if matches!(typ, "proc" | "sysfs") && !crate::rootfs::paths::free_of_symlinks(root, dest) {
        return Err(Error::config(
            format!("{field}.destination"),
            format!(
                "{} goes through a symlink in the rootfs; {typ} is only mounted on a real directory",
                dest.display()
            ),
        ));
    }

    // The mount point: a file for a bind mount of a file, else a directory.
    let bind_of_file = opts.is_bind()
        && match pre {
            Some(p) => !p.is_dir,
            None => source.as_ref().is_some_and(|s| std::fs::metadata(s).map(|md| !md.is_dir()).unwrap_or(false)),
        };
    let target = if bind_of_file { create_file_in_root(root, dest)? } else { mkdir_all_in_root(root, dest)? };
    let target_path = fd_path(&target);

    let mut later = Applied::Done;
    if let (true, Some(pre)) = (opts.is_bind(), pre) {
        crate::sys::move_mount_onto(pre.tree.as_fd(), target.as_fd())
            .map_err(|e| Error::sys("move_mount", format!("bind source of {field} on {}", dest.display()), e))?;
        let remount = opts.remount_flags();
        if !remount.is_empty() {
            let mounted = open_in_root(root, dest, OFlag::O_PATH)?;
            remount_bind(&mounted, remount, dest)?;
        }
    } else if opts.is_bind() {
        let src = source.ok_or_else(|| Error::config(format!("{field}.source"), "a bind mount needs a source"))?;
        // Open the source first so a racing rename cannot swap what is mounted.
        let src_fd = nix::fcntl::open(&src, OFlag::O_PATH | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(|e| Error::config(format!("{field}.source"), format!("{}: {e}", src.display())))?;
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        let src_fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(src_fd) };
        let bind_flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(Some(fd_path(&src_fd).as_str()), target_path.as_str(), None::<&str>, bind_flags, None::<&str>)
            .map_err(|e| mount_err(&format!("bind {}", src.display()), dest, e))?;
        let remount = opts.remount_flags();
        if !remount.is_empty() {
            let mounted = open_in_root(root, dest, OFlag::O_PATH)?;
            remount_bind(&mounted, remount, dest)?;
        }
    } else {
        let fstype = match typ {
            "cgroup" => "cgroup2",
            t => t,
        };
        let src = source.as_ref().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| fstype.to_string());
        if let Some(label) = label.filter(|_| matches!(fstype, "tmpfs" | "devpts" | "mqueue")) {
            if !opts.data.is_empty() {
                opts.data.push(',');
            }
            opts.data.push_str(&crate::lsm::mount_context(label));
        }
        let data = if opts.data.is_empty() { None } else { Some(opts.data.as_str()) };
        let mut flags = opts.flags & !MsFlags::MS_REC;
        // A read-only tmpfs, or /dev, is mounted writable and made read-only once
        // what goes below it exists (as runc does).
        if flags.contains(MsFlags::MS_RDONLY) && (fstype == "tmpfs" || dest == Path::new("/dev")) && !opts.copy_up {
            flags.remove(MsFlags::MS_RDONLY);
            later = Applied::ReadOnlyLater;
        }
        if opts.copy_up && fstype == "tmpfs" {
            tmpfs_copy_up(root, dest, &target_path, flags, data, &opts)?;
            return Ok(Applied::Done);
        }
        if let Err(e) = mount(Some(src.as_str()), target_path.as_str(), Some(fstype), flags, data) {
            // Without its own network namespace (or owning user namespace) a fresh sysfs
            // is refused; the host's, bound read-only, is what the container gets then.
            if fstype == "sysfs" && e == nix::Error::EPERM {
                mount(
                    Some("/sys"),
                    target_path.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| mount_err("bind /sys", dest, e))?;
                let mounted = open_in_root(root, dest, OFlag::O_PATH)?;
                mount_setattr(
                    mounted.as_fd(),
                    true,
                    options::attr::RDONLY | options::attr::NOSUID | options::attr::NODEV | options::attr::NOEXEC,
                    0,
                )
                .map_err(|e| mount_err("read-only sysfs", dest, e))?;
            } else if fstype == "cgroup2" && matches!(e, nix::Error::EPERM | nix::Error::EBUSY) {
                // A user namespace without a cgroup namespace of its own may not
                // mount cgroup2: the host's v2 tree, bound, as runc does.
                let host = crate::cgroups::find_mount().map_err(|_| mount_err(fstype, dest, e))?;
                mount(
                    Some(&host),
                    target_path.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| mount_err(&format!("bind of the host's cgroup v2 tree {}", host.display()), dest, e))?;
                let remount = opts.remount_flags();
                if !remount.is_empty() {
                    let mounted = open_in_root(root, dest, OFlag::O_PATH)?;
                    remount_bind(&mounted, remount, dest)?;
                }
            } else {
                return Err(mount_err(fstype, dest, e));
            }
        }
    }
    apply_after(root, dest, &opts)?;
    Ok(later)
}

/// Propagation and recursive attributes, applied to the mount now at `dest`.
fn apply_after(root: &OwnedFd, dest: &Path, opts: &MountOptions) -> Result<()> {
    if opts.propagation.is_empty() && opts.rec_set == 0 && opts.rec_clear == 0 {
        return Ok(());
    }
    let mounted = open_in_root(root, dest, OFlag::O_PATH)?;
    if !opts.propagation.is_empty() {
        mount(None::<&str>, fd_path(&mounted).as_str(), None::<&str>, opts.propagation, None::<&str>)
            .map_err(|e| mount_err("propagation", dest, e))?;
    }
    if opts.rec_set != 0 || opts.rec_clear != 0 {
        mount_setattr(mounted.as_fd(), true, opts.rec_set, opts.rec_clear)
            .map_err(|e| Error::sys("mount_setattr", dest.display(), e))?;
    }
    Ok(())
}

/// A tmpfs over `dest` that starts with a copy of what `dest` held: mounted
/// writable, filled, then made read-only if asked.
fn tmpfs_copy_up(
    root: &OwnedFd,
    dest: &Path,
    target_path: &str,
    flags: MsFlags,
    data: Option<&str>,
    opts: &MountOptions,
) -> Result<()> {
    let below = open_in_root(root, dest, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    mount(Some("tmpfs"), target_path, Some("tmpfs"), flags & !MsFlags::MS_RDONLY, data)
        .map_err(|e| mount_err("tmpfs", dest, e))?;
    let fresh = open_in_root(root, dest, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let st = fstat(below.as_raw_fd()).map_err(|e| Error::sys("fstat", dest.display(), e))?;
    let (uid, gid) = (nix::unistd::Uid::from_raw(st.st_uid), nix::unistd::Gid::from_raw(st.st_gid));
    nix::unistd::fchown(fresh.as_raw_fd(), Some(uid), Some(gid))
        .map_err(|e| Error::sys("fchown", dest.display(), e))?;
    nix::sys::stat::fchmod(fresh.as_raw_fd(), nix::sys::stat::Mode::from_bits_truncate(st.st_mode & 0o7777))
        .map_err(|e| Error::sys("fchmod", dest.display(), e))?;
    super::copyup::copy_tree(below.as_raw_fd(), fresh.as_raw_fd(), dest)?;
    if flags.contains(MsFlags::MS_RDONLY) {
        remount(&fd_path(&fresh), flags | MsFlags::MS_REMOUNT, dest)?;
    }
    apply_after(root, dest, opts)
}

/// Remounts the bind mount at `mounted` with `flags`, keeping the flags the kernel
/// locks on mounts inherited from a more privileged namespace.
pub fn remount_bind(mounted: &OwnedFd, flags: MsFlags, dest: &Path) -> Result<()> {
    remount(&fd_path(mounted), flags, dest)
}

/// [`remount_bind`] by path, for `/` after pivot_root (no /proc needed).
pub fn remount_bind_path(path: &str, flags: MsFlags) -> Result<()> {
    remount(path, flags, Path::new(path))
}

fn remount(path: &str, flags: MsFlags, dest: &Path) -> Result<()> {
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    match mount(None::<&str>, path, None::<&str>, base | flags, None::<&str>) {
        Err(nix::Error::EPERM) => {
            let locked = statvfs(path).map(|s| locked_flags(s.flags())).unwrap_or(MsFlags::empty());
            mount(None::<&str>, path, None::<&str>, base | flags | locked, None::<&str>)
                .map_err(|e| mount_err("remount", dest, e))
        }
        other => other.map_err(|e| mount_err("remount", dest, e)),
    }
}

/// The mount flags of statvfs flags `f`: the ones a remount must keep where
/// the mount was made by a more privileged namespace (which locks them).
pub fn locked_flags(f: FsFlags) -> MsFlags {
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// Hides `path`: a directory gets an empty read-only tmpfs, anything else the host's
/// /dev/null bound over it. `null` is an open descriptor of the host's /dev/null,
/// checked to be the real device (a rootfs cannot substitute its own).
pub fn mask(root: &OwnedFd, path: &Path, null: &OwnedFd) -> Result<()> {
    let target = match open_in_root(root, path, OFlag::O_PATH) {
        Ok(t) => t,
        Err(Error::Sys { errno: nix::Error::ENOENT, .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&target)).map_err(|e| Error::sys("fstat", path.display(), e))?;
    let tp = fd_path(&target);
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        mount(
            Some("tmpfs"),
            tp.as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0,mode=755"),
        )
        .map_err(|e| mount_err("masking tmpfs", path, e))
    } else {
        mount(Some(fd_path(null).as_str()), tp.as_str(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| mount_err("/dev/null mask", path, e))
    }
}

/// Opens the host's /dev/null and checks it is the null device.
pub fn open_null() -> Result<OwnedFd> {
    let fd = nix::fcntl::open("/dev/null", OFlag::O_PATH | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| Error::sys("open", "/dev/null", e))?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let st = fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|e| Error::sys("fstat", "/dev/null", e))?;
    let is_chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    if !is_chr || libc::major(st.st_rdev) != 1 || libc::minor(st.st_rdev) != 3 {
        return Err(Error::Init("/dev/null is not the null device".into()));
    }
    Ok(fd)
}

/// Makes `path` (and every mount below it) read-only.
pub fn make_readonly(root: &OwnedFd, path: &Path) -> Result<()> {
    if !exists_in_root(root, path)? {
        return Ok(());
    }
    let target = open_in_root(root, path, OFlag::O_PATH)?;
    // A detached clone of what is there, made read-only, then attached on the very
    // target we opened: no second path lookup a rootfs change could redirect.
    let tree = crate::sys::open_tree_clone(target.as_fd(), true)
        .map_err(|e| Error::sys("open_tree", format!("read-only {}", path.display()), e))?;
    // Only read-only, as runc: nosuid/noexec here would break binaries under the path.
    mount_setattr(tree.as_fd(), true, options::attr::RDONLY, 0)
        .map_err(|e| Error::sys("mount_setattr", format!("read-only {}", path.display()), e))?;
    crate::sys::move_mount_onto(tree.as_fd(), target.as_fd())
        .map_err(|e| Error::sys("move_mount", format!("read-only {}", path.display()), e))
}
