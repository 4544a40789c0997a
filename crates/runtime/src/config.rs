//! Loading `config.json` from a bundle and refusing what the runtime cannot honour,
//! before anything is created. Every error names the offending field.

use crate::{Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Largest config.json accepted (runc has no limit; 16 MiB is far above any real config).
const MAX_CONFIG_SIZE: u64 = 16 << 20;

/// Reads and parses `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let err = |reason: String| Error::ConfigLoad { path: path.clone(), reason };
    let data = read_regular_file(&path, MAX_CONFIG_SIZE).map_err(err)?;
    parse(&data).map_err(|e| match e {
        Error::ConfigLoad { reason, .. } => err(reason),
        other => other,
    })
}

/// Reads a JSON document the caller controls: only a regular file (a FIFO would
/// block us, /dev/zero would never end) and at most `max` bytes.
pub fn read_regular_file(path: &Path, max: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut data).map_err(|e| e.to_string())?;
    if data.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(data)
}

/// Where the spec has an object (serde would also fill a struct from an array,
/// field by field, turning `"linux": []` into an empty linux section). `*` is any
/// element of an array, `%` any value of an object.
const OBJECTS: &[&str] = &[
    "",
    "/process",
    "/process/user",
    "/process/capabilities",
    "/process/consoleSize",
    "/process/scheduler",
    "/process/ioPriority",
    "/process/execCPUAffinity",
    "/process/rlimits/*",
    "/root",
    "/mounts/*",
    "/hooks",
    "/hooks/%/*",
    "/linux",
    "/linux/namespaces/*",
    "/linux/uidMappings/*",
    "/linux/gidMappings/*",
    "/linux/devices/*",
    "/linux/resources",
    "/linux/resources/devices/*",
    "/linux/resources/memory",
    "/linux/resources/cpu",
    "/linux/resources/pids",
    "/linux/resources/blockIO",
    "/linux/resources/hugepageLimits/*",
    "/linux/resources/network",
    "/linux/seccomp",
    "/linux/seccomp/syscalls/*",
    "/linux/seccomp/syscalls/*/args/*",
    "/linux/personality",
];

fn kind(first: u8) -> &'static str {
    match first {
        b'[' => "an array",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'{' => "an object",
        b'n' => "null",
        _ => "a number",
    }
}

fn matches(pattern: &[&str], path: &[crate::jsonpath::Seg]) -> bool {
    use crate::jsonpath::Seg;
    pattern.len() == path.len()
        && pattern.iter().zip(path).all(|(p, s)| match (*p, s) {
            ("*", Seg::Index(_)) | ("%", Seg::Key(_)) => true,
            (name, Seg::Key(k)) => name == k,
            _ => false,
        })
}

/// Refuses a document with something other than an object (or null) where one
/// of `patterns` (relative to the document) says the spec has an object.
fn check_objects(data: &[u8], patterns: &[&str]) -> std::result::Result<(), String> {
    let patterns: Vec<Vec<&str>> = patterns.iter().map(|p| p.split('/').filter(|s| !s.is_empty()).collect()).collect();
    let mut problem = None;
    crate::jsonpath::walk(data, |path, _, first| {
        // Anything but a JSON value's first byte is a syntax error for serde to name.
        let is_value = matches!(first, b'[' | b'"' | b't' | b'f' | b'-' | b'0'..=b'9');
        if !is_value || !patterns.iter().any(|p| matches(p, path)) {
            return true;
        }
        problem = Some(if path.is_empty() {
            format!("the document must be a JSON object, not {}", kind(first))
        } else {
            format!("{}: expected an object, found {}", crate::jsonpath::format(path), kind(first))
        });
        false
    });
    problem.map_or(Ok(()), Err)
}

/// A serde_json error with the path of the field it is about.
fn describe(data: &[u8], e: &serde_json::Error) -> String {
    if e.is_syntax() || e.is_eof() || e.line() == 0 {
        return e.to_string();
    }
    let at = crate::jsonpath::offset_of(data, e.line(), e.column());
    let path = crate::jsonpath::format(&crate::jsonpath::path_at(data, at));
    if path.is_empty() {
        e.to_string()
    } else {
        format!("{path}: {e}")
    }
}

/// Parses config JSON. Errors name the field (`process.user.uid: invalid value`).
pub fn parse(data: &[u8]) -> Result<Spec> {
    let err = |reason: String| Error::ConfigLoad { path: PathBuf::from("config.json"), reason };
    check_objects(data, OBJECTS).map_err(err)?;
    let data = respell_scheduler_flags(data, &["process"]).map_err(err)?;
    serde_json::from_slice(&data).map_err(|e| err(describe(&data, &e)))
}

