//! Idmapped bind mounts (the `idmap` and `ridmap` mount options, and a mount's
//! `uidMappings`/`gidMappings`): the files of the source appear with their
//! owners shifted by the mappings, without changing anything on disk.
//!
//! A mapping reads as in a user namespace: an id `containerID + k` on disk is
//! seen as `hostID + k` (and written back the other way), so with the
//! container's own user namespace mappings, files owned by the host's root
//! belong to the container's root. The kernel takes the mappings from a user
//! namespace: the runtime makes one per distinct set (a child that only waits
//! in it while its maps are written and its namespace is opened).

use crate::sys::{self, Forked};
use crate::{Error, Result};
use oci_spec::runtime::{Linux, LinuxIdMapping, Mount};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// The kernel's limit on the lines of a uid_map or gid_map.
const MAX_LINES: usize = 340;

/// One mapping: (containerID, hostID, size).
pub type Mapping = (u32, u32, u32);

/// An idmapped mount's mappings, as (containerID, hostID, size) triples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idmap {
    /// `ridmap`: the mounts below the source are idmapped too.
    pub recursive: bool,
    /// uid mappings.
    pub uid: Vec<Mapping>,
    /// gid mappings.
    pub gid: Vec<Mapping>,
}

fn triples(maps: &[LinuxIdMapping], field: &str) -> Result<Vec<Mapping>> {
    if maps.len() > MAX_LINES {
        return Err(Error::config(field, format!("{} mappings; the kernel takes at most {MAX_LINES}", maps.len())));
    }
    let out: Vec<Mapping> = maps
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let (c, h, n) = (m.container_id(), m.host_id(), m.size());
            if n == 0 {
                return Err(Error::config(format!("{field}[{j}].size"), "must be at least 1"));
            }
            if c.checked_add(n - 1).is_none() || h.checked_add(n - 1).is_none() {
                return Err(Error::config(
                    format!("{field}[{j}]"),
                    format!("containerID {c} or hostID {h} plus size {n} is beyond the 32-bit id range"),
                ));
            }
            Ok((c, h, n))
        })
        .collect::<Result<_>>()?;
    // The kernel refuses ranges that overlap on either side.
    for side in [0, 1] {
        let mut ranges: Vec<(u64, u64, usize)> = out
            .iter()
            .enumerate()
            .map(|(j, t)| {
                let start = u64::from(if side == 0 { t.0 } else { t.1 });
                (start, start + u64::from(t.2), j)
            })
            .collect();
        ranges.sort_unstable();
        if let Some(w) = ranges.windows(2).find(|w| w[1].0 < w[0].1) {
            let what = if side == 0 { "containerID" } else { "hostID" };
            return Err(Error::config(
                format!("{field}[{}]", w[1].2),
                format!("its {what} range overlaps entry {}", w[0].2),
            ));
        }
    }
    Ok(out)
}

/// The idmapping mount `m` (index `i`) asks for, if any, checked: its own
/// mappings (both or neither), else with `idmap`/`ridmap` the container's
/// user namespace mappings; only bind mounts are idmapped.
pub fn of(linux: Option<&Linux>, m: &Mount, i: usize) -> Result<Option<Idmap>> {
    let field = format!("mounts[{i}]");
    let opts = super::options::parse(m.options().as_deref().unwrap_or_default(), &field)?;
    let uid = m.uid_mappings().as_deref().filter(|v| !v.is_empty());
    let gid = m.gid_mappings().as_deref().filter(|v| !v.is_empty());
    if uid.is_none() && gid.is_none() && opts.idmap.is_none() {
        return Ok(None);
    }
    if !opts.is_bind() {
        return Err(Error::config(
            format!("{field}.options"),
            "only bind mounts can be idmapped: add bind or rbind (or drop idmap, ridmap and the mappings)",
        ));
    }
    let (uid, gid) = match (uid, gid) {
        (Some(u), Some(g)) => {
            (triples(u, &format!("{field}.uidMappings"))?, triples(g, &format!("{field}.gidMappings"))?)
        }
        (Some(_), None) => {
            return Err(Error::config(format!("{field}.gidMappings"), "missing: uidMappings needs gidMappings"))
        }
        (None, Some(_)) => {
            return Err(Error::config(format!("{field}.uidMappings"), "missing: gidMappings needs uidMappings"))
        }
        (None, None) => {
            let own = linux.and_then(|l| Some((l.uid_mappings().as_deref()?, l.gid_mappings().as_deref()?)));
            match own.filter(|(u, g)| !u.is_empty() && !g.is_empty()) {
                Some((u, g)) => (triples(u, "linux.uidMappings")?, triples(g, "linux.gidMappings")?),
                None => {
                    return Err(Error::config(
                        format!("{field}.options"),
                        "idmap without the mount's own uidMappings and gidMappings takes the container's user \
                         namespace mappings, and linux.uidMappings/gidMappings are not set",
                    ))
                }
            }
        }
    };
    Ok(Some(Idmap { recursive: opts.idmap == Some(true), uid, gid }))
}

/// User namespaces made for idmapped mounts, one per distinct set of mappings.
#[derive(Default)]
pub struct Namespaces(Vec<(Idmap, OwnedFd)>);

