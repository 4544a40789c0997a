//! The parts of runtime-spec 1.3 beyond runc 1.1.5: idmapped mounts, and the
//! rest of what `features` reports.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use strata_tests::*;

const USERNS_MAP: &str = r#"[{ "containerID": 0, "hostID": 100000, "size": 65536 }]"#;

fn with_userns(b: &mut Bundle) {
    let map: Value = serde_json::from_str(USERNS_MAP).expect("map");
    b.config["linux"]["namespaces"].as_array_mut().expect("ns").push(json!({ "type": "user" }));
    b.config["linux"]["uidMappings"] = map.clone();
    b.config["linux"]["gidMappings"] = map;
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(st.success(), "{cmd}");
}

/// A filesystem of `kind` ("tmpfs" or "ext4") mounted on a directory of its
/// own, unmounted (and its loop device freed) on drop.
struct Fs {
    dir: TempDir,
    mnt: PathBuf,
}

impl Fs {
    fn new(kind: &str) -> Fs {
        let dir = TempDir::new(&format!("idmap-{kind}"));
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        match kind {
            "tmpfs" => sh(&format!("mount -t tmpfs -o mode=755 tmpfs {}", mnt.display())),
            _ => {
                let img = dir.path().join("fs.img");
                sh(&format!(
                    "truncate -s 16M {img} && mkfs.ext4 -q -F {img} && mount -o loop {img} {mnt}",
                    img = img.display(),
                    mnt = mnt.display()
                ));
            }
        }
        Fs { dir, mnt }
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(&self.mnt).status();
        let _ = &self.dir;
    }
}

fn owner(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(p).expect("stat");
    format!("{}:{}", md.uid(), md.gid())
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("chown");
}

fn skip_runc(test: &str) -> bool {
    if !is_strata() {
        skip(test, "runc 1.1.5 has no idmapped mounts");
        return true;
    }
    false
}

/// In a user-namespaced container (0 → 100000), a bind mount idmapped with
/// the same mappings shows the host's files with their own owners, and what
/// the container writes lands on the host with the owners it gave them.
#[test]
fn idmapped_bind_mounts_shift_owners_both_ways_on_tmpfs_and_ext4() {
    let test = "idmapped_bind_mounts_shift_owners_both_ways_on_tmpfs_and_ext4";
    if skip_runc(test) {
        return;
    }
    for kind in ["tmpfs", "ext4"] {
        let fs = Fs::new(kind);
        let src = fs.path();
        std::fs::write(src.join("by-root"), "r").expect("write");
        std::fs::write(src.join("by-1000"), "u").expect("write");
        chown(&src.join("by-1000"), 1000, 1001);
        for (options, own_maps) in [(json!(["bind", "idmap"]), true), (json!(["rbind", "idmap"]), false)] {
            let mut b = Bundle::new(&["true"]);
            with_userns(&mut b);
            for set in ["bounding", "effective", "permitted"] {
                b.config["process"]["capabilities"][set] = json!(["CAP_CHOWN"]);
            }
            let mut m = json!({ "destination": "/mnt", "type": "bind", "source": src, "options": options });
            if own_maps {
                let map: Value = serde_json::from_str(USERNS_MAP).expect("map");
                m["uidMappings"] = map.clone();
                m["gidMappings"] = map;
            }
            b.config["mounts"].as_array_mut().expect("mounts").push(m);
            let out = b.sh("stat -c '%u:%g %n' /mnt/by-root /mnt/by-1000 && echo x > /mnt/new && \
                 echo y > /mnt/given && chown 7:8 /mnt/given && echo written");
            assert_eq!(out.ok(), "0:0 /mnt/by-root\n1000:1001 /mnt/by-1000\nwritten\n", "{kind}, {options}: {out:?}");
            assert_eq!(owner(&src.join("new")), "0:0", "{kind}: a file the container's root made");
            assert_eq!(owner(&src.join("given")), "7:8", "{kind}: a file chowned inside");
            std::fs::remove_file(src.join("new")).expect("rm");
            std::fs::remove_file(src.join("given")).expect("rm");
            assert!(b.leftover_state().is_empty());
        }
    }
}

