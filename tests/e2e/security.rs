//! Escapes the runtime must prevent (each would pass on a vulnerable runtime).

use serde_json::json;
use strata_tests::*;

/// CVE-2019-5736: /proc/PID/exe of a runtime process inside the container (here the
/// init before it execs, seen from a startContainer hook) must not be openable.
#[test]
fn runtime_binary_is_not_reachable_through_proc_exe() {
    if !is_strata() {
        // runc protects itself differently: /proc/PID/exe is a sealed memfd copy.
        return skip("runtime_binary_is_not_reachable_through_proc_exe", "runc exposes a sealed copy instead");
    }
    let logdir = TempDir::new("exe");
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"]
        .as_array_mut()
        .expect("array")
        .push(json!({ "destination": "/out", "type": "bind", "source": logdir.path(), "options": ["bind"] }));
    b.config["hooks"] = json!({ "startContainer": [{ "path": "/bin/sh", "args": ["sh", "-c", "cat /proc/1/exe > /dev/null 2>&1 && echo READABLE > /out/r || echo DENIED > /out/r; readlink /proc/1/exe > /out/link 2>&1 || true"] }] });
    b.run("exe").ok();
    assert_eq!(std::fs::read_to_string(logdir.path().join("r")).expect("hook ran"), "DENIED\n");
}

/// CVE-2024-21626: no descriptor of the runtime leaks into the container.
#[test]
fn no_runtime_descriptors_leak_into_the_container() {
    if !is_strata() {
        return skip("no_runtime_descriptors_leak_into_the_container", "Debian's runc 1.1.5 predates the fix");
    }
    let b = Bundle::new(&["sleep", "100"]);
    b.create("fds").ok();
    b.rt(&["start", "fds"]).ok();
    let pid = b.state("fds").expect("state")["pid"].as_i64().expect("pid");
    assert_eq!(open_fds(pid), ["0", "1", "2"], "init");
    // And a process started with exec (seen from the host: no race with a shell).
    let pidfile = b.dir.path().join("exec.pid");
    let pf = pidfile.to_string_lossy().into_owned();
    b.rt(&["exec", "--detach", "--pid-file", &pf, "fds", "sleep", "100"]).ok();
    let epid: i64 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("pid");
    assert_eq!(open_fds(epid), ["0", "1", "2"], "exec'd process");
}

fn open_fds(pid: i64) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    fds.sort();
    fds
}

/// CVE-2024-21626 (second half): a cwd through /proc/self/fd is refused.
#[test]
fn cwd_through_proc_self_fd_is_refused() {
    if !is_strata() {
        return skip("cwd_through_proc_self_fd_is_refused", "Debian's runc 1.1.5 predates the fix");
    }
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["cwd"] = json!("/proc/self/fd/7");
    let out = b.create("cwdfd");
    out.failed();
    assert!(b.leftover_state().is_empty());
}

/// CVE-2021-30465 class: a mount destination through a symlink pointing at the
/// host's / lands inside the rootfs.
#[test]
fn mount_through_a_symlink_stays_in_the_rootfs() {
    let mut b = Bundle::private_rootfs(&["true"]);
    let marker = format!("strata-escape-{}", std::process::id());
    std::os::unix::fs::symlink("/", b.rootfs().join("evil")).expect("symlink");
    std::os::unix::fs::symlink("../../../../../../../tmp", b.rootfs().join("dots")).expect("symlink");
    let mounts = b.config["mounts"].as_array_mut().expect("array");
    mounts.push(json!({ "destination": format!("/evil/{marker}"), "type": "tmpfs", "source": "tmpfs" }));
    mounts.push(json!({ "destination": format!("/dots/{marker}"), "type": "tmpfs", "source": "tmpfs" }));
    b.config["root"]["readonly"] = json!(false);
    let out = b.sh(&format!("grep -c {marker} /proc/self/mountinfo"));
    assert_eq!(out.ok(), "2\n");
    assert!(!std::path::Path::new(&format!("/{marker}")).exists(), "mount point created on the host's /");
    assert!(!std::path::Path::new(&format!("/tmp/{marker}")).exists(), "mount point created on the host's /tmp");
    assert!(b.rootfs().join(&marker).is_dir());
}

/// CVE-2025-31133 class: masking must use the real null device even when the
/// rootfs plants a symlink at /dev/null.
#[test]
fn masking_uses_the_real_null_device() {
    if !is_strata() {
        return skip("masking_uses_the_real_null_device", "Debian's runc 1.1.5 predates the fix");
    }
    let mut b = Bundle::private_rootfs(&["true"]);
    std::fs::create_dir_all(b.rootfs().join("dev")).expect("mkdir");
    let _ = std::fs::remove_file(b.rootfs().join("dev/null"));
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", b.rootfs().join("dev/null")).expect("symlink");
    // No tmpfs on /dev: the rootfs's own /dev is used.
    b.config["mounts"].as_array_mut().expect("array").retain(|m| {
        m["destination"] != "/dev"
            && m["destination"] != "/dev/pts"
            && m["destination"] != "/dev/shm"
            && m["destination"] != "/dev/mqueue"
    });
    b.config["root"]["readonly"] = json!(false);
    let out = b.sh("stat -c '%F %t:%T' /proc/keys; echo x > /proc/keys 2>/dev/null; wc -c < /proc/keys");
    assert_eq!(out.ok(), "character special file 1:3\n0\n");
}