impl Namespaces {
    /// A user namespace with `map`'s mappings (made on first use).
    pub fn get(&mut self, map: &Idmap) -> Result<BorrowedFd<'_>> {
        let at = match self.0.iter().position(|(k, _)| k.uid == map.uid && k.gid == map.gid) {
            Some(at) => at,
            None => {
                let fd = mapped_user_namespace(&map.uid, &map.gid)?;
                self.0.push((map.clone(), fd));
                self.0.len() - 1
            }
        };
        Ok(self.0[at].1.as_fd())
    }
}

fn map_text(maps: &[Mapping]) -> String {
    maps.iter().map(|(c, h, n)| format!("{c} {h} {n}\n")).collect()
}

/// A new user namespace with these mappings, held by the returned descriptor.
pub fn mapped_user_namespace(uid: &[Mapping], gid: &[Mapping]) -> Result<OwnedFd> {
    let (hold_r, hold_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", "idmap helper", e))?;
    let flags = libc::CLONE_NEWUSER as u64;
    match sys::clone3_fork(flags, None).map_err(|e| Error::sys("clone3", "idmap user namespace", e))? {
        Forked::Child => {
            // Only async-signal-safe calls here (the caller may be multi-threaded):
            // wait for end-of-file, then leave.
            drop(hold_w);
            let mut b = [0u8; 1];
            // SAFETY: read(2) into a local buffer of the given size.
            while unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(&hold_r), b.as_mut_ptr().cast(), 1) } < 0 {}
            sys::exit_now(0);
        }
        Forked::Parent(pid) => {
            drop(hold_r);
            let made = (|| -> Result<OwnedFd> {
                for (file, maps) in [("uid_map", uid), ("gid_map", gid)] {
                    let path = format!("/proc/{pid}/{file}");
                    std::fs::write(&path, map_text(maps)).map_err(|e| Error::io("write", &path, e))?;
                }
                let path = format!("/proc/{pid}/ns/user");
                let fd = nix::fcntl::open(
                    path.as_str(),
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| Error::sys("open", &path, e))?;
                // SAFETY: `open` returned a new descriptor that nothing else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })();
            drop(hold_w);
            while let Err(nix::Error::EINTR) = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {}
            made
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(v: serde_json::Value) -> Mount {
        serde_json::from_value(v).expect("mount")
    }

    fn linux(v: serde_json::Value) -> Linux {
        serde_json::from_value(v).expect("linux")
    }

    #[test]
    fn options_and_mappings() {
        let maps = serde_json::json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        let m = mount(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["rbind", "ridmap"],
            "uidMappings": maps, "gidMappings": maps }));
        let got = of(None, &m, 0).expect("ok").expect("idmapped");
        assert!(got.recursive);
        assert_eq!(got.uid, vec![(0, 100000, 65536)]);
        // Mappings alone make a (non-recursive) idmapped mount.
        let m = mount(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["bind"],
            "uidMappings": maps, "gidMappings": maps }));
        assert!(!of(None, &m, 0).expect("ok").expect("idmapped").recursive);
        // idmap alone takes the container's mappings.
        let m = mount(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["bind", "idmap"] }));
        let l = linux(serde_json::json!({ "uidMappings": maps, "gidMappings": maps }));
        assert_eq!(of(Some(&l), &m, 0).expect("ok").expect("idmapped").gid, vec![(0, 100000, 65536)]);
        let plain = mount(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["bind"] }));
        assert_eq!(of(Some(&l), &plain, 0).expect("ok"), None);
    }

    #[test]
    fn bad_idmaps_name_their_field() {
        let maps = serde_json::json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        let err = |v: serde_json::Value| of(None, &mount(v), 3).expect_err("refused").to_string();
        let e =
            err(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["bind"], "uidMappings": maps }));
        assert!(e.contains("mounts[3].gidMappings"), "{e}");
        let e =
            err(serde_json::json!({ "destination": "/d", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"] }));
        assert!(e.contains("mounts[3].options") && e.contains("bind"), "{e}");
        let e = err(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["bind", "idmap"] }));
        assert!(e.contains("mounts[3].options") && e.contains("linux.uidMappings"), "{e}");
        let zero = serde_json::json!([{ "containerID": 0, "hostID": 1, "size": 0 }]);
        let e = err(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["bind"],
            "uidMappings": zero, "gidMappings": maps }));
        assert!(e.contains("mounts[3].uidMappings[0].size"), "{e}");
        let overlap = serde_json::json!([{ "containerID": 0, "hostID": 1000, "size": 10 },
            { "containerID": 100, "hostID": 1005, "size": 10 }]);
        let e = err(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["bind"],
            "uidMappings": overlap, "gidMappings": maps }));
        assert!(e.contains("mounts[3].uidMappings[1]") && e.contains("hostID"), "{e}");
        let wide = serde_json::json!([{ "containerID": 0, "hostID": 4294967000u32, "size": 1000 }]);
        let e = err(serde_json::json!({ "destination": "/d", "source": "/s", "options": ["bind"],
            "uidMappings": maps, "gidMappings": wide }));
        assert!(e.contains("mounts[3].gidMappings[0]"), "{e}");
    }
}