/// Parses an `exec` process.json the same way (`what` names it in errors).
pub fn parse_process(data: &[u8], what: &Path) -> Result<oci_spec::runtime::Process> {
    let err = |reason: String| Error::ConfigLoad { path: what.to_path_buf(), reason };
    let patterns: Vec<&str> =
        std::iter::once("").chain(OBJECTS.iter().filter_map(|p| p.strip_prefix("/process"))).collect();
    check_objects(data, &patterns).map_err(err)?;
    let data = respell_scheduler_flags(data, &[]).map_err(err)?;
    serde_json::from_slice(&data).map_err(|e| err(describe(&data, &e)))
}

/// Scheduler flags the spec names differently from the config types
/// (oci-spec 0.10): (the spec's name, the types' name).
const SCHEDULER_FLAG_SPELLINGS: &[(&str, &str)] =
    &[("SCHED_FLAG_RESET_ON_FORK", "SCHED_RESET_ON_FORK"), ("SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_D_L_OVERRUN")];

/// Rewrites the spec's spellings of scheduler flags (at `base`.scheduler.flags)
/// into the config types' before serde reads them, and refuses the types' own
/// spellings, which the spec does not have.
fn respell_scheduler_flags<'a>(
    data: &'a [u8],
    base: &[&str],
) -> std::result::Result<std::borrow::Cow<'a, [u8]>, String> {
    use crate::jsonpath::Seg;
    let mut edits: Vec<(usize, usize, &str)> = Vec::new();
    let mut problem = None;
    crate::jsonpath::walk(data, |path, at, first| {
        let is_flag = first == b'"'
            && path.len() == base.len() + 3
            && path
                .iter()
                .zip(base.iter().chain(["scheduler", "flags"].iter()))
                .all(|(seg, want)| matches!(seg, Seg::Key(k) if k == want))
            && matches!(path.last(), Some(Seg::Index(_)));
        if !is_flag {
            return true;
        }
        for (spec, types) in SCHEDULER_FLAG_SPELLINGS {
            if data[at..].starts_with(format!("\"{spec}\"").as_bytes()) {
                edits.push((at + 1, spec.len(), types));
            } else if data[at..].starts_with(format!("\"{types}\"").as_bytes()) {
                problem = Some(format!(
                    "{}: unknown variant `{types}` (the spec names it `{spec}`)",
                    crate::jsonpath::format(path)
                ));
                return false;
            }
        }
        true
    });
    if let Some(p) = problem {
        return Err(p);
    }
    if edits.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let mut out = Vec::with_capacity(data.len());
    let mut from = 0;
    for (at, len, with) in edits {
        out.extend_from_slice(&data[from..at]);
        out.extend_from_slice(with.as_bytes());
        from = at + len;
    }
    out.extend_from_slice(&data[from..]);
    Ok(std::borrow::Cow::Owned(out))
}

/// The absolute root filesystem path of `spec` in `bundle`.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| Error::config("root", "missing"))?;
    let p = root.path();
    if p.as_os_str().is_empty() {
        return Err(Error::config("root.path", "empty"));
    }
    Ok(if p.is_absolute() { p.clone() } else { bundle.join(p) })
}