/// `ridmap` idmaps the mounts below the source too; `idmap` only the top one.
#[test]
fn ridmap_reaches_the_mounts_below_and_idmap_does_not() {
    let test = "ridmap_reaches_the_mounts_below_and_idmap_does_not";
    if skip_runc(test) {
        return;
    }
    let top = Fs::new("tmpfs");
    std::fs::create_dir(top.path().join("sub")).expect("mkdir");
    sh(&format!("mount -t tmpfs tmpfs {}", top.path().join("sub").display()));
    std::fs::write(top.path().join("sub/f"), "f").expect("write");
    std::fs::write(top.path().join("f"), "f").expect("write");
    for (opt, below) in [("ridmap", "0:0"), ("idmap", "65534:65534")] {
        let mut b = Bundle::new(&["true"]);
        with_userns(&mut b);
        b.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({ "destination": "/mnt", "type": "bind", "source": top.path(), "options": ["rbind", opt] }));
        let out = b.sh("stat -c %u:%g /mnt/f /mnt/sub/f");
        assert_eq!(out.ok(), format!("0:0\n{below}\n"), "{opt}");
    }
}

/// What cannot be idmapped is refused before anything exists, naming the mount.
#[test]
fn idmaps_that_cannot_be_made_are_refused_naming_the_mount() {
    let test = "idmaps_that_cannot_be_made_are_refused_naming_the_mount";
    if skip_runc(test) {
        return;
    }
    let map: Value = serde_json::from_str(USERNS_MAP).expect("map");
    let cases = [
        // sysfs does not support idmapped mounts.
        (
            json!({ "destination": "/mnt", "type": "bind", "source": "/sys/kernel", "options": ["rbind", "idmap"] }),
            "mounts[1].source",
        ),
        (
            json!({ "destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["bind"], "uidMappings": map }),
            "mounts[1].gidMappings",
        ),
        (
            json!({ "destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"] }),
            "mounts[1].options",
        ),
    ];
    for (m, field) in cases {
        let mut b = Bundle::new(&["true"]);
        with_userns(&mut b);
        let mounts = b.config["mounts"].as_array_mut().expect("mounts");
        mounts.truncate(1);
        mounts.push(m);
        let out = b.sh("true");
        assert_ne!(out.code, 0, "{field}: accepted");
        assert!(out.stderr.contains(field), "{field}: {out:?}");
        assert!(b.leftover_state().is_empty(), "{field}: state left");
    }
}

#[test]
fn features_report_idmapped_mounts_and_memory_policies() {
    if skip_runc("features_report_idmapped_mounts_and_memory_policies") {
        return;
    }
    let b = Bundle::new(&["true"]);
    let f: Value = serde_json::from_str(b.rt(&["features"]).ok()).expect("json");
    let opts: Vec<&str> = f["mountOptions"].as_array().expect("options").iter().filter_map(Value::as_str).collect();
    assert!(opts.contains(&"idmap") && opts.contains(&"ridmap"), "{opts:?}");
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], json!(true));
    let modes = f["linux"]["memoryPolicy"]["modes"].as_array().expect("modes").len();
    assert_eq!(modes, 7, "{}", f["linux"]["memoryPolicy"]);
    assert_eq!(f["linux"]["memoryPolicy"]["flags"].as_array().map(Vec::len), Some(3));
}

