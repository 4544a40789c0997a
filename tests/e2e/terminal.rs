//! Terminals through --console-socket: the master arrives over SCM_RIGHTS.

use serde_json::json;
use strata_tests::*;

#[test]
fn terminal_via_console_socket() {
    let mut console = ConsoleSocket::new();
    let mut b = Bundle::new(&["sh", "-c", "tty; stty size; echo done"]);
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({ "height": 30, "width": 100 });
    b.write_config();
    b.rt(&["create", "--bundle", &b.dir.path().to_string_lossy(), "--console-socket", &console.arg(), "tty"]).ok();
    b.rt(&["start", "tty"]).ok();
    assert_eq!(console.output(), "/dev/pts/0\n30 100\ndone\n");
}

#[test]
fn exec_with_a_terminal() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("etty").ok();
    b.rt(&["start", "etty"]).ok();
    let mut console = ConsoleSocket::new();
    b.rt(&["exec", "--tty", "--detach", "--console-socket", &console.arg(), "etty", "sh", "-c", "tty; echo ok"]).ok();
    let text = console.output();
    assert!(text.starts_with("/dev/pts/") && text.ends_with("ok\n"), "{text:?}");
}

#[test]
fn terminal_without_console_socket_is_refused_for_create() {
    let mut b = Bundle::new(&["sh"]);
    b.config["process"]["terminal"] = json!(true);
    b.create("notty").failed();
    assert!(b.leftover_state().is_empty());
}

/// CVE-2025-52565 class: a /dev/console symlink planted by the rootfs must not
/// redirect the console bind mount (here onto a procfs file).
#[test]
fn console_symlink_in_the_rootfs_is_not_followed() {
    if !is_strata() {
        return skip("console_symlink_in_the_rootfs_is_not_followed", "Debian's runc 1.1.5 predates the fix");
    }
    let mut console = ConsoleSocket::new();
    let mut b =
        Bundle::private_rootfs(&["sh", "-c", "stat -c '%F %t' /dev/console; stat -c %F /proc/sys/kernel/core_pattern"]);
    std::fs::create_dir_all(b.rootfs().join("dev/pts")).expect("mkdir");
    let _ = std::fs::remove_file(b.rootfs().join("dev/console"));
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", b.rootfs().join("dev/console")).expect("symlink");
    // No tmpfs on /dev: the rootfs's own /dev, with its symlink, is used.
    b.config["mounts"].as_array_mut().expect("array").retain(|m| m["destination"] != "/dev");
    b.config["root"]["readonly"] = json!(false);
    b.config["process"]["terminal"] = json!(true);
    b.write_config();
    b.rt(&["create", "--bundle", &b.dir.path().to_string_lossy(), "--console-socket", &console.arg(), "ctty"]).ok();
    b.rt(&["start", "ctty"]).ok();
    assert_eq!(console.output(), "character special file 88\nregular empty file\n");
}
