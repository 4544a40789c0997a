//! Intel RDT (`linux.intelRdt`) through the resctrl filesystem, as runc does:
//! the container's processes go into a resctrl group (a class of service,
//! `closID`, or one named after the container) whose `schemata` file holds
//! the cache and memory bandwidth allocations, and with `enableMonitoring`
//! into a monitoring group of their own below it.
//!
//! A group the config names and that exists already is used as it is: the
//! schemata the config gives must match what it holds. One that does not
//! exist is made, written, and removed again with the container.

use crate::{Error, Result};
use oci_spec::runtime::LinuxIntelRdt;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FIELD: &str = "linux.intelRdt";

/// What the config asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The class of service (None: one named after the container).
    pub clos_id: Option<String>,
    /// Lines for the group's schemata file.
    pub schemata: Vec<String>,
    /// A monitoring group of the container's own.
    pub monitoring: bool,
}

/// What was set up, kept in the container's state for exec and delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Groups {
    /// The control group the processes are in.
    pub group: PathBuf,
    /// Whether the runtime made it (and removes it).
    pub created: bool,
    /// The container's monitoring group, if any (always the runtime's).
    #[serde(default)]
    pub monitor: Option<PathBuf>,
}

impl Groups {
    /// The group a process of the container is written into.
    pub fn tasks_group(&self) -> &Path {
        self.monitor.as_deref().unwrap_or(&self.group)
    }
}

fn check_line(line: &str, field: &str, prefixes: &[&str]) -> Result<String> {
    let line = line.trim();
    if line.contains('\n') || line.is_empty() {
        return Err(Error::config(field, format!("{line:?} is not one schemata line")));
    }
    let Some((resource, domains)) = line.split_once(':') else {
        return Err(Error::config(field, format!("{line:?} has no RESOURCE: prefix")));
    };
    if !prefixes.is_empty() && !prefixes.contains(&resource.trim()) {
        return Err(Error::config(field, format!("{line:?} must start with {}", prefixes.join(": or ") + ":")));
    }
    for d in domains.split(';').filter(|d| !d.trim().is_empty()) {
        if d.split_once('=').is_none_or(|(id, v)| id.trim().is_empty() || v.trim().is_empty()) {
            return Err(Error::config(field, format!("{d:?} in {line:?} is not DOMAIN=VALUE")));
        }
    }
    Ok(line.to_string())
}

/// Checks `linux.intelRdt`.
pub fn plan(rdt: &LinuxIntelRdt) -> Result<Plan> {
    let clos_id = rdt.clos_id().clone().filter(|c| !c.is_empty());
    if let Some(c) = &clos_id {
        if c != "/" && (c == "." || c == ".." || c.contains('/') || c.contains('\n')) {
            return Err(Error::config(format!("{FIELD}.closID"), format!("{c:?} is not a resctrl group name")));
        }
    }
    let mut schemata = Vec::new();
    if let Some(l3) = rdt.l3_cache_schema().as_deref().filter(|s| !s.is_empty()) {
        for l in l3.lines() {
            schemata.push(check_line(l, &format!("{FIELD}.l3CacheSchema"), &["L3", "L3CODE", "L3DATA"])?);
        }
    }
    if let Some(mb) = rdt.mem_bw_schema().as_deref().filter(|s| !s.is_empty()) {
        schemata.push(check_line(mb, &format!("{FIELD}.memBwSchema"), &["MB"])?);
    }
    // The complete schemata replace the two fields above (runtime-spec 1.3).
    if let Some(lines) = rdt.schemata().as_deref().filter(|s| !s.is_empty()) {
        schemata = lines
            .iter()
            .enumerate()
            .map(|(i, l)| check_line(l, &format!("{FIELD}.schemata[{i}]"), &[]))
            .collect::<Result<_>>()?;
    }
    #[allow(deprecated)]
    let monitoring =
        *rdt.enable_monitoring() == Some(true) || *rdt.enable_cmt() == Some(true) || *rdt.enable_mbm() == Some(true);
    Ok(Plan { clos_id, schemata, monitoring })
}

/// Where resctrl is mounted, from mountinfo.
pub fn find_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter(|l| l.split(" - ").nth(1).is_some_and(|r| r.starts_with("resctrl ")))
        .filter_map(|l| l.split(' ').nth(4).map(|p| PathBuf::from(crate::cgroups::unescape_mountinfo(p))))
        .next_back()
}

/// The resctrl mount, or the error that names the field and the reason.
pub fn mount() -> Result<PathBuf> {
    find_mount().ok_or_else(|| {
        Error::config(
            FIELD,
            "Intel RDT needs the resctrl filesystem, which is not mounted on this host (/sys/fs/resctrl)",
        )
    })
}