/// The policy named by the config, as numa_maps shows it for the process's
/// own mappings ("bind:0"); the same for an exec'd process.
#[test]
fn memory_policy_reaches_the_init_and_exec() {
    let test = "memory_policy_reaches_the_init_and_exec";
    if !is_strata() {
        return skip(test, "runc 1.1.5 has no linux.memoryPolicy");
    }
    if !Path::new("/proc/self/numa_maps").exists() {
        return skip(test, "no /proc/PID/numa_maps (a kernel without NUMA)");
    }
    let policy_of = "grep -o -m1 -E ' (bind|interleave|prefer|local|default)[^ ]*' /proc/self/numa_maps";
    for (policy, want) in [
        (json!({ "mode": "MPOL_BIND", "nodes": "0" }), "bind:0"),
        (json!({ "mode": "MPOL_INTERLEAVE", "nodes": "0" }), "interleave:0"),
        (json!({ "mode": "MPOL_PREFERRED", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"] }), "prefer=static:0"),
        (json!({ "mode": "MPOL_LOCAL" }), "local"),
    ] {
        let mut b = Bundle::new(&["true"]);
        b.config["linux"]["memoryPolicy"] = policy.clone();
        assert_eq!(b.sh(policy_of).ok().trim(), want, "{policy}");
    }
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_BIND", "nodes": "0" });
    b.create("mpol").ok();
    b.rt(&["start", "mpol"]).ok();
    let out = b.rt(&["exec", "mpol", "sh", "-c", policy_of]);
    assert_eq!(out.ok().trim(), "bind:0");
    b.rt(&["delete", "--force", "mpol"]).ok();
}

#[test]
fn memory_policies_the_host_cannot_apply_are_refused_naming_the_field() {
    let test = "memory_policies_the_host_cannot_apply_are_refused_naming_the_field";
    if !is_strata() {
        return skip(test, "runc 1.1.5 has no linux.memoryPolicy");
    }
    let online = std::fs::read_to_string("/sys/devices/system/node/online").unwrap_or_else(|_| "0".into());
    if online.trim() != "0" {
        return skip(test, "expects a host whose only NUMA node is 0");
    }
    for (policy, want) in [
        (json!({ "mode": "MPOL_BIND", "nodes": "1" }), "linux.memoryPolicy.nodes: node 1 is not online"),
        (json!({ "mode": "MPOL_BIND" }), "linux.memoryPolicy.nodes"),
        (json!({ "mode": "MPOL_DEFAULT", "nodes": "0" }), "linux.memoryPolicy.nodes"),
        (json!({ "mode": "MPOL_NOPE" }), "linux.memoryPolicy"),
    ] {
        let mut b = Bundle::new(&["true"]);
        b.config["linux"]["memoryPolicy"] = policy.clone();
        let out = b.sh("true");
        assert!(out.failed().contains(want), "{policy}: {out:?}");
        assert!(b.leftover_state().is_empty());
    }
}

/// linux.personality holds for exec'd processes as for the init.
#[test]
fn personality_reaches_exec() {
    if !is_strata() {
        return skip("personality_reaches_exec", "runc 1.1.5 has no linux.personality");
    }
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["personality"] = json!({ "domain": "LINUX32" });
    assert_eq!(b.sh("uname -m").ok().trim(), "i686", "the init");
    b.config["process"]["args"] = json!(["sleep", "100"]);
    b.create("pers").ok();
    b.rt(&["start", "pers"]).ok();
    let out = b.rt(&["exec", "pers", "uname", "-m"]);
    let got = out.ok().trim().to_string();
    b.rt(&["delete", "--force", "pers"]).ok();
    assert_eq!(got, "i686");
}

/// A network namespace of the test's own, with a veth pair and a tap device
/// carrying addresses; the runtime runs in it. Removed on drop.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new(tag: &str) -> TestNetns {
        let name = format!("strata-e2e-{}-{tag}", std::process::id());
        sh(&format!("ip netns add {name}"));
        let ns = TestNetns { name };
        ns.ip("link add va type veth peer name vb");
        ns.ip("addr add 10.9.8.7/24 dev va");
        ns.ip("-6 addr add fd00:9::7/64 dev va nodad");
        ns.ip("link set va up");
        ns.ip("tuntap add dev tap7 mode tap");
        ns.ip("addr add 10.9.9.1/24 dev tap7");
        ns
    }

    fn ip(&self, args: &str) -> String {
        let out = Command::new("sh").arg("-c").arg(format!("ip -n {} {args}", self.name)).output().expect("ip");
        assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn has(&self, dev: &str) -> bool {
        Command::new("ip").args(["-n", &self.name, "link", "show", dev]).output().is_ok_and(|o| o.status.success())
    }

    /// A runtime command of bundle `b`, run inside this namespace.
    fn rt(&self, b: &Bundle, args: &[&str]) -> Out {
        // (nsenter, not `ip netns exec`, which remounts /sys and hides the cgroup tree.)
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name)).arg(runtime_bin()).arg("--root").arg(b.root.path()).args(args);
        run_to_files(c.stdin(std::process::Stdio::null()))
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// linux.netDevices: the devices move into the container renamed, with their
/// addresses and up, and are back (with their addresses) after delete.
#[test]
fn net_devices_move_in_with_their_addresses_and_back_at_delete() {
    let test = "net_devices_move_in_with_their_addresses_and_back_at_delete";
    if !is_strata() {
        return skip(test, "runc 1.1.5 has no linux.netDevices");
    }
    let ns = TestNetns::new("dev");
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["netDevices"] = json!({ "va": { "name": "eth7" }, "tap7": {} });
    b.write_config();
    let bundle = b.dir.path().to_string_lossy().into_owned();
    ns.rt(&b, &["create", "--bundle", &bundle, "nd"]).ok();
    ns.rt(&b, &["start", "nd"]).ok();
    assert!(!ns.has("va") && !ns.has("tap7"), "still in the runtime's namespace");
    let inside = ns.rt(&b, &["exec", "nd", "ip", "addr"]).ok().to_string();
    assert!(inside.contains("eth7") && inside.contains("inet 10.9.8.7/24"), "{inside}");
    assert!(inside.contains("inet6 fd00:9::7/64"), "{inside}");
    assert!(inside.contains("tap7") && inside.contains("inet 10.9.9.1/24"), "{inside}");
    assert!(!inside.contains(" va:") && !inside.contains(" va@"), "not renamed: {inside}");
    let link = ns.rt(&b, &["exec", "nd", "ip", "link", "show", "eth7"]).ok().to_string();
    assert!(link.contains(",UP"), "not up: {link}");
    ns.rt(&b, &["delete", "--force", "nd"]).ok();
    assert!(ns.has("va") && ns.has("tap7"), "not moved back");
    assert!(ns.ip("addr show va").contains("inet 10.9.8.7/24"));
    assert!(ns.ip("addr show tap7").contains("inet 10.9.9.1/24"));
    assert!(b.leftover_state().is_empty());
}

/// A missing device, or a name the container's namespace has already, fails
/// create before any device moves; so does a container without a network
/// namespace of its own.
#[test]
fn net_devices_that_cannot_move_fail_create_with_nothing_moved() {
    let test = "net_devices_that_cannot_move_fail_create_with_nothing_moved";
    if !is_strata() {
        return skip(test, "runc 1.1.5 has no linux.netDevices");
    }
    let ns = TestNetns::new("bad");
    for (devices, want) in [
        (json!({ "tap7": { "name": "eth1" }, "nope0": {} }), "linux.netDevices.nope0"),
        (json!({ "tap7": { "name": "eth1" }, "va": { "name": "lo" } }), "linux.netDevices.va.name"),
        (json!({ "tap7": { "name": "eth1" }, "va": { "name": "eth1" } }), "linux.netDevices.va.name"),
        (json!({ "tap7": { "name": "a/b" } }), "linux.netDevices.tap7.name"),
    ] {
        let mut b = Bundle::new(&["true"]);
        b.config["linux"]["netDevices"] = devices.clone();
        b.write_config();
        let bundle = b.dir.path().to_string_lossy().into_owned();
        let out = ns.rt(&b, &["run", "--bundle", &bundle, "nd"]);
        assert!(out.failed().contains(want), "{devices}: {out:?}");
        assert!(ns.has("va") && ns.has("tap7"), "{devices}: a device moved");
        assert!(ns.ip("addr show va").contains("inet 10.9.8.7/24"));
        assert!(b.leftover_state().is_empty());
    }
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["namespaces"].as_array_mut().expect("ns").retain(|n| n["type"] != "network");
    b.config["linux"]["netDevices"] = json!({ "tap7": {} });
    b.write_config();
    let bundle = b.dir.path().to_string_lossy().into_owned();
    let out = ns.rt(&b, &["run", "--bundle", &bundle, "nd"]);
    assert!(out.failed().contains("linux.netDevices"), "{out:?}");
    assert!(ns.has("tap7"));
}

/// linux.intelRdt needs resctrl: where it is not mounted, create says so and
/// leaves nothing (the groups themselves are tested against a fake resctrl
/// tree in the library's unit tests).
#[test]
fn intel_rdt_without_resctrl_is_refused_naming_it() {
    let test = "intel_rdt_without_resctrl_is_refused_naming_it";
    if !is_strata() {
        return skip(test, "checks strata's own refusal");
    }
    if std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().contains(" - resctrl ") {
        return skip(test, "resctrl is mounted here");
    }
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["intelRdt"] = json!({ "closID": "gold", "l3CacheSchema": "L3:0=f" });
    let err = b.sh("true").failed().to_string();
    assert!(err.contains("linux.intelRdt") && err.contains("resctrl"), "{err}");
    assert!(b.leftover_state().is_empty());
}

/// Relative maskedPaths and readonlyPaths are taken from the container's root.
#[test]
fn relative_masked_and_readonly_paths() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["maskedPaths"] = json!(["proc/kcore", "etc/passwd"]);
    b.config["linux"]["readonlyPaths"] = json!(["proc/sys"]);
    let out = b.sh("wc -c < /etc/passwd; head -c 1 /proc/kcore | wc -c; \
         (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo writable || echo read-only");
    assert_eq!(out.ok(), "0\n0\nread-only\n");
}

/// A startContainer hook without `env` runs with the container process's
/// environment (as runc runs it); an empty `env` is empty.
#[test]
fn start_container_hooks_without_env_get_the_process_environment() {
    for (env, want) in [(None, "bar\n"), (Some(json!([])), "\n")] {
        let mut b = Bundle::new(&["cat", "/tmp/hookenv"]);
        b.config["process"]["env"].as_array_mut().expect("env").push(json!("FOO=bar"));
        b.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" }));
        let mut hook = json!({ "path": "/bin/sh", "args": ["sh", "-c", "echo \"$FOO\" > /tmp/hookenv"] });
        if let Some(e) = env.clone() {
            hook["env"] = e;
        }
        b.config["hooks"] = json!({ "startContainer": [hook] });
        let out = b.run(&format!("hookenv{}", env.is_some()));
        assert_eq!(out.ok(), want, "env {env:?}");
    }
}

/// A user-namespaced container without a cgroup namespace of its own, with the
/// host's /sys bound in and a read-only root: the kernel refuses it a cgroup2
/// mount, and it gets the host's cgroup v2 tree bound instead, as runc does.
#[test]
fn cgroup_mount_in_a_user_namespace_falls_back_to_a_bind() {
    // (The last mount on /sys/fs/cgroup is the one the container sees.)
    let script = "grep ' /sys/fs/cgroup ' /proc/self/mountinfo | tail -1 | grep -o ' - cgroup2 '; \
                  grep ' /sys/fs/cgroup ' /proc/self/mountinfo | tail -1 | cut -d' ' -f6 | cut -d, -f1; \
                  test -e /sys/fs/cgroup/cgroup.controllers && echo controllers";
    let mut b = Bundle::new(&["sh", "-c", script]);
    with_userns(&mut b);
    b.config["linux"]["namespaces"].as_array_mut().expect("ns").retain(|n| n["type"] != "cgroup");
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.retain(|m| !m["destination"].as_str().is_some_and(|d| d.starts_with("/sys")));
    mounts.push(json!({ "destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"] }));
    mounts.push(json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }));
    b.config["root"]["readonly"] = json!(true);
    let out = b.run("cgbind");
    assert_eq!(out.ok(), " - cgroup2 \nro\ncontrollers\n");
}

