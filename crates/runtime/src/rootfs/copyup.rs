//! `tmpcopyup`: a tmpfs mounted over a directory starts with a copy of what the
//! directory held (podman's `--read-only` mounts its writable /tmp, /var/tmp and
//! /run this way). Everything is copied through descriptors, never by path, and
//! symlinks are copied as symlinks, never followed.

use crate::{Error, Result};
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, Gid, Uid};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Copies the tree under directory `src` into directory `dst` (both open
/// descriptors), keeping types, modes, owners and contents. `what` names the
/// mount in errors.
pub fn copy_tree(src: RawFd, dst: RawFd, what: &Path) -> Result<()> {
    let err = |op: &'static str, e: nix::Error| Error::sys(op, format!("tmpcopyup {}", what.display()), e);
    let dup = nix::unistd::dup(src).map_err(|e| err("dup", e))?;
    let mut dir = nix::dir::Dir::from_fd(dup).map_err(|e| err("opendir", e))?;
    for entry in dir.iter() {
        let entry = entry.map_err(|e| err("readdir", e))?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = fstatat(Some(src), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| err("fstatat", e))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        if kind == SFlag::S_IFDIR {
            mkdirat(Some(dst), name, mode).map_err(|e| err("mkdirat", e))?;
            let open_dir = |fd: RawFd| -> Result<OwnedFd> {
                let raw = openat(
                    Some(fd),
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| err("openat", e))?;
                // SAFETY: `openat` returned a new descriptor that nothing else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(raw) })
            };
            let (s, d) = (open_dir(src)?, open_dir(dst)?);
            copy_tree(s.as_raw_fd(), d.as_raw_fd(), what)?;
        } else if kind == SFlag::S_IFREG {
            let open = |fd: RawFd, flags: OFlag| -> Result<std::fs::File> {
                let raw = openat(Some(fd), name, flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, mode)
                    .map_err(|e| err("openat", e))?;
                // SAFETY: `openat` returned a new descriptor that nothing else owns.
                Ok(unsafe { std::fs::File::from_raw_fd(raw) })
            };
            let mut from = open(src, OFlag::O_RDONLY)?;
            let mut to = open(dst, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)?;
            std::io::copy(&mut from, &mut to).map_err(|e| Error::io("copy", what, e))?;
        } else if kind == SFlag::S_IFLNK {
            let target = readlinkat(Some(src), name).map_err(|e| err("readlinkat", e))?;
            symlinkat(target.as_os_str(), Some(dst), name).map_err(|e| err("symlinkat", e))?;
        } else {
            mknodat(Some(dst), name, kind, mode, st.st_rdev).map_err(|e| err("mknodat", e))?;
        }
        fchownat(
            Some(dst),
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| err("fchownat", e))?;
        if kind != SFlag::S_IFLNK {
            // The mode again: mkdirat and openat applied the umask.
            fchmodat(Some(dst), name, mode, FchmodatFlags::FollowSymlink).map_err(|e| err("fchmodat", e))?;
        }
    }
    Ok(())
}
