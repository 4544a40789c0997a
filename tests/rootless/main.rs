//! Rootless: an unprivileged user runs containers.
//!
//! The suite makes a user of its own (`strata-rootless-test`, with subordinate
//! id ranges in /etc/subuid and /etc/subgid), runs every runtime command as
//! that user (setpriv), and removes the user at the end. It has its own `main`
//! so that the user goes however the checks end.
//!
//! `STRATA_TEST_RUNTIME=runc` runs the same checks with runc (a few check
//! strata's own wording and print a skip there).

use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use strata_tests::{is_root, is_strata, run_to_files, runtime_bin, skip, Bundle, Out, TempDir};

const USER: &str = "strata-rootless-test";

/// The test user's uid and gid, and the start of its subordinate ranges.
struct TestUser {
    uid: u32,
    gid: u32,
    sub_uid: u32,
    sub_gid: u32,
}

impl TestUser {
    fn create() -> Result<TestUser, String> {
        let _ = Command::new("userdel").args(["-f", "-r", USER]).stderr(Stdio::null()).status();
        let made = Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", USER]).status();
        if !made.is_ok_and(|s| s.success()) {
            return Err("useradd failed".into());
        }
        let id = |flag: &str| -> Result<u32, String> {
            let out = Command::new("id").args([flag, USER]).output().map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("id {flag}: {e}"))
        };
        let sub = |file: &str| -> Option<u32> {
            std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
                let mut f = l.split(':');
                (f.next() == Some(USER)).then(|| f.next()?.parse().ok())?
            })
        };
        // useradd adds ranges where login.defs asks it to; otherwise they are added here.
        let ensure = |file: &str, cmd: &str| -> Result<u32, String> {
            if let Some(start) = sub(file) {
                return Ok(start);
            }
            let ok = Command::new("usermod").args([cmd, "200000-265535", USER]).status();
            if !ok.is_ok_and(|s| s.success()) {
                return Err(format!("usermod {cmd} failed"));
            }
            sub(file).ok_or_else(|| format!("no range in {file}"))
        };
        Ok(TestUser {
            uid: id("-u")?,
            gid: id("-g")?,
            sub_uid: ensure("/etc/subuid", "--add-subuids")?,
            sub_gid: ensure("/etc/subgid", "--add-subgids")?,
        })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Whatever of the user's is still running goes with it.
        let _ = Command::new("pkill").args(["-KILL", "-u", USER]).status();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = Command::new("userdel").args(["-f", "-r", USER]).stderr(Stdio::null()).status();
    }
}

static USER_IDS: std::sync::OnceLock<(u32, u32, u32, u32)> = std::sync::OnceLock::new();

fn ids() -> (u32, u32, u32, u32) {
    *USER_IDS.get().expect("the test user exists")
}

/// A bundle the test user can use: its config rootless (a user namespace
/// mapping the user's ids, no cgroup namespace or mount, no resources, no
/// uid=/gid= mount options), its state root and bundle directory the user's.
fn rootless_bundle(args: &[&str]) -> Bundle {
    let (uid, gid, _, _) = ids();
    let mut b = Bundle::new(args);
    strata_tests::make_rootless(&mut b.config, uid, gid);
    chown(b.root.path(), uid, gid);
    chown(b.dir.path(), uid, gid);
    b
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
}

/// The runtime run as the test user, with its runtime directory.
fn as_user(b: &Bundle, args: &[&str]) -> Out {
    let (uid, gid, _, _) = ids();
    let xdg = b.root.path().join("xdg");
    let _ = std::fs::create_dir(&xdg);
    chown(&xdg, uid, gid);
    run_to_files(
        Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups", "--"])
            .arg(runtime_bin())
            .args(["--root", &b.root.path().join("state").to_string_lossy()])
            .args(args)
            .env("XDG_RUNTIME_DIR", &xdg)
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null()),
    )
}

fn run(b: &Bundle, id: &str) -> Out {
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    as_user(b, &["run", "--bundle", &dir, id])
}

/// Nothing of the user's containers is left: no state, no process of the user.
fn nothing_left(b: &Bundle) {
    let state = b.root.path().join("state");
    let left: Vec<_> = std::fs::read_dir(&state).into_iter().flatten().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "state left: {left:?}");
    // A killed process may take a moment to be gone (and reaped).
    let mut procs = Vec::new();
    for _ in 0..100 {
        procs = Command::new("pgrep").args(["-u", USER]).output().expect("pgrep").stdout;
        if procs.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(procs.is_empty(), "processes of the user left: {}", String::from_utf8_lossy(&procs));
}