// runc's command-line flags that strata lacked.

fn runc_has_no(test: &str, flag: &str) -> bool {
    if !is_strata() {
        skip(test, &format!("runc 1.1.5 has no {flag}"));
        return true;
    }
    false
}

/// The container's cgroup directory, from its state (None without one).
fn cgroup_dir(b: &Bundle, id: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(b.root.path().join(id).join("state.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["cgroup"].as_str().map(PathBuf::from)
}

#[test]
fn exec_cgroup_runs_the_process_in_a_cgroup_below_the_containers() {
    let test = "exec_cgroup_runs_the_process_in_a_cgroup_below_the_containers";
    if runc_has_no(test, "exec --cgroup") {
        return;
    }
    let mut b = Bundle::new(&["sleep", "100"]);
    // No cgroup namespace: /proc/self/cgroup shows the full path.
    b.config["linux"]["namespaces"].as_array_mut().expect("ns").retain(|n| n["type"] != "cgroup");
    b.create("cgx").ok();
    b.rt(&["start", "cgx"]).ok();
    let Some(dir) = cgroup_dir(&b, "cgx") else {
        b.rt(&["delete", "--force", "cgx"]).ok();
        return skip(test, "the container has no cgroup here");
    };
    std::fs::create_dir(dir.join("sub")).expect("mkdir sub-cgroup");
    for flag in ["sub", "cpu,memory:sub", "/sub"] {
        let out = b.rt(&["exec", "--cgroup", flag, "cgx", "cat", "/proc/self/cgroup"]);
        assert!(out.ok().trim().ends_with("/cgx/sub") || out.stdout.trim().ends_with("/sub"), "{flag}: {out:?}");
    }
    for (flag, want) in [("nope", "does not exist"), ("../x", "below the container's")] {
        let out = b.rt(&["exec", "--cgroup", flag, "cgx", "true"]);
        assert!(out.failed().contains("--cgroup") && out.stderr.contains(want), "{flag}: {out:?}");
    }
    b.rt(&["delete", "--force", "cgx"]).ok();
    assert!(!dir.exists(), "cgroup left");
}

#[test]
fn exec_into_a_paused_container_needs_ignore_paused_and_waits_for_resume() {
    let test = "exec_into_a_paused_container_needs_ignore_paused_and_waits_for_resume";
    if runc_has_no(test, "exec --ignore-paused") {
        return;
    }
    let b = Bundle::new(&["sleep", "100"]);
    b.create("pz").ok();
    b.rt(&["start", "pz"]).ok();
    if b.rt(&["pause", "pz"]).code != 0 {
        b.rt(&["delete", "--force", "pz"]).ok();
        return skip(test, "pause needs the cgroup freezer");
    }
    let out = b.rt(&["exec", "pz", "echo", "hi"]);
    assert!(out.failed().contains("paused"), "{out:?}");
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        let exec = s.spawn(|| b.rt(&["exec", "--ignore-paused", "pz", "echo", "hi"]));
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(!exec.is_finished(), "the process ran in a paused container");
        b.rt(&["resume", "pz"]).ok();
        let out = exec.join().expect("exec thread");
        assert_eq!(out.ok(), "hi\n");
    });
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    b.rt(&["delete", "--force", "pz"]).ok();
}

