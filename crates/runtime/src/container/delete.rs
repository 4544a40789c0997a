//! `delete`: stop what is left of the container, run `poststop` hooks, remove its state.

use super::{wrong_status, Container};
use crate::state::StateDir;
use crate::{hooks, Result, Status};

impl Container {
    /// Deletes the container. A running (or paused) container needs `force`, which
    /// kills it first. Returns warnings (failed `poststop` hooks).
    pub fn delete(&self, force: bool) -> Result<Vec<String>> {
        let dir = StateDir::open(&self.root, &self.id)?;
        let Some(mut st) = dir.load()? else {
            // `create` died before recording anything: nothing runs, only the directory.
            dir.remove()?;
            return Ok(Vec::new());
        };
        super::settle_status(&mut st, dir.path());
        if matches!(st.status, Status::Running | Status::Paused) && !force {
            return Err(wrong_status(&st, "stop it first or use --force"));
        }
        // Whatever the status says (a create killed after its init existed reads
        // `stopped`), an init that is still this container's dies now.
        let mut warnings = Vec::new();
        if st.pid > 0 {
            // Moved devices go back to the runtime's namespace while the
            // container's still exists (virtual ones would end with it).
            let devices = st.config.linux().as_ref().and_then(|l| l.net_devices().clone()).unwrap_or_default();
            if !devices.is_empty() && crate::state::process_alive(st.pid, st.init_start_time) {
                if let (Ok(plan), Ok(netns)) =
                    (crate::network::planned(&devices), std::fs::File::open(format!("/proc/{}/ns/net", st.pid)))
                {
                    warnings.extend(crate::network::detach(&plan, std::os::fd::AsFd::as_fd(&netns)));
                }
            }
            crate::process::reap_foreign(st.pid, st.init_start_time);
        }
        if let Some(unit) = &st.systemd_unit {
            // The scope is systemd's: everything in it dies, then systemd stops
            // it and removes its cgroup. A create that never made its init may
            // have started none (the name may even be another container's): a
            // scope it started held only its placeholder, gone with the creator.
            if st.pid > 0 {
                let cg = st.cgroup();
                if let Some(cg) = cg.as_ref().filter(|c| c.dir.exists()) {
                    let _ = cg.kill_all();
                }
                let stopped = crate::cgroups::systemd::Systemd::connect().and_then(|s| s.stop_unit(unit));
                if let Err(e) = stopped {
                    // A unit whose cgroup is gone is gone from systemd too.
                    if cg.is_some_and(|c| c.dir.exists()) {
                        return Err(e);
                    }
                }
            }
        } else if let Some(cg) = st.cgroup() {
            // Whatever is left (processes sharing the host's pid namespace, or that
            // outlived the init) dies with the cgroup, unless the container shared
            // it with processes of others.
            if cg.dir.exists() && !st.cgroup_shared {
                if st.cgroup_created.contains(&cg.dir) {
                    let _ = cg.kill_all();
                    cg.remove(&st.cgroup_created)?;
                } else {
                    // A cgroup that was there before the container stays, as it was.
                    let _ = cg.kill_each();
                    if let Ok(fd) = cg.open() {
                        let _ = crate::cgroups::devices::detach_all(std::os::fd::AsFd::as_fd(&fd));
                    }
                }
            } else if !cg.dir.exists() {
                // A create killed on its way to the cgroup: the parents it made.
                crate::cgroups::remove_empty(&st.cgroup_created);
            }
        }
        if let Some(groups) = &st.rdt {
            crate::rdt::remove(groups);
        }
        // poststop hooks undo what earlier hooks did: they run once the
        // container's process existed (a create killed before that ran none).
        if let Some(list) = st.config.hooks().as_ref().and_then(|h| h.poststop().clone()).filter(|_| st.pid > 0) {
            st.status = Status::Stopped;
            let json = st.oci_json().to_string();
            for h in &list {
                if let Err(e) = hooks::run("poststop", h, &json) {
                    warnings.push(e.to_string());
                }
            }
        }
        dir.remove()?;
        Ok(warnings)
    }
}
