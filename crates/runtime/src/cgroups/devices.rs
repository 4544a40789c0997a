//! Device access control for cgroup v2: `linux.resources.devices` compiled into a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the container's cgroup.
//!
//! Semantics follow the cgroup v1 device controller as runtimes emulate it: the last
//! rule that matches a request decides; nothing matching means deny. An allow rule
//! matches a request whose access bits it covers entirely; a deny rule matches a
//! request asking for any bit it names. The devices every container needs (null,
//! zero, full, random, urandom, tty, console, ptmx, pts, mknod of anything) and the
//! config's `linux.devices` are allowed right after the config's last blanket
//! (`type: a`) rule, so "deny all" keeps them usable while a specific deny rule in
//! the config can still take any of them away.

use crate::{Error, Result};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Access bits of the kernel's device hook.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
/// Device types of the kernel's device hook.
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;

/// One rule, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Allow or deny.
    pub allow: bool,
    /// DEV_BLOCK, DEV_CHAR, or None for all.
    pub kind: Option<u32>,
    /// Major number or None for all.
    pub major: Option<u32>,
    /// Minor number or None for all.
    pub minor: Option<u32>,
    /// Access bits.
    pub access: u32,
}

fn parse_access(s: Option<&str>, field: &str) -> Result<u32> {
    let s = s.unwrap_or("rwm");
    if s.is_empty() {
        return Ok(ACC_MKNOD | ACC_READ | ACC_WRITE);
    }
    s.chars().try_fold(0, |acc, c| match c {
        'r' => Ok(acc | ACC_READ),
        'w' => Ok(acc | ACC_WRITE),
        'm' => Ok(acc | ACC_MKNOD),
        other => Err(Error::config(field.to_string(), format!("unknown access {other:?} (use r, w, m)"))),
    })
}

fn number(v: Option<i64>, field: &str) -> Result<Option<u32>> {
    match v {
        None | Some(-1) => Ok(None),
        Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(Error::config(field.to_string(), format!("{n} is not a device number"))),
    }
}

fn rule(allow: bool, kind: u32, major: Option<u32>, minor: Option<u32>, access: u32) -> Rule {
    Rule { allow, kind: Some(kind), major, minor, access }
}

/// The devices every container may use.
fn defaults() -> Vec<Rule> {
    let rwm = ACC_MKNOD | ACC_READ | ACC_WRITE;
    let mut v = vec![rule(true, DEV_CHAR, None, None, ACC_MKNOD), rule(true, DEV_BLOCK, None, None, ACC_MKNOD)];
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)] {
        v.push(rule(true, DEV_CHAR, Some(major), Some(minor), rwm));
    }
    v.push(rule(true, DEV_CHAR, Some(136), None, rwm));
    v
}

/// The effective rule list for a config's device rules and devices. A config
/// without rules gets only the defaults and its `linux.devices`, as with runc:
/// never unrestricted access to the host's devices.
pub fn rules(config: &[LinuxDeviceCgroup], devices: &[LinuxDevice]) -> Result<Option<Vec<Rule>>> {
    let mut parsed = Vec::with_capacity(config.len());
    for (i, r) in config.iter().enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        let kind = match r.typ() {
            None | Some(LinuxDeviceType::A) => None,
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            Some(LinuxDeviceType::P) => {
                return Err(Error::config(format!("{field}.type"), "\"p\" is not a device cgroup type"))
            }
        };
        parsed.push(Rule {
            allow: r.allow(),
            kind,
            major: number(r.major(), &format!("{field}.major"))?,
            minor: number(r.minor(), &format!("{field}.minor"))?,
            access: parse_access(r.access().as_deref(), &format!("{field}.access"))?,
        });
    }
    let mut extra = defaults();
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::B => DEV_BLOCK,
            LinuxDeviceType::C | LinuxDeviceType::U => DEV_CHAR,
            _ => continue,
        };
        extra.push(rule(
            true,
            kind,
            number(Some(d.major()), "linux.devices")?,
            number(Some(d.minor()), "linux.devices")?,
            ACC_MKNOD | ACC_READ | ACC_WRITE,
        ));
    }
    let blanket = parsed
        .iter()
        .rposition(|r| r.kind.is_none() && r.major.is_none() && r.minor.is_none())
        .map(|i| i + 1)
        .unwrap_or(0);
    parsed.splice(blanket..blanket, extra);
    Ok(Some(parsed))
}

// BPF instruction encoding (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JEQ_K: u8 = 0x15;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

/// One BPF instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

