//! Bind mounts of a VM container: the host's files reach the guest through
//! one shared folder (virtio-9p).
//!
//! `plan` gives each bind mount of the config a name in the folder (its index
//! among the mounts) and points the mount's source at that name under the
//! guest's mount of the folder, so the guest's runtime binds from there with
//! the mount's own options. The monitor makes the folder in a mount namespace
//! of its own, binding each source onto its name (read-only where the mount
//! says `ro`; the namespace is the host's slave, so nothing made there goes
//! out), and QEMU, its child, serves that namespace's view: the guest
//! sees exactly the sources, never their neighbours, and nothing is mounted
//! on the host, so nothing outlives the monitor.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::mount::{mount, MsFlags};

/// Where the guest mounts the shared folder.
pub(super) const GUEST_SHARE: &str = "/run/strata/share";

/// The shared folder in the state directory (empty on the host: the binds
/// onto its entries live in the monitor's mount namespace).
pub(super) const SHARE_DIR: &str = "share";

/// One bind mount's source, as the monitor exposes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Share {
    /// The host path (absolute: a relative source is the bundle's).
    pub source: PathBuf,
    /// Its name in the shared folder.
    pub name: String,
    /// A directory (else a regular file).
    pub dir: bool,
    /// `rbind`: the mounts below the source come too.
    pub recursive: bool,
    /// `ro`: the guest cannot write through, whatever it does to its mount.
    pub readonly: bool,
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

/// The shares of `spec`'s bind mounts, with the mounts' sources pointed at
/// the guest's view of them. A source that is missing, or neither a directory
/// nor a regular file (a device, a socket), is refused naming the mount.
pub(super) fn plan(spec: &mut oci_spec::runtime::Spec, bundle: &Path) -> anyhow::Result<Vec<Share>> {
    plan_named(spec, bundle, "")
}

/// As [`plan`], each name starting with `prefix` (a container that joins a
/// VM shares the folder with the VM's others).
pub(super) fn plan_named(
    spec: &mut oci_spec::runtime::Spec,
    bundle: &Path,
    prefix: &str,
) -> anyhow::Result<Vec<Share>> {
    let mut shares = Vec::new();
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(shares);
    };
    for (i, m) in mounts.iter_mut().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let dest = m.destination().display().to_string();
        let source =
            m.source().clone().with_context(|| format!("mounts[{i}]: the bind mount onto {dest} has no source"))?;
        let source = if source.is_absolute() { source } else { bundle.join(source) };
        let meta = std::fs::metadata(&source)
            .with_context(|| format!("mounts[{i}]: the bind mount of {} onto {dest}", source.display()))?;
        if !meta.is_dir() && !meta.is_file() {
            bail!(
                "mounts[{i}]: the bind mount of {} onto {dest}: only directories and regular files reach a VM guest",
                source.display()
            );
        }
        let opts = m.options().clone().unwrap_or_default();
        let readonly = opts.iter().rev().find(|o| *o == "ro" || *o == "rw").is_some_and(|o| o == "ro");
        let name = format!("{prefix}{i}");
        m.set_source(Some(Path::new(GUEST_SHARE).join(&name)));
        shares.push(Share { source, name, dir: meta.is_dir(), recursive: opts.iter().any(|o| o == "rbind"), readonly });
    }
    spec.set_mounts(Some(mounts));
    Ok(shares)
}

/// Makes the shared folder at `dir`: moves this process to a mount namespace
/// of its own, where each share's source is bound onto its name. The caller
/// must have no other threads (a shared filesystem context cannot unshare).
pub(super) fn expose(shares: &[Share], dir: &Path) -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("a mount namespace for the shared folder")?;
    // The binds stay in here, while the host's unmounts still reach this
    // copy of its mounts (a private copy would hold them for the VM's life).
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .context("make the monitor's mounts the host's slaves")?;
    std::fs::create_dir(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    for s in shares {
        let target = dir.join(&s.name);
        if s.dir { std::fs::create_dir(&target) } else { std::fs::File::create(&target).map(drop) }
            .with_context(|| format!("create {}", target.display()))?;
        let rec = if s.recursive { MsFlags::MS_REC } else { MsFlags::empty() };
        mount(Some(&s.source), &target, None::<&str>, MsFlags::MS_BIND | rec, None::<&str>)
            .with_context(|| format!("bind {} for the guest", s.source.display()))?;
        if s.readonly {
            // (The source's own flags kept: a remount may not drop them.)
            let kept = nix::sys::statvfs::statvfs(&target)
                .map(|v| strata_runtime::rootfs::mounts::locked_flags(v.flags()))
                .unwrap_or(MsFlags::empty());
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept,
                None::<&str>,
            )
            .with_context(|| format!("make {} read-only for the guest", s.source.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(mounts: serde_json::Value) -> oci_spec::runtime::Spec {
        serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2", "mounts": mounts})).unwrap()
    }

    #[test]
    fn binds_are_named_by_index_and_pointed_into_the_share() {
        let dir = std::env::temp_dir().join(format!("strata-share-plan-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("file"), "x").unwrap();
        let mut spec = spec_with(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "rw"]},
            {"destination": "/etc/f", "source": dir.join("file"), "options": ["bind", "ro", "nosuid"]},
            {"destination": "/g", "type": "none", "source": dir.join("file"), "options": ["bind", "ro", "rw"]},
        ]));
        let shares = plan(&mut spec, &dir);
        let mounts = spec.mounts().clone().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let shares = shares.unwrap();
        assert_eq!(
            shares,
            vec![
                Share { source: dir.join("data"), name: "1".into(), dir: true, recursive: true, readonly: false },
                Share { source: dir.join("file"), name: "2".into(), dir: false, recursive: false, readonly: true },
                // The last of ro and rw counts.
                Share { source: dir.join("file"), name: "3".into(), dir: false, recursive: false, readonly: false },
            ]
        );
        assert_eq!(mounts[0].source().as_deref(), Some(Path::new("proc")));
        assert_eq!(mounts[1].source().as_deref(), Some(Path::new("/run/strata/share/1")));
        assert_eq!(mounts[2].source().as_deref(), Some(Path::new("/run/strata/share/2")));
        // The options are the guest runtime's to apply.
        assert_eq!(mounts[2].options().as_deref(), Some(&["bind".to_string(), "ro".into(), "nosuid".into()][..]));
    }

    #[test]
    fn a_source_the_guest_cannot_take_is_refused_naming_the_mount() {
        let mut spec = spec_with(serde_json::json!([
            {"destination": "/dev/null2", "type": "bind", "source": "/dev/null", "options": ["bind"]},
        ]));
        let e = format!("{:#}", plan(&mut spec, Path::new("/")).unwrap_err());
        assert!(e.contains("mounts[0]: the bind mount of /dev/null onto /dev/null2: only directories"), "{e}");
        let mut spec = spec_with(serde_json::json!([
            {"destination": "/x", "type": "bind", "source": "/nonexistent/strata", "options": ["rbind"]},
        ]));
        let e = format!("{:#}", plan(&mut spec, Path::new("/")).unwrap_err());
        assert!(
            e.contains("mounts[0]: the bind mount of /nonexistent/strata onto /x") && e.contains("No such file"),
            "{e}"
        );
    }
}
