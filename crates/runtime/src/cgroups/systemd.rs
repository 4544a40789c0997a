//! The systemd cgroup driver (`--systemd-cgroup`): the container's cgroup is a
//! transient scope unit that systemd creates, in a slice named by
//! `linux.cgroupsPath` (`slice:prefix:name`), so that a host whose cgroup tree
//! is systemd's keeps it that way.
//!
//! systemd is reached over the system bus, as every systemd host has it
//! (its private socket names itself in a way D-Bus clients other than
//! systemd's own reject). The scope is started with `Delegate=yes` and
//! the resources systemd has properties for; what it has none for is written to
//! the cgroup files as with cgroupfs, and device rules stay the runtime's own
//! eBPF program (the scope gets no device policy of systemd's).
//!
//! A scope needs a process when it starts, and the container's init must be
//! cloned straight into its cgroup (its cgroup namespace is rooted there): a
//! placeholder process holds the scope until the init is in it.

use crate::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";
const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// How long a start or stop job may take before the runtime gives up on it.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);
/// systemd's "infinity" for limits.
const INFINITY: u64 = u64::MAX;

/// Where a container lives under systemd: its slice and its scope unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The slice, as systemd names it (`system.slice`, `kubepods-besteffort.slice`).
    pub slice: String,
    /// The scope unit (`prefix-name.scope`).
    pub name: String,
}

impl Unit {
    /// The unit for a container from `linux.cgroupsPath` (`slice:prefix:name`;
    /// empty: `system.slice:strata:<id>`).
    pub fn from_cgroups_path(cgroups_path: Option<&Path>, id: &str) -> Result<Unit> {
        const FIELD: &str = "linux.cgroupsPath";
        let raw = cgroups_path.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        // A user's instance keeps its units in user.slice.
        let default_slice = if crate::rootless() { "user.slice" } else { "system.slice" };
        if raw.is_empty() {
            return Ok(Unit { slice: default_slice.into(), name: format!("strata-{id}.scope") });
        }
        let parts: Vec<&str> = raw.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return Err(Error::config(
                FIELD,
                format!("{raw:?}: the systemd cgroup driver needs the form \"slice:prefix:name\""),
            ));
        };
        let slice = if slice.is_empty() { default_slice } else { slice };
        slice_path(slice).map_err(|e| Error::config(FIELD, format!("{raw:?}: {e}")))?;
        if name.is_empty() {
            return Err(Error::config(FIELD, format!("{raw:?}: the name part is empty")));
        }
        if name.ends_with(".slice") {
            return Err(Error::config(
                FIELD,
                format!("{raw:?}: a slice as the container's own unit is not supported; name a scope"),
            ));
        }
        let unit = if prefix.is_empty() { format!("{name}.scope") } else { format!("{prefix}-{name}.scope") };
        check_unit_name(&unit).map_err(|e| Error::config(FIELD, format!("{raw:?}: {e}")))?;
        Ok(Unit { slice: slice.to_string(), name: unit })
    }

    /// The scope's cgroup relative to systemd's root, as systemd lays it out.
    pub fn cgroup_path(&self) -> PathBuf {
        slice_path(&self.slice).unwrap_or_default().join(&self.name)
    }
}

/// Whether a `linux.cgroupsPath` has the systemd driver's form
/// (`name.slice:prefix:name`), as containerd's CRI writes it when the pod's
/// cgroup parent is a slice (kubelet's systemd cgroup driver).
pub fn is_systemd_path(cgroups_path: &str) -> bool {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    parts.len() == 3 && parts[0].ends_with(".slice") && !parts[0].contains('/')
}

/// The cgroup path of a slice: `a-b-c.slice` is `a.slice/a-b.slice/a-b-c.slice`,
/// `-.slice` the root.
pub fn slice_path(slice: &str) -> std::result::Result<PathBuf, String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(format!("{slice:?} is not a slice (it must end in .slice)"));
    };
    check_unit_name(slice)?;
    if stem == "-" {
        return Ok(PathBuf::new());
    }
    if stem.is_empty() || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err(format!("{slice:?} is not a valid slice name"));
    }
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Ok(path)
}

