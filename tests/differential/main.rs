//! Differential testing against runc: seeded random configs mixing the spec's
//! features run under strata and under runc; a probe inside each container
//! reports what it sees, and the two reports must match wherever the spec
//! leaves no freedom, or the difference must be in the reviewed allow-list
//! below. A create that one runtime accepts and the other refuses is a
//! difference too.
//!
//! Run through `hack/differential.sh [CASES] [SEED]` (a private mount namespace
//! with the pure cgroup v2 view, so runc never touches the host's v1
//! hierarchies); `STRATA_DIFF_CASES`, `STRATA_DIFF_SEED` and `STRATA_DIFF_RUNC`
//! set the number of cases, the first seed and runc's path. A failing case
//! prints its seed; seeds that once found a bug are in `REGRESSIONS` and run
//! every time.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use strata_tests::*;

/// Seeds that found real bugs (kept so they stay fixed), with what they found.
/// A change to the generator changes what a seed produces: check these seeds
/// still make the configs described, or find new ones.
const REGRESSIONS: &[(u64, &str)] = &[
    (6, "a user namespace with its own ipc namespace: /dev/mqueue belonged to the host's root (nobody)"),
    (20, "a sysctl of a network namespace joined by path: refused as if it were the host's"),
    (144, "oomScoreAdj in a user namespace: the container's root could not open its own oom_score_adj"),
];

/// Every other path made relative: both runtimes take relative masked and
/// read-only paths from the container's root (no draw from the generator, so
/// seeds keep producing the configs they did).
fn relative_every_other(paths: &[&str]) -> Vec<String> {
    paths.iter().enumerate().map(|(i, p)| if i % 2 == 1 { p.trim_start_matches('/') } else { p }.to_string()).collect()
}

const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
    "CAP_SYS_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_IPC_LOCK",
];

const MASKABLE: &[&str] =
    &["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/scsi", "/sys/firmware"];
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// What the probe needs to know besides the config: sysctl keys to read back.
struct Case {
    config: Value,
    sysctls: Vec<String>,
    /// Host directory bind-mounted into the container (created per run).
    bind_source: bool,
    terminal: bool,
}

