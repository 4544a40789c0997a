//! Switching the container's root: pivot_root(2), or move + chroot for `--no-pivot`
//! (needed when the rootfs lives on a ramfs, where pivot_root is not allowed).

use crate::{Error, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;

/// Makes `rootfs` the process's `/` with pivot_root, then detaches the old root.
pub fn pivot_root(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(|e| Error::sys("chdir", rootfs.display(), e))?;
    // pivot_root(".", ".") stacks the old root on top of the new one at "/", so no
    // directory for the old root is needed inside the rootfs.
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::sys("pivot_root", rootfs.display(), e))?;
    // "." now names the old root stacked on top of the new one. Everything was made
    // rslave (or private) before the first mount, so this unmount cannot reach the
    // host; re-marking "." here would instead hit the new root and wipe the
    // propagation the config asked for on its mounts.
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("umount2", "old root", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir", "/", e))
}

/// Moves the rootfs mount onto `/` and chroots into it (no pivot_root).
///
/// The old root stays in the mount namespace, outside the chroot, and with it
/// the runtime's full procfs and sysfs mounts: the kernel lets a process mount
/// a fresh procfs (unmasked, /proc/sysrq-trigger writable) wherever one is fully
/// visible in its mount namespace, chroot or not. So those mounts are detached
/// first (or covered by an empty tmpfs where they cannot be), as runc does.
pub fn move_root(rootfs: &Path) -> Result<()> {
    hide_outside_proc_and_sys(rootfs)?;
    nix::unistd::chdir(rootfs).map_err(|e| Error::sys("chdir", rootfs.display(), e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| Error::sys("mount", "move rootfs to /", e))?;
    nix::unistd::chroot(".").map_err(|e| Error::sys("chroot", rootfs.display(), e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir", "/", e))
}

/// Chroots into `rootfs` without touching any mount (a container without a
/// mount namespace of its own).
pub fn chroot(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(|e| Error::sys("chdir", rootfs.display(), e))?;
    nix::unistd::chroot(".").map_err(|e| Error::sys("chroot", rootfs.display(), e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir", "/", e))
}

/// Detaches every whole procfs and sysfs mount outside `rootfs` in the current
/// (private, slave) mount namespace.
fn hide_outside_proc_and_sys(rootfs: &Path) -> Result<()> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    let mut targets: Vec<String> = Vec::new();
    for line in info.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(root), Some(point), Some(fstype)) = (fields.get(3), fields.get(4), fields.get(dash + 1)) else {
            continue;
        };
        let point = crate::cgroups::unescape_mountinfo(point);
        let inside = Path::new(&point).starts_with(rootfs);
        if *root == "/" && matches!(*fstype, "proc" | "sysfs") && !inside {
            targets.push(point);
        }
    }
    // Deepest first, so a mount under another one goes before its parent.
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        match umount2(t.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(nix::Error::EINVAL) | Err(nix::Error::EPERM) => {
                // Locked (inherited by a user namespace) or already gone from
                // under us: cover it instead.
                mount(Some("tmpfs"), t.as_str(), Some("tmpfs"), MsFlags::MS_RDONLY, Some("size=0"))
                    .map_err(|e| Error::sys("mount", format!("tmpfs over {t}"), e))?;
            }
            Err(e) => return Err(Error::sys("umount2", t, e)),
        }
    }
    Ok(())
}