/// The domain=value entries of a schemata line, by resource (spaces and
/// leading zeros of values ignored, as the kernel prints its own way).
fn entries(line: &str) -> (String, Vec<(String, String)>) {
    let (res, domains) = line.split_once(':').unwrap_or((line, ""));
    let mut e: Vec<(String, String)> = domains
        .split(';')
        .filter_map(|d| d.split_once('='))
        .map(|(id, v)| {
            let v = v.trim().to_ascii_lowercase();
            let v = v.trim_start_matches('0');
            (id.trim().to_string(), if v.is_empty() { "0".to_string() } else { v.to_string() })
        })
        .collect();
    e.sort();
    (res.trim().to_string(), e)
}

/// Whether every entry `want` gives is what `have` (a schemata file) holds.
fn schemata_match(want: &[String], have: &str) -> Option<String> {
    let have: Vec<(String, Vec<(String, String)>)> = have.lines().map(entries).collect();
    for w in want {
        let (res, doms) = entries(w);
        let held = have.iter().find(|(r, _)| *r == res).map(|(_, d)| d);
        let ok = held.is_some_and(|h| doms.iter().all(|d| h.contains(d)));
        if !ok {
            return Some(w.clone());
        }
    }
    None
}

/// Sets the groups up under the resctrl mount `root` for container `id`;
/// nothing is left if it fails.
pub fn setup(root: &Path, plan: &Plan, id: &str) -> Result<Groups> {
    let name = plan.clos_id.as_deref().unwrap_or(id);
    let group = if name == "/" { root.to_path_buf() } else { root.join(name) };
    let created = match std::fs::create_dir(&group) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Error::io("create the resctrl group", &group, e)),
    };
    let mut groups = Groups { group, created, monitor: None };
    let result = (|| -> Result<()> {
        let file = groups.group.join("schemata");
        if !plan.schemata.is_empty() {
            if groups.created {
                write_schemata(&groups, &plan.schemata)?;
            } else {
                // A group that was there: used as it is, if it is what the config says.
                let have = std::fs::read_to_string(&file).map_err(|e| Error::io("read", &file, e))?;
                if let Some(line) = schemata_match(&plan.schemata, &have) {
                    return Err(Error::config(
                        FIELD,
                        format!(
                            "the resctrl group {} exists with other schemata than {line:?} (it holds {:?})",
                            groups.group.display(),
                            have.trim()
                        ),
                    ));
                }
            }
        }
        if plan.monitoring {
            if !groups.group.join("mon_groups").is_dir() {
                return Err(Error::config(
                    format!("{FIELD}.enableMonitoring"),
                    format!("resctrl here has no monitoring (no mon_groups in {})", groups.group.display()),
                ));
            }
            let mon = groups.group.join("mon_groups").join(id);
            std::fs::create_dir(&mon).map_err(|e| Error::io("create the resctrl monitoring group", &mon, e))?;
            groups.monitor = Some(mon);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(groups),
        Err(e) => {
            remove(&groups);
            Err(e)
        }
    }
}

/// Writes schemata `lines` to the group (resctrl changes only the resources
/// and domains they name).
pub fn write_schemata(groups: &Groups, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let file = groups.group.join("schemata");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text)
        .map_err(|e| Error::config(FIELD, format!("resctrl refused the schemata {lines:?}: {e}")))
}

/// The `tasks` file of the group the container's processes go in, open for
/// writing: the process that forks a container process writes "0" (itself)
/// there first, so its child starts inside the groups.
pub fn open_tasks(groups: &Groups) -> Result<std::fs::File> {
    let tasks = groups.tasks_group().join("tasks");
    std::fs::OpenOptions::new().write(true).open(&tasks).map_err(|e| Error::io("open", &tasks, e))
}

