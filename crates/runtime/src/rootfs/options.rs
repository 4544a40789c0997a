//! Translation of mount(8)-style options from `config.json` into mount(2) flags,
//! propagation changes, mount_setattr(2) attributes and filesystem data.

use crate::{Error, Result};
use nix::mount::MsFlags;

/// mount_setattr attribute bits (linux/mount.h).
pub mod attr {
    /// MOUNT_ATTR_RDONLY.
    pub const RDONLY: u64 = 0x1;
    /// MOUNT_ATTR_NOSUID.
    pub const NOSUID: u64 = 0x2;
    /// MOUNT_ATTR_NODEV.
    pub const NODEV: u64 = 0x4;
    /// MOUNT_ATTR_NOEXEC.
    pub const NOEXEC: u64 = 0x8;
    /// MOUNT_ATTR_RELATIME (an atime mode, value 0 under the _ATIME mask).
    pub const RELATIME: u64 = 0x0;
    /// MOUNT_ATTR_NOATIME.
    pub const NOATIME: u64 = 0x10;
    /// MOUNT_ATTR_STRICTATIME.
    pub const STRICTATIME: u64 = 0x20;
    /// MOUNT_ATTR__ATIME, the mask of the atime mode bits.
    pub const ATIME_MASK: u64 = 0x70;
    /// MOUNT_ATTR_NODIRATIME.
    pub const NODIRATIME: u64 = 0x80;
    /// MOUNT_ATTR_NOSYMFOLLOW.
    pub const NOSYMFOLLOW: u64 = 0x0020_0000;
}

/// Everything one mount's options ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount(2) call itself.
    pub flags: MsFlags,
    /// Propagation flags applied with a second mount(2) after the mount exists.
    pub propagation: MsFlags,
    /// Recursive attributes to set with mount_setattr(AT_RECURSIVE).
    pub rec_set: u64,
    /// Recursive attributes to clear with mount_setattr(AT_RECURSIVE).
    pub rec_clear: u64,
    /// Filesystem-specific options, comma separated, passed as mount data.
    pub data: String,
    /// `tmpcopyup`: a tmpfs starts with a copy of the directory it covers.
    pub copy_up: bool,
    /// `idmap` (false) or `ridmap` (true: the mounts below too): an idmapped
    /// bind mount.
    pub idmap: Option<bool>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            rec_set: 0,
            rec_clear: 0,
            data: String::new(),
            copy_up: false,
            idmap: None,
        }
    }
}

/// MS_NOSYMFOLLOW (Linux 5.10), which nix does not name.
pub const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

impl MountOptions {
    /// Whether this is a bind mount (`bind` or `rbind`).
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags that a bind mount only honours on a remount.
    pub fn remount_flags(&self) -> MsFlags {
        self.flags
            & (MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NOATIME
                | MsFlags::MS_NODIRATIME
                | MsFlags::MS_RELATIME
                | MsFlags::MS_STRICTATIME
                | MS_NOSYMFOLLOW)
    }
}

/// Every option name [`parse`] understands itself (anything else is passed to the
/// filesystem as data), as `strata features` reports them.
pub const KNOWN: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "idmap",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ridmap",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "tmpcopyup",
    "suid",
    "symfollow",
    "sync",
    "unbindable",
    "ratime",
    "rdev",
    "rdiratime",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "rrelatime",
    "rro",
    "rrw",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
];

/// Parses the options of the mount at `field` (used in error messages).
pub fn parse(options: &[String], field: &str) -> Result<MountOptions> {
    let mut out = MountOptions::default();
    let mut data = Vec::new();
    for opt in options {
        let (set, clear): (MsFlags, MsFlags) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "nosymfollow" => (MS_NOSYMFOLLOW, MsFlags::empty()),
            "symfollow" => (MsFlags::empty(), MS_NOSYMFOLLOW),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                // One propagation type per mount: the last one given wins.
                out.propagation = propagation(opt).unwrap_or(MsFlags::empty());
                continue;
            }
            "idmap" | "ridmap" => {
                // ridmap wins over idmap whatever their order.
                out.idmap = Some(out.idmap == Some(true) || opt == "ridmap");
                continue;
            }
            "tmpcopyup" => {
                out.copy_up = true;
                continue;
            }
            o if o.starts_with('r') && recursive_attr(o).is_some() => {
                let (set, bit) = recursive_attr(o).unwrap_or((true, 0));
                if bit == attr::ATIME_MASK || o == "rrelatime" || o == "rnoatime" || o == "rstrictatime" {
                    // The atime modes are one field: clearing the mask then setting the mode.
                    out.rec_clear |= attr::ATIME_MASK;
                    out.rec_set = (out.rec_set & !attr::ATIME_MASK)
                        | match o {
                            "rnoatime" => attr::NOATIME,
                            "rstrictatime" => attr::STRICTATIME,
                            _ => attr::RELATIME,
                        };
                } else if set {
                    out.rec_set |= bit;
                    out.rec_clear &= !bit;
                } else {
                    out.rec_clear |= bit;
                    out.rec_set &= !bit;
                }
                continue;
            }
            "" => return Err(Error::config(field, "empty mount option")),
            o => {
                data.push(o.to_string());
                continue;
            }
        };
        out.flags.insert(set);
        out.flags.remove(clear);
    }
    out.data = data.join(",");
    Ok(out)
}

