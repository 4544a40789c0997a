//! Container-wide settings every process of the container gets, the init and
//! each exec'd one alike: `linux.personality` and `linux.memoryPolicy`
//! (NUMA, through set_mempolicy(2); inherited across fork and execve).
//! Checked when the container is created, applied in each process before it
//! drops privileges.

use crate::{Error, Result};
use oci_spec::runtime::{Linux, LinuxMemoryPolicy, LinuxPersonality, MemoryPolicyFlagType, MemoryPolicyModeType};

/// The checked settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    /// personality(2)'s argument.
    pub personality: Option<libc::c_ulong>,
    /// set_mempolicy(2)'s arguments.
    pub memory: Option<MemoryPolicy>,
}

/// set_mempolicy(2)'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPolicy {
    /// The mode with its flags.
    pub mode: i32,
    /// The node mask, 64 nodes a word.
    pub mask: Vec<u64>,
}

/// The memory policy modes this runtime applies (all of runtime-spec 1.3's).
pub const MODES: &[&str] = &[
    "MPOL_DEFAULT",
    "MPOL_PREFERRED",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_LOCAL",
    "MPOL_PREFERRED_MANY",
    "MPOL_WEIGHTED_INTERLEAVE",
];

/// The memory policy flags this runtime applies.
pub const FLAGS: &[&str] = &["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"];

/// The largest node number accepted (the kernel's MAX_NUMNODES is at most 1024).
const MAX_NODE: u32 = 1023;

impl Policies {
    /// Checks and translates `linux`'s settings; `online` lists the host's
    /// online NUMA nodes (the nodes of a policy must be among them, unless
    /// they are relative).
    pub fn new(linux: Option<&Linux>, online: &[u32]) -> Result<Policies> {
        let Some(linux) = linux else { return Ok(Policies::default()) };
        Ok(Policies {
            personality: linux.personality().as_ref().map(personality).transpose()?,
            memory: linux.memory_policy().as_ref().map(|p| memory_policy(p, online)).transpose()?,
        })
    }

    /// For this host: its online nodes from sysfs (node 0 alone on a kernel
    /// without NUMA).
    pub fn for_host(linux: Option<&Linux>) -> Result<Policies> {
        let needs_nodes = linux.is_some_and(|l| l.memory_policy().is_some());
        let online = if needs_nodes { online_nodes() } else { Vec::new() };
        Policies::new(linux, &online)
    }

    /// Applies them to the calling process.
    pub fn apply(&self) -> Result<()> {
        if let Some(p) = self.personality {
            // SAFETY: personality takes a plain integer and only changes this process.
            if unsafe { libc::personality(p) } < 0 {
                return Err(Error::sys("personality", format!("linux.personality {p:#x}"), nix::Error::last()));
            }
        }
        if let Some(m) = &self.memory {
            let maxnode = (m.mask.len() * 64) as u64 + 1;
            let mask = if m.mask.is_empty() { std::ptr::null() } else { m.mask.as_ptr() };
            // SAFETY: `mask` points to `mask.len()` words (or is null with no nodes),
            // and the kernel reads at most `maxnode - 1` bits of it.
            if unsafe { libc::syscall(libc::SYS_set_mempolicy, m.mode, mask, maxnode) } < 0 {
                return Err(Error::sys("set_mempolicy", "linux.memoryPolicy", nix::Error::last()));
            }
        }
        Ok(())
    }
}

fn personality(p: &LinuxPersonality) -> Result<libc::c_ulong> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    let mut persona: libc::c_ulong = match p.domain() {
        D::PerLinux => 0x0000,
        D::PerLinux32 => 0x0008,
    };
    for f in p.flags().iter().flatten() {
        persona |= match f.as_str() {
            "ADDR_NO_RANDOMIZE" => 0x0040000,
            "ADDR_COMPAT_LAYOUT" => 0x0200000,
            "READ_IMPLIES_EXEC" => 0x0400000,
            "ADDR_LIMIT_32BIT" => 0x0800000,
            "SHORT_INODE" => 0x1000000,
            "WHOLE_SECONDS" => 0x2000000,
            "STICKY_TIMEOUTS" => 0x4000000,
            "ADDR_LIMIT_3GB" => 0x8000000,
            "MMAP_PAGE_ZERO" => 0x0100000,
            "UNAME26" => 0x0020000,
            "FDPIC_FUNCPTRS" => 0x0080000,
            other => return Err(Error::config("linux.personality.flags", format!("unknown flag {other:?}"))),
        };
    }
    Ok(persona)
}

/// Parses a node list ("0-3,7").
pub fn parse_nodes(s: &str, field: &str) -> Result<Vec<u32>> {
    let mut nodes = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num =
            |t: &str| {
                t.trim().parse::<u32>().ok().filter(|n| *n <= MAX_NODE).ok_or_else(|| {
                    Error::config(field, format!("{t:?} in {s:?} is not a node number (0 to {MAX_NODE})"))
                })
            };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if a > b {
            return Err(Error::config(field, format!("the range {part:?} in {s:?} runs backwards")));
        }
        nodes.extend(a..=b);
    }
    nodes.sort_unstable();
    nodes.dedup();
    Ok(nodes)
}

/// The host's online NUMA nodes.
pub fn online_nodes() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|s| parse_nodes(s.trim(), "online nodes").ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| vec![0])
}