/// CVE-2019-5736 for a container holding CAP_SYS_PTRACE (non-dumpable alone does
/// not stop it): a process of the container keeps /proc/1/exe of the init open
/// while the init is still the runtime, and writes through it once the runtime
/// is gone. It must reach an unwritable copy, never the runtime's binary. A copy
/// of the runtime is used so a failure damages only the copy.
#[test]
fn a_ptrace_capable_container_cannot_overwrite_the_runtime() {
    let bin_dir = TempDir::new("bin");
    let bin = bin_dir.path().join(runtime_bin().file_name().expect("name"));
    std::fs::copy(runtime_bin(), &bin).expect("copy runtime");
    let original = std::fs::read(&bin).expect("read copy");
    let out = TempDir::new("exe");
    let mut b = Bundle::new(&["sleep", "5"]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set].as_array_mut().expect("caps").push(json!("CAP_SYS_PTRACE"));
    }
    b.config["mounts"]
        .as_array_mut()
        .expect("array")
        .push(json!({ "destination": "/out", "type": "bind", "source": out.path(), "options": ["bind"] }));
    // The descriptor is opened by the hook itself, so before the init can exec;
    // the background part outlives the hook and waits for the runtime to be gone.
    let attack = "exec 3</proc/1/exe || { echo NOOPEN > /out/w; exit 0; }; \
                  (while [ \"$(readlink /proc/1/exe)\" = \"$(readlink /proc/self/fd/3)\" ]; do sleep 0.05; done; \
                  sleep 1; echo pwned >> /proc/self/fd/3 && echo WROTE > /out/w || echo REFUSED > /out/w) \
                  </dev/null >/dev/null 2>&1 &";
    b.config["hooks"] = json!({ "startContainer": [{ "path": "/bin/sh", "args": ["sh", "-c", attack] }] });
    b.write_config();
    let rt = |args: &[&str]| {
        run_to_files(
            std::process::Command::new(&bin)
                .arg("--root")
                .arg(b.root.path())
                .args(args)
                .stdin(std::process::Stdio::null()),
        )
    };
    rt(&["create", "--bundle", &b.dir.path().to_string_lossy(), "ptr"]).ok();
    rt(&["start", "ptr"]).ok();
    let verdict = out.path().join("w");
    for _ in 0..100 {
        if verdict.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let seen = std::fs::read_to_string(&verdict).unwrap_or_else(|_| "no verdict\n".into());
    rt(&["delete", "--force", "ptr"]).ok();
    assert!(std::fs::read(&bin).expect("read copy") == original, "the runtime binary was modified ({seen:?})");
    assert_eq!(seen, "REFUSED\n");
}

/// `exec` into such a container works from its sealed copy too.
#[test]
fn exec_into_a_ptrace_capable_container() {
    let mut b = Bundle::new(&["sleep", "100"]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set].as_array_mut().expect("caps").push(json!("CAP_SYS_PTRACE"));
    }
    b.create("ptrexec").ok();
    b.rt(&["start", "ptrexec"]).ok();
    assert_eq!(b.rt(&["exec", "ptrexec", "echo", "inside"]).ok(), "inside\n");
    b.rt(&["delete", "--force", "ptrexec"]).ok();
}

/// CVE-2019-19921 class: a rootfs whose /proc is a symlink cannot move the procfs
/// mount (and with it the masks and read-only paths) somewhere else.
#[test]
fn proc_on_a_symlink_is_refused() {
    for dir in ["proc", "sys"] {
        let mut b = Bundle::private_rootfs(&["true"]);
        let path = b.rootfs().join(dir);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(b.rootfs().join("elsewhere")).expect("mkdir");
        std::os::unix::fs::symlink("elsewhere", &path).expect("symlink");
        b.config["root"]["readonly"] = json!(false);
        if dir == "sys" {
            b.config["mounts"].as_array_mut().expect("array").push(json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }));
        }
        let out = b.create(&format!("sym{dir}"));
        let err = out.failed();
        if is_strata() {
            assert!(err.contains(&format!("/{dir} goes through a symlink")), "{err}");
        }
        assert!(b.leftover_state().is_empty());
    }
}

/// The config `spec` writes keeps the host's kernel knobs out of reach: /proc/sys
/// and /proc/sysrq-trigger read-only, /proc/keys and /proc/timer_list masked.
#[test]
fn default_spec_protects_proc() {
    let d = TempDir::new("spec");
    let b = Bundle::new(&["true"]);
    b.rt(&["spec", "--bundle", &d.path().to_string_lossy()]).ok();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("config.json")).expect("config")).expect("json");
    config["process"]["terminal"] = json!(false);
    config["root"]["path"] = json!(shared_rootfs());
    config["process"]["args"] = json!([
        "sh",
        "-c",
        "\
        (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo sys-writable || echo sys-ro; \
        (echo h > /proc/sysrq-trigger) 2>/dev/null && echo sysrq-writable || echo sysrq-ro; \
        wc -c < /proc/keys; wc -c < /proc/timer_list; \
        [ -e /proc/kcore ] && wc -c < /proc/kcore || echo 0"
    ]);
    std::fs::write(d.path().join("config.json"), config.to_string()).expect("write");
    let out = b.rt(&["run", "--bundle", &d.path().to_string_lossy(), "procguard"]);
    assert_eq!(out.ok(), "sys-ro\nsysrq-ro\n0\n0\n0\n");
}
