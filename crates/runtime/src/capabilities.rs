//! Capability sets of the container process: the five sets of the spec, applied in
//! the order the kernel's rules allow.

use crate::{Error, Result};
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;
use std::str::FromStr;

/// The five sets, translated to the `caps` crate's types and limited to what the
/// running kernel knows.
#[derive(Debug, Default, Clone)]
pub struct CapabilityPlan {
    /// Bounding set to keep (everything else is dropped).
    pub bounding: CapsHashSet,
    /// Effective set.
    pub effective: CapsHashSet,
    /// Permitted set.
    pub permitted: CapsHashSet,
    /// Inheritable set.
    pub inheritable: CapsHashSet,
    /// Ambient set.
    pub ambient: CapsHashSet,
    /// Names from the config the running kernel does not know (dropped).
    pub unknown_to_kernel: Vec<String>,
}

impl CapabilityPlan {
    /// Translates the config's sets; capabilities missing from a set are dropped.
    pub fn new(spec: Option<&LinuxCapabilities>) -> Result<Self> {
        // What the runtime itself may hold: a capability outside its own bounding
        // set can reach no process it starts (capset fails with a bare EPERM).
        let Probed { supported, held } = probed();
        let mut plan = CapabilityPlan::default();
        let Some(spec) = spec else { return Ok(plan) };
        let mut convert = |set: &Option<oci_spec::runtime::Capabilities>, field: &str| -> Result<CapsHashSet> {
            let mut out = CapsHashSet::new();
            for c in set.iter().flatten() {
                let name = format!("CAP_{c}");
                let cap = Capability::from_str(&name).map_err(|_| {
                    Error::config(format!("process.capabilities.{field}"), format!("unknown capability {name}"))
                })?;
                if supported.contains(&cap) && !held.contains(&cap) {
                    return Err(Error::config(
                        format!("process.capabilities.{field}"),
                        format!("{name} is not in the runtime's own bounding set, so no container process can have it"),
                    ));
                }
                if supported.contains(&cap) {
                    out.insert(cap);
                } else if !plan.unknown_to_kernel.contains(&name) {
                    plan.unknown_to_kernel.push(name);
                }
            }
            Ok(out)
        };
        let bounding = convert(spec.bounding(), "bounding")?;
        let effective = convert(spec.effective(), "effective")?;
        let permitted = convert(spec.permitted(), "permitted")?;
        let inheritable = convert(spec.inheritable(), "inheritable")?;
        let ambient = convert(spec.ambient(), "ambient")?;
        plan.bounding = bounding;
        plan.effective = effective;
        plan.permitted = permitted;
        plan.inheritable = inheritable;
        plan.ambient = ambient;
        Ok(plan)
    }

    /// Drops the bounding set; must run while the process still has CAP_SETPCAP.
    pub fn drop_bounding(&self) -> Result<()> {
        for &cap in &probed().supported {
            if !self.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|e| cap_err("bounding", e))?;
            }
        }
        Ok(())
    }

    /// Sets the inheritable, effective, permitted and ambient sets, in an order the
    /// kernel accepts (inheritable needs CAP_SETPCAP; effective must stay a subset of
    /// permitted; ambient needs both permitted and inheritable). With
    /// `keep_sys_admin`, CAP_SYS_ADMIN stays in the effective and permitted sets
    /// (for loading a seccomp filter last; execve drops it again).
    pub fn apply(&self, keep_sys_admin: bool) -> Result<()> {
        caps::set(None, CapSet::Inheritable, &self.inheritable).map_err(|e| cap_err("inheritable", e))?;
        let mut effective: CapsHashSet = self.effective.intersection(&self.permitted).copied().collect();
        let mut permitted = self.permitted.clone();
        if keep_sys_admin {
            effective.insert(Capability::CAP_SYS_ADMIN);
            permitted.insert(Capability::CAP_SYS_ADMIN);
        }
        caps::set(None, CapSet::Effective, &effective).map_err(|e| cap_err("effective", e))?;
        caps::set(None, CapSet::Permitted, &permitted).map_err(|e| cap_err("permitted", e))?;
        for cap in &self.ambient {
            if self.permitted.contains(cap) && self.inheritable.contains(cap) {
                caps::raise(None, CapSet::Ambient, *cap).map_err(|e| cap_err("ambient", e))?;
            }
        }
        Ok(())
    }
}

/// The capabilities the running kernel knows, and those in this process's
/// bounding set.
struct Probed {
    supported: CapsHashSet,
    held: CapsHashSet,
}

/// Probes both sets once per process: one `PR_CAPBSET_READ` per capability
/// answers both questions (EINVAL: unknown to the kernel; 0 or 1: in the
/// bounding set or not), where asking each separately, at plan and at drop,
/// took three rounds (123 of the 169 prctl calls of one `run`). Neither
/// changes during a runtime process's life; a container's init, cloned
/// after the plan is made, inherits the answer.
fn probed() -> &'static Probed {
    static PROBED: std::sync::OnceLock<Probed> = std::sync::OnceLock::new();
    PROBED.get_or_init(|| {
        let mut p = Probed { supported: CapsHashSet::new(), held: CapsHashSet::new() };
        for cap in caps::all() {
            if let Ok(held) = caps::has_cap(None, CapSet::Bounding, cap) {
                p.supported.insert(cap);
                if held {
                    p.held.insert(cap);
                }
            }
        }
        p
    })
}

fn cap_err(set: &str, e: caps::errors::CapsError) -> Error {
    Error::Init(format!("set {set} capabilities: {e}"))
}