/// systemd's rules for unit names: at most 255 bytes of `[A-Za-z0-9:_.\-\\@]`.
fn check_unit_name(name: &str) -> std::result::Result<(), String> {
    if name.len() > 255 {
        return Err(format!("unit name {name:?} is longer than 255 bytes"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || ":_.-\\@".contains(*c))) {
        return Err(format!("unit name {name:?} has {c:?}, which systemd does not allow"));
    }
    Ok(())
}

/// The unit properties for `resources`: what systemd manages itself. The
/// cgroup files are written as well (they carry what systemd has no property
/// for, and the exact values where systemd rounds).
pub fn properties(r: &LinuxResources) -> Result<Vec<(&'static str, OwnedValue)>> {
    use super::resources::{blkio_to_io_weight, shares_to_weight};
    let mut out: Vec<(&'static str, OwnedValue)> = Vec::new();
    let limit = |v: i64| if v < 0 { INFINITY } else { v as u64 };
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit().filter(|&l| l != 0) {
            out.push(("MemoryMax", limit(l).into()));
        }
        if let Some(l) = m.reservation() {
            out.push(("MemoryLow", limit(l).into()));
        }
        if let Some(s) = m.swap().filter(|&s| s != 0) {
            // Validated (swap >= limit, a limit given) by the file plan.
            let v = match m.limit() {
                _ if s < 0 => INFINITY,
                Some(l) if l >= 0 && s >= l => (s - l) as u64,
                _ => INFINITY,
            };
            out.push(("MemorySwapMax", v.into()));
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|&s| s != 0) {
            out.push(("CPUWeight", shares_to_weight(s).into()));
        }
        let period = c.period().unwrap_or(100_000);
        if period == 0 {
            return Err(Error::config("linux.resources.cpu.period", "must be greater than zero"));
        }
        if c.period().is_some() {
            out.push(("CPUQuotaPeriodUSec", period.into()));
        }
        match c.quota().filter(|&q| q != 0) {
            Some(q) if q > 0 => {
                // systemd's quota is per second, in steps of 10 ms (1%): round up,
                // never below what was asked.
                let per_sec = (q as u64).saturating_mul(1_000_000) / period;
                out.push(("CPUQuotaPerSecUSec", per_sec.div_ceil(10_000).saturating_mul(10_000).into()));
            }
            Some(_) => out.push(("CPUQuotaPerSecUSec", INFINITY.into())),
            None if c.period().is_some() => out.push(("CPUQuotaPerSecUSec", INFINITY.into())),
            None => {}
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            out.push(("AllowedCPUs", bytes(bitmask(cpus, "linux.resources.cpu.cpus")?)?));
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            out.push(("AllowedMemoryNodes", bytes(bitmask(mems, "linux.resources.cpu.mems")?)?));
        }
    }
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        out.push(("TasksMax", limit(p.limit()).into()));
    }
    if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()).filter(|&w| w != 0) {
        out.push(("IOWeight", blkio_to_io_weight(w).into()));
    }
    Ok(out)
}

/// A byte array ("ay") property value.
fn bytes(b: Vec<u8>) -> Result<OwnedValue> {
    OwnedValue::try_from(Value::from(b)).map_err(|e| Error::Init(format!("a D-Bus byte array: {e}")))
}

/// A cpu list ("0-3,8") as systemd's bitmask bytes (bit n of byte n/8).
fn bitmask(list: &str, field: &str) -> Result<Vec<u8>> {
    let cpus = crate::process::plan::parse_cpu_list(list).map_err(|e| Error::config(field, e))?;
    let mut bytes = Vec::new();
    for cpu in cpus {
        let i = cpu / 8;
        if bytes.len() <= i {
            bytes.resize(i + 1, 0);
        }
        bytes[i] |= 1 << (cpu % 8);
    }
    Ok(bytes)
}