/// Compiles `rules` into a program: R2 = type, R3 = access, R4 = major, R5 = minor,
/// rules checked last to first, the first match returning its verdict.
pub fn compile(rules: &[Rule]) -> Vec<Insn> {
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_MOV_X, 3, 2, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut checks: Vec<(u8, i32)> = Vec::new();
        if let Some(k) = r.kind {
            checks.push((2, k as i32));
        }
        if let Some(m) = r.major {
            checks.push((4, m as i32));
        }
        if let Some(m) = r.minor {
            checks.push((5, m as i32));
        }
        // Block: the checks, the access test (3 insns), the verdict (2 insns). Every
        // failed check jumps past the rest of the block.
        let total = checks.len() + 5;
        for (i, (reg, value)) in checks.iter().enumerate() {
            p.push(insn(JMP_JNE_K, *reg, 0, (total - i - 1) as i16, *value));
        }
        p.push(insn(ALU64_MOV_X, 6, 3, 0, 0));
        if r.allow {
            // Match when the request asks for nothing outside the rule's bits.
            p.push(insn(ALU64_AND_K, 6, 0, 0, (!r.access & 7) as i32));
            p.push(insn(JMP_JNE_K, 6, 0, 2, 0));
        } else {
            // Match when the request asks for any bit the rule denies.
            p.push(insn(ALU64_AND_K, 6, 0, 0, r.access as i32));
            p.push(insn(JMP_JEQ_K, 6, 0, 2, 0));
        }
        p.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> nix::Result<i64> {
    // SAFETY: `attr` is a zero-initialised buffer laid out as the command's union
    // bpf_attr member, alive and correctly sized for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if ret < 0 {
        Err(nix::Error::last())
    } else {
        Ok(ret)
    }
}

/// Programs this process has loaded, for reuse: a long-lived caller (a shim,
/// the function server) attaches the same few programs to many cgroups, and
/// the verifier's pass over each load is the expensive part.
static LOADED: std::sync::Mutex<Vec<(Vec<Insn>, std::sync::Arc<OwnedFd>)>> = std::sync::Mutex::new(Vec::new());
const LOADED_MAX: usize = 16;

/// Loads `program` (or reuses this process's earlier load of it) and attaches
/// it to the cgroup open at `cgroup`.
pub fn attach(cgroup: BorrowedFd<'_>, program: &[Insn]) -> Result<()> {
    attach_fd(cgroup, loaded(program)?.as_fd())
}

/// The program loaded (once per process: loads are cached).
fn loaded(program: &[Insn]) -> Result<std::sync::Arc<OwnedFd>> {
    let cached =
        LOADED.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(p, _)| p == program).map(|(_, fd)| fd.clone());
    Ok(match cached {
        Some(fd) => fd,
        None => {
            let fd = std::sync::Arc::new(load(program)?);
            let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
            if loaded.len() >= LOADED_MAX {
                loaded.remove(0);
            }
            loaded.push((program.to_vec(), fd.clone()));
            fd
        }
    })
}

/// Attaches `program` to the cgroup open at `cgroup`, a child of `parent`, a
/// cgroup this runtime made for its containers. Loading is the expensive
/// part (the verifier, the JIT), and a loaded program lives for as long as
/// it is attached somewhere: the program of a container under `parent` with
/// the same rules, still running, is attached again instead of loading a
/// copy. `parent` records, in a `trusted.` extended attribute (which only the
/// host's root can write) named after a digest of the instructions, the id
/// and the kernel's tag of the program last loaded for them; a program found
/// by that id is used only if it is a device program with that tag (a
/// digest of its instructions), so a gone program whose id was reused is not.
pub fn attach_shared(cgroup: BorrowedFd<'_>, parent: &Path, program: &[Insn]) -> Result<()> {
    let cached = LOADED.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|(p, _)| p == program);
    if !cached {
        let name = shared_name(program);
        if let Some(fd) = find_shared(parent, &name) {
            return attach_fd(cgroup, fd.as_fd());
        }
        let prog = loaded(program)?;
        if let Ok((_, id, tag)) = prog_info(prog.as_fd()) {
            let _ = set_xattr(parent, &name, format!("{id} {}", hex(&tag)).as_bytes());
        }
        return attach_fd(cgroup, prog.as_fd());
    }
    attach(cgroup, program)
}

