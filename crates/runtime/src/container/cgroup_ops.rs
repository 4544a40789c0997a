//! Operations on a running container's cgroup: `pause`, `resume`, `update`, `ps`
//! and statistics for `events`.

use super::{wrong_status, Container};
use crate::cgroups::{resources, stats, Cgroup};
use crate::state::{ContainerState, StateDir};
use crate::{Error, Result, Status};
use oci_spec::runtime::LinuxResources;

impl Container {
    fn cgroup_of(st: &ContainerState) -> Result<Cgroup> {
        st.cgroup().ok_or_else(|| Error::State {
            id: st.id.clone(),
            reason: "the container has no cgroup (rootless without a delegated cgroup, or the cgroup manager \
                     disabled): this operation needs one"
                .into(),
        })
    }

    /// Freezes every process of a running container (cgroup.freeze).
    pub fn pause(&self) -> Result<()> {
        let dir = StateDir::open(&self.root, &self.id)?;
        let st = Self::load_state(&dir, &self.id)?;
        if !matches!(st.status, Status::Running | Status::Created) {
            return Err(wrong_status(&st, "only a created or running container can be paused"));
        }
        Self::cgroup_of(&st)?.freeze(true)
    }

    /// Thaws a paused container.
    pub fn resume(&self) -> Result<()> {
        let dir = StateDir::open(&self.root, &self.id)?;
        let st = Self::load_state(&dir, &self.id)?;
        if st.status != Status::Paused {
            return Err(wrong_status(&st, "only a paused container can be resumed"));
        }
        Self::cgroup_of(&st)?.freeze(false)
    }

    /// Host pids of every process in the container.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let st = self.state()?;
        if st.status == Status::Stopped {
            return Ok(Vec::new());
        }
        match st.cgroup() {
            Some(cg) => cg.pids(),
            // Without a cgroup, the processes of the init's pid namespace.
            None => Ok(pid_namespace_members(st.pid)),
        }
    }

    /// Statistics from the container's cgroup (runc's `events --stats` data).
    pub fn stats(&self) -> Result<serde_json::Value> {
        let st = self.state()?;
        if st.status == Status::Stopped {
            return Err(wrong_status(&st, "a stopped container has no statistics"));
        }
        Ok(stats::collect(&Self::cgroup_of(&st)?.dir))
    }

    /// Applies `update` live and records it in the container's config. Every field
    /// given is written; one whose controller is not enabled is an error.
    pub fn update(&self, update: &LinuxResources) -> Result<()> {
        let dir = StateDir::open(&self.root, &self.id)?;
        let mut st = Self::load_state(&dir, &self.id)?;
        if st.status == Status::Stopped {
            return Err(wrong_status(&st, "a stopped container cannot be updated"));
        }
        let current = st.config.linux().as_ref().and_then(|l| l.resources().clone()).unwrap_or_default();
        let completed = complete_update(update, &current);
        let mut writes = resources::plan(&completed)?;
        let mount = crate::cgroups::find_mount()?;
        for w in crate::cgroups::drop_unavailable(&mount, &mut writes) {
            eprintln!("strata: warning: {w}");
        }
        let cg = Self::cgroup_of(&st)?;
        let mut controllers: Vec<&str> = writes.iter().filter_map(|w| w.controller).collect();
        controllers.sort_unstable();
        controllers.dedup();
        // Controllers not asked for at create time are enabled now, along the path.
        cg.enable(&mount, &controllers)?;
        if let Some(unit) = &st.systemd_unit {
            // systemd keeps the limits it manages as unit properties (and would
            // write them back over the files): they change there first, once the
            // controllers are known to be there.
            let props = crate::cgroups::systemd::properties(&completed)?;
            if !props.is_empty() {
                crate::cgroups::systemd::Systemd::connect()?.set_properties(unit, &props)?;
            }
        }
        cg.apply(&writes)?;
        if let Some(devices) = update.devices() {
            // The device rules are an allowlist program on the cgroup: compiled
            // anew from the updated rules (with the config's device nodes) and
            // swapped in for the one attached at create.
            let nodes = st.config.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default();
            if let Some(rules) = crate::cgroups::devices::rules(devices, &nodes)? {
                let fd = cg.open()?;
                crate::cgroups::devices::replace(
                    std::os::fd::AsFd::as_fd(&fd),
                    &crate::cgroups::devices::compile(&rules),
                )?;
            }
        }
        if let Some(linux) = st.config.linux_mut() {
            let merged = merge(linux.resources().clone().unwrap_or_default(), update);
            linux.set_resources(Some(merged));
        }
        dir.save(&st)
    }
}