fn memory_policy(p: &LinuxMemoryPolicy, online: &[u32]) -> Result<MemoryPolicy> {
    use MemoryPolicyModeType as M;
    const FIELD: &str = "linux.memoryPolicy";
    let (mode, name, nodes_needed) = match p.mode() {
        M::MpolDefault => (0, "MPOL_DEFAULT", Some(false)),
        M::MpolPreferred => (1, "MPOL_PREFERRED", None),
        M::MpolBind => (2, "MPOL_BIND", Some(true)),
        M::MpolInterleave => (3, "MPOL_INTERLEAVE", Some(true)),
        M::MpolLocal => (4, "MPOL_LOCAL", Some(false)),
        M::MpolPreferredMany => (5, "MPOL_PREFERRED_MANY", Some(true)),
        M::MpolWeightedInterleave => (6, "MPOL_WEIGHTED_INTERLEAVE", Some(true)),
    };
    let nodes = parse_nodes(p.nodes().as_deref().unwrap_or_default(), &format!("{FIELD}.nodes"))?;
    match nodes_needed {
        Some(true) if nodes.is_empty() => {
            return Err(Error::config(format!("{FIELD}.nodes"), format!("{name} needs at least one node")))
        }
        Some(false) if !nodes.is_empty() => {
            return Err(Error::config(format!("{FIELD}.nodes"), format!("{name} takes no nodes")))
        }
        _ => {}
    }
    let mut flags = 0;
    let mut relative = false;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
            MemoryPolicyFlagType::MpolFRelativeNodes => {
                relative = true;
                1 << 14
            }
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
        };
    }
    if flags & (3 << 14) == 3 << 14 {
        return Err(Error::config(
            format!("{FIELD}.flags"),
            "MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other",
        ));
    }
    if flags & (1 << 13) != 0 && !matches!(p.mode(), M::MpolBind | M::MpolPreferredMany) {
        return Err(Error::config(
            format!("{FIELD}.flags"),
            format!("MPOL_F_NUMA_BALANCING goes with MPOL_BIND or MPOL_PREFERRED_MANY, not {name}"),
        ));
    }
    if flags != 0 && nodes_needed == Some(false) {
        return Err(Error::config(format!("{FIELD}.flags"), format!("{name} takes no flags")));
    }
    // Relative nodes are positions in whatever set the process may use.
    if !relative {
        if let Some(n) = nodes.iter().find(|n| !online.contains(n)) {
            let list: Vec<String> = online.iter().map(u32::to_string).collect();
            return Err(Error::config(
                format!("{FIELD}.nodes"),
                format!("node {n} is not online on this host (online: {})", list.join(",")),
            ));
        }
    }
    let mut mask = vec![0u64; nodes.last().map(|n| *n as usize / 64 + 1).unwrap_or(0)];
    for n in &nodes {
        mask[*n as usize / 64] |= 1 << (n % 64);
    }
    Ok(MemoryPolicy { mode: mode | flags, mask })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(v: serde_json::Value) -> Linux {
        serde_json::from_value(v).expect("linux")
    }

    fn policy(v: serde_json::Value, online: &[u32]) -> Result<Policies> {
        Policies::new(Some(&linux(serde_json::json!({ "memoryPolicy": v }))), online)
    }

    #[test]
    fn node_lists() {
        assert_eq!(parse_nodes("0-3,7", "f").expect("ok"), vec![0, 1, 2, 3, 7]);
        assert_eq!(parse_nodes("", "f").expect("ok"), Vec::<u32>::new());
        assert_eq!(parse_nodes("2,2,1", "f").expect("ok"), vec![1, 2]);
        for bad in ["a", "3-1", "0-", "5000", "-1"] {
            assert!(
                parse_nodes(bad, "linux.memoryPolicy.nodes").is_err_and(|e| e.to_string().contains("nodes")),
                "{bad}"
            );
        }
    }

    #[test]
    fn memory_policies() {
        let p = policy(
            serde_json::json!({ "mode": "MPOL_BIND", "nodes": "0,65", "flags": ["MPOL_F_STATIC_NODES"] }),
            &[0, 65],
        )
        .expect("ok");
        assert_eq!(p.memory, Some(MemoryPolicy { mode: 2 | 1 << 15, mask: vec![1, 2] }));
        let p = policy(serde_json::json!({ "mode": "MPOL_LOCAL" }), &[0]).expect("ok");
        assert_eq!(p.memory, Some(MemoryPolicy { mode: 4, mask: vec![] }));
        // Relative nodes need not be online.
        assert!(policy(
            serde_json::json!({ "mode": "MPOL_INTERLEAVE", "nodes": "3", "flags": ["MPOL_F_RELATIVE_NODES"] }),
            &[0]
        )
        .is_ok());
    }

    #[test]
    fn bad_memory_policies_name_their_field() {
        let cases = [
            (
                serde_json::json!({ "mode": "MPOL_BIND", "nodes": "1" }),
                "linux.memoryPolicy.nodes: node 1 is not online",
            ),
            (serde_json::json!({ "mode": "MPOL_BIND" }), "linux.memoryPolicy.nodes: MPOL_BIND needs"),
            (
                serde_json::json!({ "mode": "MPOL_DEFAULT", "nodes": "0" }),
                "linux.memoryPolicy.nodes: MPOL_DEFAULT takes no",
            ),
            (
                serde_json::json!({ "mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"] }),
                "linux.memoryPolicy.flags",
            ),
            (
                serde_json::json!({ "mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_NUMA_BALANCING"] }),
                "linux.memoryPolicy.flags: MPOL_F_NUMA_BALANCING",
            ),
            (serde_json::json!({ "mode": "MPOL_BIND", "nodes": "0-x" }), "linux.memoryPolicy.nodes"),
        ];
        for (v, want) in cases {
            let e = policy(v.clone(), &[0]).expect_err("refused").to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