/// Checks everything about `spec` that can be checked before creating anything.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<()> {
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(Error::config("ociVersion", format!("{version:?} is not a 1.x version")));
    }
    let rootfs = rootfs_path(spec, bundle)?;
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::config("root.path", format!("{} is not a directory", rootfs.display()))),
        Err(e) => return Err(Error::config("root.path", format!("{}: {e}", rootfs.display()))),
    }
    // The spec makes `process` optional for create and required for start: a
    // container without one is set up and waits, and `start` refuses it.
    if let Some(process) = spec.process() {
        validate_process(process, "process")?;
    }

    let linux = spec.linux().as_ref().ok_or_else(|| Error::config("linux", "missing"))?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut seen = HashSet::new();
    for (i, ns) in namespaces.iter().enumerate() {
        if !seen.insert(ns.typ()) {
            return Err(Error::config(format!("linux.namespaces[{i}]"), format!("duplicate {:?} namespace", ns.typ())));
        }
        if let Some(path) = ns.path() {
            if !path.is_absolute() {
                return Err(Error::config(format!("linux.namespaces[{i}].path"), "must be absolute"));
            }
            if !path.exists() {
                return Err(Error::config(
                    format!("linux.namespaces[{i}].path"),
                    format!("{} does not exist", path.display()),
                ));
            }
        }
    }
    let has_new = |t| namespaces.iter().any(|n| n.typ() == t && n.path().is_none());
    let has = |t| namespaces.iter().any(|n| n.typ() == t);
    if (linux.uid_mappings().is_some() || linux.gid_mappings().is_some()) && !has_new(LinuxNamespaceType::User) {
        return Err(Error::config("linux.uidMappings", "id mappings need a new user namespace"));
    }
    if has_new(LinuxNamespaceType::User) && (linux.uid_mappings().is_none() || linux.gid_mappings().is_none()) {
        return Err(Error::config("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings"));
    }
    for (field, value) in [("hostname", spec.hostname()), ("domainname", spec.domainname())] {
        if let Some(v) = value {
            if v.contains('\0') {
                return Err(Error::config(field, "contains a NUL byte"));
            }
            // HOST_NAME_MAX (sethostname refuses more).
            if v.len() > 64 {
                return Err(Error::config(field, format!("is {} bytes long; the limit is 64", v.len())));
            }
        }
    }
    // A joined uts namespace is the container's own too; without any, the name
    // would be the host's.
    if spec.hostname().is_some() && !has(LinuxNamespaceType::Uts) {
        return Err(Error::config("hostname", "setting a hostname needs a uts namespace (new or joined)"));
    }
    if spec.domainname().is_some() && !has(LinuxNamespaceType::Uts) {
        return Err(Error::config("domainname", "setting a domainname needs a uts namespace (new or joined)"));
    }
    if linux.time_offsets().is_some() && !has_new(LinuxNamespaceType::Time) {
        return Err(Error::config("linux.timeOffsets", "time offsets need a new time namespace"));
    }
    if let Some(offsets) = linux.time_offsets() {
        for clock in offsets.keys() {
            if clock != "monotonic" && clock != "boottime" {
                return Err(Error::config(
                    format!("linux.timeOffsets.{clock}"),
                    "only monotonic and boottime can be offset",
                ));
            }
        }
    }
    if !has(LinuxNamespaceType::Mount) {
        // The container then shares the runtime's mount namespace (the spec's
        // "inherit"): masking and read-only paths would change the host's mounts.
        for (name, list) in [("maskedPaths", linux.masked_paths()), ("readonlyPaths", linux.readonly_paths())] {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(Error::config(
                    format!("linux.{name}"),
                    "needs a mount namespace of the container's own (none is in linux.namespaces)",
                ));
            }
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        for key in sysctl.keys() {
            validate_sysctl(key, &namespaces)?;
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        if crate::rootfs::options::propagation(prop).is_none() {
            return Err(Error::config("linux.rootfsPropagation", format!("unknown propagation {prop:?}")));
        }
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let field = format!("mounts[{i}]");
        no_nul(&format!("{field}.destination"), m.destination())?;
        if let Some(src) = m.source() {
            no_nul(&format!("{field}.source"), src)?;
        }
        if !m.destination().is_absolute() {
            return Err(Error::config(
                format!("{field}.destination"),
                format!("{} is not absolute", m.destination().display()),
            ));
        }
        let opts = crate::rootfs::options::parse(m.options().as_deref().unwrap_or_default(), &field)?;
        if opts.copy_up && m.typ().as_deref() != Some("tmpfs") {
            return Err(Error::config(format!("{field}.options"), "tmpcopyup only applies to tmpfs mounts"));
        }
        crate::rootfs::idmap::of(spec.linux().as_ref(), m, i)?;
    }
    // A device node may be anywhere in the container (the spec asks only for a
    // full path); it is created inside the root like any other path.
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let dots = d.path().components().any(|c| c == std::path::Component::ParentDir);
        if !d.path().is_absolute() || dots || d.path().file_name().is_none() {
            return Err(Error::config(
                format!("linux.devices[{i}].path"),
                format!("{} is not an absolute path to a file in the container", d.path().display()),
            ));
        }
    }
    // Relative paths are taken from the container's root, as runc takes them.
    for (name, list) in [("maskedPaths", linux.masked_paths()), ("readonlyPaths", linux.readonly_paths())] {
        for (i, p) in list.iter().flatten().enumerate() {
            let field = format!("linux.{name}[{i}]");
            no_nul(&field, Path::new(p))?;
            if p.is_empty() {
                return Err(Error::config(field, "is empty"));
            }
        }
    }
    if let Some(hooks) = spec.hooks() {
        #[allow(deprecated)]
        let lists = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (kind, list) in lists {
            for (i, h) in list.iter().flatten().enumerate() {
                if !h.path().is_absolute() {
                    return Err(Error::config(
                        format!("hooks.{kind}[{i}].path"),
                        format!("{} is not absolute", h.path().display()),
                    ));
                }
                if h.timeout() == Some(0) || h.timeout().is_some_and(|t| t < 0) {
                    return Err(Error::config(format!("hooks.{kind}[{i}].timeout"), "must be greater than zero"));
                }
            }
        }
    }
    check_host_features(spec)
}

