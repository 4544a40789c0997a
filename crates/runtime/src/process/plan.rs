//! What the container process becomes just before execve: user and groups,
//! capabilities, rlimits, scheduling, working directory, environment. Built in the
//! runtime (so bad values fail before anything is created) and applied in the
//! forked process.

use crate::capabilities::CapabilityPlan;
use crate::{Error, Result};
use oci_spec::runtime::{PosixRlimitType, Process};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Default PATH when the process's environment has none (as runc).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything about the process to run, ready to apply without further parsing.
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<CString>,
    /// envp.
    pub env: Vec<CString>,
    /// Working directory inside the container.
    pub cwd: PathBuf,
    /// uid inside the container.
    pub uid: u32,
    /// gid inside the container.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// umask (runc's default 0022).
    pub umask: u32,
    /// (resource, soft, hard).
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64, &'static str)>,
    /// Capability sets.
    pub caps: CapabilityPlan,
    /// Set PR_SET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
    /// Value for /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// sched_setattr(2) attributes.
    pub scheduler: Option<SchedAttr>,
    /// ioprio_set(2) value.
    pub ioprio: Option<i32>,
    /// CPUs the process may run on.
    pub cpu_affinity: Option<Vec<usize>>,
    /// Whether the process gets a terminal.
    pub terminal: bool,
    /// Initial terminal size (width, height).
    pub console_size: Option<(u16, u16)>,
    /// AppArmor profile for the process.
    pub apparmor_profile: Option<String>,
    /// SELinux label for the process.
    pub selinux_label: Option<String>,
    /// False for a container created without `process`: it is set up, its init
    /// waits, and `start` refuses it (the spec requires a process only there).
    pub runnable: bool,
}

/// What execve needs, found by [`ProcessPlan::become_process`].
pub struct ExecTarget {
    /// Path of the program to run.
    pub program: CString,
    /// Its environment (HOME added when the config has none).
    pub env: Vec<CString>,
}

/// `struct sched_attr` of sched_setattr(2).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

fn cstrings<'a>(items: impl Iterator<Item = &'a String>, field: &str) -> Result<Vec<CString>> {
    items.map(|s| CString::new(s.as_str()).map_err(|_| Error::config(field, "contains a NUL byte"))).collect()
}

impl ProcessPlan {
    /// Builds the plan for `process` (`field` names it in errors).
    pub fn new(process: &Process, field: &str) -> Result<Self> {
        crate::config::validate_process(process, field)?;
        let user = process.user();
        let mut rlimits = Vec::new();
        for r in process.rlimits().iter().flatten() {
            let (res, name) = rlimit_resource(r.typ());
            rlimits.push((res, r.soft(), r.hard(), name));
        }
        let scheduler = process.scheduler().as_ref().map(|s| sched_attr(s, field)).transpose()?;
        let ioprio = process.io_priority().as_ref().map(|p| {
            use oci_spec::runtime::IOPriorityClass as C;
            let class = match p.class() {
                C::IoprioClassRt => 1,
                C::IoprioClassBe => 2,
                C::IoprioClassIdle => 3,
            };
            if !(0..=7).contains(&p.priority()) {
                return Err(Error::config(
                    format!("{field}.ioPriority.priority"),
                    format!("{} is outside 0..7", p.priority()),
                ));
            }
            Ok((class << 13) | p.priority() as i32)
        });
        let affinity = process
            .exec_cpu_affinity()
            .as_ref()
            .and_then(|a| a.cpu_affinity_final().clone().or_else(|| a.initial().clone()));
        let cpu_affinity = affinity
            .map(|s| parse_cpu_list(&s).map_err(|e| Error::config(format!("{field}.execCPUAffinity"), e)))
            .transpose()?;
        let caps = CapabilityPlan::new(process.capabilities().as_ref())?;
        Ok(ProcessPlan {
            args: cstrings(process.args().iter().flatten(), &format!("{field}.args"))?,
            env: cstrings(process.env().iter().flatten(), &format!("{field}.env"))?,
            cwd: process.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask().unwrap_or(0o022),
            rlimits,
            caps,
            no_new_privs: process.no_new_privileges().unwrap_or(false),
            oom_score_adj: process.oom_score_adj(),
            scheduler,
            ioprio: ioprio.transpose()?,
            cpu_affinity,
            terminal: process.terminal().unwrap_or(false),
            console_size: process.console_size().map(|b| (b.width() as u16, b.height() as u16)),
            apparmor_profile: process.apparmor_profile().clone(),
            selinux_label: process.selinux_label().clone(),
            runnable: true,
        })
    }