/// Receives one message with a descriptor on a listener at `sock`; returns
/// the message and the pid the descriptor (a pidfd) refers to.
fn pidfd_listener(sock: &Path) -> std::thread::JoinHandle<Result<(String, i32), String>> {
    let listener = std::os::unix::net::UnixListener::bind(sock).expect("bind");
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
        let (msg, fd) = receive_seccomp_listener(&conn)?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map_err(|e| e.to_string())?;
        let _ = nix::unistd::close(fd);
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("not a pidfd: {info}"))?;
        Ok((String::from_utf8_lossy(&msg).into_owned(), pid))
    })
}

#[test]
fn pidfd_socket_receives_the_init_and_the_exec_process() {
    let test = "pidfd_socket_receives_the_init_and_the_exec_process";
    if runc_has_no(test, "--pidfd-socket") {
        return;
    }
    let b = Bundle::new(&["sleep", "100"]);
    let dir = TempDir::new("pidfd");
    let sock = dir.path().join("init.sock");
    let listener = pidfd_listener(&sock);
    let bundle = b.dir.path().to_string_lossy().into_owned();
    b.write_config();
    b.rt(&["run", "--detach", "--pidfd-socket", &sock.to_string_lossy(), "--bundle", &bundle, "pf"]).ok();
    let (msg, pid) = listener.join().expect("listener").expect("pidfd");
    assert_eq!((msg.as_str(), i64::from(pid)), ("pidfd", b.state("pf").expect("state")["pid"].as_i64().expect("pid")));
    let sock = dir.path().join("exec.sock");
    let listener = pidfd_listener(&sock);
    let pid_file = dir.path().join("exec.pid");
    b.rt(&[
        "exec",
        "--detach",
        "--pidfd-socket",
        &sock.to_string_lossy(),
        "--pid-file",
        &pid_file.to_string_lossy(),
        "pf",
        "sleep",
        "100",
    ])
    .ok();
    let (_, pid) = listener.join().expect("listener").expect("pidfd");
    assert_eq!(pid.to_string(), std::fs::read_to_string(&pid_file).expect("pid file"));
    b.rt(&["delete", "--force", "pf"]).ok();
}