/// Maps a propagation option to its mount(2) flags.
pub fn propagation(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Recursive (`r`-prefixed) options: whether they set or clear, and the attribute bit.
fn recursive_attr(opt: &str) -> Option<(bool, u64)> {
    Some(match opt {
        "rro" => (true, attr::RDONLY),
        "rrw" => (false, attr::RDONLY),
        "rnosuid" => (true, attr::NOSUID),
        "rsuid" => (false, attr::NOSUID),
        "rnodev" => (true, attr::NODEV),
        "rdev" => (false, attr::NODEV),
        "rnoexec" => (true, attr::NOEXEC),
        "rexec" => (false, attr::NOEXEC),
        "rnodiratime" => (true, attr::NODIRATIME),
        "rdiratime" => (false, attr::NODIRATIME),
        "rnosymfollow" => (true, attr::NOSYMFOLLOW),
        "rsymfollow" => (false, attr::NOSYMFOLLOW),
        "rrelatime" | "rnoatime" | "rstrictatime" => (true, attr::ATIME_MASK),
        "rnorelatime" | "ratime" | "rnostrictatime" => (false, attr::ATIME_MASK),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(opts: &[&str]) -> MountOptions {
        parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "mounts[0]").expect("parse")
    }

    #[test]
    fn flags_and_data() {
        let o = p(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(!o.is_bind());
    }

    #[test]
    fn later_options_override_earlier() {
        assert_eq!(p(&["ro", "rw"]).flags, MsFlags::empty());
        assert_eq!(p(&["rw", "ro"]).flags, MsFlags::MS_RDONLY);
        assert_eq!(p(&["noexec", "exec"]).flags, MsFlags::empty());
    }

    #[test]
    fn bind_and_propagation() {
        let o = p(&["rbind", "ro", "rprivate"]);
        assert!(o.is_bind());
        assert!(o.flags.contains(MsFlags::MS_REC));
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.remount_flags(), MsFlags::MS_RDONLY);
    }

    #[test]
    fn every_known_option_is_understood() {
        for o in KNOWN {
            assert_eq!(p(&[o]).data, "", "{o} went to the filesystem as data");
        }
    }

    #[test]
    fn recursive_attributes() {
        let o = p(&["rbind", "rro", "rnosuid", "rnoatime"]);
        assert_eq!(o.rec_set, attr::RDONLY | attr::NOSUID | attr::NOATIME);
        assert_eq!(o.rec_clear, attr::ATIME_MASK);
        let o = p(&["rro", "rrw"]);
        assert_eq!(o.rec_set, 0);
        assert_eq!(o.rec_clear, attr::RDONLY);
        // One atime mode and one propagation type: the last wins.
        let o = p(&["rnoatime", "rstrictatime"]);
        assert_eq!(o.rec_set, attr::STRICTATIME);
        assert_eq!(p(&["rprivate", "rshared"]).propagation, MsFlags::MS_SHARED | MsFlags::MS_REC);
    }

    #[test]
    fn invalid_and_idmap() {
        let bad = |opts: &[&str]| {
            parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "mounts[3]").unwrap_err().to_string()
        };
        assert!(bad(&[""]).contains("empty mount option"));
        assert_eq!(p(&["bind", "idmap"]).idmap, Some(false));
        // ridmap wins in either order.
        assert_eq!(p(&["rbind", "ridmap", "idmap"]).idmap, Some(true));
        assert_eq!(p(&["rbind", "idmap", "ridmap"]).idmap, Some(true));
        assert_eq!(p(&["rbind"]).idmap, None);
    }
}