    /// The plan of a container whose config has no `process`: root, no
    /// capabilities, nothing to run.
    pub fn without_process() -> Self {
        ProcessPlan {
            args: Vec::new(),
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            umask: 0o022,
            rlimits: Vec::new(),
            caps: CapabilityPlan::default(),
            no_new_privs: true,
            oom_score_adj: None,
            scheduler: None,
            ioprio: None,
            cpu_affinity: None,
            terminal: false,
            console_size: None,
            apparmor_profile: None,
            selinux_label: None,
            runnable: false,
        }
    }

    /// Value of `name` in the process's environment.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .filter_map(|e| e.to_str().ok())
            .find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
    }

    /// Finds the program to run: args[0] as a path, or looked up in the process's
    /// PATH (in the current root), checking it is an executable file.
    pub fn resolve_program(&self) -> Result<CString> {
        let arg0 = self.args.first().and_then(|a| a.to_str().ok()).unwrap_or_default();
        let not_found = |why: &str| Error::Init(format!("exec: {arg0:?}: {why}"));
        let candidates: Vec<PathBuf> = if arg0.contains('/') {
            vec![if Path::new(arg0).is_absolute() { PathBuf::from(arg0) } else { self.cwd.join(arg0) }]
        } else {
            self.env_var("PATH")
                .unwrap_or(DEFAULT_PATH)
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(arg0))
                .collect()
        };
        for c in &candidates {
            let Ok(meta) = std::fs::metadata(c) else {
                continue;
            };
            if meta.is_dir() {
                continue;
            }
            let cs = CString::new(c.as_os_str().as_encoded_bytes()).map_err(|_| not_found("contains a NUL byte"))?;
            if nix::unistd::access(cs.as_c_str(), nix::unistd::AccessFlags::X_OK).is_ok() {
                return Ok(cs);
            }
            if arg0.contains('/') {
                return Err(not_found("permission denied"));
            }
        }
        Err(not_found(if arg0.contains('/') {
            "no such file or directory"
        } else {
            "executable file not found in $PATH"
        }))
    }

    /// Applies the settings that need no privileges to drop first: rlimits,
    /// scheduling, I/O priority, CPU affinity, umask. (The oom score is set
    /// earlier, before any namespace is entered: see [`set_oom_score_adj`].)
    pub fn apply_limits(&self) -> Result<()> {
        for &(res, soft, hard, name) in &self.rlimits {
            let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
            // SAFETY: `lim` is a valid rlimit for the duration of the call.
            if unsafe { libc::setrlimit(res, &lim) } != 0 {
                let errno = nix::Error::last();
                let hint =
                    if errno == nix::Error::EPERM { " (raising a hard limit needs CAP_SYS_RESOURCE)" } else { "" };
                return Err(Error::Init(format!("setrlimit {name} soft={soft} hard={hard}: {errno}{hint}")));
            }
        }
        if let Some(attr) = &self.scheduler {
            // SAFETY: `attr` is a properly sized sched_attr alive for the call.
            if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0) } != 0 {
                return Err(Error::sys("sched_setattr", "process.scheduler", nix::Error::last()));
            }
        }
        if let Some(prio) = self.ioprio {
            // SAFETY: plain syscall with integer arguments (IOPRIO_WHO_PROCESS, self).
            if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, prio) } != 0 {
                return Err(Error::sys("ioprio_set", "process.ioPriority", nix::Error::last()));
            }
        }
        if let Some(cpus) = &self.cpu_affinity {
            let mut set = nix::sched::CpuSet::new();
            for &c in cpus {
                set.set(c).map_err(|e| Error::sys("sched_setaffinity", format!("cpu {c}"), e))?;
            }
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                .map_err(|e| Error::sys("sched_setaffinity", "process.execCPUAffinity", e))?;
        }
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(self.umask));
        Ok(())
    }

    /// Opens what applying the LSM labels needs (before the root changes).
    pub fn open_labels(&self) -> Result<crate::lsm::ExecLabels> {
        crate::lsm::ExecLabels::open(&self.apparmor_profile, &self.selinux_label)
    }

    /// Becomes the process, short of its seccomp filter and execve: finds its
    /// environment (HOME from the container's /etc/passwd), enters its working
    /// directory, switches to its user, groups and capabilities, and finds the
    /// program as that user. `keep_sys_admin` keeps CAP_SYS_ADMIN in the effective
    /// and permitted sets for a seccomp filter loaded later without no_new_privs
    /// (the kernel demands it then); execve recomputes both sets from the
    /// bounding, inheritable and ambient ones, so the workload never sees it
    /// unless its config grants it.
    pub fn become_process(&self, keep_sys_admin: bool) -> Result<ExecTarget> {
        let env = self.env_with_home().into_owned();
        if !self.runnable {
            // Nothing will run: drop every capability and stay in `/`.
            self.apply_user_and_caps(crate::process::init::setgroups_allowed(), false)?;
            nix::unistd::chdir("/").map_err(|e| Error::sys("chdir", "/", e))?;
            return Ok(ExecTarget { program: CString::default(), env });
        }
        // The working directory is entered while still privileged, as runc does: a
        // directory only its owner may enter must not stop a process that runs as
        // root without CAP_DAC_OVERRIDE, or as another user.
        let privileged_chdir = nix::unistd::chdir(&self.cwd);
        self.apply_user_and_caps(crate::process::init::setgroups_allowed(), keep_sys_admin)?;
        if privileged_chdir.is_err() {
            // A directory the user may enter but root may not (root squash on NFS).
            nix::unistd::chdir(&self.cwd)
                .map_err(|e| Error::sys("chdir", format!("process.cwd {}", self.cwd.display()), e))?;
        }
        let cwd = nix::unistd::getcwd().map_err(|e| Error::sys("getcwd", self.cwd.display(), e))?;
        if !cwd.is_absolute() {
            return Err(Error::Init(format!("process.cwd {} is outside the container's root", self.cwd.display())));
        }
        let program = self.resolve_program()?;
        Ok(ExecTarget { program, env })
    }

    /// Switches to the process's user and groups and sets its capabilities
    /// (with CAP_SYS_ADMIN kept effective when `keep_sys_admin`, see
    /// [`ProcessPlan::become_process`]). `setgroups_allowed` is false in a user
    /// namespace whose setgroups is denied.
    pub fn apply_user_and_caps(&self, setgroups_allowed: bool, keep_sys_admin: bool) -> Result<()> {
        self.caps.drop_bounding()?;
        if setgroups_allowed {
            let groups: Vec<nix::unistd::Gid> = self.groups.iter().map(|&g| nix::unistd::Gid::from_raw(g)).collect();
            nix::unistd::setgroups(&groups).map_err(|e| Error::sys("setgroups", "process.user.additionalGids", e))?;
        }
        // Keep the permitted set across the uid change; the sets are set right after.
        nix::sys::prctl::set_keepcaps(true).map_err(|e| Error::sys("prctl", "PR_SET_KEEPCAPS", e))?;
        let gid = nix::unistd::Gid::from_raw(self.gid);
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| Error::sys("setresgid", format!("gid {}", self.gid), e))?;
        let uid = nix::unistd::Uid::from_raw(self.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| Error::sys("setresuid", format!("uid {}", self.uid), e))?;
        nix::sys::prctl::set_keepcaps(false).map_err(|e| Error::sys("prctl", "PR_SET_KEEPCAPS", e))?;
        self.caps.apply(keep_sys_admin)?;
        if self.no_new_privs {
            nix::sys::prctl::set_no_new_privs().map_err(|e| Error::sys("prctl", "PR_SET_NO_NEW_PRIVS", e))?;
        }
        Ok(())
    }

    /// Like runc, a process without HOME gets its user's home directory from the
    /// container's /etc/passwd (or `/`). Reads the current root's /etc/passwd.
    fn env_with_home(&self) -> std::borrow::Cow<'_, [CString]> {
        if self.env_var("HOME").is_some() {
            return std::borrow::Cow::Borrowed(&self.env);
        }
        let passwd = read_passwd().unwrap_or_default();
        let home = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 6 && f[2].parse::<u32>().ok() == Some(self.uid))
            .map(|f| f[5].to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".to_string());
        let mut env = self.env.clone();
        // A home directory with a NUL byte cannot come out of a text line split on ':'.
        if let Ok(var) = CString::new(format!("HOME={home}")) {
            env.push(var);
        }
        std::borrow::Cow::Owned(env)
    }

    /// Replaces the process image; returns only on failure.
    pub fn exec(&self, target: &ExecTarget) -> Error {
        let errno =
            nix::unistd::execve(&target.program, &self.args, &target.env).err().unwrap_or(nix::Error::UnknownErrno);
        Error::sys("execve", target.program.to_string_lossy(), errno)
    }
}