/// The container's root is the user: its own uid mapped, nothing more; its
/// network namespace has only loopback; its devices are the host's nodes,
/// usable; it cannot write what the user cannot.
fn a_user_runs_a_container_as_its_own_root() {
    let (uid, _, _, _) = ids();
    let host_only = TempDir::new("rootonly");
    std::fs::write(host_only.path().join("f"), "root's").expect("write");
    let mut b = rootless_bundle(&[
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; cut -d: -f1 /proc/net/dev | tail -n +3; echo x > /dev/null && echo null-ok; \
         echo y > /mnt/f 2>/dev/null || echo write-refused; grep CapEff /proc/self/status",
    ]);
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({ "destination": "/mnt", "type": "bind", "source": host_only.path(), "options": ["bind"] }));
    let out = run(&b, "own");
    let text = out.ok();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "{text}");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["0", &uid.to_string(), "1"], "{text}");
    assert_eq!(lines[2], "lo", "only loopback: {text}");
    assert!(text.contains("null-ok") && text.contains("write-refused"), "{text}");
    // The config's capabilities, in the user's namespace only: AUDIT_WRITE, KILL,
    // NET_BIND_SERVICE.
    assert!(text.contains("CapEff:\t0000000020000420"), "{text}");
    assert_eq!(std::fs::read_to_string(host_only.path().join("f")).expect("read"), "root's");
    nothing_left(&b);
}

/// create, start, state, exec, ps, kill and delete as the user; pause without
/// a cgroup is refused in one line; the state lives under the given root.
fn the_lifecycle_as_the_user() {
    let b = rootless_bundle(&["sleep", "100"]);
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    as_user(&b, &["create", "--bundle", &dir, "life"]).ok();
    as_user(&b, &["start", "life"]).ok();
    let st: serde_json::Value = serde_json::from_str(as_user(&b, &["state", "life"]).ok()).expect("state json");
    assert_eq!(st["status"], "running");
    assert_eq!(as_user(&b, &["exec", "life", "id", "-u"]).ok().trim(), "0");
    if is_strata() {
        // Without a cgroup, the processes of the container's pid namespace.
        let ps = as_user(&b, &["ps", "--format", "json", "life"]);
        let pids: Vec<i64> = serde_json::from_str(ps.ok()).expect("ps json");
        assert!(pids.contains(&st["pid"].as_i64().expect("pid")), "{pids:?}");
    } else {
        skip(
            "the_lifecycle_as_the_user",
            "runc 1.1.5's ps needs a cgroup, which a rootless container has none of here",
        );
    }
    let paused = as_user(&b, &["pause", "life"]);
    assert_ne!(paused.code, 0, "pause without a cgroup cannot work: {paused:?}");
    if is_strata() {
        assert!(paused.stderr.contains("cgroup"), "{paused:?}");
    }
    as_user(&b, &["kill", "life", "KILL"]).ok();
    for _ in 0..100 {
        if as_user(&b, &["state", "life"]).stdout.contains("stopped") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    as_user(&b, &["delete", "life"]).ok();
    nothing_left(&b);
}

/// Mappings wider than the user's own id go through newuidmap/newgidmap,
/// within the user's subordinate ranges; a file the container's uid 1 makes
/// is owned on the host by the first subordinate id.
fn subordinate_ids_through_newuidmap() {
    let test = "subordinate_ids_through_newuidmap";
    if !Path::new("/usr/bin/newuidmap").exists() {
        return skip(test, "newuidmap is not installed (package uidmap)");
    }
    let (uid, gid, sub_uid, sub_gid) = ids();
    let shared = TempDir::new("subids");
    chown(shared.path(), uid, gid);
    let mut b = rootless_bundle(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map | wc -l; touch /mnt/by1 && chown 1:1 /mnt/by1 && echo ok",
    ]);
    b.config["linux"]["uidMappings"] =
        json!([{ "containerID": 0, "hostID": uid, "size": 1 }, { "containerID": 1, "hostID": sub_uid, "size": 1000 }]);
    b.config["linux"]["gidMappings"] =
        json!([{ "containerID": 0, "hostID": gid, "size": 1 }, { "containerID": 1, "hostID": sub_gid, "size": 1000 }]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set] = json!(["CAP_CHOWN"]);
    }
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({ "destination": "/mnt", "type": "bind", "source": shared.path(), "options": ["bind"] }));
    let out = run(&b, "subids");
    assert_eq!(out.ok(), "2\nok\n");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(shared.path().join("by1")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (sub_uid, sub_gid));
    nothing_left(&b);
}

