//! The guest's initramfs, generated from the strata binary itself: `/init` is
//! strata (stripped of debug information), with the shared libraries it links,
//! and the mount points the agent uses. Cached beside the kernel, keyed by the
//! binary's size and modification time.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// A newc ("070701") cpio archive being written.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn header(&mut self, name: &str, mode: u32, size: usize, rdev: (u32, u32)) {
        self.ino += 1;
        let fields = [self.ino, mode, 0, 0, 1, 0, size as u32, 0, 0, rdev.0, rdev.1, (name.len() + 1) as u32, 0];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory (parents first).
    pub fn dir(&mut self, name: &str) {
        self.header(name, 0o040755, 0, (0, 0));
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.header(name, 0o100000 | mode, data.len(), (0, 0));
        self.out.extend_from_slice(data);
        self.pad();
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.header(name, 0o020600, 0, (major, minor));
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0, (0, 0));
        self.out
    }
}

/// The shared libraries (and loader) `binary` needs, from `ldd`.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let out =
        Command::new("ldd").arg(binary).output().map_err(|e| Error::Host(format!("ldd {}: {e}", binary.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    Ok(text.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from)).collect())
}

fn parents(path: &str, have: &mut Vec<String>, cpio: &mut Cpio) {
    let mut acc = String::new();
    let parts: Vec<_> = path.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len() - 1] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        if !have.contains(&acc) {
            cpio.dir(&acc);
            have.push(acc.clone());
        }
    }
}

/// Builds the initramfs for `binary`.
pub fn build(binary: &Path) -> Result<Vec<u8>, Error> {
    let herr = |what: String| Error::Host(format!("initramfs: {what}"));
    let tmp = std::env::temp_dir().join(format!("strata-init-{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&tmp)
        .arg(binary)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let init = if stripped { std::fs::read(&tmp) } else { std::fs::read(binary) };
    let _ = std::fs::remove_file(&tmp);
    let init = init.map_err(|e| herr(format!("read {}: {e}", binary.display())))?;

    let mut cpio = Cpio::default();
    let mut have = Vec::new();
    for d in ["dev", "proc", "sys", "run", "tmp", "mnt"] {
        cpio.dir(d);
        have.push(d.to_string());
    }
    cpio.char_dev("dev/console", 5, 1);
    cpio.char_dev("dev/null", 1, 3);
    cpio.file("init", 0o755, &init);
    for lib in libraries(binary)? {
        let real = std::fs::canonicalize(&lib).map_err(|e| herr(format!("{}: {e}", lib.display())))?;
        let data = std::fs::read(&real).map_err(|e| herr(format!("{}: {e}", real.display())))?;
        let name = lib.to_string_lossy().trim_start_matches('/').to_string();
        parents(&name, &mut have, &mut cpio);
        cpio.file(&name, 0o755, &data);
    }
    Ok(cpio.finish())
}

/// The cached initramfs for `binary` in `cache`, built when missing.
pub fn cached(binary: &Path, cache: &Path) -> Result<PathBuf, Error> {
    let meta = std::fs::metadata(binary).map_err(|e| Error::Host(format!("{}: {e}", binary.display())))?;
    let path = cache.join(format!("initramfs-{:x}-{:x}-{:x}.cpio", meta.size(), meta.mtime(), meta.ino()));
    if path.exists() {
        return Ok(path);
    }
    let bytes = build(binary)?;
    std::fs::create_dir_all(cache).map_err(|e| Error::Host(format!("{}: {e}", cache.display())))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::Host(format!("{}: {e}", tmp.display())))?;
    f.write_all(&bytes).map_err(|e| Error::Host(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::Host(format!("{}: {e}", path.display())))?;
    prune(cache, KEEP);
    Ok(path)
}

/// How many initramfs files the cache keeps (each rebuilt strata binary
/// makes one; QEMU has read its own by the time the guest runs, and the few
/// newest cover creates still on their way to QEMU).
const KEEP: usize = 4;

/// Removes all but the `keep` newest initramfs files of the cache.
fn prune(cache: &Path, keep: usize) {
    let Ok(dir) = std::fs::read_dir(cache) else { return };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = dir
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("initramfs-") && name.ends_with(".cpio")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, old) in found.into_iter().skip(keep) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("dev");
        c.char_dev("dev/console", 5, 1);
        c.file("init", 0o755, b"#!/bin/sh\n");
        let out = c.finish();
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[..6], b"070701");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("dev/console\0") && text.contains("init\0") && text.contains("TRAILER!!!\0"));
        // The device's major/minor are in the rdev fields (10th and 11th).
        let second = text.find("dev/console").expect("entry") - 110;
        let header = &text[second..second + 110];
        assert_eq!(&header[6 + 9 * 8..6 + 11 * 8], "0000000500000001");
    }

    #[test]
    fn the_cache_keeps_only_the_newest_initramfs_files() {
        let dir = std::env::temp_dir().join(format!("strata-initramfs-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let now = std::time::SystemTime::now();
        for i in 0..6u64 {
            let p = dir.join(format!("initramfs-{i}.cpio"));
            let f = std::fs::File::create(&p).expect("file");
            f.set_modified(now - std::time::Duration::from_secs(100 - i)).expect("mtime");
        }
        std::fs::write(dir.join("vmlinux"), b"kernel").expect("other file");
        prune(&dir, 4);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(left, ["initramfs-2.cpio", "initramfs-3.cpio", "initramfs-4.cpio", "initramfs-5.cpio", "vmlinux"]);
    }
}
