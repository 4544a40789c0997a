//! The cgroup v2 manager, live on this host: placement, pause/resume, kill --all,
//! delete of a frozen container, statistics, hugetlb limits, update, and errors for
//! controllers the host lacks.

use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use strata_tests::*;

/// The v2 mount, or None (then every test here reports a skip).
fn v2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The last reachable one: in a pure v2 view, cgroup2 is mounted over the host's tree.
    info.lines()
        .rev()
        .filter(|l| l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .find(|p| p.join("cgroup.controllers").exists())
}

fn controllers(mount: &std::path::Path) -> String {
    std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default()
}

/// Skips unless strata runs on a host with cgroup v2; returns the mount.
fn setup(test: &str) -> Option<PathBuf> {
    let pure_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !is_strata() && !pure_v2 {
        // On a hybrid host runc would use the v1 hierarchies, which must not be
        // touched: compare in a pure v2 view (hack/compare-runc.sh) instead.
        skip(test, "runc is compared in a pure cgroup v2 view only");
        return None;
    }
    let m = v2_mount();
    if m.is_none() {
        skip(test, "no cgroup v2 hierarchy mounted");
    }
    m
}

/// A unique absolute cgroupsPath for one test, removed (if left) on drop.
struct TestCgroup {
    mount: PathBuf,
    top: String,
}

impl TestCgroup {
    fn new(mount: &std::path::Path, tag: &str) -> TestCgroup {
        TestCgroup { mount: mount.to_path_buf(), top: format!("strata-e2e-{}-{tag}", std::process::id()) }
    }
    fn path(&self) -> String {
        format!("/{}/c", self.top)
    }
    fn dir(&self) -> PathBuf {
        self.mount.join(&self.top).join("c")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.dir());
        let _ = std::fs::remove_dir(self.mount.join(&self.top));
    }
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn init_is_placed_in_its_cgroup_before_it_runs() {
    let Some(mount) = setup("init_is_placed_in_its_cgroup_before_it_runs") else { return };
    let cg = TestCgroup::new(&mount, "place");
    let mut b = Bundle::new(&["true"]);
    // No cgroup namespace: /proc/self/cgroup shows the full path.
    b.config["linux"]["namespaces"].as_array_mut().expect("array").retain(|n| n["type"] != "cgroup");
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    let out = b.sh("grep ^0:: /proc/self/cgroup");
    assert_eq!(out.ok(), format!("0::{}\n", cg.path()));
    assert!(!cg.dir().exists(), "cgroup left behind");
    if is_strata() {
        // (runc leaves the parents it created.)
        assert!(!mount.join(&cg.top).exists(), "parent cgroup left behind");
    }
}

#[test]
fn default_cgroup_and_cleanup() {
    let Some(mount) = setup("default_cgroup_and_cleanup") else { return };
    if !is_strata() {
        return skip("default_cgroup_and_cleanup", "the default cgroup path is the runtime's own choice");
    }
    let b = Bundle::new(&["sleep", "100"]);
    let id = format!("cgdef{}", std::process::id());
    b.create(&id).ok();
    let pid = b.state(&id).expect("state")["pid"].as_i64().expect("pid");
    let dir = mount.join("strata").join(&id);
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("cgroup exists");
    assert_eq!(procs.trim(), pid.to_string());
    b.rt(&["delete", &id]).ok();
    assert!(!dir.exists());
}

