//! The bundle's root filesystem as a read-only disk image: an EROFS image
//! made with Debian's `mkfs.erofs`, cached by the digest of the tree's
//! content, so that a second VM from the same tree (or from a copy of it
//! anywhere) reuses the image, and no change to the tree, however its times
//! are set back, reuses a stale one.
//!
//! The content digest (SHA-256 over every path with its type, mode, owner,
//! device number, modification time, extended attributes, link target and,
//! for a file, its bytes) costs a read of the whole tree, so it is made once
//! per state of the tree: an index maps the tree's identity (every entry's
//! device, inode, size and change time, which no write leaves unchanged and
//! no caller can set back) to the digest. An image unused for a week is
//! removed when the next new one is made.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::Error;

/// How long an image may go unused before a new image's making removes it.
const UNUSED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// The tree's entries, sorted by name at each level (directories before
/// their contents), with their metadata.
fn entries(root: &Path) -> std::io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) -> std::io::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            let path = dir.join(name);
            let meta = std::fs::symlink_metadata(&path)?;
            let is_dir = meta.is_dir();
            out.push((path.clone(), meta));
            if is_dir {
                walk(&path, out)?;
            }
        }
        Ok(())
    }
    let mut out = vec![(root.to_path_buf(), std::fs::symlink_metadata(root)?)];
    walk(root, &mut out)?;
    Ok(out)
}

/// The tree's identity: cheap (metadata only), and different after any
/// change to the tree, since every change moves an entry's change time.
pub fn tree_identity(rootfs: &Path) -> Result<String, Error> {
    let list = entries(rootfs).map_err(|e| Error::Host(format!("rootfs {}: {e}", rootfs.display())))?;
    let mut h = DefaultHasher::new();
    for (path, m) in &list {
        path.strip_prefix(rootfs).unwrap_or(path).hash(&mut h);
        (m.dev(), m.ino(), m.mode(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()).hash(&mut h);
    }
    Ok(format!("{:016x}-{}", h.finish(), list.len()))
}

/// The extended attributes of `path` (not followed), sorted by name.
fn xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a null buffer of size 0 asks for the size only.
    let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) { Ok(Vec::new()) } else { Err(e) };
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: the buffer holds `names.len()` bytes.
    let size = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size < 0 {
        return Err(std::io::Error::last_os_error());
    }
    names.truncate(size as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
        // SAFETY: as above, size first.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut value = vec![0u8; len as usize];
        // SAFETY: the buffer holds `value.len()` bytes.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            return Err(std::io::Error::last_os_error());
        }
        value.truncate(len as usize);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// The digest of what the image holds: the same for two trees that would
