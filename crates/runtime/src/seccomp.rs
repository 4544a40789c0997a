//! `linux.seccomp`: the config's syscall filter compiled with libseccomp in the
//! runtime (so every bad field fails `create` before anything exists), loaded by
//! the container process just before it execs, and — for `SCMP_ACT_NOTIFY` — the
//! listener descriptor handed to the config's `listenerPath` with the container
//! process state, as the spec's seccomp notify section describes.

use crate::{Error, Result};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// The actions of the spec, by their config names.
pub const ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];

/// The argument comparison operators of the spec.
pub const OPERATORS: &[&str] =
    &["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"];

/// The architectures of the spec, by their config names.
pub const ARCHITECTURES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// Filter flags: config name, seccomp(2) flag bit.
pub const FLAGS: &[(&str, u32)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", 1),
    ("SECCOMP_FILTER_FLAG_LOG", 2),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", 4),
    ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", 32),
];

/// A compiled filter, ready to load in the container process.
pub struct SeccompPlan {
    ctx: ScmpFilterContext,
    /// Some rule (or the default) notifies a listener.
    pub notify: bool,
    /// Where the listener descriptor goes.
    pub listener_path: Option<PathBuf>,
    /// Opaque string passed to the listener.
    pub listener_metadata: Option<String>,
}

fn bad(field: impl Into<String>, msg: impl std::fmt::Display) -> Error {
    Error::config(field, msg.to_string())
}