/// By default the container gets a session keyring of its own, named after
/// it (as runc does); --no-new-keyring keeps the caller's.
#[test]
fn a_new_session_keyring_unless_no_new_keyring() {
    if !Path::new("/proc/keys").exists() {
        return skip("a_new_session_keyring_unless_no_new_keyring", "no /proc/keys (a kernel without keys)");
    }
    for (flags, id, want) in [(&[][..], "kr1", "1\n"), (&["--no-new-keyring"][..], "kr2", "0\n")] {
        let mut b = Bundle::new(&["sh", "-c", &format!("grep -c '_ses\\.{id}:' /proc/keys || true")]);
        // (The usual masked paths hide /proc/keys.)
        b.config["linux"]["maskedPaths"] = json!([]);
        let bundle = b.dir.path().to_string_lossy().into_owned();
        b.write_config();
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend(["--bundle", &bundle, id]);
        assert_eq!(b.rt(&args).ok(), want, "{flags:?}");
    }
}

#[test]
fn exec_labels_the_host_cannot_apply_are_refused() {
    let test = "exec_labels_the_host_cannot_apply_are_refused";
    if runc_has_no(test, "checks strata's refusals") {
        return;
    }
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'));
    if apparmor || Path::new("/sys/fs/selinux/enforce").exists() {
        return skip(test, "this host runs an LSM");
    }
    let b = Bundle::new(&["sleep", "100"]);
    b.create("lbl").ok();
    b.rt(&["start", "lbl"]).ok();
    let out = b.rt(&["exec", "--process-label", "system_u:system_r:container_t:s0", "lbl", "true"]);
    assert!(out.failed().contains("selinuxLabel"), "{out:?}");
    let out = b.rt(&["exec", "--apparmor", "strata-test", "lbl", "true"]);
    assert!(out.failed().contains("apparmorProfile"), "{out:?}");
    assert_eq!(b.rt(&["exec", "--no-subreaper", "lbl", "echo", "ok"]).ok(), "ok\n");
    b.rt(&["delete", "--force", "lbl"]).ok();
}

