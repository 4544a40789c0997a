//! `linux.seccomp`: the config's syscall filter compiled with libseccomp in the
//! runtime (so every bad field fails `create` before anything exists) into a
//! classic BPF program, loaded by the container process with one seccomp(2) call
//! just before it execs, and — for `SCMP_ACT_NOTIFY` — the listener descriptor
//! handed to the config's `listenerPath` with the container process state, as the
//! spec's seccomp notify section describes.
//!
//! Two things are added to what libseccomp generates, both as runc does:
//! - an ENOSYS stub in front of the program: a syscall numbered above every
//!   syscall the profile names (for each architecture) gets ENOSYS instead of the
//!   default action's errno, so that C libraries fall back from syscalls newer
//!   than the profile (clone3, faccessat2, close_range...) as they do on an older
//!   kernel, and a syscall the kernel does not know still reads as unknown;
//! - nothing else runs after the filter but execve (and, for notify, the hand-over
//!   of the listener): the container process loads it as its last step, so a
//!   profile written for the workload alone never refuses the runtime's own calls.

use crate::{Error, Result};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    /// The BPF program (the ENOSYS stub, then libseccomp's filter).
    program: Vec<libc::sock_filter>,
    /// seccomp(2) filter flags (SECCOMP_FILTER_FLAG_*), the listener's included.
    flags: u32,
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
        // The flags go to our own seccomp(2) call; only the kernel must know them.
        let mut flags = 0;
        for (i, flag) in spec.flags().iter().flatten().enumerate() {
            let name = name_of(flag);
            let bit = FLAGS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).unwrap_or(0);
            if !kernel_supports_flag(bit) {
                return Err(bad(
                    format!("{field}.flags[{i}]"),
                    format!("{name} is not supported by the running kernel"),
                ));
            }
            flags |= bit;
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
        let mut program = enosys_stub(spec, default, &ctx)?;
        program.extend(export_program(&ctx)?);
        if program.len() > BPF_MAXINSNS {
            return Err(bad(
                field,
                format!(
                    "the filter compiles to {} BPF instructions; the kernel takes at most {BPF_MAXINSNS}",
                    program.len()
                ),
            ));
        }
        if notify {
            flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
        }
        let plan =
            SeccompPlan { program, flags, notify, listener_path, listener_metadata: spec.listener_metadata().clone() };
        // The filter is loaded just before execve: one that refuses execve itself
        // would only show at `start`. Asked here, whatever the arguments.
        if let Ok(execve) = ScmpSyscall::from_name("execve") {
            let refused = |args: u64| {
                let verdict = plan.verdict(i32::from(execve), [args; 6]);
                !matches!(verdict & RET_ACTION_MASK, RET_ALLOW | RET_LOG | RET_TRACE | RET_USER_NOTIF)
            };
            if refused(0) && refused(u64::MAX) {
                return Err(bad(field, "the filter refuses execve, so the container's process could never start"));
            }
        }
        Ok(plan)
    }

    /// What the filter answers (SECCOMP_RET_*) for syscall `nr` of the native
    /// architecture with `args`, by running the program as the kernel would.
    pub fn verdict(&self, nr: i32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&audit_arch(ScmpArch::native()).unwrap_or(0).to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        run_bpf(&self.program, &data)
    }

    /// Installs the filter on the calling process with one seccomp(2) call (no
    /// allocation, no other syscall); returns the notify listener descriptor when
    /// some rule notifies. Without no_new_privs the caller needs CAP_SYS_ADMIN.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog { len: self.program.len() as u16, filter: self.program.as_ptr().cast_mut() };
        // SAFETY: `prog` points at `self.program`, which lives for the duration of
        // the call; the kernel copies the program before returning.
        let ret = unsafe {
            libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, self.flags, &prog as *const libc::sock_fprog)
        };
        if ret < 0 {
            let errno = nix::Error::last();
            let hint = match errno {
                nix::Error::EACCES => " (loading a filter without noNewPrivileges needs CAP_SYS_ADMIN)",
                _ => "",
            };
            return Err(Error::Init(format!("load seccomp filter: {errno}{hint}")));
        }
        if !self.notify {
            return Ok(None);
        }
        // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns a new
        // descriptor that nothing else owns.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }))
    }

    /// Number of BPF instructions of the compiled filter.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// Whether the program is empty (never, once compiled).
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
}