/// What a container without a mount namespace of its own does not get (nothing
/// is mounted in the host's namespace), as warnings naming the fields.
pub fn ignored_without_mount_namespace(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
        out.push("mounts: ignored without a mount namespace of the container's own".to_string());
    }
    if spec.root().as_ref().is_some_and(|r| r.readonly() == Some(true)) {
        out.push("root.readonly: ignored without a mount namespace of the container's own".to_string());
    }
    if spec.linux().as_ref().and_then(|l| l.devices().as_ref()).is_some_and(|d| !d.is_empty()) {
        out.push("linux.devices: not created without a mount namespace of the container's own".to_string());
    }
    if spec.linux().as_ref().and_then(|l| l.rootfs_propagation().as_ref()).is_some() {
        out.push("linux.rootfsPropagation: ignored without a mount namespace of the container's own".to_string());
    }
    out
}

/// Refuses a path with a NUL byte (the kernel would cut it short), naming `field`.
fn no_nul(field: &str, p: &Path) -> Result<()> {
    if p.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::config(field, "contains a NUL byte"));
    }
    Ok(())
}

/// Checks a process (from config.json or an `exec` process.json).
pub fn validate_process(process: &oci_spec::runtime::Process, field: &str) -> Result<()> {
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::config(format!("{field}.args"), "must name a program"));
    }
    // (u32::MAX would reach setresuid as -1, "leave unchanged": the process would
    // stay root.)
    let user = process.user();
    if user.uid() == u32::MAX
        || user.gid() == u32::MAX
        || user.additional_gids().iter().flatten().any(|&g| g == u32::MAX)
    {
        return Err(Error::config(format!("{field}.user"), "4294967295 is not a valid id"));
    }
    if let Some(size) = process.console_size() {
        if size.width() > u64::from(u16::MAX) || size.height() > u64::from(u16::MAX) {
            return Err(Error::config(format!("{field}.consoleSize"), "width and height must fit in 16 bits"));
        }
    }
    no_nul(&format!("{field}.cwd"), process.cwd())?;
    if !process.cwd().is_absolute() {
        return Err(Error::config(format!("{field}.cwd"), format!("{} is not absolute", process.cwd().display())));
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            return Err(Error::config(format!("{field}.env[{i}]"), format!("{e:?} is not KEY=VALUE")));
        }
    }
    for (list, items) in [("args", args), ("env", process.env().as_deref().unwrap_or_default())] {
        for (i, s) in items.iter().enumerate() {
            if s.contains('\0') {
                return Err(Error::config(format!("{field}.{list}[{i}]"), "contains a NUL byte"));
            }
            // MAX_ARG_STRLEN: execve refuses a longer string.
            if s.len() >= 131_072 {
                return Err(Error::config(
                    format!("{field}.{list}[{i}]"),
                    format!("is {} bytes long; execve takes at most 131071", s.len()),
                ));
            }
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(Error::config(format!("{field}.oomScoreAdj"), format!("{adj} is outside -1000..1000")));
        }
    }
    let mut seen = HashSet::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        if !seen.insert(format!("{:?}", r.typ())) {
            return Err(Error::config(format!("{field}.rlimits[{i}]"), format!("duplicate {:?}", r.typ())));
        }
        if r.soft() > r.hard() {
            return Err(Error::config(format!("{field}.rlimits[{i}]"), "soft limit is above the hard limit"));
        }
    }
    crate::lsm::check(process.apparmor_profile(), process.selinux_label(), field)
}