fn remove_dir(dir: &Path) {
    // resctrl removes a group with its files; anything else (a test's tree) needs them gone first.
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.raw_os_error() == Some(libc::ENOTEMPTY) && find_mount().is_none_or(|m| !dir.starts_with(m)) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Removes what the runtime made: the monitoring group, and the control
/// group if it was the runtime's.
pub fn remove(groups: &Groups) {
    if let Some(mon) = &groups.monitor {
        remove_dir(mon);
    }
    if groups.created {
        remove_dir(&groups.group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdt(v: serde_json::Value) -> LinuxIntelRdt {
        serde_json::from_value(v).expect("intelRdt")
    }

    /// A resctrl tree as the kernel shows it: a root group and one class of
    /// service `existing`, each with schemata, tasks and mon_groups.
    struct Fake(PathBuf);

    impl Fake {
        fn new(tag: &str) -> Fake {
            let root = std::env::temp_dir().join(format!("strata-resctrl-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for g in [root.clone(), root.join("existing")] {
                std::fs::create_dir_all(g.join("mon_groups")).expect("mkdir");
                std::fs::write(g.join("schemata"), "    L3:0=7ff;1=7ff\n    MB:0=100;1=100\n").expect("write");
                std::fs::write(g.join("tasks"), "").expect("write");
            }
            Fake(root)
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn plans() {
        let p = plan(&rdt(
            serde_json::json!({ "closID": "gold", "l3CacheSchema": "L3:0=f0;1=f", "memBwSchema": "MB:0=20" }),
        ))
        .expect("ok");
        assert_eq!(p.clos_id.as_deref(), Some("gold"));
        assert_eq!(p.schemata, vec!["L3:0=f0;1=f", "MB:0=20"]);
        // schemata replace the two fields; enableMonitoring asks for a monitoring group.
        let p = plan(&rdt(
            serde_json::json!({ "l3CacheSchema": "L3:0=f", "schemata": ["L2:0=3"], "enableMonitoring": true }),
        ))
        .expect("ok");
        assert_eq!((p.schemata, p.monitoring, p.clos_id), (vec!["L2:0=3".to_string()], true, None));
    }

    #[test]
    fn bad_plans_name_their_field() {
        for (v, want) in [
            (serde_json::json!({ "closID": "../x" }), "linux.intelRdt.closID"),
            (serde_json::json!({ "l3CacheSchema": "MB:0=20" }), "linux.intelRdt.l3CacheSchema"),
            (serde_json::json!({ "memBwSchema": "MB:0" }), "linux.intelRdt.memBwSchema"),
            (serde_json::json!({ "schemata": ["L3:0=f", "no prefix"] }), "linux.intelRdt.schemata[1]"),
        ] {
            let e = plan(&rdt(v.clone())).expect_err("refused").to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn a_new_group_is_made_written_used_and_removed() {
        let fake = Fake::new("new");
        let p = plan(&rdt(serde_json::json!({ "l3CacheSchema": "L3:0=f0", "memBwSchema": "MB:0=20" }))).expect("ok");
        let g = setup(&fake.0, &p, "c1").expect("setup");
        assert_eq!((g.group.clone(), g.created, g.monitor.clone()), (fake.0.join("c1"), true, None));
        // (resctrl makes a group's files itself; the fake tree gets them here.)
        std::fs::write(fake.0.join("c1/tasks"), "").expect("write");
        assert_eq!(std::fs::read_to_string(fake.0.join("c1/schemata")).expect("read"), "L3:0=f0\nMB:0=20\n");
        std::io::Write::write_all(&mut open_tasks(&g).expect("open"), b"0").expect("write");
        assert_eq!(std::fs::read_to_string(fake.0.join("c1/tasks")).expect("read"), "0");
        remove(&g);
        assert!(!fake.0.join("c1").exists());
    }

    #[test]
    fn monitoring_gets_a_group_of_the_containers_own() {
        let fake = Fake::new("mon");
        let p = plan(&rdt(serde_json::json!({ "closID": "existing", "enableMonitoring": true }))).expect("ok");
        let g = setup(&fake.0, &p, "c5").expect("setup");
        // The processes go in the monitoring group (the kernel counts them in its parent too).
        assert_eq!(g.monitor.as_deref(), Some(fake.0.join("existing/mon_groups/c5").as_path()));
        std::fs::write(fake.0.join("existing/mon_groups/c5/tasks"), "").expect("write");
        std::io::Write::write_all(&mut open_tasks(&g).expect("open"), b"0").expect("write");
        assert_eq!(std::fs::read_to_string(fake.0.join("existing/mon_groups/c5/tasks")).expect("read"), "0");
        remove(&g);
        assert!(!fake.0.join("existing/mon_groups/c5").exists() && fake.0.join("existing").exists());
        // Without monitoring in resctrl: refused naming the field, nothing left.
        std::fs::remove_dir(fake.0.join("existing/mon_groups")).expect("rmdir");
        let e = setup(&fake.0, &p, "c6").expect_err("refused").to_string();
        assert!(e.contains("linux.intelRdt.enableMonitoring"), "{e}");
    }

    #[test]
    fn an_existing_group_is_used_only_if_its_schemata_match() {
        let fake = Fake::new("existing");
        let same = plan(&rdt(serde_json::json!({ "closID": "existing", "l3CacheSchema": "L3:1=7FF" }))).expect("ok");
        let g = setup(&fake.0, &same, "c2").expect("setup");
        assert!(!g.created);
        std::io::Write::write_all(&mut open_tasks(&g).expect("open"), b"0").expect("write");
        assert_eq!(std::fs::read_to_string(fake.0.join("existing/tasks")).expect("read"), "0");
        remove(&g);
        assert!(fake.0.join("existing").exists(), "a group the runtime did not make was removed");
        let other = plan(&rdt(serde_json::json!({ "closID": "existing", "memBwSchema": "MB:0=50" }))).expect("ok");
        let e = setup(&fake.0, &other, "c3").expect_err("refused").to_string();
        assert!(e.contains("linux.intelRdt") && e.contains("MB:0=50"), "{e}");
        // A monitoring group that cannot be made leaves nothing of its own.
        let mon = plan(&rdt(serde_json::json!({ "closID": "gone", "enableMonitoring": true }))).expect("ok");
        std::fs::create_dir(fake.0.join("gone")).expect("mkdir");
        assert!(setup(&fake.0, &mon, "c4").is_err());
        assert!(fake.0.join("gone").exists());
    }
}
