//! Root filesystem: mounts and their flags, devices, masked and read-only paths,
//! read-only root, pivot_root and --no-pivot.

use serde_json::json;
use strata_tests::*;

#[test]
fn readonly_root_and_writable_tmpfs() {
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"].as_array_mut().expect("array").push(json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "noexec", "size=1m"] }));
    let out = b.sh("touch /newfile 2>/dev/null && echo root-writable || echo root-ro; echo x > /tmp/f && cat /tmp/f; grep ' /tmp ' /proc/self/mountinfo");
    let text = out.ok().to_string();
    assert!(text.starts_with("root-ro\nx\n"), "{text}");
    let tmp_line = text.lines().nth(2).unwrap_or_default();
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(tmp_line.contains(flag), "/tmp lacks {flag}: {tmp_line}");
    }
}

#[test]
fn bind_mounts_read_only_and_read_write() {
    let shared = TempDir::new("bind");
    std::fs::write(shared.path().join("in.txt"), "from host").expect("write");
    let file = shared.path().join("single.txt");
    std::fs::write(&file, "one file").expect("write");
    let mut b = Bundle::new(&["true"]);
    let mounts = b.config["mounts"].as_array_mut().expect("array");
    mounts
        .push(json!({ "destination": "/mnt/ro", "type": "bind", "source": shared.path(), "options": ["rbind", "ro"] }));
    mounts
        .push(json!({ "destination": "/mnt/rw", "type": "bind", "source": shared.path(), "options": ["bind", "rw"] }));
    mounts.push(json!({ "destination": "/etc/single.txt", "source": file, "options": ["bind", "ro"] }));
    let out = b.sh("cat /mnt/ro/in.txt; echo; echo nope > /mnt/ro/x 2>/dev/null || echo ro-refused; echo yes > /mnt/rw/out.txt && echo rw-ok; cat /etc/single.txt");
    assert_eq!(out.ok(), "from host\nro-refused\nrw-ok\none file");
    assert_eq!(std::fs::read_to_string(shared.path().join("out.txt")).expect("written through"), "yes\n");
}

#[test]
fn recursive_read_only_option() {
    let shared = TempDir::new("rro");
    std::fs::create_dir_all(shared.path().join("sub")).expect("mkdir");
    let mut b = Bundle::new(&["true"]);
    let mounts = b.config["mounts"].as_array_mut().expect("array");
    mounts.push(json!({ "destination": "/mnt/a", "type": "bind", "source": shared.path(), "options": ["rbind", "rro", "rnosuid"] }));
    let out = b.sh("grep ' /mnt/a ' /proc/self/mountinfo; touch /mnt/a/f 2>/dev/null && echo writable || echo ro");
    let text = out.ok().to_string();
    assert!(text.contains(" ro,") && text.contains("nosuid"), "{text}");
    assert!(text.ends_with("ro\n"), "{text}");
}

#[test]
fn default_devices_and_links() {
    let mut b = Bundle::new(&["true"]);
    let out = b.sh("for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; readlink /dev/fd; readlink /dev/stdin; readlink /dev/ptmx; echo data > /dev/null && head -c 3 /dev/zero | wc -c");
    let want = "/dev/null character special file 1:3 666\n/dev/zero character special file 1:5 666\n/dev/full character special file 1:7 666\n/dev/random character special file 1:8 666\n/dev/urandom character special file 1:9 666\n/dev/tty character special file 5:0 666\n/proc/self/fd\n/proc/self/fd/0\npts/ptmx\n3\n";
    assert_eq!(out.ok(), want);
}

#[test]
fn config_devices_are_created() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["devices"] = json!([
        { "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0 },
        { "path": "/dev/custom/loopx", "type": "b", "major": 7, "minor": 200, "fileMode": 416, "uid": 1000, "gid": 1000 },
        { "path": "/dev/custom/sgid", "type": "c", "major": 1, "minor": 3, "fileMode": 1462 }
    ]);
    let out = b.sh("stat -c '%n %F %t:%T %a %u:%g' /dev/fuse /dev/custom/loopx /dev/custom/sgid");
    assert_eq!(
        out.ok(),
        "/dev/fuse character special file a:e5 666 0:0\n/dev/custom/loopx block special file 7:c8 640 1000:1000\n/dev/custom/sgid character special file 1:3 2666 0:0\n"
    );
}