/// The attribute naming `program`'s record: a SHA-256 of its instructions.
fn shared_name(program: &[Insn]) -> std::ffi::CString {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for i in program {
        h.update([i.code, i.regs]);
        h.update(i.off.to_le_bytes());
        h.update(i.imm.to_le_bytes());
    }
    let digest = h.finalize();
    std::ffi::CString::new(format!("trusted.strata.devices.{}", hex(&digest[..16]))).expect("no NUL in hex")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The live program `parent` records under `name`, checked (see [`attach_shared`]).
fn find_shared(parent: &Path, name: &std::ffi::CStr) -> Option<OwnedFd> {
    let mut value = [0u8; 64];
    let n = get_xattr(parent, name, &mut value).ok()?;
    let text = std::str::from_utf8(&value[..n]).ok()?;
    let (id, tag) = text.split_once(' ')?;
    let id: u32 = id.parse().ok()?;
    let fd = prog_fd_by_id(id).ok()?;
    let (kind, found_id, found_tag) = prog_info(fd.as_fd()).ok()?;
    (kind == BPF_PROG_TYPE_CGROUP_DEVICE && found_id == id && hex(&found_tag) == tag).then_some(fd)
}

/// A descriptor of the loaded program with id `id`.
fn prog_fd_by_id(id: u32) -> nix::Result<OwnedFd> {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let mut get = [0u8; 12];
    get[0..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut get)?;
    // SAFETY: the kernel just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn get_xattr(path: &Path, name: &std::ffi::CStr, value: &mut [u8]) -> nix::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    // SAFETY: both strings are NUL-terminated and `value` is writable for its length.
    let n = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
    if n < 0 {
        return Err(nix::Error::last());
    }
    Ok(n as usize)
}

fn set_xattr(path: &Path, name: &std::ffi::CStr, value: &[u8]) -> nix::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)?;
    // SAFETY: both strings are NUL-terminated and `value` is readable for its length.
    if unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) } < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