/// Sysctls must be namespaced and belong to a namespace the container has its own of.
fn validate_sysctl(key: &str, namespaces: &[oci_spec::runtime::LinuxNamespace]) -> Result<()> {
    let field = format!("linux.sysctl.{key}");
    if key.is_empty()
        || key.contains('/') && key.contains('.')
        || key.split(['.', '/']).any(|c| c.is_empty() || c == "..")
    {
        return Err(Error::config(field, "not a valid sysctl name"));
    }
    // The container's own: new, or joined by path but not the runtime's own
    // (then the sysctl would change the host), as runc checks it.
    let has_new = |t| {
        namespaces.iter().any(|n: &oci_spec::runtime::LinuxNamespace| {
            n.typ() == t
                && match n.path() {
                    None => true,
                    Some(p) => !same_namespace(p, &format!("/proc/self/ns/{}", crate::namespaces::proc_name(t))),
                }
        })
    };
    let key = key.replace('/', ".");
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let ok = if ipc.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
        has_new(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        has_new(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        has_new(LinuxNamespaceType::Uts)
    } else {
        return Err(Error::config(field, "not a namespaced sysctl: it would change the host"));
    };
    if !ok {
        return Err(Error::config(field, "needs the container to have its own namespace for it"));
    }
    Ok(())
}

/// Whether two namespace files name the same namespace.
fn same_namespace(a: &Path, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
        // Unreadable: assume the worst.
        _ => true,
    }
}

/// Fields whose features this host may lack (a label system, resctrl, NUMA
/// nodes, cgroup controllers): refused loudly, never ignored.
fn check_host_features(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    crate::lsm::check_mount_label(linux.mount_label())?;
    if let Some(r) = linux.intel_rdt() {
        crate::rdt::plan(r)?;
        crate::rdt::mount()?;
    }
    crate::process::policies::Policies::for_host(Some(linux))?;
    if let Some(devices) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) {
        crate::network::planned(devices)?;
        let own_netns =
            linux.namespaces().iter().flatten().any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network);
        if !own_netns {
            return Err(Error::config(
                "linux.netDevices",
                "the container shares the runtime's network namespace: devices move into a network namespace of its own",
            ));
        }
    }
    if let Some(r) = linux.resources() {
        crate::cgroups::resources::plan(r)?;
        crate::cgroups::devices::rules(
            r.devices().as_deref().unwrap_or_default(),
            linux.devices().as_deref().unwrap_or_default(),
        )?;
    }
    Ok(())
}