/// SECCOMP_RET_ACTION_FULL: the action part of a filter's answer.
const RET_ACTION_MASK: u32 = 0xffff_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;

/// Runs a classic BPF program over `data` (a struct seccomp_data) and returns
/// what it returns; an instruction seccomp does not allow answers KILL (0),
/// as the kernel would have refused the program.
fn run_bpf(program: &[libc::sock_filter], data: &[u8; 64]) -> u32 {
    let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
    let word = |k: u32| -> Option<u32> {
        let k = k as usize;
        data.get(k..k + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut pc = 0usize;
    while let Some(i) = program.get(pc) {
        pc += 1;
        let k = i.k;
        let src = if i.code & 0x08 != 0 { x } else { k };
        match i.code & 0x07 {
            // LD: W|ABS, W|IMM, W|MEM, W|LEN.
            0x00 => match i.code & 0xe0 {
                0x20 => match word(k) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x00 => a = k,
                0x60 => a = mem.get(k as usize).copied().unwrap_or(0),
                0x80 => a = 64,
                _ => return 0,
            },
            // LDX: W|IMM, W|MEM, W|LEN.
            0x01 => match i.code & 0xe0 {
                0x00 => x = k,
                0x60 => x = mem.get(k as usize).copied().unwrap_or(0),
                0x80 => x = 64,
                _ => return 0,
            },
            0x02 => {
                if let Some(m) = mem.get_mut(k as usize) {
                    *m = a;
                }
            }
            0x03 => {
                if let Some(m) = mem.get_mut(k as usize) {
                    *m = x;
                }
            }
            0x04 => {
                a = match i.code & 0xf0 {
                    0x00 => a.wrapping_add(src),
                    0x10 => a.wrapping_sub(src),
                    0x20 => a.wrapping_mul(src),
                    0x30 => a.checked_div(src).unwrap_or(0),
                    0x40 => a | src,
                    0x50 => a & src,
                    0x60 => a.checked_shl(src).unwrap_or(0),
                    0x70 => a.checked_shr(src).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(src).unwrap_or(0),
                    0xa0 => a ^ src,
                    _ => return 0,
                }
            }
            0x05 => {
                let taken = match i.code & 0xf0 {
                    0x00 => {
                        pc += k as usize;
                        continue;
                    }
                    0x10 => a == src,
                    0x20 => a > src,
                    0x30 => a >= src,
                    0x40 => a & src != 0,
                    _ => return 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x06 => return if i.code & 0x18 == 0x10 { a } else { k },
            0x07 => {
                if i.code & 0xf8 == 0x80 {
                    a = x;
                } else {
                    x = a;
                }
            }
            _ => return 0,
        }
    }
    0
}

/// seccomp(2) operation that installs a BPF filter.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
/// seccomp(2) flag: return a notification listener descriptor.
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 8;
/// Largest program the kernel accepts.
const BPF_MAXINSNS: usize = 4096;
/// SECCOMP_RET_ERRNO with ENOSYS.
const RET_ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;
/// The bit x32 syscall numbers carry on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Reads libseccomp's BPF program for `ctx` (exported through a memfd, as
/// libseccomp 2.5 can only write it to a descriptor).
fn export_program(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    use std::io::{Read, Seek};
    let fail = |what: &str, e: &dyn std::fmt::Display| bad("linux.seccomp", format!("{what}: {e}"));
    let fd = nix::sys::memfd::memfd_create(c"strata-seccomp", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
        .map_err(|e| fail("memfd_create", &e))?;
    ctx.export_bpf(&fd).map_err(|e| fail("libseccomp export", &e))?;
    let mut f = std::fs::File::from(fd);
    f.rewind().map_err(|e| fail("read back the filter", &e))?;
    let mut raw = Vec::new();
    f.read_to_end(&mut raw).map_err(|e| fail("read back the filter", &e))?;
    if raw.len() % 8 != 0 {
        return Err(fail("libseccomp export", &"not a whole number of instructions"));
    }
    Ok(raw
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// The kernel's AUDIT_ARCH value for a libseccomp architecture (x32 shares
/// x86_64's), for the architectures the stub handles.
fn audit_arch(a: ScmpArch) -> Option<u32> {
    Some(match a {
        ScmpArch::X86 => 0x4000_0003,
        ScmpArch::X8664 | ScmpArch::X32 => 0xC000_003E,
        ScmpArch::Arm => 0x4000_0028,
        ScmpArch::Aarch64 => 0xC000_00B7,
        ScmpArch::Ppc64Le => 0xC000_0015,
        ScmpArch::S390X => 0x8000_0016,
        ScmpArch::Riscv64 => 0xC000_00F3,
        _ => return None,
    })
}

/// A jump target in the stub being assembled.
#[derive(Clone, Copy)]
enum Label {
    /// The next instruction.
    Next,
    /// The instruction after the next.
    SkipOne,
    /// The start of the section of architecture `i`.
    Arch(usize),
    /// The ENOSYS return.
    Enosys,
    /// The first instruction of libseccomp's filter.
    Filter,
}

/// One stub instruction with symbolic jump targets.
struct Insn {
    code: u16,
    k: u32,
    jt: Label,
    jf: Label,
}

/// The ENOSYS stub (empty when the default action lets unknown syscalls through
/// anyway, or already answers ENOSYS): per architecture in the filter, a syscall
/// number above the largest one the profile names returns ENOSYS; everything
/// else falls through to libseccomp's filter.
fn enosys_stub(spec: &LinuxSeccomp, default: ScmpAction, ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    if matches!(default, ScmpAction::Allow | ScmpAction::Log | ScmpAction::Errno(libc::ENOSYS)) {
        return Ok(Vec::new());
    }
    // (audit arch, largest native number, largest x32 number) per real architecture.
    let mut arches: Vec<(u32, Option<u32>, Option<u32>)> = Vec::new();
    let mut candidates = vec![ScmpArch::native()];
    for a in spec.architectures().iter().flatten() {
        if let Ok(arch) = name_of(a).parse::<ScmpArch>() {
            if ctx.is_arch_present(arch).unwrap_or(false) && !candidates.contains(&arch) {
                candidates.push(arch);
            }
        }
    }
    for arch in candidates {
        let Some(audit) = audit_arch(arch) else { continue };
        let largest = spec
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().iter())
            .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
            .map(i32::from)
            .filter(|&n| n >= 0)
            .max();
        let Some(largest) = largest else { continue };
        let entry = match arches.iter().position(|(a, _, _)| *a == audit) {
            Some(i) => &mut arches[i],
            None => {
                arches.push((audit, None, None));
                arches.last_mut().expect("just pushed") // infallible: pushed on the line above
            }
        };
        if arch == ScmpArch::X32 {
            entry.2 = Some(largest as u32 | X32_SYSCALL_BIT);
        } else {
            entry.1 = Some(largest as u32);
        }
    }
    if arches.is_empty() {
        return Ok(Vec::new());
    }
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGT_K: u16 = 0x25;
    const JSET_K: u16 = 0x45;
    const JA: u16 = 0x05;
    const RET_K: u16 = 0x06;
    let insn = |code, k, jt, jf| Insn { code, k, jt, jf };
    // Dispatch on the architecture (offset 4 of struct seccomp_data).
    let mut dispatch = vec![insn(LD_W_ABS, 4, Label::Next, Label::Next)];
    for (i, (audit, _, _)) in arches.iter().enumerate() {
        dispatch.push(insn(JEQ_K, *audit, Label::Arch(i), Label::Next));
    }
    dispatch.push(insn(JA, 0, Label::Filter, Label::Filter));
    let mut sections: Vec<Vec<Insn>> = Vec::new();
    for (audit, native, x32) in &arches {
        // The syscall number is at offset 0.
        let mut s = vec![insn(LD_W_ABS, 0, Label::Next, Label::Next)];
        let is_x86_64 = *audit == 0xC000_003E;
        match (native, x32) {
            (Some(n), Some(x)) => {
                // x32 calls (bit 30 set) compare with the x32 bound, the others with the native one.
                s.push(insn(JSET_K, X32_SYSCALL_BIT, Label::Next, Label::SkipOne));
                s.push(insn(JGT_K, *x, Label::Enosys, Label::Filter));
                s.push(insn(JGT_K, *n, Label::Enosys, Label::Filter));
            }
            (Some(n), None) => {
                if is_x86_64 {
                    // x32 calls are not this profile's: libseccomp's filter decides.
                    s.push(insn(JSET_K, X32_SYSCALL_BIT, Label::Filter, Label::Next));
                }
                s.push(insn(JGT_K, *n, Label::Enosys, Label::Filter));
            }
            (None, Some(x)) => {
                s.push(insn(JSET_K, X32_SYSCALL_BIT, Label::Next, Label::Filter));
                s.push(insn(JGT_K, *x, Label::Enosys, Label::Filter));
            }
            (None, None) => s.push(insn(JA, 0, Label::Filter, Label::Filter)),
        }
        sections.push(s);
    }
    // Lay out: dispatch, sections, ENOSYS return; then resolve the labels.
    let mut starts = Vec::new();
    let mut pos = dispatch.len();
    for s in &sections {
        starts.push(pos);
        pos += s.len();
    }
    let enosys_at = pos;
    let filter_at = pos + 1;
    let all: Vec<Insn> = dispatch.into_iter().chain(sections.into_iter().flatten()).collect();
    let mut out = Vec::with_capacity(all.len() + 1);
    for (pc, i) in all.into_iter().enumerate() {
        // Every target lies ahead (BPF only jumps forward).
        let rel = |l: Label| -> usize {
            let target = match l {
                Label::Next => pc + 1,
                Label::SkipOne => pc + 2,
                Label::Arch(a) => starts[a],
                Label::Enosys => enosys_at,
                Label::Filter => filter_at,
            };
            target - (pc + 1)
        };
        // The stub is a few instructions per architecture: conditional offsets
        // always fit in 8 bits.
        let short = |l: Label| u8::try_from(rel(l)).map_err(|_| bad("linux.seccomp", "ENOSYS stub too large"));
        out.push(match i.code {
            JA => libc::sock_filter { code: JA, jt: 0, jf: 0, k: rel(i.jt) as u32 },
            LD_W_ABS => libc::sock_filter { code: LD_W_ABS, jt: 0, jf: 0, k: i.k },
            code => libc::sock_filter { code, jt: short(i.jt)?, jf: short(i.jf)?, k: i.k },
        });
    }
    out.push(libc::sock_filter { code: RET_K, jt: 0, jf: 0, k: RET_ENOSYS });
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: serde_json::Value) -> Result<SeccompPlan> {
        SeccompPlan::new(&serde_json::from_value(json).expect("seccomp json"))
    }

    fn nr(name: &str) -> i32 {
        i32::from(ScmpSyscall::from_name(name).expect("known syscall"))
    }

    #[test]
    fn syscalls_newer_than_the_profile_get_enosys() {
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{ "names": ["read", "write", "execve", "exit_group"], "action": "SCMP_ACT_ALLOW" }]
        }))
        .expect("compiles");
        let largest = ["read", "write", "execve", "exit_group"].iter().map(|n| nr(n)).max().expect("some");
        assert_eq!(p.verdict(nr("read"), [0; 6]), RET_ALLOW);
        // Below the largest named number: the profile's default (EPERM).
        assert_eq!(p.verdict(largest - 1, [0; 6]), 0x0005_0000 | libc::EPERM as u32);
        // Above it, and numbers no kernel knows: ENOSYS, so libcs fall back.
        assert_eq!(p.verdict(largest + 1, [0; 6]), RET_ENOSYS);
        assert_eq!(p.verdict(1000, [0; 6]), RET_ENOSYS);
    }

    #[test]
    fn permissive_defaults_get_no_stub() {
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_ERRNO" }]
        }))
        .expect("compiles");
        assert_eq!(p.verdict(1000, [0; 6]), RET_ALLOW);
        assert_eq!(p.verdict(nr("mkdir"), [0; 6]), 0x0005_0000 | libc::EPERM as u32);
    }

    #[test]
    fn a_filter_refusing_execve_fails_at_compile_time() {
        let err = plan(serde_json::json!({ "defaultAction": "SCMP_ACT_ERRNO" })).err().expect("refused");
        assert!(err.to_string().contains("refuses execve"), "{err}");
        let err = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["execve"], "action": "SCMP_ACT_KILL" }]
        }))
        .err()
        .expect("refused");
        assert!(err.to_string().contains("refuses execve"), "{err}");
        // Refused only for some arguments: it may start, so it is accepted.
        plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["execve"], "action": "SCMP_ACT_ERRNO",
                           "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }] }]
        }))
        .expect("accepted");
    }
}