/// The config name of a serde enum value (`SCMP_ACT_ERRNO`, `SCMP_ARCH_X86_64`).
fn name_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn action(a: LinuxSeccompAction, errno_ret: Option<u32>, field: &str) -> Result<ScmpAction> {
    let ret = || -> Result<i32> {
        let v = errno_ret.unwrap_or(libc::EPERM as u32);
        i32::try_from(v).map_err(|_| bad(field, format!("errnoRet {v} is out of range")))
    };
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(ret()?),
        LinuxSeccompAction::ScmpActTrace => {
            let v = ret()?;
            ScmpAction::Trace(u16::try_from(v).map_err(|_| bad(field, format!("trace message {v} is above 65535")))?)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

fn compare(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>, index: u32) -> ScmpArgCompare {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpArgCompare::new(index, ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => ScmpArgCompare::new(index, ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => ScmpArgCompare::new(index, ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => ScmpArgCompare::new(index, ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => ScmpArgCompare::new(index, ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => ScmpArgCompare::new(index, ScmpCompareOp::Greater, value),
        // As runc: `value` is the mask, `valueTwo` the value to compare with.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0))
        }
    }
}

/// Whether the running kernel accepts seccomp(2) filter flag `bit`: asking to
/// install a NULL filter fails with EFAULT for a known flag, EINVAL otherwise.
pub fn kernel_supports_flag(bit: u32) -> bool {
    // SAFETY: a NULL filter pointer makes the kernel fail before installing anything.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, 1u32, bit, std::ptr::null::<u8>()) };
    r < 0 && nix::Error::last() == nix::Error::EFAULT
}

/// Whether the running kernel knows the action of `name` (from
/// /proc/sys/kernel/seccomp/actions_avail).
pub fn kernel_actions() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Whether this build's libseccomp can set filter flag `name`.
pub fn libseccomp_supports_flag(name: &str) -> bool {
    let Ok(mut ctx) = ScmpFilterContext::new(ScmpAction::Allow) else { return false };
    match name {
        "SECCOMP_FILTER_FLAG_TSYNC" => ctx.set_ctl_tsync(true).is_ok(),
        "SECCOMP_FILTER_FLAG_LOG" => ctx.set_ctl_log(true).is_ok(),
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => ctx.set_ctl_ssb(true).is_ok(),
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => ctx.set_ctl_waitkill(true).is_ok(),
        _ => false,
    }
}

/// Whether this build's libseccomp knows architecture `name` (it can name
/// syscalls of it; adding it to a filter also needs the native byte order).
pub fn arch_known(name: &str) -> bool {
    name.parse::<ScmpArch>().is_ok_and(|a| ScmpSyscall::from_name_by_arch("read", a).is_ok())
}

impl SeccompPlan {
    /// Compiles `spec`. Syscall names this architecture does not know are skipped
    /// (as runc does); everything else that is wrong is an error naming the field.
    pub fn new(spec: &LinuxSeccomp) -> Result<Self> {
        let field = "linux.seccomp";
        let default = action(spec.default_action(), spec.default_errno_ret(), &format!("{field}.defaultAction"))?;
        if default == ScmpAction::Notify {
            return Err(bad(
                format!("{field}.defaultAction"),
                "SCMP_ACT_NOTIFY as the default would stop the runtime's own last steps; name the syscalls",
            ));
        }
        let mut ctx = ScmpFilterContext::new(default)
            .map_err(|e| bad(format!("{field}.defaultAction"), format!("libseccomp: {e}")))?;
        // The runtime sets no_new_privs itself when the config asks for it.
        ctx.set_ctl_nnp(false).map_err(|e| bad(field, format!("libseccomp: {e}")))?;
        for (i, arch) in spec.architectures().iter().flatten().enumerate() {
            let name = name_of(arch);
            let f = format!("{field}.architectures[{i}]");
            let a = name.parse::<ScmpArch>().map_err(|_| bad(&f, format!("unknown architecture {name}")))?;
            if a == ScmpArch::native() || ctx.is_arch_present(a).unwrap_or(false) {
                continue;
            }
            ctx.add_arch(a).map_err(|e| bad(&f, format!("{name} is not supported by libseccomp here: {e}")))?;
        }
        for (i, flag) in spec.flags().iter().flatten().enumerate() {
            let f = format!("{field}.flags[{i}]");
            let name = name_of(flag);
            let bit = FLAGS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).unwrap_or(0);
            if !kernel_supports_flag(bit) {
                return Err(bad(&f, format!("{name} is not supported by the running kernel")));
            }
            let r = match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
            };
            r.map_err(|e| bad(&f, format!("{name} is not supported by this build's libseccomp: {e}")))?;
        }
        let mut notify = false;
        for (i, rule) in spec.syscalls().iter().flatten().enumerate() {
            let f = format!("{field}.syscalls[{i}]");
            let act = action(rule.action(), rule.errno_ret(), &f)?;
            notify |= act == ScmpAction::Notify;
            if rule.names().is_empty() {
                return Err(bad(format!("{f}.names"), "is empty"));
            }
            let mut conds = Vec::new();
            for (j, a) in rule.args().iter().flatten().enumerate() {
                if a.index() >= 6 {
                    return Err(bad(format!("{f}.args[{j}].index"), format!("{} is not below 6", a.index())));
                }
                conds.push(compare(a.op(), a.value(), a.value_two(), a.index() as u32));
            }
            // A rule that does what the default does is redundant (and libseccomp
            // refuses it).
            if act == default {
                continue;
            }
            // libseccomp cannot AND two comparisons of one argument: like runc,
            // such a rule becomes one rule per comparison (any of them matches).
            let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
            indexes.sort_unstable();
            let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
            for name in rule.names() {
                let Ok(sc) = ScmpSyscall::from_name(name) else {
                    continue;
                };
                let added = if conds.is_empty() {
                    ctx.add_rule(act, sc).map(|_| ())
                } else if repeated {
                    conds.iter().try_for_each(|c| ctx.add_rule_conditional(act, sc, &[*c]).map(|_| ()))
                } else {
                    ctx.add_rule_conditional(act, sc, &conds).map(|_| ())
                };
                added.map_err(|e| bad(&f, format!("syscall {name}: libseccomp: {e}")))?;
            }
        }
        let listener_path = spec.listener_path().clone().filter(|p| !p.as_os_str().is_empty());
        if notify {
            match &listener_path {
                None => {
                    return Err(bad(format!("{field}.listenerPath"), "is required when a rule uses SCMP_ACT_NOTIFY"))
                }
                Some(p) if !p.is_absolute() => {
                    return Err(bad(format!("{field}.listenerPath"), format!("{} is not absolute", p.display())))
                }
                Some(_) => {}
            }
        }
        Ok(SeccompPlan { ctx, notify, listener_path, listener_metadata: spec.listener_metadata().clone() })
    }

    /// Installs the filter on the calling process; returns the notify listener
    /// descriptor when some rule notifies.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        self.ctx.load().map_err(|e| Error::Init(format!("load seccomp filter: {e}")))?;
        if !self.notify {
            return Ok(None);
        }
        let fd = self.ctx.get_notify_fd().map_err(|e| Error::Init(format!("seccomp notify descriptor: {e}")))?;
        // The listener descriptor is libseccomp's; hand a duplicate to the caller.
        // SAFETY: `fd` is open for as long as the filter context lives.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let dup = borrowed.try_clone_to_owned().map_err(|e| Error::io("dup", "seccomp notify descriptor", e))?;
        Ok(Some(dup))
    }
}

/// Sends the seccomp notify descriptor of container process `pid` to the
/// listener at `path`, with the container process state (`state` is the OCI state
/// of the container) as the message, per the spec's seccomp notify section.
pub fn send_to_listener(plan: &SeccompPlan, fd: &OwnedFd, pid: i32, state: serde_json::Value) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let Some(path) = &plan.listener_path else { return Ok(()) };
    let stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| Error::io("connect to the seccomp listener", path, e))?;
    let mut msg = serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = &plan.listener_metadata {
        msg["metadata"] = m.clone().into();
    }
    let body = msg.to_string();
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(body.as_bytes())];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| Error::sys("sendmsg", format!("seccomp listener {}", path.display()), e))?;
    if sent < body.len() {
        // The descriptor went with the first bytes; the rest is plain data.
        use std::io::Write;
        (&stream).write_all(&body.as_bytes()[sent..]).map_err(|e| Error::io("write", path, e))?;
    }
    Ok(())
}