impl Container {
    /// Changes the container's Intel RDT schemata (`update --l3-cache-schema`,
    /// `--mem-bw-schema`): written to its resctrl group, which must be one the
    /// runtime made for it (a shared class of service is not the container's
    /// to change).
    pub fn update_intel_rdt(&self, l3_cache_schema: Option<&str>, mem_bw_schema: Option<&str>) -> Result<()> {
        let dir = StateDir::open(&self.root, &self.id)?;
        let mut st = Self::load_state(&dir, &self.id)?;
        if st.status == Status::Stopped {
            return Err(wrong_status(&st, "a stopped container cannot be updated"));
        }
        let Some(groups) = st.rdt.clone() else {
            return Err(crate::Error::config("linux.intelRdt", "the container has no Intel RDT group"));
        };
        if !groups.created {
            return Err(crate::Error::config(
                "linux.intelRdt.closID",
                format!("{} is a class of service the container shares; it is not changed", groups.group.display()),
            ));
        }
        let mut rdt = st.config.linux().as_ref().and_then(|l| l.intel_rdt().clone()).unwrap_or_default();
        if let Some(l3) = l3_cache_schema {
            rdt.set_l3_cache_schema(Some(l3.to_string()));
        }
        if let Some(mb) = mem_bw_schema {
            rdt.set_mem_bw_schema(Some(mb.to_string()));
        }
        let mut plan = crate::rdt::plan(&rdt)?;
        // Only what changed is written: the other lines stay as the group has them.
        plan.schemata.retain(|l| {
            l3_cache_schema.is_some_and(|v| l.as_str() == v.trim())
                || mem_bw_schema.is_some_and(|v| l.as_str() == v.trim())
        });
        crate::rdt::write_schemata(&groups, &plan.schemata)?;
        if let Some(linux) = st.config.linux_mut() {
            linux.set_intel_rdt(Some(rdt));
        }
        dir.save(&st)
    }
}

/// The processes whose pid namespace is `init`'s (just `init` when that is
/// the host's: a container without its own pid namespace and without a
/// cgroup has no way to tell its processes from others).
fn pid_namespace_members(init: i32) -> Vec<i32> {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(own) = ns(&init.to_string()) else { return Vec::new() };
    if ns("self") == Some(own.clone()) {
        return vec![init];
    }
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns(&p.to_string()).as_ref() == Some(&own))
        .collect();
    pids.sort_unstable();
    pids
}

/// Resources after an update: every section `update` has replaces the old one.
fn merge(mut base: LinuxResources, update: &LinuxResources) -> LinuxResources {
    if update.memory().is_some() {
        base.set_memory(*update.memory());
    }
    if update.cpu().is_some() {
        base.set_cpu(update.cpu().clone());
    }
    if update.pids().is_some() {
        base.set_pids(*update.pids());
    }
    if update.block_io().is_some() {
        base.set_block_io(update.block_io().clone());
    }
    if update.hugepage_limits().is_some() {
        base.set_hugepage_limits(update.hugepage_limits().clone());
    }
    if update.unified().is_some() {
        base.set_unified(update.unified().clone());
    }
    if update.rdma().is_some() {
        base.set_rdma(update.rdma().clone());
    }
    if update.devices().is_some() {
        base.set_devices(update.devices().clone());
    }
    base
}

/// Fills the halves of a pair that an update leaves out from the current limits, as
/// runc does: cpu.max needs both quota and period, memory.swap.max is derived from
/// swap and limit.
fn complete_update(update: &LinuxResources, current: &LinuxResources) -> LinuxResources {
    let mut u = update.clone();
    if let (Some(mut cpu), Some(cur)) = (u.cpu().clone(), current.cpu().as_ref()) {
        if cpu.quota().is_some() != cpu.period().is_some() {
            if cpu.quota().is_none() {
                cpu.set_quota(cur.quota());
            }
            if cpu.period().is_none() {
                cpu.set_period(cur.period());
            }
            u.set_cpu(Some(cpu));
        }
    }
    if let (Some(mut mem), Some(cur)) = (*u.memory(), current.memory().as_ref()) {
        if mem.swap().is_some() && mem.limit().is_none() {
            mem.set_limit(cur.limit());
            u.set_memory(Some(mem));
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_updates_keep_the_other_half() {
        let current: LinuxResources = serde_json::from_value(
            serde_json::json!({ "cpu": { "quota": 20000, "period": 50000 }, "memory": { "limit": 1000 } }),
        )
        .expect("json");
        let update: LinuxResources =
            serde_json::from_value(serde_json::json!({ "cpu": { "period": 100000 }, "memory": { "swap": 3000 } }))
                .expect("json");
        let writes = resources::plan(&complete_update(&update, &current)).expect("plan");
        let got: Vec<(String, String)> = writes.into_iter().map(|w| (w.file, w.value)).collect();
        assert!(got.contains(&("cpu.max".to_string(), "20000 100000".to_string())), "{got:?}");
        assert!(got.contains(&("memory.swap.max".to_string(), "2000".to_string())), "{got:?}");
    }
}
