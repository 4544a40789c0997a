//! Device nodes of the container's /dev: the defaults every container gets and the
//! config's `linux.devices`. In a user namespace, where mknod is refused, the host's
//! node is bind-mounted instead.

use super::paths::{create_file_in_root, fd_path, mkdir_all_in_root, open_in_root};
use crate::{Error, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// One device node to create.
#[derive(Debug, Clone)]
pub struct DeviceNode {
    /// Path inside the container.
    pub path: PathBuf,
    /// S_IFCHR, S_IFBLK or S_IFIFO.
    pub kind: SFlag,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The devices every container gets.
pub fn defaults() -> Vec<DeviceNode> {
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
        .into_iter()
        .map(|(name, major, minor)| DeviceNode {
            path: Path::new("/dev").join(name),
            kind: SFlag::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
        .collect()
}

/// Translates `linux.devices[i]`.
pub fn from_spec(d: &oci_spec::runtime::LinuxDevice, i: usize) -> Result<DeviceNode> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let field = format!("linux.devices[{i}]");
    let kind = match d.typ() {
        T::C | T::U => SFlag::S_IFCHR,
        T::B => SFlag::S_IFBLK,
        T::P => SFlag::S_IFIFO,
        T::A => return Err(Error::config(format!("{field}.type"), "\"a\" is only valid in device cgroup rules")),
    };
    if kind != SFlag::S_IFIFO && (d.major() < 0 || d.minor() < 0) {
        return Err(Error::config(field, "negative major or minor number"));
    }
    Ok(DeviceNode {
        path: d.path().clone(),
        kind,
        major: d.major().max(0) as u64,
        minor: d.minor().max(0) as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Creates `dev` inside `root`; `bind` selects bind-mounting the host's node.
pub fn create(root: &OwnedFd, dev: &DeviceNode, bind: bool) -> Result<()> {
    let parent = dev.path.parent().unwrap_or(Path::new("/dev"));
    let name = dev
        .path
        .file_name()
        .ok_or_else(|| Error::config("linux.devices.path", format!("{} has no file name", dev.path.display())))?;
    if bind {
        let target = create_file_in_root(root, &dev.path)?;
        return mount(
            Some(dev.path.as_path()),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::sys("mount", format!("bind {}", dev.path.display()), e));
    }
    mkdir_all_in_root(root, parent)?;
    let dir = open_in_root(root, parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
    let cname = CString::new(name.as_encoded_bytes())
        .map_err(|_| Error::config("linux.devices.path", "contains a NUL byte"))?;
    // An existing entry (a file, or a symlink planted by the rootfs) is replaced.
    let _ = nix::unistd::unlinkat(Some(dir.as_raw_fd()), cname.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    mknodat(
        Some(dir.as_raw_fd()),
        cname.as_c_str(),
        dev.kind,
        Mode::from_bits_truncate(dev.mode),
        makedev(dev.major, dev.minor),
    )
    .map_err(|e| Error::sys("mknod", dev.path.display(), e))?;
    nix::sys::stat::fchmodat(
        Some(dir.as_raw_fd()),
        cname.as_c_str(),
        Mode::from_bits_truncate(dev.mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::sys("chmod", dev.path.display(), e))?;
    nix::unistd::fchownat(
        Some(dir.as_raw_fd()),
        cname.as_c_str(),
        Some(nix::unistd::Uid::from_raw(dev.uid)),
        Some(nix::unistd::Gid::from_raw(dev.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::sys("chown", dev.path.display(), e))
}

/// Creates `devices` inside `root`; `bind` selects bind-mounting the host's
/// nodes. Each parent directory is opened once, the nodes are made with their
/// mode (no umask in the way, so no chmod after), and only nodes that are not
/// root's (or sit in a setgid directory) are chowned.
pub fn create_all(root: &OwnedFd, devices: &[DeviceNode], bind: bool) -> Result<()> {
    if bind {
        return devices.iter().try_for_each(|d| create(root, d, true));
    }
    let old = nix::sys::stat::umask(Mode::empty());
    let mut dirs: Vec<(PathBuf, OwnedFd, bool)> = Vec::new();
    let made = devices.iter().try_for_each(|d| make_node(root, d, &mut dirs));
    nix::sys::stat::umask(old);
    made
}

/// mknod of `dev` in its parent (opened once: `dirs` holds those open, with
/// whether they are setgid), as root of the host's user namespace.
fn make_node(root: &OwnedFd, dev: &DeviceNode, dirs: &mut Vec<(PathBuf, OwnedFd, bool)>) -> Result<()> {
    let parent = dev.path.parent().unwrap_or(Path::new("/dev"));
    let name = dev
        .path
        .file_name()
        .ok_or_else(|| Error::config("linux.devices.path", format!("{} has no file name", dev.path.display())))?;
    let at = match dirs.iter().position(|(p, _, _)| p == parent) {
        Some(i) => i,
        None => {
            mkdir_all_in_root(root, parent)?;
            let dir = open_in_root(root, parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
            let setgid =
                nix::sys::stat::fstat(dir.as_raw_fd()).map_err(|e| Error::sys("fstat", parent.display(), e))?.st_mode
                    & libc::S_ISGID
                    != 0;
            dirs.push((parent.to_path_buf(), dir, setgid));
            dirs.len() - 1
        }
    };
    let (_, dir, setgid) = &dirs[at];
    let dir = dir.as_raw_fd();
    let cname = CString::new(name.as_encoded_bytes())
        .map_err(|_| Error::config("linux.devices.path", "contains a NUL byte"))?;
    let mode = Mode::from_bits_truncate(dev.mode);
    let node = || mknodat(Some(dir), cname.as_c_str(), dev.kind, mode, makedev(dev.major, dev.minor));
    node()
        .or_else(|e| {
            if e != nix::Error::EEXIST {
                return Err(e);
            }
            // An existing entry (a file, or a symlink planted by the rootfs) is replaced.
            let _ = nix::unistd::unlinkat(Some(dir), cname.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
            node()
        })
        .map_err(|e| Error::sys("mknod", dev.path.display(), e))?;
    if dev.mode & !0o777 != 0 {
        // (Set-id and sticky bits are not mknod's to give.)
        nix::sys::stat::fchmodat(Some(dir), cname.as_c_str(), mode, nix::sys::stat::FchmodatFlags::NoFollowSymlink)
            .map_err(|e| Error::sys("chmod", dev.path.display(), e))?;
    }
    if dev.uid != 0 || dev.gid != 0 || *setgid {
        nix::unistd::fchownat(
            Some(dir),
            cname.as_c_str(),
            Some(nix::unistd::Uid::from_raw(dev.uid)),
            Some(nix::unistd::Gid::from_raw(dev.gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::sys("chown", dev.path.display(), e))?;
    }
    Ok(())
}

/// The standard /dev symlinks (fd, stdin, stdout, stderr, ptmx).
pub fn create_symlinks(root: &OwnedFd) -> Result<()> {
    let dev = open_in_root(root, Path::new("/dev"), OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ] {
        match nix::unistd::symlinkat(target, Some(dev.as_raw_fd()), name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(Error::sys("symlink", format!("/dev/{name}"), e)),
        }
    }
    Ok(())
}