/// What the user may not do is refused with one clear line, and leaves nothing.
fn what_the_user_may_not_do_is_refused() {
    let (uid, _, _, _) = ids();
    // Mapping host ids the user does not own.
    let mut b = rootless_bundle(&["true"]);
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 0, "size": 1 }]);
    let out = run(&b, "map-root");
    let err = out.failed();
    if is_strata() {
        assert!(err.contains("linux.uidMappings"), "{err}");
    }
    nothing_left(&b);
    // Limits with no cgroup delegated to the user.
    let mut b = rootless_bundle(&["true"]);
    b.config["linux"]["resources"] = json!({ "pids": { "limit": 10 } });
    let out = run(&b, "limits");
    let err = out.failed();
    if is_strata() {
        assert!(err.contains("linux.resources") && err.contains(&format!("uid {uid}")), "{err}");
    }
    nothing_left(&b);
    // Joining a namespace of root's.
    let mut b = rootless_bundle(&["true"]);
    for n in b.config["linux"]["namespaces"].as_array_mut().expect("ns") {
        if n["type"] == "network" {
            *n = json!({ "type": "network", "path": "/proc/1/ns/net" });
        }
    }
    let out = run(&b, "join");
    let err = out.failed();
    if is_strata() {
        assert!(err.contains("network") || err.contains("/proc/1/ns/net"), "{err}");
    }
    nothing_left(&b);
    // A bundle of another user's (root's, closed to others).
    let b = rootless_bundle(&["true"]);
    b.write_config();
    std::os::unix::fs::chown(b.dir.path(), Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(b.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    let dir = b.dir.path().to_string_lossy().into_owned();
    let out = as_user(&b, &["run", "--bundle", &dir, "theirs"]);
    let err = out.failed();
    if is_strata() {
        assert!(err.contains(&dir), "the error names the bundle: {err}");
    }
    nothing_left(&b);
    // The systemd driver, which needs the user's own systemd instance.
    let b = rootless_bundle(&["true"]);
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    let out = as_user(&b, &["--systemd-cgroup", "run", "--bundle", &dir, "sd"]);
    let err = out.failed();
    if is_strata() {
        assert!(err.contains("systemd"), "{err}");
    }
    nothing_left(&b);
    // A state root the user cannot write.
    let b = rootless_bundle(&["true"]);
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    let (uid, gid, _, _) = ids();
    let out = run_to_files(
        Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups", "--"])
            .arg(runtime_bin())
            .args(["--root", "/var/lib/strata-rootless-nope", "run", "--bundle", &dir, "noroot"])
            .stdin(Stdio::null()),
    );
    let err = out.failed();
    if is_strata() {
        assert!(err.contains("/var/lib/strata-rootless-nope"), "{err}");
    }
    assert!(!Path::new("/var/lib/strata-rootless-nope").exists());
}

/// Without a runtime directory and without --root, the user is told what to set.
fn the_default_root_is_the_users_runtime_directory() {
    let test = "the_default_root_is_the_users_runtime_directory";
    if !is_strata() {
        return skip(test, "strata's message");
    }
    let (uid, gid, _, _) = ids();
    let b = rootless_bundle(&["true"]);
    let xdg = b.root.path().join("xdg-default");
    std::fs::create_dir(&xdg).expect("mkdir");
    chown(&xdg, uid, gid);
    let user = |env: Option<&Path>| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups", "--"])
            .arg(runtime_bin())
            .arg("list")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        if let Some(e) = env {
            c.env("XDG_RUNTIME_DIR", e);
        }
        run_to_files(&mut c)
    };
    user(Some(&xdg)).ok();
    if !Path::new(&format!("/run/user/{uid}")).exists() {
        let err = user(None);
        assert!(err.failed().contains("XDG_RUNTIME_DIR"), "{err:?}");
    }
}