/// One random config: the test suite's base config with features mixed in.
fn generate(seed: u64) -> Case {
    let mut r = Rng(seed);
    let mut c = base_config(&["sh", "-c", "true"]);
    let mut sysctls = Vec::new();
    // Namespaces: mount always (the probe needs its own /proc), the rest at random.
    let mut ns = vec![json!({ "type": "mount" })];
    let mut has = BTreeMap::new();
    let userns = r.chance(15);
    for t in ["pid", "network", "ipc", "uts", "cgroup"] {
        let on = t == "pid" || r.chance(70);
        has.insert(t, on);
        if on && t == "network" && !userns && r.chance(20) {
            // Joined by path: a network namespace the harness holds open.
            ns.push(json!({ "type": t, "path": "@NETNS@" }));
        } else if on {
            ns.push(json!({ "type": t }));
        }
    }
    if userns {
        ns.push(json!({ "type": "user" }));
        c["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
        c["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    }
    c["linux"]["namespaces"] = Value::Array(ns);
    if !has["uts"] {
        c.as_object_mut().expect("config").remove("hostname");
    } else {
        c["hostname"] = json!(format!("h{}", r.below(1000)));
        if r.chance(30) {
            c["domainname"] = json!("example.test");
        }
    }
    // A sysfs mount needs a network namespace owned by the container's user namespace.
    if !has["network"] || userns {
        let mounts = c["mounts"].as_array_mut().expect("mounts");
        mounts.retain(|m| m["destination"] != "/sys");
        c["linux"].as_object_mut().expect("linux").insert("maskedPaths".into(), json!([]));
    }
    // Process.
    let uid = *r.pick(&[0u32, 0, 1000, 65534]);
    let gid = *r.pick(&[0u32, 1000, 65534]);
    c["process"]["user"] = json!({ "uid": uid, "gid": gid });
    if r.chance(30) {
        c["process"]["user"]["additionalGids"] = json!(r.subset(&[10u32, 20, 1000], 60));
    }
    if r.chance(40) {
        c["process"]["user"]["umask"] = json!(*r.pick(&[0o022u32, 0o077, 0o002, 0o027]));
    }
    c["process"]["noNewPrivileges"] = json!(r.chance(50));
    c["process"]["cwd"] = json!(*r.pick(&["/", "/tmp", "/root", "/home", "/var"]));
    let mut env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    for i in 0..r.below(4) {
        env.push(format!("DIFF_VAR{i}=value {}", r.below(100)));
    }
    if r.chance(30) {
        env.push("HOME=/custom-home".into());
    }
    c["process"]["env"] = json!(env);
    let mut rlimits = vec![json!({ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": *r.pick(&[256u64, 512, 1024]) })];
    if r.chance(40) {
        rlimits.push(json!({ "type": "RLIMIT_CORE", "hard": 0, "soft": 0 }));
    }
    if r.chance(40) {
        rlimits.push(json!({ "type": "RLIMIT_NPROC", "hard": 4096, "soft": 2048 }));
    }
    c["process"]["rlimits"] = json!(rlimits);
    let bounding = r.subset(CAPS, 50);
    let effective: Vec<&str> = bounding.iter().copied().filter(|_| r.chance(70)).collect();
    let inheritable: Vec<&str> = bounding.iter().copied().filter(|_| r.chance(20)).collect();
    let ambient: Vec<&str> = if uid != 0 && r.chance(40) {
        // Ambient capabilities must be permitted and inheritable.
        inheritable.iter().copied().filter(|c| effective.contains(c)).collect()
    } else {
        Vec::new()
    };
    c["process"]["capabilities"] = json!({
        "bounding": bounding, "effective": effective, "permitted": effective,
        "inheritable": inheritable, "ambient": ambient
    });
    if r.chance(30) {
        c["process"]["oomScoreAdj"] = json!(*r.pick(&[0i32, 100, 500, 1000]));
    }
    let terminal = r.chance(20);
    c["process"]["terminal"] = json!(terminal);
    // Root.
    c["root"]["readonly"] = json!(r.chance(50));
    if r.chance(30) {
        c["linux"]["rootfsPropagation"] = json!(*r.pick(&["private", "rprivate", "slave", "rslave", "unbindable"]));
    }
    // Mounts: a tmpfs with an option mix, a bind of a host directory.
    let mounts = c["mounts"].as_array_mut().expect("mounts");
    if r.chance(60) {
        let mut opts: Vec<String> =
            r.subset(&["nosuid", "nodev", "noexec", "ro", "noatime"], 40).iter().map(|s| s.to_string()).collect();
        if r.chance(50) {
            opts.push(format!("mode={}", r.pick(&["755", "1777", "700"])));
        }
        if r.chance(50) {
            opts.push(format!("size={}k", r.pick(&[1024, 65536])));
        }
        if r.chance(20) {
            opts.push(r.pick(&["rprivate", "rslave", "private"]).to_string());
        }
        mounts.push(json!({ "destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": opts }));
    }
    let bind_source = r.chance(50) && !userns;
    if bind_source {
        let mut opts: Vec<String> = vec![r.pick(&["bind", "rbind"]).to_string()];
        opts.extend(r.subset(&["ro", "nosuid", "nodev", "noexec"], 40).iter().map(|s| s.to_string()));
        mounts.push(json!({ "destination": "/data", "type": "bind", "source": "@BIND@", "options": opts }));
    }
    // Masked and read-only paths.
    if c["linux"]["maskedPaths"].as_array().is_some_and(|m| !m.is_empty()) || r.chance(50) {
        let masked = if has["network"] && !userns { r.subset(MASKABLE, 60) } else { r.subset(&MASKABLE[..5], 60) };
        c["linux"]["maskedPaths"] = json!(relative_every_other(&masked));
    }
    c["linux"]["readonlyPaths"] = json!(relative_every_other(&r.subset(READONLY, 60)));
    // Sysctls of the namespaces the container has.
    let mut sysctl = serde_json::Map::new();
    if has["network"] && r.chance(40) {
        sysctl.insert("net.ipv4.ip_forward".into(), json!(r.pick(&["0", "1"]).to_string()));
        sysctls.push("net.ipv4.ip_forward".into());
    }
    if has["ipc"] && r.chance(40) && !userns {
        sysctl.insert("kernel.shmmni".into(), json!(r.pick(&["2048", "4096"]).to_string()));
        sysctls.push("kernel.shmmni".into());
    }
    if !sysctl.is_empty() {
        c["linux"]["sysctl"] = Value::Object(sysctl);
    }
    // Devices and device rules.
    if r.chance(30) && !userns {
        c["linux"]["devices"] = json!([{ "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0 }]);
        c["linux"]["resources"] = json!({ "devices": [
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm" }
        ] });
    }
    // seccomp: a denylist, or an allowlist broad enough for both runtimes' own
    // steps (runc 1.1.5 makes several after its filter).
    if r.chance(35) {
        c["linux"]["seccomp"] = if r.chance(50) {
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 },
                { "names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO" }
            ] })
        } else {
            json!({ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{ "names": BROAD_ALLOWLIST, "action": "SCMP_ACT_ALLOW" }] })
        };
    }
    // Hooks that succeed (each runtime must run them and go on).
    if r.chance(25) {
        c["hooks"] = json!({ "createRuntime": [{ "path": "/bin/true" }], "poststop": [{ "path": "/bin/true" }] });
    }
    Case { config: c, sysctls, bind_source, terminal }
}

/// Everything a busybox workload and both runtimes' steps after a filter need.
const BROAD_ALLOWLIST: &[&str] = &[
    "accept4",
    "access",
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "chdir",
    "clone",
    "clone3",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "execve",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fchdir",
    "fchown",
    "fcntl",
    "fstat",
    "fstatfs",
    "futex",
    "getcwd",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getpgrp",
    "getpid",
    "getppid",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "gettid",
    "getuid",
    "ioctl",
    "kill",
    "lseek",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "prlimit64",
    "read",
    "readlink",
    "readlinkat",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "sched_yield",
    "set_robust_list",
    "set_tid_address",
    "setgid",
    "setgroups",
    "setresgid",
    "setresuid",
    "setsid",
    "setuid",
    "sigaltstack",
    "stat",
    "statfs",
    "statx",
    "tgkill",
    "umask",
    "uname",
    "wait4",
    "write",
    "writev",
    "getsockname",
    "socket",
    "connect",
    "sendmsg",
    "recvmsg",
    "mknodat",
    "fchmod",
    "fchmodat",
    "clock_gettime",
    "clock_nanosleep",
    "vfork",
    "fork",
    "lstat",
    "getpgid",
    "setpgid",
    "getsid",
    "exit",
];

/// The probe: what the container sees, in sections.
fn probe_script(sysctls: &[String]) -> String {
    let mut s = String::from(
        "echo '== status'; grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Umask):' /proc/$$/status; \
         echo '== hostname'; hostname; cat /proc/sys/kernel/domainname; \
         echo '== cwd'; pwd; \
         echo '== env'; env | sort; \
         echo '== limits'; cat /proc/$$/limits; \
         echo '== oom'; cat /proc/$$/oom_score_adj; \
         echo '== fds'; for f in /proc/$$/fd/*; do echo ${f##*/}; done; \
         echo '== dev'; ls -ln /dev | awk '{print $1, $3, $4, $5, $6, $NF}'; \
         echo '== mounts'; cat /proc/$$/mountinfo; \
         echo '== write'; (touch /probe-root 2>/dev/null && echo root-writable) || echo root-readonly; \
         (mkdir /tmp/probe-dir 2>/dev/null && echo mkdir-ok) || echo mkdir-refused; \
         (echo x > /dev/null 2>/dev/null && echo devnull-ok) || echo devnull-refused; \
         (test -e /dev/fuse && (exec 3</dev/fuse) 2>/dev/null && echo fuse-open) || echo fuse-closed; ",
    );
    if !sysctls.is_empty() {
        s.push_str("echo '== sysctl'; ");
        for k in sysctls {
            s.push_str(&format!("echo {k}=$(cat /proc/sys/{}); ", k.replace('.', "/")));
        }
    }
    s.push_str("exit 7");
    s
}

/// The probe's report split into sections, normalised where the runtimes may
/// legitimately differ (mount ids, device numbers of anonymous filesystems).
fn parse_report(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cur = String::from("preamble");
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            cur = name.to_string();
            continue;
        }
        let line = if cur == "mounts" { normalise_mount(line) } else { line.to_string() };
        out.entry(cur.clone()).or_default().push(line);
    }
    out
}

/// A mountinfo line without its ids, device numbers, peer group numbers and source.
fn normalise_mount(line: &str) -> String {
    let f: Vec<&str> = line.split(' ').collect();
    let Some(dash) = f.iter().position(|x| *x == "-") else { return line.to_string() };
    let optional: Vec<&str> = f[6..dash].iter().map(|o| o.split(':').next().unwrap_or(o)).collect::<Vec<_>>();
    let root = f.get(3).copied().unwrap_or("");
    let point = f.get(4).copied().unwrap_or("");
    let opts = f.get(5).copied().unwrap_or("");
    let fstype = f.get(dash + 1).copied().unwrap_or("");
    let sup = f.get(dash + 3).copied().unwrap_or("");
    // The root of a bind mount of the host names host paths that differ per run.
    let root = if root.starts_with("/tmp/") || root.starts_with("/var/tmp/") { "BIND" } else { root };
    // Masked paths (reviewed): both runtimes hide a file under a null device and a
    // directory under an empty read-only tmpfs, but strata binds the host's
    // /dev/null (checked to be the real device; runc binds the container's own
    // node) and gives the tmpfs nosuid,nodev,noexec,size=0. What counts is that
    // the path is masked.
    if MASKABLE.contains(&point) || READONLY.contains(&point) {
        if root == "/null" {
            return format!("{point} masked by a null device");
        }
        if fstype == "tmpfs" && opts.starts_with("ro") && root == "/" {
            return format!("{point} masked by an empty read-only tmpfs");
        }
    }
    format!("{point} {fstype} root={root} {opts} [{}] {sup}", optional.join(","))
}

/// What one runtime made of a case.
#[derive(Debug)]
struct Outcome {
    created: bool,
    /// The create error, for the report.
    error: String,
    exit: i32,
    report: BTreeMap<String, Vec<String>>,
}

/// Runs `case` under `runtime` in a bundle of its own.
fn run_case(runtime: &Path, case: &Case, seed: u64) -> Outcome {
    let dir = TempDir::new("diff");
    let rootfs = dir.path().join("rootfs");
    let st = std::process::Command::new("cp").arg("-a").arg(shared_rootfs()).arg(&rootfs).status().expect("cp");
    assert!(st.success());
    let bind = dir.path().join("bind");
    std::fs::create_dir_all(bind.join("sub")).expect("mkdir");
    std::fs::write(bind.join("file"), "bound\n").expect("write");
    let mut config = case.config.clone();
    config["root"]["path"] = json!(rootfs);
    config["process"]["args"] = json!(["sh", "-c", probe_script(&case.sysctls)]);
    if case.bind_source {
        for m in config["mounts"].as_array_mut().expect("mounts") {
            if m["source"] == "@BIND@" {
                m["source"] = json!(bind);
            }
        }
    }
    for n in config["linux"]["namespaces"].as_array_mut().expect("namespaces") {
        if n["path"] == "@NETNS@" {
            n["path"] = json!(netns_holder());
        }
    }
    if config["linux"]["uidMappings"].is_array() {
        // The mapped root must own its rootfs to set it up as a runc user would.
        let st =
            std::process::Command::new("chown").args(["-R", "100000:100000"]).arg(&rootfs).status().expect("chown");
        assert!(st.success());
    }
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec_pretty(&config).expect("json")).expect("write");
    let root = TempDir::new("diffroot");
    let id = format!("diff{seed}");
    let rt = |args: &[&str]| {
        let mut c = std::process::Command::new(runtime);
        c.arg("--root").arg(root.path()).args(args);
        run_to_files(c.stdin(std::process::Stdio::null()))
    };
    let bundle = dir.path().to_string_lossy().into_owned();
    let outcome = if case.terminal {
        let mut console = ConsoleSocket::new();
        let created = rt(&["create", "--bundle", &bundle, "--console-socket", &console.arg(), &id]);
        if created.code != 0 {
            Outcome { created: false, error: created.stderr, exit: -1, report: BTreeMap::new() }
        } else {
            rt(&["start", &id]);
            let text = console.output();
            let exit = wait_exit(&rt, &id);
            Outcome { created: true, error: String::new(), exit, report: parse_report(&text) }
        }
    } else {
        let out = rt(&["run", "--bundle", &bundle, &id]);
        let created = !(out.code != 0 && out.stdout.is_empty());
        Outcome {
            created,
            error: if created { String::new() } else { out.stderr.clone() },
            exit: out.code,
            report: parse_report(&out.stdout),
        }
    };
    rt(&["delete", "--force", &id]);
    outcome
}

/// The exit code of a detached container's process, from its state (neither
/// runtime keeps it: the probe's fixed exit code stands for "ran to the end").
fn wait_exit(rt: &dyn Fn(&[&str]) -> Out, id: &str) -> i32 {
    for _ in 0..500 {
        let st = rt(&["state", id]);
        if st.stdout.contains("\"stopped\"") {
            return 7;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    -1
}

/// A reviewed difference: the section, and the lines that may differ there.
struct Allowed {
    /// Why the runtimes differ here.
    why: &'static str,
    /// Applies to this report section.
    section: &'static str,
    /// Whether a line found on one side only is this difference.
    matches: fn(&str) -> bool,
    /// Only lines on runc's side (runc shows something strata rightly does not).
    runc_only: bool,
}

/// Differences reviewed and accepted, with the reason.
const ALLOWED: &[Allowed] = &[
    Allowed {
        why: "runc 1.1.5 ignores domainname (spec 1.0.2); strata sets it",
        section: "hostname",
        matches: |l| l == "example.test" || l == "(none)",
        runc_only: false,
    },
    Allowed {
        why: "runc 1.1.5 creates a user-namespaced container's ipc namespace before taking gid 0 in it, so /dev/mqueue's \
              group is unmapped (65534); strata's is root:root",
        section: "dev",
        matches: |l| l.ends_with(" mqueue") && (l.contains(" 0 65534 ") || l.contains(" 0 0 ")),
        runc_only: false,
    },
];

/// Creates runc refuses where strata is right, by a fragment of runc's error.
const RUNC_REFUSALS: &[(&str, &str)] = &[(
    "flags: 0x5000: invalid argument",
    "runc 1.1.5 cannot bind the rootfs once rootfsPropagation made / unbindable",
)];

/// The differences between two outcomes that no allow-list entry covers; the
/// allow-list entries that were needed go to `used`.
fn differences(strata: &Outcome, runc: &Outcome, used: &mut std::collections::BTreeSet<&'static str>) -> Vec<String> {
    let mut diffs = Vec::new();
    if strata.created && !runc.created {
        if let Some((_, why)) = RUNC_REFUSALS.iter().find(|(frag, _)| runc.error.contains(frag)) {
            used.insert(why);
            return diffs;
        }
    }
    if strata.created != runc.created {
        diffs.push(format!(
            "create: strata {}, runc {} ({}{})",
            if strata.created { "accepted" } else { "refused" },
            if runc.created { "accepted" } else { "refused" },
            strata.error.trim(),
            runc.error.trim()
        ));
        return diffs;
    }
    if !strata.created {
        return diffs;
    }
    if strata.exit != runc.exit {
        diffs.push(format!("exit code: strata {}, runc {}", strata.exit, runc.exit));
    }
    let sections: std::collections::BTreeSet<&String> = strata.report.keys().chain(runc.report.keys()).collect();
    for s in sections {
        let empty = Vec::new();
        let a = strata.report.get(s).unwrap_or(&empty);
        let b = runc.report.get(s).unwrap_or(&empty);
        let mut allowed = |l: &str, runc_side: bool| match ALLOWED
            .iter()
            .find(|al| al.section == s && (runc_side || !al.runc_only) && (al.matches)(l))
        {
            Some(al) => {
                used.insert(al.why);
                true
            }
            None => false,
        };
        let only_a: Vec<&String> = a.iter().filter(|l| !b.contains(l) && !allowed(l, false)).collect();
        let only_b: Vec<&String> = b.iter().filter(|l| !a.contains(l) && !allowed(l, true)).collect();
        if !only_a.is_empty() || !only_b.is_empty() {
            diffs.push(format!("{s}: strata only {only_a:?}, runc only {only_b:?}"));
        }
    }
    diffs
}

/// The network namespace of a process the harness starts once and keeps for
/// the whole run (`unshare --net sleep`), for configs that join one by path.
static HOLDER: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn netns_holder() -> String {
    #[allow(clippy::zombie_processes)] // reaped by stop_netns_holder, by pid
    let pid = HOLDER.get_or_init(|| {
        let child = std::process::Command::new("unshare")
            .args(["--net", "sleep", "3600"])
            .spawn()
            .expect("unshare a network namespace");
        // unshare execs sleep once the namespace exists.
        for _ in 0..200 {
            if std::fs::read_link(format!("/proc/{}/exe", child.id())).is_ok_and(|e| e.ends_with("sleep")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.id()
    });
    format!("/proc/{pid}/ns/net")
}

/// Stops the namespace holder, if one was started.
fn stop_netns_holder() {
    if let Some(&pid) = HOLDER.get() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

fn runc_path() -> Option<PathBuf> {
    let p = std::env::var("STRATA_DIFF_RUNC").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/usr/sbin/runc"));
    p.exists().then_some(p)
}

/// Whether /sys/fs/cgroup is a pure cgroup v2 mount (else runc would use the
/// host's v1 hierarchies, which tests must never touch).
fn pure_cgroup2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

#[test]
fn strata_and_runc_agree_on_configs_from_a_generator() {
    if !is_root() {
        return skip("differential", "needs root");
    }
    let Some(runc) = runc_path() else {
        return skip("differential", "runc is not installed (hack/setup.sh --peers)");
    };
    if !pure_cgroup2() {
        return skip("differential", "needs a pure cgroup v2 view: run hack/differential.sh");
    }
    let strata = runtime_bin();
    let cases: u64 = std::env::var("STRATA_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let first: u64 = std::env::var("STRATA_DIFF_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let seeds: Vec<u64> = REGRESSIONS.iter().map(|(s, _)| *s).chain(first..first + cases).collect();
    let mut failures = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    let mut ran = 0;
    for seed in seeds {
        let case = generate(seed);
        let a = run_case(&strata, &case, seed);
        let b = run_case(&runc, &case, seed);
        ran += 1;
        let diffs = differences(&a, &b, &mut used);
        if !diffs.is_empty() {
            failures.push(format!("seed {seed}:\n  {}\n  config: {}", diffs.join("\n  "), case.config));
        }
    }
    stop_netns_holder();
    let mut line = format!("differential: {ran} configs, {} differences\n", failures.len());
    for why in used {
        line.push_str(&format!("  allowed: {why}\n"));
    }
    let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    assert!(failures.is_empty(), "{} of {ran} configs differ:\n{}", failures.len(), failures.join("\n"));
}