/// Writes the calling process's oom_score_adj. Done by the runtime's side of
/// the fork before any namespace is entered (the value is inherited): in a user
/// namespace the file belongs to the host's root once the process is not
/// dumpable, and the container's root could not open it.
pub fn set_oom_score_adj(adj: i32) -> Result<()> {
    write_oom_score_adj("/proc/self/oom_score_adj", adj)
}

/// Sets the OOM score adjustment of process `pid` (a child of the caller).
pub fn set_oom_score_adj_of(pid: i32, adj: i32) -> Result<()> {
    write_oom_score_adj(&format!("/proc/{pid}/oom_score_adj"), adj)
}

fn write_oom_score_adj(path: &str, adj: i32) -> Result<()> {
    std::fs::write(path, adj.to_string()).map_err(|e| {
        let hint =
            if e.kind() == std::io::ErrorKind::PermissionDenied { " (lowering it needs CAP_SYS_RESOURCE)" } else { "" };
        Error::Init(format!("process.oomScoreAdj {adj}: write {path}: {e}{hint}"))
    })
}

/// The container's /etc/passwd, which the container controls: only a regular file
/// (a FIFO would block us), and only its first MiB.
fn read_passwd() -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/etc/passwd").ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

fn rlimit_resource(t: PosixRlimitType) -> (libc::__rlimit_resource_t, &'static str) {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => (libc::RLIMIT_CPU, "RLIMIT_CPU"),
        T::RlimitFsize => (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        T::RlimitData => (libc::RLIMIT_DATA, "RLIMIT_DATA"),
        T::RlimitStack => (libc::RLIMIT_STACK, "RLIMIT_STACK"),
        T::RlimitCore => (libc::RLIMIT_CORE, "RLIMIT_CORE"),
        T::RlimitRss => (libc::RLIMIT_RSS, "RLIMIT_RSS"),
        T::RlimitNproc => (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
        T::RlimitNofile => (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        T::RlimitMemlock => (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        T::RlimitAs => (libc::RLIMIT_AS, "RLIMIT_AS"),
        T::RlimitLocks => (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        T::RlimitSigpending => (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        T::RlimitMsgqueue => (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        T::RlimitNice => (libc::RLIMIT_NICE, "RLIMIT_NICE"),
        T::RlimitRtprio => (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        T::RlimitRttime => (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    }
}

fn sched_attr(s: &oci_spec::runtime::Scheduler, field: &str) -> Result<SchedAttr> {
    use oci_spec::runtime::{LinuxSchedulerFlag as F, LinuxSchedulerPolicy as P};
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => {
            return Err(Error::config(format!("{field}.scheduler.policy"), "SCHED_ISO is not implemented by Linux"))
        }
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            F::SchedResetOnFork => 0x01,
            F::SchedFlagReclaim => 0x02,
            F::SchedFlagDLOverrun => 0x04,
            F::SchedFlagKeepPolicy => 0x08,
            F::SchedFlagKeepParams => 0x10,
            F::SchedFlagUtilClampMin => 0x20,
            F::SchedFlagUtilClampMax => 0x40,
        };
    }
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(Error::config(format!("{field}.scheduler.nice"), format!("{nice} is outside -20..19")));
    }
    Ok(SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice,
        priority: s.priority().unwrap_or(0).max(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    })
}

/// Parses a CPU list such as `0-3,7`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid CPU list {s:?}");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().map_err(|_| bad())?, b.parse::<usize>().map_err(|_| bad())?),
            None => {
                let n = part.parse::<usize>().map_err(|_| bad())?;
                (n, n)
            }
        };
        if a > b || b >= nix::sched::CpuSet::count() {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(format!("empty CPU list {s:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("3"), Ok(vec![3]));
        assert!(parse_cpu_list("2-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("0-99999").is_err());
    }
}
