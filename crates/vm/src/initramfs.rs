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

/// Where the guest finds the kernel modules, and in it the file `order` that
/// names them in load order (the agent loads them before anything else).
pub const GUEST_MODULES: &str = "lib/strata-modules";

/// The modules a kernel needs in its guest: the `modules` folder beside the
/// kernel file (hack/vm-assets.sh --stock puts Debian's there), or none.
pub fn modules_of(kernel: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(kernel).ok()?.parent()?.join("modules");
    dir.join("order").is_file().then_some(dir)
}

/// Builds the initramfs for `binary`, with the modules of `modules` (a folder
/// with an `order` file) when given.
pub fn build(binary: &Path, modules: Option<&Path>) -> Result<Vec<u8>, Error> {
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
    if let Some(dir) = modules {
        let order = dir.join("order");
        let list = std::fs::read_to_string(&order).map_err(|e| herr(format!("{}: {e}", order.display())))?;
        parents(&format!("{GUEST_MODULES}/order"), &mut have, &mut cpio);
        for file in list.lines().filter(|l| !l.is_empty()) {
            if file.contains('/') {
                return Err(herr(format!("{}: {file:?} is not a file name", order.display())));
            }
            let path = dir.join(file);
            let data = std::fs::read(&path).map_err(|e| herr(format!("{}: {e}", path.display())))?;
            cpio.file(&format!("{GUEST_MODULES}/{file}"), 0o644, &data);
        }
        cpio.file(&format!("{GUEST_MODULES}/order"), 0o644, list.as_bytes());
    }
    Ok(cpio.finish())
}

/// The cached initramfs for `binary` (and `modules`) in `cache`, built when
/// missing.
pub fn cached(binary: &Path, cache: &Path, modules: Option<&Path>) -> Result<PathBuf, Error> {
    let meta = std::fs::metadata(binary).map_err(|e| Error::Host(format!("{}: {e}", binary.display())))?;
    let mut name = format!("initramfs-{:x}-{:x}-{:x}", meta.size(), meta.mtime(), meta.ino());
    if let Some(dir) = modules {
        // (The order file is written last, when the folder is complete.)
        let order = std::fs::metadata(dir.join("order")).map_err(|e| Error::Host(format!("{}: {e}", dir.display())))?;
        name.push_str(&format!("-m{:x}-{:x}", order.mtime(), order.ino()));
    }
    let path = cache.join(format!("{name}.cpio"));
    if path.exists() {
        return Ok(path);
    }
    let bytes = build(binary, modules)?;
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
    fn modules_beside_a_kernel_go_into_the_initramfs_in_their_order() {
        let scratch = crate::test_util::ScratchDir::new("initramfs-modules");
        let dir = &scratch.0;
        let modules = dir.join("modules");
        std::fs::create_dir_all(&modules).expect("dir");
        std::fs::write(dir.join("vmlinux"), b"kernel").expect("kernel");
        assert_eq!(modules_of(&dir.join("vmlinux")), None, "no order file, no modules");
        std::fs::write(modules.join("01-virtio_mmio.ko"), b"first module").expect("module");
        std::fs::write(modules.join("02-erofs.ko"), b"second module").expect("module");
        std::fs::write(modules.join("order"), "01-virtio_mmio.ko\n02-erofs.ko\n").expect("order");
        let found = modules_of(&dir.join("vmlinux")).expect("modules found beside the kernel");
        let out = build(Path::new("/bin/true"), Some(&found)).expect("build");
        let text = String::from_utf8_lossy(&out);
        let first = text.find("lib/strata-modules/01-virtio_mmio.ko\0").expect("first module");
        let second = text.find("lib/strata-modules/02-erofs.ko\0").expect("second module");
        assert!(first < second && text.contains("first module") && text.contains("second module"));
        assert!(text.contains("lib/strata-modules/order\0"));
        // A name with a path in it is refused, not followed.
        std::fs::write(modules.join("order"), "../vmlinux\n").expect("order");
        assert!(build(Path::new("/bin/true"), Some(&found)).is_err());
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
