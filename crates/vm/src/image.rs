//! The bundle's root filesystem as a read-only disk image: an EROFS image
//! made with Debian's `mkfs.erofs`, cached by a digest of the tree (every
//! path with its type, mode, owner, size, modification time and link
//! target), so that a second VM from the same rootfs reuses it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

fn walk(root: &Path, dir: &Path, h: &mut DefaultHasher, count: &mut u64) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path)?;
        path.strip_prefix(root).unwrap_or(&path).hash(h);
        (meta.mode(), meta.uid(), meta.gid(), meta.size(), meta.mtime(), meta.mtime_nsec(), meta.rdev()).hash(h);
        *count += 1;
        if meta.file_type().is_symlink() {
            std::fs::read_link(&path)?.hash(h);
        } else if meta.is_dir() {
            walk(root, &path, h, count)?;
        }
    }
    Ok(())
}

/// The digest of the tree at `rootfs`.
pub fn tree_digest(rootfs: &Path) -> Result<String, Error> {
    let mut h = DefaultHasher::new();
    let mut count = 0;
    walk(rootfs, rootfs, &mut h, &mut count).map_err(|e| Error::Host(format!("rootfs {}: {e}", rootfs.display())))?;
    Ok(format!("{:016x}-{count}", h.finish()))
}

/// The cached EROFS image of `rootfs` in `cache`, made when missing.
pub fn cached(rootfs: &Path, cache: &Path) -> Result<PathBuf, Error> {
    let digest = tree_digest(rootfs)?;
    let images = cache.join("images");
    let path = images.join(format!("{digest}.erofs"));
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&images).map_err(|e| Error::Host(format!("{}: {e}", images.display())))?;
    let tmp = images.join(format!("{digest}.tmp{}", std::process::id()));
    let out =
        Command::new("mkfs.erofs").arg("-d0").arg(&tmp).arg(rootfs).output().map_err(|e| {
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
    std::fs::rename(&tmp, &path).map_err(|e| Error::Host(format!("{}: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_follows_the_tree() {
        let dir = std::env::temp_dir().join(format!("strata-vm-digest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).expect("dir");
        std::fs::write(dir.join("etc/hostname"), "a").expect("file");
        let one = tree_digest(&dir).expect("digest");
        assert_eq!(one, tree_digest(&dir).expect("digest"), "stable");
        std::fs::write(dir.join("etc/hostname"), "ab").expect("file");
        let two = tree_digest(&dir).expect("digest");
        assert_ne!(one, two, "a size change changes it");
        std::os::unix::fs::symlink("hostname", dir.join("etc/link")).expect("link");
        assert_ne!(two, tree_digest(&dir).expect("digest"), "a new entry changes it");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