#[test]
fn masked_and_readonly_paths() {
    let mut b = Bundle::new(&["true"]);
    // (/proc/kcore is absent on kernels built without it: use files every kernel has.)
    let out = b.sh("wc -c < /proc/timer_list; stat -c %t:%T /proc/keys; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/printk 2>/dev/null && echo sys-writable || echo sys-ro; echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable || echo sysrq-ro");
    assert_eq!(out.ok(), "0\n1:3\n0\nsys-ro\nsysrq-ro\n");
}

#[test]
fn propagation_options_apply() {
    let shared = TempDir::new("prop");
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"].as_array_mut().expect("array").push(
        json!({ "destination": "/mnt/p", "type": "bind", "source": shared.path(), "options": ["rbind", "rshared"] }),
    );
    b.config["linux"]["rootfsPropagation"] = json!("private");
    let out = b.sh("grep ' /mnt/p ' /proc/self/mountinfo");
    assert!(out.ok().contains("shared:"), "{}", out.stdout);
}

#[test]
fn no_pivot_runs_the_container() {
    let b = Bundle::new(&["true"]);
    let mut b = b;
    b.config["process"]["args"] =
        json!(["sh", "-c", "test -x /bin/busybox && test -e /proc/self/status && test ! -e /work && echo contained"]);
    b.write_config();
    let out = b.rt(&["run", "--no-pivot", "--bundle", &b.dir.path().to_string_lossy(), "nopivot"]);
    assert_eq!(out.ok(), "contained\n");
}

#[test]
fn nothing_of_the_container_is_mounted_on_the_host() {
    let mut b = Bundle::new(&["true"]);
    b.sh("true").ok();
    assert_eq!(host_mounts_mentioning(&b.dir.path().to_string_lossy()), 0);
    assert_eq!(host_mounts_mentioning(&shared_rootfs().to_string_lossy()), 0);
}

#[test]
fn a_bound_dev_is_left_untouched() {
    let fake_dev = TempDir::new("fakedev");
    std::fs::write(fake_dev.path().join("console"), "").expect("write");
    std::fs::write(fake_dev.path().join("null"), "").expect("write");
    let mut b = Bundle::new(&["true"]);
    let mounts = b.config["mounts"].as_array_mut().expect("array");
    mounts.retain(|m| !m["destination"].as_str().unwrap_or_default().starts_with("/dev"));
    mounts.push(json!({ "destination": "/dev", "type": "bind", "source": fake_dev.path(), "options": ["rbind"] }));
    b.config["linux"]["devices"] = json!([{ "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229 }]);
    b.sh("true").ok();
    let mut names: Vec<String> = std::fs::read_dir(fake_dev.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    assert_eq!(names, ["console", "null"], "the bound /dev was changed");
}

#[test]
fn readonly_paths_keep_exec() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["readonlyPaths"] = json!(["/bin"]);
    b.config["linux"]["maskedPaths"] = json!([]);
    let out = b.sh("/bin/echo still-runs; touch /bin/x 2>/dev/null || echo ro");
    assert_eq!(out.ok(), "still-runs\nro\n");
}

#[test]
fn readonly_root_without_proc() {
    if !is_strata() {
        return skip("readonly_root_without_proc", "runc needs /proc in the container");
    }
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"].as_array_mut().expect("array").retain(|m| m["destination"] != "/proc");
    b.config["linux"]["maskedPaths"] = json!([]);
    b.config["linux"]["readonlyPaths"] = json!([]);
    let out = b.sh("test -e /proc/self || echo no-proc; touch /x 2>/dev/null || echo ro");
    assert_eq!(out.ok(), "no-proc\nro\n");
}

/// `tmpcopyup` (podman's --read-only uses it): the tmpfs starts with a copy of the
/// directory it covers, types, modes and symlinks kept, and is writable on a
/// read-only root.
#[test]
fn tmpfs_copy_up() {
    let mut b = Bundle::private_rootfs(&["true"]);
    let dir = b.rootfs().join("seed");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("sub/file"), "seeded\n").expect("write");
    std::os::unix::fs::symlink("sub/file", dir.join("link")).expect("symlink");
    std::fs::set_permissions(dir.join("sub"), std::os::unix::fs::PermissionsExt::from_mode(0o701)).expect("chmod");
    b.config["root"]["readonly"] = json!(true);
    b.config["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/seed", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "tmpcopyup"]
    }));
    let out = b.sh("cat /seed/link; stat -c %a /seed/sub; readlink /seed/link; echo new > /seed/new && cat /seed/new; grep -c ' /seed .* - tmpfs ' /proc/self/mountinfo");
    assert_eq!(out.ok(), "seeded\n701\nsub/file\nnew\n1\n");
    // The rootfs underneath is untouched.
    assert!(!dir.join("new").exists());
}