fn attach_fd(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<()> {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    let mut at = [0u8; 20];
    at[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    at[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    at[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    at[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    bpf(BPF_PROG_ATTACH, &mut at).map_err(|e| Error::sys("bpf", "attach the device cgroup program", e))?;
    Ok(())
}

/// Attaches `program` and detaches every other device program of the cgroup
/// (`update` of the device rules, a cgroup reused). A long-lived caller (a
/// shim) finds its cached program attached already when the rules did not
/// change: the kernel refuses attaching one program twice, so it stays.
pub fn replace(cgroup: BorrowedFd<'_>, program: &[Insn]) -> Result<()> {
    let old = attached_ids(cgroup)?;
    let prog = loaded(program)?;
    let new_id = prog_id(prog.as_fd()).map_err(|e| Error::sys("bpf", "the device program's id", e))?;
    if !old.contains(&new_id) {
        attach_fd(cgroup, prog.as_fd())?;
    }
    for id in old.into_iter().filter(|id| *id != new_id) {
        detach(cgroup, id)?;
    }
    Ok(())
}

/// Detaches every device program from the cgroup open at `cgroup`: a cgroup
/// the runtime leaves behind (one that existed before the container) goes
/// back to allowing what it allowed before.
pub fn detach_all(cgroup: BorrowedFd<'_>) -> Result<()> {
    for id in attached_ids(cgroup)? {
        detach(cgroup, id)?;
    }
    Ok(())
}

fn detach(cgroup: BorrowedFd<'_>, id: u32) -> Result<()> {
    const BPF_PROG_DETACH: libc::c_long = 9;
    let fd = match prog_fd_by_id(id) {
        Ok(fd) => fd,
        // Detached and freed by someone else meanwhile.
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::sys("bpf", format!("device program {id}"), e)),
    };
    let mut at = [0u8; 20];
    at[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    at[4..8].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    at[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    match bpf(BPF_PROG_DETACH, &mut at) {
        Ok(_) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(Error::sys("bpf", "detach a device cgroup program", e)),
    }
}

/// The attach type of device cgroup programs.
const BPF_CGROUP_DEVICE: u32 = 6;

/// Ids of the device programs attached to the cgroup open at `cgroup`.
fn attached_ids(cgroup: BorrowedFd<'_>) -> Result<Vec<u32>> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    let mut ids = [0u32; 64];
    let mut attr = [0u8; 40];
    attr[0..4].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[16..24].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&(ids.len() as u32).to_ne_bytes());
    bpf(BPF_PROG_QUERY, &mut attr).map_err(|e| Error::sys("bpf", "query the device cgroup programs", e))?;
    let count = u32::from_ne_bytes([attr[24], attr[25], attr[26], attr[27]]) as usize;
    Ok(ids[..count.min(ids.len())].to_vec())
}

/// The kernel's id of the loaded program `prog`.
fn prog_id(prog: BorrowedFd<'_>) -> nix::Result<u32> {
    prog_info(prog).map(|(_, id, _)| id)
}

/// The type, id and tag (a digest of the instructions) of the loaded program `prog`.
fn prog_info(prog: BorrowedFd<'_>) -> nix::Result<(u32, u32, [u8; 8])> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_prog_info starts with `__u32 type; __u32 id; __u8 tag[8];`.
    let mut info = [0u8; 16];
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&info[8..16]);
    Ok((
        u32::from_ne_bytes([info[0], info[1], info[2], info[3]]),
        u32::from_ne_bytes([info[4], info[5], info[6], info[7]]),
        tag,
    ))
}

/// The program type of device cgroup programs.
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;

/// Loads `program` as a device cgroup program (its descriptor is close-on-exec,
/// as every bpf descriptor).
fn load(program: &[Insn]) -> Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    let license = c"Apache-2.0";
    let load = |log: Option<&mut Vec<u8>>| {
        let mut attr = [0u8; 72];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
        attr[4..8].copy_from_slice(&(program.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(program.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        if let Some(log) = log {
            attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
            attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
            attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
        }
        attr[48..55].copy_from_slice(b"strata\0");
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    // Without a verifier log first (it costs time and can overflow its buffer); on
    // failure once more with one, to say why.
    let prog = load(None).map_err(|e| {
        let mut log = vec![0u8; 1 << 16];
        let _ = load(Some(&mut log));
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let msg = String::from_utf8_lossy(&log[end.saturating_sub(400)..end]).trim().to_string();
        Error::Init(format!(
            "load the device cgroup program: {e}{}",
            if msg.is_empty() { String::new() } else { format!(": {msg}") }
        ))
    })?;
    // SAFETY: the kernel just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(prog as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a compiled program the way the kernel would, for the opcodes we emit.
    fn run(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JEQ_K if r[dst] == i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_K | JMP_JEQ_K => {}
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn cfg(json: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(json).expect("rules")
    }

    const R: u32 = ACC_READ;
    const W: u32 = ACC_WRITE;
    const M: u32 = ACC_MKNOD;

    #[test]
    fn deny_all_keeps_the_default_devices() {
        let rules =
            rules(&cfg(serde_json::json!([{ "allow": false, "access": "rwm" }])), &[]).expect("rules").expect("some");
        let p = compile(&rules);
        assert_eq!(run(&p, DEV_CHAR, R | W, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, DEV_CHAR, R, 136, 7), 1, "/dev/pts/7");
        assert_eq!(run(&p, DEV_BLOCK, M, 8, 0), 1, "mknod is allowed");
        assert_eq!(run(&p, DEV_BLOCK, R, 8, 0), 0, "the host's disk");
        assert_eq!(run(&p, DEV_CHAR, R | W, 10, 229), 0, "fuse, not listed");
    }

    #[test]
    fn later_rules_win_and_partial_access() {
        let rules = rules(
            &cfg(serde_json::json!([
                { "allow": false, "access": "rwm" },
                { "allow": true, "type": "c", "major": 10, "minor": 229, "access": "r" },
                { "allow": false, "type": "c", "major": 1, "minor": 3, "access": "w" }
            ])),
            &[],
        )
        .expect("rules")
        .expect("some");
        let p = compile(&rules);
        assert_eq!(run(&p, DEV_CHAR, R, 10, 229), 1);
        assert_eq!(run(&p, DEV_CHAR, R | W, 10, 229), 0, "write not covered by the allow rule");
        assert_eq!(run(&p, DEV_CHAR, R, 1, 3), 1, "only writes to /dev/null are denied");
        assert_eq!(run(&p, DEV_CHAR, W, 1, 3), 0);
    }

    #[test]
    fn allow_all_and_configured_devices() {
        let devices: Vec<LinuxDevice> = serde_json::from_value(
            serde_json::json!([{ "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229 }]),
        )
        .expect("devices");
        let p = compile(&rules(&cfg(serde_json::json!([{ "allow": false }])), &devices).expect("rules").expect("some"));
        assert_eq!(run(&p, DEV_CHAR, R | W, 10, 229), 1, "linux.devices entries are allowed");
        let p = compile(
            &rules(&cfg(serde_json::json!([{ "allow": true, "access": "rwm" }])), &[]).expect("rules").expect("some"),
        );
        assert_eq!(run(&p, DEV_BLOCK, R | W, 8, 0), 1);
        let p = compile(&rules(&[], &[]).expect("rules").expect("some"));
        assert_eq!(run(&p, DEV_CHAR, R | W, 1, 3), 1, "no rules: defaults allowed");
        assert_eq!(run(&p, DEV_BLOCK, R, 8, 0), 0, "no rules: everything else denied");
    }

    #[test]
    fn invalid_rules() {
        assert!(rules(&cfg(serde_json::json!([{ "allow": true, "access": "rx" }])), &[]).is_err());
        assert!(rules(&cfg(serde_json::json!([{ "allow": true, "major": -5 }])), &[]).is_err());
    }
}