/// The config.json that `strata spec` writes: a busybox-friendly container running
/// `sh` on a terminal, with the usual mounts, masked and read-only paths.
pub fn default_spec_json() -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "process": {
            "terminal": true,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "strata",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/scsi"
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// The default config for an unprivileged user (`strata spec --rootless`), as
/// runc writes it: a user namespace mapping the caller's uid and gid to root,
/// no cgroup mount or namespace, no uid=/gid= mount options (ids the namespace
/// does not map), no resources. Unlike runc's, it keeps a network namespace of
/// its own (loopback only, made without privileges), so /sys stays a sysfs of
/// the container's own rather than a bind of the host's (with its cgroup
/// trees); a config without one gets the bind (see rootfs/mounts.rs).
pub fn rootless_spec_json(uid: u32, gid: u32) -> serde_json::Value {
    let mut spec = default_spec_json();
    let namespaces: Vec<serde_json::Value> = spec["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["type"] != "user" && n["type"] != "cgroup")
        .cloned()
        .chain([serde_json::json!({ "type": "user" })])
        .collect();
    spec["linux"]["namespaces"] = namespaces.into();
    spec["linux"]["uidMappings"] = serde_json::json!([{ "containerID": 0, "hostID": uid, "size": 1 }]);
    spec["linux"]["gidMappings"] = serde_json::json!([{ "containerID": 0, "hostID": gid, "size": 1 }]);
    if let Some(linux) = spec["linux"].as_object_mut() {
        linux.remove("resources");
    }
    let mounts: Vec<serde_json::Value> = spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["destination"] != "/sys/fs/cgroup")
        .map(|m| {
            let mut m = m.clone();
            if let Some(opts) = m["options"].as_array_mut() {
                opts.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("uid=") || o.starts_with("gid=")));
            }
            m
        })
        .collect();
    spec["mounts"] = mounts.into();
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_spec_maps_the_caller_and_asks_for_nothing_privileged() {
        let s = rootless_spec_json(1001, 1002);
        assert_eq!(s["linux"]["uidMappings"][0]["hostID"], 1001);
        assert_eq!(s["linux"]["gidMappings"][0]["hostID"], 1002);
        let ns: Vec<&str> =
            s["linux"]["namespaces"].as_array().expect("ns").iter().filter_map(|n| n["type"].as_str()).collect();
        assert!(ns.contains(&"user") && ns.contains(&"network") && !ns.contains(&"cgroup"), "{ns:?}");
        assert!(s["linux"]["resources"].is_null());
        let text = s["mounts"].to_string();
        assert!(!text.contains("gid=5") && !text.contains("/sys/fs/cgroup") && text.contains("sysfs"), "{text}");
        let d = bundle("rootless", &s);
        let r = load(&d).and_then(|spec| validate(&spec, &d));
        let _ = std::fs::remove_dir_all(&d);
        assert!(r.is_ok(), "{r:?}");
    }

    fn bundle(tag: &str, config: &serde_json::Value) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("rootfs")).expect("mkdir");
        std::fs::write(d.join("config.json"), config.to_string()).expect("write");
        d
    }

    /// Loads and validates `config` after applying `edit`; returns the error text.
    fn error_of(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut config = default_spec_json();
        edit(&mut config);
        let d = bundle(tag, &config);
        let r = load(&d).and_then(|s| validate(&s, &d));
        let _ = std::fs::remove_dir_all(&d);
        match r {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(error_of("default", |_| {}), "");
    }

    #[test]
    fn the_spec_allows_what_runc_runs() {
        // No process (required only by start), no namespaces at all, and a
        // hostname in a joined uts namespace.
        assert_eq!(error_of("noproc", |c| drop(c.as_object_mut().map(|o| o.remove("process")))), "");
        assert_eq!(
            error_of("nons", |c| {
                c["linux"]["namespaces"] = serde_json::json!([]);
                c.as_object_mut().map(|o| o.remove("hostname"));
                c["linux"].as_object_mut().map(|o| {
                    o.remove("maskedPaths");
                    o.remove("readonlyPaths")
                });
            }),
            ""
        );
        assert_eq!(
            error_of("joinuts", |c| {
                c["linux"]["namespaces"] =
                    serde_json::json!([{"type": "mount"}, {"type": "uts", "path": "/proc/self/ns/uts"}]);
            }),
            ""
        );
    }

    /// (name, change to the default config, text the error must contain).
    type Case = (&'static str, Box<dyn FnOnce(&mut serde_json::Value)>, &'static str);

    #[test]
    fn bad_configs_name_the_field() {
        let cases: Vec<Case> = vec![
            ("noargs", Box::new(|c| c["process"]["args"] = serde_json::json!([])), "process.args"),
            ("relcwd", Box::new(|c| c["process"]["cwd"] = "tmp".into()), "process.cwd"),
            ("cwdtype", Box::new(|c| c["process"]["cwd"] = 5.into()), "invalid type"),
            ("nsunknown", Box::new(|c| c["linux"]["namespaces"][0]["type"] = "bogus".into()), "unknown variant"),
            ("nsdup", Box::new(|c| c["linux"]["namespaces"][1]["type"] = "pid".into()), "duplicate"),
            (
                "nomnt",
                Box::new(|c| c["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "uts"}])),
                "mount namespace",
            ),
            (
                "hookrel",
                Box::new(|c| c["hooks"] = serde_json::json!({"prestart": [{"path": "bin/true"}]})),
                "hooks.prestart[0].path",
            ),
            ("noroot", Box::new(|c| c["root"]["path"] = "missing".into()), "root.path"),
            ("version", Box::new(|c| c["ociVersion"] = "2.0.0".into()), "ociVersion"),
            ("mountrel", Box::new(|c| c["mounts"][0]["destination"] = "proc".into()), "mounts[0].destination"),
            (
                "sysctl",
                Box::new(|c| c["linux"]["sysctl"] = serde_json::json!({"kernel.panic": "1"})),
                "linux.sysctl.kernel.panic",
            ),
            (
                "maps",
                Box::new(|c| {
                    c["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}])
                }),
                "linux.uidMappings",
            ),
            ("oom", Box::new(|c| c["process"]["oomScoreAdj"] = 5000.into()), "process.oomScoreAdj"),
            ("rlimit", Box::new(|c| c["process"]["rlimits"][0]["soft"] = 4096.into()), "soft limit"),
            ("env", Box::new(|c| c["process"]["env"] = serde_json::json!(["NOEQUALS"])), "process.env[0]"),
            ("hostname", Box::new(|c| c["linux"]["namespaces"] = serde_json::json!([{"type": "mount"}])), "hostname"),
            (
                "swappiness",
                Box::new(|c| c["linux"]["resources"]["memory"] = serde_json::json!({"swappiness": 10})),
                "linux.resources.memory.swappiness",
            ),
            ("idmap", Box::new(|c| c["mounts"][0]["options"] = serde_json::json!(["idmap"])), "mounts[0]"),
            (
                "timeoff",
                Box::new(|c| c["linux"]["timeOffsets"] = serde_json::json!({"monotonic": {"secs": 1}})),
                "linux.timeOffsets",
            ),
            (
                "hooktimeout",
                Box::new(|c| c["hooks"] = serde_json::json!({"poststop": [{"path": "/bin/true", "timeout": 0}]})),
                "hooks.poststop[0].timeout",
            ),
        ];
        for (tag, edit, want) in cases {
            let got = error_of(tag, edit);
            assert!(got.contains(want), "{tag}: expected an error containing {want:?}, got {got:?}");
        }
    }
}

/// Every value the runtime spec's JSON schema (v1.3) allows for an enumerated
/// field must parse, and a value outside it must fail naming the field: the
/// config types once spelled two scheduler flags differently from the spec.
#[cfg(test)]
mod schema_enums {
    use super::*;
    use serde_json::json;

    /// (JSON pointer of the field in the default config, values the schema allows).
    fn enums() -> Vec<(&'static str, Vec<&'static str>)> {
        vec![
            ("/linux/namespaces/0/type", vec!["mount", "pid", "network", "uts", "ipc", "user", "cgroup", "time"]),
            ("/linux/rootfsPropagation", vec!["private", "shared", "slave", "unbindable"]),
            (
                "/linux/seccomp/architectures/0",
                vec![
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
                ],
            ),
            (
                "/linux/seccomp/syscalls/0/action",
                vec![
                    "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD",
                    "SCMP_ACT_TRAP",
                    "SCMP_ACT_ERRNO",
                    "SCMP_ACT_TRACE",
                    "SCMP_ACT_ALLOW",
                    "SCMP_ACT_LOG",
                    "SCMP_ACT_NOTIFY",
                ],
            ),
            (
                "/linux/seccomp/flags/0",
                vec![
                    "SECCOMP_FILTER_FLAG_TSYNC",
                    "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
                ],
            ),
            (
                "/linux/seccomp/syscalls/0/args/0/op",
                vec![
                    "SCMP_CMP_NE",
                    "SCMP_CMP_LT",
                    "SCMP_CMP_LE",
                    "SCMP_CMP_EQ",
                    "SCMP_CMP_GE",
                    "SCMP_CMP_GT",
                    "SCMP_CMP_MASKED_EQ",
                ],
            ),
            (
                "/process/scheduler/policy",
                vec![
                    "SCHED_OTHER",
                    "SCHED_FIFO",
                    "SCHED_RR",
                    "SCHED_BATCH",
                    "SCHED_ISO",
                    "SCHED_IDLE",
                    "SCHED_DEADLINE",
                ],
            ),
            (
                "/process/scheduler/flags/0",
                vec![
                    "SCHED_FLAG_RESET_ON_FORK",
                    "SCHED_FLAG_RECLAIM",
                    "SCHED_FLAG_DL_OVERRUN",
                    "SCHED_FLAG_KEEP_POLICY",
                    "SCHED_FLAG_KEEP_PARAMS",
                    "SCHED_FLAG_UTIL_CLAMP_MIN",
                    "SCHED_FLAG_UTIL_CLAMP_MAX",
                ],
            ),
            ("/process/ioPriority/class", vec!["IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"]),
            ("/linux/personality/domain", vec!["LINUX", "LINUX32"]),
            (
                "/linux/memoryPolicy/mode",
                vec![
                    "MPOL_DEFAULT",
                    "MPOL_BIND",
                    "MPOL_INTERLEAVE",
                    "MPOL_WEIGHTED_INTERLEAVE",
                    "MPOL_PREFERRED",
                    "MPOL_PREFERRED_MANY",
                    "MPOL_LOCAL",
                ],
            ),
            (
                "/linux/memoryPolicy/flags/0",
                vec!["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"],
            ),
            (
                "/process/rlimits/0/type",
                vec![
                    "RLIMIT_AS",
                    "RLIMIT_CORE",
                    "RLIMIT_CPU",
                    "RLIMIT_DATA",
                    "RLIMIT_FSIZE",
                    "RLIMIT_LOCKS",
                    "RLIMIT_MEMLOCK",
                    "RLIMIT_MSGQUEUE",
                    "RLIMIT_NICE",
                    "RLIMIT_NOFILE",
                    "RLIMIT_NPROC",
                    "RLIMIT_RSS",
                    "RLIMIT_RTPRIO",
                    "RLIMIT_RTTIME",
                    "RLIMIT_SIGPENDING",
                    "RLIMIT_STACK",
                ],
            ),
            (
                "/process/capabilities/bounding/0",
                vec![
                    "CAP_CHOWN",
                    "CAP_DAC_OVERRIDE",
                    "CAP_DAC_READ_SEARCH",
                    "CAP_FOWNER",
                    "CAP_FSETID",
                    "CAP_KILL",
                    "CAP_SETGID",
                    "CAP_SETUID",
                    "CAP_SETPCAP",
                    "CAP_LINUX_IMMUTABLE",
                    "CAP_NET_BIND_SERVICE",
                    "CAP_NET_BROADCAST",
                    "CAP_NET_ADMIN",
                    "CAP_NET_RAW",
                    "CAP_IPC_LOCK",
                    "CAP_IPC_OWNER",
                    "CAP_SYS_MODULE",
                    "CAP_SYS_RAWIO",
                    "CAP_SYS_CHROOT",
                    "CAP_SYS_PTRACE",
                    "CAP_SYS_PACCT",
                    "CAP_SYS_ADMIN",
                    "CAP_SYS_BOOT",
                    "CAP_SYS_NICE",
                    "CAP_SYS_RESOURCE",
                    "CAP_SYS_TIME",
                    "CAP_SYS_TTY_CONFIG",
                    "CAP_MKNOD",
                    "CAP_LEASE",
                    "CAP_AUDIT_WRITE",
                    "CAP_AUDIT_CONTROL",
                    "CAP_SETFCAP",
                    "CAP_MAC_OVERRIDE",
                    "CAP_MAC_ADMIN",
                    "CAP_SYSLOG",
                    "CAP_WAKE_ALARM",
                    "CAP_BLOCK_SUSPEND",
                    "CAP_AUDIT_READ",
                    "CAP_PERFMON",
                    "CAP_BPF",
                    "CAP_CHECKPOINT_RESTORE",
                ],
            ),
            ("/linux/devices/0/type", vec!["c", "b", "u", "p"]),
            ("/linux/resources/devices/0/type", vec!["a", "c", "b"]),
        ]
    }

    /// The default config with every enumerated field present, so each pointer
    /// above names a place that exists.
    fn config() -> serde_json::Value {
        let mut c = default_spec_json();
        c["process"]["scheduler"] = json!({ "policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_RECLAIM"] });
        c["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_BE", "priority": 4 });
        c["linux"]["rootfsPropagation"] = json!("private");
        c["linux"]["personality"] = json!({ "domain": "LINUX" });
        c["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"] });
        c["linux"]["devices"] = json!([{ "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229 }]);
        c["linux"]["resources"]["devices"] = json!([{ "allow": false, "type": "a", "access": "rwm" }]);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{ "names": ["kill"], "action": "SCMP_ACT_ERRNO",
                           "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }] }]
        });
        c
    }

    fn parse_with(pointer: &str, value: &str) -> Result<Spec> {
        let mut c = config();
        *c.pointer_mut(pointer).expect("the pointer names a field of the test config") = json!(value);
        parse(c.to_string().as_bytes())
    }

    #[test]
    fn every_value_the_schema_allows_parses() {
        let mut refused = Vec::new();
        for (pointer, values) in enums() {
            for v in values {
                if let Err(e) = parse_with(pointer, v) {
                    refused.push(format!("{pointer} = {v}: {e}"));
                }
            }
        }
        assert!(refused.is_empty(), "values of the spec's schema refused:\n{}", refused.join("\n"));
    }

    #[test]
    fn values_outside_the_schema_fail_naming_the_field() {
        // Parsed and validated: some fields are free strings to the config types.
        let d = std::env::temp_dir().join(format!("strata-schema-enums-{}", std::process::id()));
        std::fs::create_dir_all(d.join("rootfs")).expect("mkdir");
        for (pointer, _) in enums() {
            let mut c = config();
            *c.pointer_mut(pointer).expect("field") = json!("NOT_IN_THE_SCHEMA");
            std::fs::write(d.join("config.json"), c.to_string()).expect("write");
            let err = load(&d).and_then(|s| validate(&s, &d)).err().map(|e| e.to_string()).unwrap_or_default();
            let field = pointer.trim_start_matches('/').split('/').next().unwrap_or_default();
            assert!(err.contains(field) && err.contains("NOT_IN_THE_SCHEMA"), "{pointer}: {err:?}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
