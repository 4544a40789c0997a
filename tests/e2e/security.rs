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