/// How a job ended: systemd's result ("done", "failed", "timeout", ...), or
/// lost track of.
enum JobEnd {
    Finished(String),
    Lost(String),
}

/// A connection to systemd. Dropping it leaves no thread behind: the runtime
/// forks after talking to systemd.
pub struct Systemd {
    conn: Option<zbus::Connection>,
    rt: tokio::runtime::Runtime,
}

impl Systemd {
    /// Connects to systemd: the system's through the system bus, or, rootless,
    /// the user's own instance through the session bus.
    pub fn connect() -> Result<Systemd> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::io("start", "the D-Bus client", e))?;
        let user = crate::rootless();
        let conn = rt.block_on(async {
            let builder = if user { zbus::connection::Builder::session() } else { zbus::connection::Builder::system() };
            match builder {
                Ok(b) => b.build().await,
                Err(e) => Err(e),
            }
        });
        let conn = conn.map_err(|e| {
            let bus = if user {
                "the session bus of the user's systemd instance ($DBUS_SESSION_BUS_ADDRESS, else \
                 $XDG_RUNTIME_DIR/bus)"
                    .to_string()
            } else {
                format!("the system bus ({SYSTEM_BUS})")
            };
            Error::Init(format!("the systemd cgroup driver cannot reach systemd on {bus}: {e}"))
        })?;
        Ok(Systemd { conn: Some(conn), rt })
    }

    fn dbus_error(what: &str, e: zbus::Error) -> Error {
        Error::Init(format!("systemd: {what}: {e}"))
    }

    fn conn(&self) -> &zbus::Connection {
        self.conn.as_ref().expect("connected until dropped")
    }

    async fn manager(&self) -> zbus::Result<zbus::Proxy<'static>> {
        zbus::proxy::Builder::new(self.conn())
            .destination(DEST)?
            .path(MANAGER_PATH)?
            .interface(MANAGER)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
    }

    /// Runs the job `start` returns and waits for it. An error is the call's
    /// own (no job was made); a job that ran reports how it ended.
    async fn run_job<F>(&self, start: F) -> zbus::Result<JobEnd>
    where
        F: std::future::Future<Output = zbus::Result<OwnedObjectPath>>,
    {
        use futures_lite::StreamExt;
        let mgr = self.manager().await?;
        // Signals reach a client only once it subscribed; one already subscribed
        // (on the bus) gets an error that changes nothing.
        let _ = mgr.call_method("Subscribe", &()).await;
        let mut removed = mgr.receive_signal("JobRemoved").await?;
        let job = start.await?;
        let wait = async {
            while let Some(msg) = removed.next().await {
                if let Ok((_, path, _, result)) = msg.body().deserialize::<(u32, OwnedObjectPath, String, String)>() {
                    if path == job {
                        return JobEnd::Finished(result);
                    }
                }
            }
            JobEnd::Lost("the connection to systemd closed".into())
        };
        Ok(tokio::time::timeout(JOB_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| JobEnd::Lost(format!("job {} did not finish within {JOB_TIMEOUT:?}", job.as_str()))))
    }

    /// Starts the transient scope `unit` around `pid`, delegated, with
    /// `props`, and returns its cgroup (relative to systemd's root). A unit of
    /// that name left failed by an earlier container is reset first.
    pub fn start_scope(&self, unit: &Unit, pid: u32, props: &[(&'static str, OwnedValue)]) -> Result<PathBuf> {
        let mut all: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(format!("strata container {}", unit.name))),
            ("Slice", Value::from(unit.slice.as_str())),
            ("Delegate", Value::from(true)),
            ("PIDs", Value::from(vec![pid])),
            ("DefaultDependencies", Value::from(false)),
            // The runtime's own eBPF program enforces the device rules; systemd
            // attaches none of its own.
            ("DevicePolicy", Value::from("auto")),
            ("MemoryAccounting", Value::from(true)),
            ("CPUAccounting", Value::from(true)),
            ("IOAccounting", Value::from(true)),
            ("TasksAccounting", Value::from(true)),
        ];
        for (k, v) in props {
            all.push((k, Value::from(v.try_clone().map_err(|e| Self::dbus_error("property", e.into()))?)));
        }
        self.rt.block_on(async {
            let mgr = self.manager().await.map_err(|e| Self::dbus_error("connect", e))?;
            let start = || async {
                let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
                self.run_job(async {
                    mgr.call::<_, _, OwnedObjectPath>("StartTransientUnit", &(&unit.name, "replace", &all, &aux)).await
                })
                .await
            };
            let what = || format!("start unit {} in {}", unit.name, unit.slice);
            let mut attempt = 0;
            let result = loop {
                attempt += 1;
                match start().await {
                    Err(zbus::Error::MethodError(name, ..))
                        if name.as_str() == "org.freedesktop.systemd1.UnitExists" && attempt < 20 =>
                    {
                        // A unit of that name is still loaded. An active one is
                        // someone's; one left failed is reset, and a stopped one is
                        // unloaded by systemd shortly.
                        let state = self
                            .unit_property::<String>(&mgr, &unit.name, "org.freedesktop.systemd1.Unit", "ActiveState")
                            .await
                            .unwrap_or_default();
                        if matches!(state.as_str(), "active" | "activating" | "reloading") {
                            return Err(Error::Init(format!("systemd: {}: the unit exists and is {state}", what())));
                        }
                        let _ = mgr.call_method("ResetFailedUnit", &(&unit.name,)).await;
                        tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
                    }
                    other => break other.map_err(|e| Self::dbus_error(&what(), e))?,
                }
            };
            let failure = match result {
                JobEnd::Finished(r) if r == "done" => None,
                JobEnd::Finished(r) => Some(format!("the job's result is {r:?}")),
                JobEnd::Lost(why) => Some(why),
            };
            if let Some(why) = failure {
                // The unit is ours, half-made: it goes (a failed one stays
                // loaded until reset).
                let _ = mgr.call::<_, _, OwnedObjectPath>("StopUnit", &(&unit.name, "replace")).await;
                let _ = mgr.call_method("ResetFailedUnit", &(&unit.name,)).await;
                return Err(Error::Init(format!("systemd: {}: {why}", what())));
            }
            let cgroup = self.unit_property(&mgr, &unit.name, "org.freedesktop.systemd1.Scope", "ControlGroup").await;
            let cgroup: String = cgroup.map_err(|e| Self::dbus_error(&format!("ControlGroup of {}", unit.name), e))?;
            Ok(PathBuf::from(cgroup.trim_start_matches('/')))
        })
    }

    async fn unit_property<T>(&self, mgr: &zbus::Proxy<'_>, unit: &str, iface: &str, name: &str) -> zbus::Result<T>
    where
        T: TryFrom<OwnedValue>,
        T::Error: Into<zbus::Error>,
    {
        let path: OwnedObjectPath = mgr.call("GetUnit", &(unit,)).await?;
        let reply = self
            .conn()
            .call_method(Some(DEST), path.as_str(), Some("org.freedesktop.DBus.Properties"), "Get", &(iface, name))
            .await?;
        let value: OwnedValue = reply.body().deserialize()?;
        T::try_from(value).map_err(Into::into)
    }

    /// Whether `unit` is loaded, and its ActiveState if so.
    pub fn active_state(&self, unit: &str) -> Result<Option<String>> {
        self.rt.block_on(async {
            let mgr = self.manager().await.map_err(|e| Self::dbus_error("connect", e))?;
            match self.unit_property::<String>(&mgr, unit, "org.freedesktop.systemd1.Unit", "ActiveState").await {
                Ok(s) => Ok(Some(s)),
                Err(zbus::Error::MethodError(name, ..)) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => {
                    Ok(None)
                }
                Err(e) => Err(Self::dbus_error(&format!("state of {unit}"), e)),
            }
        })
    }

    /// Moves process `pid` into `unit` (its `sub` cgroup below, if any), as
    /// systemd does on behalf of a user's instance for a process the user
    /// owns but may not move itself.
    pub fn attach(&self, unit: &str, sub: &str, pid: u32) -> Result<()> {
        self.rt.block_on(async {
            let mgr = self.manager().await.map_err(|e| Self::dbus_error("connect", e))?;
            mgr.call_method("AttachProcessesToUnit", &(unit, sub, vec![pid]))
                .await
                .map(|_| ())
                .map_err(|e| Self::dbus_error(&format!("move process {pid} into {unit}"), e))
        })
    }

    /// Sets properties of a running unit (`update`), for its runtime only.
    pub fn set_properties(&self, unit: &str, props: &[(&'static str, OwnedValue)]) -> Result<()> {
        if props.is_empty() {
            return Ok(());
        }
        let mut all: Vec<(&str, Value<'_>)> = Vec::new();
        for (k, v) in props {
            all.push((k, Value::from(v.try_clone().map_err(|e| Self::dbus_error("property", e.into()))?)));
        }
        self.rt.block_on(async {
            let mgr = self.manager().await.map_err(|e| Self::dbus_error("connect", e))?;
            mgr.call_method("SetUnitProperties", &(unit, true, &all))
                .await
                .map(|_| ())
                .map_err(|e| Self::dbus_error(&format!("set properties of {unit}"), e))
        })
    }

    /// Stops `unit` and waits until it is gone (a unit already gone is fine),
    /// clearing a failed state so the name can be used again.
    pub fn stop_unit(&self, unit: &str) -> Result<()> {
        self.rt.block_on(async {
            let mgr = self.manager().await.map_err(|e| Self::dbus_error("connect", e))?;
            let stopped =
                self.run_job(async { mgr.call::<_, _, OwnedObjectPath>("StopUnit", &(unit, "replace")).await }).await;
            match stopped {
                Ok(JobEnd::Finished(_)) => {}
                Ok(JobEnd::Lost(why)) => return Err(Error::Init(format!("systemd: stop unit {unit}: {why}"))),
                Err(zbus::Error::MethodError(name, ..)) if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" => {}
                Err(e) => return Err(Self::dbus_error(&format!("stop unit {unit}"), e)),
            }
            let _ = mgr.call_method("ResetFailedUnit", &(unit,)).await;
            Ok(())
        })
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // The connection ends inside its runtime (its tasks are the runtime's);
        // the runtime then ends with no thread left behind.
        let _guard = self.rt.enter();
        drop(self.conn.take());
    }
}

/// A process that exists only to hold a new scope until the container's init
/// is in it: systemd starts a scope around processes, and the init must be
/// cloned into the scope's cgroup. It ends when this value is dropped (or when
/// the runtime dies, by its parent-death signal).
pub struct Placeholder {
    pid: nix::unistd::Pid,
    // Closing the write end ends the placeholder.
    _hold: OwnedFd,
}

impl Placeholder {
    /// Forks the placeholder.
    pub fn spawn() -> Result<Placeholder> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", "", e))?;
        // SAFETY: the child calls only async-signal-safe functions (prctl, read,
        // _exit) before it exits; it returns to no Rust code.
        match unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", "the scope's placeholder", e))? {
            nix::unistd::ForkResult::Child => {
                drop(write);
                // SAFETY: plain syscalls on values this process owns.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    let mut b = 0u8;
                    while libc::read(read.as_raw_fd(), (&mut b as *mut u8).cast(), 1) < 0 {}
                    libc::_exit(0);
                }
            }
            nix::unistd::ForkResult::Parent { child } => Ok(Placeholder { pid: child, _hold: write }),
        }
    }

    /// The placeholder's pid.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_as_systemd_lays_them_out() {
        assert_eq!(slice_path("system.slice").expect("ok"), PathBuf::from("system.slice"));
        assert_eq!(
            slice_path("kubepods-besteffort-pod1234.slice").expect("ok"),
            PathBuf::from("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice")
        );
        assert_eq!(slice_path("-.slice").expect("root"), PathBuf::new());
        for bad in ["system", "-a.slice", "a-.slice", "a--b.slice", ".slice", "a/b.slice", "a b.slice"] {
            assert!(slice_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cgroups_paths_name_slice_and_scope() {
        let u = Unit::from_cgroups_path(Some(Path::new("kubepods-burstable-podX.slice:cri-containerd:abc")), "abc")
            .expect("ok");
        assert_eq!(u.slice, "kubepods-burstable-podX.slice");
        assert_eq!(u.name, "cri-containerd-abc.scope");
        assert_eq!(
            u.cgroup_path(),
            PathBuf::from(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podX.slice/cri-containerd-abc.scope"
            )
        );
        assert!(is_systemd_path("kubepods-burstable-podX.slice:cri-containerd:abc"));
        assert!(!is_systemd_path("/kubepods/burstable/podX/abc"));
        assert!(!is_systemd_path("a:b:c"));
        let d = Unit::from_cgroups_path(None, "c1").expect("default");
        assert_eq!((d.slice.as_str(), d.name.as_str()), ("system.slice", "strata-c1.scope"));
        let e = Unit::from_cgroups_path(Some(Path::new(":runc:c2")), "c2").expect("empty slice");
        assert_eq!((e.slice.as_str(), e.name.as_str()), ("system.slice", "runc-c2.scope"));
        for bad in ["/a/b", "a:b", "system.slice:x:", "nota:p:n", "system.slice:p:n.slice", "system.slice:p:a/b"] {
            let err = Unit::from_cgroups_path(Some(Path::new(bad)), "x").expect_err(bad).to_string();
            assert!(err.contains("linux.cgroupsPath"), "{bad}: {err}");
        }
    }

    #[test]
    fn resources_become_unit_properties() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": { "limit": 1_048_576, "reservation": 4096, "swap": 2_097_152 },
            "cpu": { "shares": 1024, "quota": 25_001, "period": 100_000, "cpus": "0-1,9", "mems": "0" },
            "pids": { "limit": -1 },
            "blockIO": { "weight": 500 }
        }))
        .expect("json");
        let props = properties(&r).expect("props");
        let get = |k: &str| props.iter().find(|(n, _)| *n == k).map(|(_, v)| v.try_clone().expect("clone"));
        let t = |k: &str| u64::try_from(get(k).unwrap_or_else(|| panic!("{k} missing"))).expect("u64");
        assert_eq!(t("MemoryMax"), 1_048_576);
        assert_eq!(t("MemoryLow"), 4096);
        assert_eq!(t("MemorySwapMax"), 1_048_576);
        assert_eq!(t("CPUWeight"), 39);
        assert_eq!(t("CPUQuotaPeriodUSec"), 100_000);
        // 25.001% rounds up to systemd's next 1%.
        assert_eq!(t("CPUQuotaPerSecUSec"), 260_000);
        assert_eq!(t("TasksMax"), u64::MAX);
        assert_eq!(t("IOWeight"), 4950);
        let cpus: Vec<u8> = get("AllowedCPUs").expect("cpus").try_into().expect("bytes");
        assert_eq!(cpus, vec![0b0000_0011, 0b0000_0010]);
        let none: LinuxResources = serde_json::from_value(serde_json::json!({})).expect("json");
        assert!(properties(&none).expect("empty").is_empty());
    }
}
