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
pub fn move_root(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(|e| Error::sys("chdir", rootfs.display(), e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| Error::sys("mount", "move rootfs to /", e))?;
    nix::unistd::chroot(".").map_err(|e| Error::sys("chroot", rootfs.display(), e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir", "/", e))
}