/// make the same image, wherever they are.
pub fn content_digest(rootfs: &Path) -> Result<String, Error> {
    let err = |p: &Path, e: std::io::Error| Error::Host(format!("rootfs {}: {e}", p.display()));
    let list = entries(rootfs).map_err(|e| err(rootfs, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (path, m) in &list {
        let rel = path.strip_prefix(rootfs).unwrap_or(path).as_os_str().as_bytes();
        // Every field length-prefixed or fixed-size, so no two trees
        // serialise alike.
        h.update((rel.len() as u64).to_le_bytes());
        h.update(rel);
        for n in [m.mode() as u64, m.uid() as u64, m.gid() as u64, m.rdev(), m.mtime() as u64, m.mtime_nsec() as u64] {
            h.update(n.to_le_bytes());
        }
        let attrs = xattrs(path).map_err(|e| err(path, e))?;
        h.update((attrs.len() as u64).to_le_bytes());
        for (name, value) in attrs {
            for part in [name, value] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(&part);
            }
        }
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| err(path, e))?;
            let t = target.as_os_str().as_bytes();
            h.update((t.len() as u64).to_le_bytes());
            h.update(t);
        } else if m.is_file() {
            h.update(m.size().to_le_bytes());
            let mut f = std::fs::File::open(path).map_err(|e| err(path, e))?;
            loop {
                let n = f.read(&mut buf).map_err(|e| err(path, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    }
    let d = h.finalize();
    Ok(d.iter().map(|b| format!("{b:02x}")).collect())
}

/// Marks `path` used now (the age that eviction goes by).
fn touch(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a NUL-terminated path and no times (now).
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    }
}

/// Removes images and index entries unused for longer than `age`. A running
/// VM keeps its image open, so removing the name takes nothing from it.
fn evict(images: &Path, age: Duration) {
    let now = SystemTime::now();
    let old = |p: &Path| {
        std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age))
    };
    for dir in [images.to_path_buf(), images.join("trees")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_file() && old(&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// Writes `data` to `path` through a temporary name, so no reader sees half.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The cached EROFS image of `rootfs` in `cache`, made when missing.
pub fn cached(rootfs: &Path, cache: &Path) -> Result<PathBuf, Error> {
    let images = cache.join("images");
    let trees = images.join("trees");
    let identity = tree_identity(rootfs)?;
    let index = trees.join(&identity);
    if let Some(digest) = std::fs::read_to_string(&index).ok().filter(|d| d.len() == 64) {
        let path = images.join(format!("{digest}.erofs"));
        if path.exists() {
            touch(&path);
            touch(&index);
            return Ok(path);
        }
    }
    let digest = content_digest(rootfs)?;
    let path = images.join(format!("{digest}.erofs"));
    std::fs::create_dir_all(&trees).map_err(|e| Error::Host(format!("{}: {e}", trees.display())))?;
    if path.exists() {
        touch(&path);
    } else {
        let tmp = images.join(format!("{digest}.tmp{}", std::process::id()));
        let out = Command::new("mkfs.erofs").arg("-d0").arg(&tmp).arg(rootfs).output().map_err(|e| {
            Error::Host(format!("mkfs.erofs (Debian's erofs-utils; hack/vm-assets.sh installs it): {e}"))
        })?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Host(format!(
                "mkfs.erofs {}: {}",
                rootfs.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // A tree changed while it was read would leave an image that is not
        // what its name says.
        if tree_identity(rootfs)? != identity {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Host(format!(
                "rootfs {} changed while its image was being made; try again",
                rootfs.display()
            )));
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::Host(format!("{}: {e}", path.display())))?;
        evict(&images, UNUSED_FOR);
    }
    // (A lost index entry only costs the next create a digest.)
    let _ = write_atomically(&index, digest.as_bytes());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn scratch(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("strata-vm-image-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch");
        Scratch(d)
    }
    fn tree(at: &Path) {
        std::fs::create_dir_all(at.join("etc")).expect("dir");
        std::fs::write(at.join("etc/hostname"), "abc").expect("file");
        std::os::unix::fs::symlink("hostname", at.join("etc/link")).expect("link");
    }
    /// Sets `path`'s modification time to `secs` (as `touch -d @secs`).
    fn set_mtime(path: &Path, secs: i64) {
        let f = std::fs::File::options().write(true).open(path).expect("open");
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)).expect("mtime");
    }

    #[test]
    fn the_content_digest_follows_content_not_place_and_the_identity_follows_every_write() {
        let s = scratch("digest");
        let (a, b) = (s.0.join("a"), s.0.join("b"));
        tree(&a);
        tree(&b);
        for p in [a.join("etc/hostname"), b.join("etc/hostname")] {
            set_mtime(&p, 1_000_000);
        }
        // (Directories' times differ between the two; set them alike.)
        for d in [&a, &b] {
            for p in [d.clone(), d.join("etc")] {
                let f = std::fs::File::open(&p).expect("dir");
                f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(5)).expect("mtime");
            }
        }
        let da = content_digest(&a).expect("digest");
        assert_eq!(da, content_digest(&b).expect("digest"), "the same content in two places");
        assert_ne!(tree_identity(&a).expect("id"), tree_identity(&b).expect("id"), "two trees, two identities");
        // The same size and the old time put back: the content digest and the
        // identity both see it.
        let id = tree_identity(&a).expect("id");
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(a.join("etc/hostname"), "xyz").expect("rewrite");
        set_mtime(&a.join("etc/hostname"), 1_000_000);
        assert_ne!(id, tree_identity(&a).expect("id"));
        assert_ne!(da, content_digest(&a).expect("digest"));
        // A mode is content too.
        let db = content_digest(&b).expect("digest");
        std::fs::set_permissions(b.join("etc/hostname"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        assert_ne!(db, content_digest(&b).expect("digest"));
        // So is an extended attribute (a file capability, a label).
        let db = content_digest(&b).expect("digest");
        let path = std::ffi::CString::new(b.join("etc/hostname").as_os_str().as_bytes()).expect("path");
        // SAFETY: NUL-terminated name and path, a 1-byte value.
        let set = unsafe { libc::lsetxattr(path.as_ptr(), c"user.strata".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        if set == 0 {
            assert_eq!(
                xattrs(&b.join("etc/hostname")).expect("xattrs"),
                vec![(b"user.strata".to_vec(), b"1".to_vec())]
            );
            assert_ne!(db, content_digest(&b).expect("digest"));
        } else {
            eprintln!("SKIP the xattr part: {} takes no user xattrs", s.0.display());
        }
    }

    #[test]
    fn images_are_shared_by_content_made_anew_on_change_and_evicted_when_unused() {
        if Command::new("mkfs.erofs").arg("--help").output().is_err() {
            eprintln!("SKIP images_are_shared_by_content...: mkfs.erofs is not installed");
            return;
        }
        let s = scratch("cache");
        let cache = s.0.join("cache");
        let (a, b) = (s.0.join("a"), s.0.join("b"));
        tree(&a);
        let one = cached(&a, &cache).expect("image");
        let ino = std::fs::metadata(&one).expect("image").ino();
        // Again: the index answers, the image is the same file.
        assert_eq!(cached(&a, &cache).expect("image"), one);
        assert_eq!(std::fs::metadata(&one).expect("image").ino(), ino);
        // A copy elsewhere with the same content (times included) shares it.
        let status = Command::new("cp").arg("-a").arg(&a).arg(&b).status().expect("cp");
        assert!(status.success());
        assert_eq!(cached(&b, &cache).expect("image"), one);
        // A same-size rewrite with the time set back gets its own image.
        let mtime = std::fs::metadata(a.join("etc/hostname")).expect("meta").mtime();
        std::fs::write(a.join("etc/hostname"), "xyz").expect("rewrite");
        set_mtime(&a.join("etc/hostname"), mtime);
        // An image unused for longer than a week goes when a new one is made.
        let f = std::fs::File::options().write(true).open(&one).expect("image");
        f.set_modified(SystemTime::now() - UNUSED_FOR - Duration::from_secs(60)).expect("age");
        let two = cached(&a, &cache).expect("image");
        assert_ne!(two, one);
        assert!(two.exists() && !one.exists(), "the week-old image is evicted");
    }
}
