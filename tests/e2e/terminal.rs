//! Terminals through --console-socket: the master arrives over SCM_RIGHTS.

use serde_json::json;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use strata_tests::*;

/// Listens on a console socket and returns the first terminal master sent to it.
fn receive_master(listener: UnixListener) -> std::thread::JoinHandle<OwnedFd> {
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("recvmsg");
        for c in msg.cmsgs().expect("cmsgs") {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel installed this descriptor for us.
                return unsafe { OwnedFd::from_raw_fd(fds[0]) };
            }
        }
        panic!("no fd received");
    })
}

/// Reads the master until the container side closes.
fn read_all(master: OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(master.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

#[test]
fn terminal_via_console_socket() {
    let sockdir = TempDir::new("console");
    let sock = sockdir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let got = receive_master(listener);
    let mut b = Bundle::new(&["sh", "-c", "tty; stty size; echo done"]);
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({ "height": 30, "width": 100 });
    b.write_config();
    b.rt(&["create", "--bundle", &b.dir.path().to_string_lossy(), "--console-socket", &sock.to_string_lossy(), "tty"])
        .ok();
    let master = got.join().expect("master");
    b.rt(&["start", "tty"]).ok();
    let text = read_all(master);
    assert_eq!(text, "/dev/pts/0\n30 100\ndone\n");
}

#[test]
fn exec_with_a_terminal() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("etty").ok();
    b.rt(&["start", "etty"]).ok();
    let sockdir = TempDir::new("console");
    let sock = sockdir.path().join("exec.sock");
    let got = receive_master(UnixListener::bind(&sock).expect("bind"));
    b.rt(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        &sock.to_string_lossy(),
        "etty",
        "sh",
        "-c",
        "tty; echo ok",
    ])
    .ok();
    let text = read_all(got.join().expect("master"));
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
    let sockdir = TempDir::new("console");
    let sock = sockdir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let got = receive_master(listener);
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
    b.rt(&["create", "--bundle", &b.dir.path().to_string_lossy(), "--console-socket", &sock.to_string_lossy(), "ctty"])
        .ok();
    let master = got.join().expect("master");
    b.rt(&["start", "ctty"]).ok();
    let text = read_all(master);
    assert_eq!(text, "character special file 88\nregular empty file\n");
}
