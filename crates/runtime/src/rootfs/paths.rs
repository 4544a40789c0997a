//! Path resolution confined to the container's root filesystem.
//!
//! Every path from the config is resolved with openat2(RESOLVE_IN_ROOT) against a
//! descriptor of the rootfs: symlinks and `..` chains in a hostile rootfs resolve as
//! if the rootfs were `/` and can never reach the host. Mounts then target the
//! resolved descriptor through /proc/self/fd, so nothing is re-resolved by path.

use crate::sys::{openat2, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS};
use crate::{Error, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// The magic-link path that names the file `fd` refers to.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::config("path", format!("{} contains a NUL byte", p.display())))
}

/// Strips the leading `/` and normalises a container path for use relative to the root.
fn relative(path: &Path) -> PathBuf {
    path.components().filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir)).collect()
}

/// Opens `path` inside `root` with `flags` (O_PATH when only a handle is needed).
pub fn open_in_root(root: &OwnedFd, path: &Path, flags: OFlag) -> Result<OwnedFd> {
    let rel = relative(path);
    let c = cpath(if rel.as_os_str().is_empty() { Path::new(".") } else { &rel })?;
    openat2(root.as_fd(), &c, flags.bits(), 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        .map_err(|e| Error::sys("openat2", path.display(), e))
}

/// Whether `path` inside `root` is reached without following any symlink (a
/// path whose existing part has none qualifies: what is missing gets created).
pub fn free_of_symlinks(root: &OwnedFd, path: &Path) -> bool {
    let rel = relative(path);
    let Ok(c) = cpath(if rel.as_os_str().is_empty() { Path::new(".") } else { &rel }) else { return false };
    openat2(root.as_fd(), &c, OFlag::O_PATH.bits(), 0, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)
        .map_or_else(|e| e != nix::Error::ELOOP, |_| true)
}

/// Whether `path` exists inside `root`.
pub fn exists_in_root(root: &OwnedFd, path: &Path) -> Result<bool> {
    match open_in_root(root, path, OFlag::O_PATH) {
        Ok(_) => Ok(true),
        Err(Error::Sys { errno: nix::Error::ENOENT, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// How many dangling symlinks one path may lead through (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Creates the directory `path` inside `root` with all missing parents, returning an
/// O_PATH descriptor of it. A dangling symlink on the way is followed inside the
/// root and its target created, as runc and crun do (a rootfs where /var/run
/// points at a /run that does not exist yet, say).
pub fn mkdir_all_in_root(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    mkdir_all_links(root, path, 0)
}

fn mkdir_all_links(root: &OwnedFd, path: &Path, links: usize) -> Result<OwnedFd> {
    let rel = relative(path);
    // Absolute, so error messages show the path as the container sees it.
    let mut cur = PathBuf::from("/");
    let mut fd = open_in_root(root, Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    for comp in rel.components() {
        cur.push(comp);
        match open_in_root(root, &cur, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(next) => fd = next,
            Err(Error::Sys { errno: nix::Error::ENOENT, .. }) => {
                let name = cpath(Path::new(comp.as_os_str()))?;
                match nix::sys::stat::mkdirat(Some(fd.as_raw_fd()), name.as_c_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {}
                    Err(nix::Error::EEXIST) => {
                        // Something is there but does not resolve: a dangling symlink.
                        if let Some(target) = dangling_target(&fd, &name, &cur)? {
                            if links >= MAX_LINKS {
                                return Err(Error::sys("mkdirat", cur.display(), nix::Error::ELOOP));
                            }
                            mkdir_all_links(root, &target, links + 1)?;
                        }
                    }
                    Err(e) => return Err(Error::sys("mkdirat", cur.display(), e)),
                }
                fd = open_in_root(root, &cur, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(fd)
}

/// When `name` in the directory `dir` (the container path `at`) is a symlink,
/// the container path it points at (resolved against `at`'s parent when relative).
fn dangling_target(dir: &OwnedFd, name: &CString, at: &Path) -> Result<Option<PathBuf>> {
    let st = nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name.as_c_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| Error::sys("fstatat", at.display(), e))?;
    if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
        != nix::sys::stat::SFlag::S_IFLNK
    {
        return Ok(None);
    }
    let link = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name.as_c_str())
        .map_err(|e| Error::sys("readlinkat", at.display(), e))?;
    let link = PathBuf::from(link);
    // The result is used inside the root only (openat2 RESOLVE_IN_ROOT): `..`
    // and absolute links cannot leave it.
    Ok(Some(if link.is_absolute() { link } else { at.parent().unwrap_or(Path::new("/")).join(link) }))
}

/// Creates an empty regular file at `path` inside `root` (and its parents) unless
/// something is there already; returns an O_PATH descriptor of what is there. A
/// dangling symlink there is followed inside the root and its target created.
pub fn create_file_in_root(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    create_file_links(root, path, 0)
}

fn create_file_links(root: &OwnedFd, path: &Path, links: usize) -> Result<OwnedFd> {
    match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(Error::Sys { errno: nix::Error::ENOENT, .. }) => {}
        Err(e) => return Err(e),
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().ok_or_else(|| Error::config("path", format!("{} has no file name", path.display())))?;
    let dir = mkdir_all_in_root(root, parent)?;
    let dir = open_in_root(root, parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY).or_else(|_| Ok::<_, Error>(dir))?;
    let cname = cpath(Path::new(name))?;
    match nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        cname.as_c_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) {
        Ok(fd) => drop(nix::unistd::close(fd)),
        Err(nix::Error::EEXIST) => {
            if let Some(target) = dangling_target(&dir, &cname, path)? {
                if links >= MAX_LINKS {
                    return Err(Error::sys("create", path.display(), nix::Error::ELOOP));
                }
                create_file_links(root, &target, links + 1)?;
            }
        }
        Err(e) => return Err(Error::sys("create", path.display(), e)),
    }
    open_in_root(root, path, OFlag::O_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-paths-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let d = tempdir("escape");
        let root = d.join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::os::unix::fs::symlink("/", root.join("up")).expect("symlink");
        std::os::unix::fs::symlink("../../../../etc", root.join("dots")).expect("symlink");
        let rfd = nix::fcntl::open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .expect("open");
        // SAFETY: `open` returned a new descriptor that nothing else owns.
        let rfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rfd) };
        // "up/newdir" must be created inside the root, not at the host's /newdir.
        mkdir_all_in_root(&rfd, Path::new("/up/strata-test-newdir")).expect("mkdir in root");
        assert!(root.join("strata-test-newdir").is_dir());
        assert!(!Path::new("/strata-test-newdir").exists());
        mkdir_all_in_root(&rfd, Path::new("/dots/strata-test-x")).expect("mkdir in root");
        assert!(root.join("etc/strata-test-x").is_dir());
        assert!(!Path::new("/etc/strata-test-x").exists());
        create_file_in_root(&rfd, Path::new("/up/etc/f")).expect("file");
        // Dangling links are followed inside the root, and their targets made there.
        std::os::unix::fs::symlink("/strata-test-abs/sub", root.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../strata-test-rel", root.join("etc/rel")).expect("symlink");
        std::os::unix::fs::symlink("/strata-test-file", root.join("filelink")).expect("symlink");
        mkdir_all_in_root(&rfd, Path::new("/abs/x")).expect("mkdir through a dangling link");
        assert!(root.join("strata-test-abs/sub/x").is_dir());
        mkdir_all_in_root(&rfd, Path::new("/etc/rel/y")).expect("mkdir through a dangling link");
        assert!(root.join("strata-test-rel/y").is_dir());
        create_file_in_root(&rfd, Path::new("/filelink")).expect("file through a dangling link");
        assert!(root.join("strata-test-file").is_file());
        for p in ["/strata-test-abs", "/strata-test-rel", "/strata-test-file"] {
            assert!(!Path::new(p).exists(), "{p} was created on the host");
        }
        // A loop of links ends with an error, not a hang.
        std::os::unix::fs::symlink("/loop-b", root.join("loop-a")).expect("symlink");
        std::os::unix::fs::symlink("/loop-a", root.join("loop-b")).expect("symlink");
        assert!(mkdir_all_in_root(&rfd, Path::new("/loop-a/z")).is_err());
        assert!(root.join("etc/f").is_file());
        assert!(!exists_in_root(&rfd, Path::new("/missing")).expect("exists"));
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