#[test]
fn pause_stops_the_processes_and_resume_restarts_them() {
    let Some(mount) = setup("pause_stops_the_processes_and_resume_restarts_them") else { return };
    let cg = TestCgroup::new(&mount, "pause");
    let out = TempDir::new("counter");
    let mut b = Bundle::new(&["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /out/c; usleep 5000; done"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    b.config["mounts"]
        .as_array_mut()
        .expect("array")
        .push(json!({ "destination": "/out", "type": "bind", "source": out.path(), "options": ["bind"] }));
    b.create("pz").ok();
    b.rt(&["start", "pz"]).ok();
    let counter =
        || std::fs::read_to_string(out.path().join("c")).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    assert!(wait_for(|| counter() > 3), "counter never advanced");
    b.rt(&["pause", "pz"]).ok();
    assert_eq!(b.status("pz"), "paused");
    let frozen_at = counter();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(), frozen_at, "a paused container kept running");
    b.rt(&["pause", "pz"]).failed();
    b.rt(&["resume", "pz"]).ok();
    assert_eq!(b.status("pz"), "running");
    assert!(wait_for(|| counter() > frozen_at + 3), "resume did not restart the counter");
    b.rt(&["resume", "pz"]).failed();
    b.rt(&["delete", "--force", "pz"]).ok();
    assert!(!cg.dir().exists());
}

#[test]
fn delete_force_of_a_frozen_container() {
    let Some(mount) = setup("delete_force_of_a_frozen_container") else { return };
    let cg = TestCgroup::new(&mount, "frozen");
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    b.create("fz").ok();
    b.rt(&["start", "fz"]).ok();
    let pid = b.state("fz").expect("state")["pid"].as_i64().expect("pid");
    b.rt(&["pause", "fz"]).ok();
    b.rt(&["delete", "--force", "fz"]).ok();
    assert!(b.leftover_state().is_empty());
    assert!(!cg.dir().exists(), "cgroup left behind");
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z")).unwrap_or(false);
    assert!(!alive);
}

#[test]
fn kill_all_reaches_every_process_without_a_pid_namespace() {
    let Some(mount) = setup("kill_all_reaches_every_process_without_a_pid_namespace") else { return };
    let cg = TestCgroup::new(&mount, "killall");
    let mut b = Bundle::new(&["sh", "-c", "sleep 101 & sleep 102 & wait"]);
    b.config["linux"]["namespaces"].as_array_mut().expect("array").retain(|n| n["type"] != "pid");
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    b.create("ka").ok();
    b.rt(&["start", "ka"]).ok();
    let procs = || std::fs::read_to_string(cg.dir().join("cgroup.procs")).unwrap_or_default().lines().count();
    assert!(wait_for(|| procs() == 3), "expected sh and two sleeps");
    let ps: Vec<i64> = serde_json::from_str(b.rt(&["ps", "--format", "json", "ka"]).ok()).expect("ps json");
    assert_eq!(ps.len(), 3);
    b.rt(&["kill", "--all", "ka", "KILL"]).ok();
    assert!(wait_for(|| procs() == 0), "processes survived kill --all");
    b.rt(&["delete", "ka"]).ok();
    assert!(!cg.dir().exists());
}

#[test]
fn events_report_cpu_statistics() {
    let Some(mount) = setup("events_report_cpu_statistics") else { return };
    let cg = TestCgroup::new(&mount, "events");
    let mut b = Bundle::new(&["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 100"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    b.create("ev").ok();
    b.rt(&["start", "ev"]).ok();
    std::thread::sleep(Duration::from_millis(200));
    let ev: serde_json::Value = serde_json::from_str(b.rt(&["events", "--stats", "ev"]).ok()).expect("json");
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], "ev");
    assert!(ev["data"]["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0, "{ev}");
}

/// A container without limits still has the controllers the host offers
/// (as with runc): its memory, pids and hugetlb are accounted, which is what
/// `events --stats` and the tools reading it show.
#[test]
fn the_hosts_controllers_account_a_container_without_limits() {
    let test = "the_hosts_controllers_account_a_container_without_limits";
    let Some(mount) = setup(test) else { return };
    let offered: Vec<String> = controllers(&mount)
        .split_whitespace()
        .filter(|c| ["memory", "pids", "hugetlb", "io"].contains(c))
        .map(String::from)
        .collect();
    if offered.is_empty() {
        return skip(test, "the cgroup v2 root offers none of memory, pids, hugetlb, io");
    }
    let cg = TestCgroup::new(&mount, "every");
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    b.create("every").ok();
    let have = controllers(&cg.dir());
    for c in &offered {
        assert!(have.split_whitespace().any(|h| h == c), "{c} is not enabled for the container: {have:?}");
    }
    if offered.iter().any(|c| c == "pids") {
        b.rt(&["start", "every"]).ok();
        let ev: serde_json::Value = serde_json::from_str(b.rt(&["events", "--stats", "every"]).ok()).expect("json");
        assert!(ev["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 1, "{ev}");
    }
}

#[test]
fn hugetlb_limits_are_applied_and_updated() {
    let Some(mount) = setup("hugetlb_limits_are_applied_and_updated") else { return };
    if !controllers(&mount).split_whitespace().any(|c| c == "hugetlb")
        || !mount.join("hugetlb.2MB.max").exists()
            && !std::path::Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists()
    {
        return skip("hugetlb_limits_are_applied_and_updated", "controller hugetlb with 2MB pages not available");
    }
    let cg = TestCgroup::new(&mount, "huge");
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    b.config["linux"]["resources"] = json!({ "hugepageLimits": [{ "pageSize": "2MB", "limit": 4194304 }] });
    b.create("hl").ok();
    let read = || std::fs::read_to_string(cg.dir().join("hugetlb.2MB.max")).unwrap_or_default();
    assert_eq!(read().trim(), "4194304");
    b.rt(&["start", "hl"]).ok();
    if !is_strata() {
        return skip(
            "hugetlb_limits_are_applied_and_updated (update part)",
            "runc 1.1.5's update ignores hugepageLimits",
        );
    }
    let mut cmd = b.cmd(&["update", "-r", "-", "hl"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.stdout(std::process::Stdio::null()).spawn().expect("spawn");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin"),
        br#"{"hugepageLimits":[{"pageSize":"2MB","limit":2097152}]}"#,
    )
    .expect("write");
    assert!(child.wait().expect("wait").success());
    assert_eq!(read().trim(), "2097152");
}

/// A resource whose controller the host lacks is an error naming the controller;
/// where the controller exists, the limit is applied. Either way it is never ignored.
#[test]
fn memory_and_pids_limits_are_applied_or_refused() {
    let Some(mount) = setup("memory_and_pids_limits_are_applied_or_refused") else { return };
    let available = controllers(&mount);
    for (controller, resources, file, value) in [
        ("memory", json!({ "memory": { "limit": 67108864 } }), "memory.max", "67108864"),
        ("pids", json!({ "pids": { "limit": 32 } }), "pids.max", "32"),
        ("cpu", json!({ "cpu": { "quota": 50000, "period": 100000 } }), "cpu.max", "50000 100000"),
    ] {
        let cg = TestCgroup::new(&mount, controller);
        let mut b = Bundle::new(&["sleep", "100"]);
        b.config["linux"]["cgroupsPath"] = json!(cg.path());
        b.config["linux"]["resources"] = resources;
        let out = b.create("lim");
        if available.split_whitespace().any(|c| c == controller) {
            out.ok();
            assert_eq!(std::fs::read_to_string(cg.dir().join(file)).unwrap_or_default().trim(), value);
            b.rt(&["delete", "lim"]).ok();
        } else {
            let err = out.failed();
            assert!(err.contains(controller), "{err}");
            assert!(b.leftover_state().is_empty());
            if is_strata() {
                assert!(err.contains(&format!("controller \"{controller}\"")), "{err}");
                assert!(!cg.dir().exists(), "cgroup left after a failed create");
            }
        }
        // update of the same limit on a running container behaves the same way.
        let ucg = TestCgroup::new(&mount, &format!("u{controller}"));
        let mut b = Bundle::new(&["sleep", "100"]);
        b.config["linux"]["cgroupsPath"] = json!(ucg.path());
        b.create("upd").ok();
        b.rt(&["start", "upd"]).ok();
        let flag = match controller {
            "memory" => vec!["--memory", "67108864"],
            "pids" => vec!["--pids-limit", "32"],
            _ => vec!["--cpu-quota", "50000", "--cpu-period", "100000"],
        };
        let mut args = vec!["update"];
        args.extend(flag);
        args.push("upd");
        let out = b.rt(&args);
        if available.split_whitespace().any(|c| c == controller) {
            out.ok();
            assert_eq!(std::fs::read_to_string(ucg.dir().join(file)).unwrap_or_default().trim(), value);
        } else {
            assert!(out.failed().contains(controller), "{out:?}");
        }
        b.rt(&["delete", "--force", "upd"]).ok();
    }
}

#[test]
fn a_cgroup_in_use_is_shared_with_a_warning() {
    let Some(mount) = setup("a_cgroup_in_use_is_shared_with_a_warning") else { return };
    let cg = TestCgroup::new(&mount, "inuse");
    std::fs::create_dir_all(cg.dir()).expect("mkdir cgroup");
    let mut sleeper = std::process::Command::new("sleep").arg("100").spawn().expect("sleep");
    std::fs::write(cg.dir().join("cgroup.procs"), sleeper.id().to_string()).expect("move sleeper");
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    // As runc: tools group containers by sharing a cgroup; it is a warning.
    let out = b.create("inuse");
    out.ok();
    if is_strata() {
        assert!(out.stderr.contains("warning") && out.stderr.contains("already has 1 process"), "{out:?}");
    }
    b.rt(&["start", "inuse"]).ok();
    b.rt(&["delete", "--force", "inuse"]).ok();
    // delete kills the container, not the processes it shared the cgroup with.
    let alive = sleeper.try_wait().expect("try_wait").is_none();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    if is_strata() {
        assert!(alive, "delete killed a process that was in the cgroup before the container");
    }
    assert!(b.leftover_state().is_empty());
    assert!(wait_for(|| std::fs::remove_dir(cg.dir()).is_ok() || !cg.dir().exists()));
}

#[test]
fn device_rules_are_enforced() {
    let Some(mount) = setup("device_rules_are_enforced") else { return };
    if !is_strata() {
        return skip(
            "device_rules_are_enforced",
            "runc appends its default device rules after the config's, so /dev/null cannot be denied there",
        );
    }
    let cg = TestCgroup::new(&mount, "dev");
    let mut b = mknod_bundle(&["true"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    // Deny everything, then take writes to /dev/null away again.
    b.config["linux"]["resources"] = json!({ "devices": [
        { "allow": false, "access": "rwm" },
        { "allow": false, "type": "c", "major": 1, "minor": 3, "access": "w" }
    ] });
    let script = "cat /dev/null && echo null-read; echo x > /dev/null 2>/dev/null || echo null-write-denied; \
                  head -c 1 /dev/zero | wc -c; \
                  mknod /tmp/fuse c 10 229 && echo mknod-ok; (exec 3</tmp/fuse) 2>/dev/null || echo fuse-denied";
    let out = b.sh(script);
    assert_eq!(out.ok(), "null-read\nnull-write-denied\n1\nmknod-ok\nfuse-denied\n");
    // Without rules only the default devices are allowed; allowing fuse opens it.
    b.config["linux"]["resources"] = json!({});
    let out = b.sh("mknod /tmp/fuse c 10 229; (exec 3</tmp/fuse) 2>/dev/null && echo fuse-opened || echo fuse-denied");
    assert_eq!(out.ok(), "fuse-denied\n");
    b.config["linux"]["resources"] =
        json!({ "devices": [{ "allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw" }] });
    let out = b.sh("mknod /tmp/fuse c 10 229; (exec 3</tmp/fuse) && echo fuse-opened");
    assert_eq!(out.ok(), "fuse-opened\n");
}

/// A cgroupsPath naming a cgroup that already exists, and that earlier had
/// cgroup.kill written (a container deleted in it, systemd stopping a unit):
/// some kernels SIGKILL every process cloned into such a cgroup from outside
/// it. Containers run there all the same, each with only its own device
/// rules, and delete leaves the cgroup as it found it.
#[test]
fn a_cgroup_that_existed_and_was_killed_is_reused_and_left_as_found() {
    let test = "a_cgroup_that_existed_and_was_killed_is_reused_and_left_as_found";
    let Some(mount) = setup(test) else { return };
    let cg = TestCgroup::new(&mount, "reuse");
    std::fs::create_dir_all(cg.dir()).expect("mkdir cgroup");
    if std::fs::write(cg.dir().join("cgroup.kill"), "1").is_err() {
        return skip(test, "no cgroup.kill (Linux 5.14)");
    }
    let mut b = mknod_bundle(&["true"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    let fuse = "mknod /tmp/fuse c 10 229; (exec 3</tmp/fuse) 2>/dev/null && echo fuse-opened || echo fuse-denied";
    // Default rules (fuse denied), then fuse allowed: the second container
    // must not also get the first one's program.
    assert_eq!(b.sh(fuse).ok(), "fuse-denied\n");
    b.config["linux"]["resources"] =
        json!({ "devices": [{ "allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw" }] });
    assert_eq!(b.sh(fuse).ok(), "fuse-opened\n");
    // An exec into a container there, and a kill of it.
    b.config["process"]["args"] = json!(["sleep", "100"]);
    b.create("reuse").ok();
    b.rt(&["start", "reuse"]).ok();
    assert_eq!(b.rt(&["exec", "reuse", "echo", "exec-ok"]).ok(), "exec-ok\n");
    b.rt(&["delete", "--force", "reuse"]).ok();
    assert!(b.leftover_state().is_empty());
    assert!(cg.dir().exists(), "delete removed a cgroup it did not create");
    if is_strata() {
        // No device program of the containers is left on it: a process put
        // there opens what it could open before.
        let dir = cg.dir();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {}/cgroup.procs && (exec 3</dev/fuse) && echo fuse-opened", dir.display()))
            .output()
            .expect("sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "fuse-opened\n", "{out:?}");
    }
    assert!(wait_for(|| std::fs::remove_dir(cg.dir()).is_ok() || !cg.dir().exists()));
}

/// `--cgroup-manager disabled`: the container runs in the caller's cgroup, ps
/// finds its processes by pid namespace, the operations that need a cgroup say
/// so, and limits are refused.
#[test]
fn cgroup_manager_disabled() {
    if !is_strata() {
        return skip("cgroup_manager_disabled", "a strata option");
    }
    let mut b = Bundle::new(&["sleep", "100"]);
    b.write_config();
    let bd = b.dir.path().to_string_lossy().into_owned();
    b.rt(&["--cgroup-manager", "disabled", "create", "--bundle", &bd, "nocg"]).ok();
    let pid = b.state("nocg").expect("state")["pid"].as_i64().expect("pid");
    let ours = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let v2 = |s: &str| s.lines().find(|l| l.starts_with("0::")).map(str::to_string);
    assert_eq!(v2(&theirs), v2(&ours), "the init left the caller's cgroup");
    // ps lists the processes of the container's pid namespace; pause needs a cgroup.
    let ps: Vec<i64> = serde_json::from_str(b.rt(&["ps", "--format", "json", "nocg"]).ok()).expect("ps json");
    assert_eq!(ps, vec![pid]);
    assert!(b.rt(&["pause", "nocg"]).failed().contains("no cgroup"));
    b.rt(&["delete", "--force", "nocg"]).ok();
    b.config["linux"]["resources"] = json!({ "pids": { "limit": 10 } });
    b.write_config();
    let err = b.rt(&["--cgroup-manager", "disabled", "create", "--bundle", &bd, "nocg2"]).failed().to_string();
    assert!(err.contains("linux.resources"), "{err}");
    assert!(b.leftover_state().is_empty());
}

/// On a hybrid host an operator may let limits whose controller lives on
/// cgroup v1 go unapplied: with STRATA_CGROUP_UNAVAILABLE=warn the container
/// runs, with a warning naming the limit; without it, it is refused naming
/// the controller.
#[test]
fn unavailable_controllers_are_refused_unless_the_operator_says_warn() {
    let test = "unavailable_controllers_are_refused_unless_the_operator_says_warn";
    let Some(mount) = setup(test) else { return };
    if !is_strata() {
        return skip(test, "STRATA_CGROUP_UNAVAILABLE is strata's");
    }
    if controllers(&mount).split_whitespace().any(|c| c == "cpu") {
        return skip(test, "this host's cgroup v2 has the cpu controller");
    }
    let cg = TestCgroup::new(&mount, "unavail");
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["cgroupsPath"] = json!(cg.path());
    b.config["linux"]["resources"] = json!({ "cpu": { "shares": 2 } });
    let refused = b.run("unavail1");
    assert!(refused.failed().contains("\"cpu\""), "{refused:?}");
    b.write_config();
    let bundle = b.dir.path().to_string_lossy().into_owned();
    let out = run_to_files(b.cmd(&["run", "--bundle", &bundle, "unavail2"]).env("STRATA_CGROUP_UNAVAILABLE", "warn"));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("cpu.weight") && out.stderr.contains("no cpu controller"), "{out:?}");
    assert!(b.leftover_state().is_empty());
}

/// Ids of the device programs attached to cgroup `dir`.
fn attached_device_programs(dir: &std::path::Path) -> Vec<u32> {
    let f = std::fs::File::open(dir).expect("open cgroup");
    let mut ids = [0u32; 16];
    let mut attr = [0u8; 40];
    attr[0..4].copy_from_slice(&(std::os::fd::AsRawFd::as_raw_fd(&f) as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&6u32.to_ne_bytes()); // BPF_CGROUP_DEVICE
    attr[16..24].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&(ids.len() as u32).to_ne_bytes());
    // SAFETY: BPF_PROG_QUERY with a zeroed, correctly sized attr whose buffer outlives the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, 16, attr.as_mut_ptr(), attr.len()) };
    assert!(ret >= 0, "BPF_PROG_QUERY: {}", std::io::Error::last_os_error());
    let n = u32::from_ne_bytes([attr[24], attr[25], attr[26], attr[27]]) as usize;
    ids[..n.min(16)].to_vec()
}

/// Containers with the same device rules (in strata's own parent cgroup)
/// share the loaded program of one that runs instead of loading a copy each;
/// a container with other rules gets its own; each gets exactly its rules.
#[test]
fn running_containers_with_the_same_device_rules_share_one_program() {
    let test = "running_containers_with_the_same_device_rules_share_one_program";
    let Some(mount) = setup(test) else { return };
    if !is_strata() {
        return skip(test, "how strata loads its device programs");
    }
    let mut b = mknod_bundle(&["sleep", "100"]);
    b.create("devshare1").ok();
    b.rt(&["start", "devshare1"]).ok();
    let fuse = "mknod /tmp/fuse c 10 229; (exec 3</tmp/fuse) 2>/dev/null && echo fuse-opened || echo fuse-denied";
    // Other rules while it runs: a program of their own.
    b.config["linux"]["resources"] =
        json!({ "devices": [{ "allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw" }] });
    assert_eq!(b.sh(fuse).ok(), "fuse-opened\n");
    // The same rules as the running one: its program, and its rules.
    b.config["linux"]["resources"] = json!({});
    assert_eq!(b.sh(fuse).ok(), "fuse-denied\n");
    b.create("devshare2").ok();
    let first = attached_device_programs(&mount.join("strata/devshare1"));
    let second = attached_device_programs(&mount.join("strata/devshare2"));
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first, second, "the second container loaded a program of its own");
    b.config["linux"]["resources"] =
        json!({ "devices": [{ "allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw" }] });
    b.create("devshare3").ok();
    let third = attached_device_programs(&mount.join("strata/devshare3"));
    assert_eq!(third.len(), 1);
    assert_ne!(third, first, "other rules, the same program");
    for id in ["devshare1", "devshare2", "devshare3"] {
        b.rt(&["delete", "--force", id]).ok();
        assert!(!mount.join("strata").join(id).exists());
    }
    assert!(b.leftover_state().is_empty());
}

/// A bundle of `args` whose process may mknod, with a tmpfs on /tmp to make
/// nodes in (device rules decide what it may then open).
fn mknod_bundle(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.config["mounts"]
        .as_array_mut()
        .expect("array")
        .push(json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" }));
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set] = json!(["CAP_MKNOD"]);
    }
    b
}