/// A cgroup delegated to the user (a subtree it owns, as an administrator or
/// systemd makes one, with the runtime started inside it) is used: limits
/// apply there, and delete removes the container's cgroup.
fn a_delegated_cgroup_is_used() {
    let test = "a_delegated_cgroup_is_used";
    if !is_strata() && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return skip(test, "runc would use the cgroup v1 hierarchies of this hybrid host, which are not touched");
    }
    let (uid, gid, _, _) = ids();
    let Ok(mount) = strata_runtime::cgroups::find_mount() else {
        return skip(test, "no cgroup v2 hierarchy");
    };
    let available = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == "hugetlb") {
        return skip(test, "no hugetlb controller on cgroup v2 to limit");
    }
    let top = format!("strata-rootless-{}", std::process::id());
    let deleg = mount.join(&top);
    std::fs::create_dir_all(deleg.join("leaf")).expect("mkdir");
    let cleanup = || {
        let _ = std::fs::remove_dir(deleg.join("c"));
        let _ = std::fs::remove_dir(deleg.join("leaf"));
        let _ = std::fs::remove_dir(&deleg);
    };
    let result = std::panic::catch_unwind(|| {
        // The parent offers hugetlb; the subtree, files and all, is the user's.
        let _ = std::fs::write(mount.join("cgroup.subtree_control"), "+hugetlb");
        let st = Command::new("chown").args(["-R", &format!("{uid}:{gid}")]).arg(&deleg).status().expect("chown");
        assert!(st.success());
        let mut b = rootless_bundle(&["sleep", "100"]);
        b.config["linux"]["cgroupsPath"] = json!(format!("/{top}/c"));
        b.config["linux"]["resources"] = json!({ "hugepageLimits": [{ "pageSize": "2MB", "limit": 4_194_304 }] });
        b.write_config();
        let dir = b.dir.path().to_string_lossy().into_owned();
        let xdg = b.root.path().join("xdg");
        let _ = std::fs::create_dir(&xdg);
        chown(&xdg, uid, gid);
        // The runtime starts in the user's subtree, as a process of its session would.
        let out = run_to_files(
            Command::new("sh")
                .arg("-c")
                .arg(format!("echo $$ > {}/leaf/cgroup.procs && exec \"$@\"", deleg.display()))
                .arg("sh")
                .args(["setpriv", "--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups", "--"])
                .arg(runtime_bin())
                .args(["--root", &b.root.path().join("state").to_string_lossy(), "create", "--bundle", &dir, "deleg"])
                .env("XDG_RUNTIME_DIR", &xdg)
                .stdin(Stdio::null()),
        );
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(std::fs::read_to_string(deleg.join("c/hugetlb.2MB.max")).unwrap_or_default().trim(), "4194304");
        as_user(&b, &["delete", "--force", "deleg"]).ok();
        assert!(!deleg.join("c").exists(), "delete removes the container's cgroup");
        nothing_left(&b);
    });
    cleanup();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

const CHECKS: &[(&str, fn())] = &[
    ("a_user_runs_a_container_as_its_own_root", a_user_runs_a_container_as_its_own_root),
    ("the_lifecycle_as_the_user", the_lifecycle_as_the_user),
    ("subordinate_ids_through_newuidmap", subordinate_ids_through_newuidmap),
    ("what_the_user_may_not_do_is_refused", what_the_user_may_not_do_is_refused),
    ("the_default_root_is_the_users_runtime_directory", the_default_root_is_the_users_runtime_directory),
    ("a_delegated_cgroup_is_used", a_delegated_cgroup_is_used),
];

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in CHECKS {
            println!("{name}: test");
        }
        return;
    }
    if !is_root() {
        return skip("rootless", "needs root to make its test user");
    }
    // The bundles and state roots must be reachable by the user.
    let user = match TestUser::create() {
        Ok(u) => u,
        Err(e) => {
            println!("test user ... FAILED: {e}");
            std::process::exit(1);
        }
    };
    let _ = USER_IDS.set((user.uid, user.gid, user.sub_uid, user.sub_gid));
    let mut failed = Vec::new();
    for (name, check) in
        CHECKS.iter().filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
    {
        let started = std::time::Instant::now();
        match std::panic::catch_unwind(check) {
            Ok(()) => println!("test {name} ... ok ({} ms)", started.elapsed().as_millis()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
        // A failed check's containers must not spill into the next one's.
        let _ = Command::new("pkill").args(["-KILL", "-u", USER]).status();
    }
    drop(user);
    if failed.is_empty() {
        println!("\ntest result: ok");
    } else {
        println!("\ntest result: FAILED: {}", failed.join(", "));
        std::process::exit(1);
    }
}