/// runc's update flags: realtime and kernel memory have no cgroup v2
/// equivalent and are refused naming the field; the RDT schemata need a
/// resctrl group of the container's own.
#[test]
fn update_flags_of_runc() {
    let test = "update_flags_of_runc";
    if runc_has_no(test, "checks strata's refusals") {
        return;
    }
    let b = Bundle::new(&["sleep", "100"]);
    b.create("upd").ok();
    b.rt(&["start", "upd"]).ok();
    if cgroup_dir(&b, "upd").is_none() {
        b.rt(&["delete", "--force", "upd"]).ok();
        return skip(test, "the container has no cgroup here");
    }
    for (flag, value, want) in [
        ("--cpu-rt-period", "1000000", "realtime"),
        ("--cpu-rt-runtime", "950000", "realtime"),
        ("--kernel-memory", "1048576", "memory.kernel"),
        ("--l3-cache-schema", "L3:0=f", "no Intel RDT group"),
        ("--mem-bw-schema", "MB:0=20", "no Intel RDT group"),
    ] {
        let out = b.rt(&["update", flag, value, "upd"]);
        assert!(out.failed().contains(want), "{flag}: {out:?}");
    }
    // runc's spelling of the shares flag.
    let out = b.rt(&["update", "--cpu-share", "512", "upd"]);
    if out.code != 0 {
        assert!(out.stderr.contains("cpu"), "{out:?}");
    }
    b.rt(&["delete", "--force", "upd"]).ok();
}
