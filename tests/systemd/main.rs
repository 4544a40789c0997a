//! The systemd cgroup driver (`--systemd-cgroup`), against a real systemd.
//!
//! This host's init is not systemd, so the suite boots one of its own
//! (`hack/systemd-rig.sh`: systemd as PID 1 of private pid, mount and cgroup
//! namespaces, with private /tmp, /run, /etc and /var) and runs every runtime
//! command inside it. It has its own `main`, so that the private systemd is
//! stopped and its cgroups removed however the checks end.
//!
//! `STRATA_TEST_RUNTIME=runc` runs the same checks against runc, which
//! validates them; checks of strata's own choices print a skip there.

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use strata_tests::{is_root, is_strata, repo_root, run_to_files, runtime_bin, skip, Bundle, Out, SystemdRig};

static RIG: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Runs `args` inside the rig.
fn inside(args: &[&str]) -> Out {
    let prefix = RIG.get().expect("the rig is up");
    run_to_files(Command::new(&prefix[0]).args(&prefix[1..]).args(args).stdin(Stdio::null()))
}

/// A unit's property, as `systemctl show` prints it.
fn unit_property(unit: &str, prop: &str) -> String {
    inside(&["systemctl", "show", "--value", "-p", prop, unit]).stdout.trim().to_string()
}

/// Whether systemd has `unit` loaded at all.
fn unit_loaded(unit: &str) -> bool {
    unit_property(unit, "LoadState") == "loaded"
}

/// A cgroup file of the rig's tree (paths as the rig's systemd names them).
fn cgroup_file(cgroup: &str, file: &str) -> Option<String> {
    inside(&["cat", &format!("/sys/fs/cgroup{cgroup}/{file}")]).stdout.lines().next().map(str::to_string)
}

fn cgroup_exists(cgroup: &str) -> bool {
    inside(&["test", "-d", &format!("/sys/fs/cgroup{cgroup}")]).code == 0
}

/// The cgroup of a process of the rig (its `0::` line).
fn cgroup_of(pid: i64) -> String {
    inside(&["cat", &format!("/proc/{pid}/cgroup")])
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap_or_default()
}

fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("{tag}{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

fn pid_of(b: &Bundle, id: &str) -> i64 {
    b.state(id).and_then(|s| s["pid"].as_i64()).expect("a pid in the state")
}

/// A bundle whose container sleeps, in `cgroups_path`.
fn sleeper(cgroups_path: &str) -> Bundle {
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["linux"]["cgroupsPath"] = json!(cgroups_path);
    b
}

/// A container in `system.slice:strata-test:ID` is an active scope unit while it
/// runs, its init is in the scope's cgroup, and both are gone after `delete`.
fn scope_lives_and_goes_with_the_container() {
    let id = unique("sd");
    let b = sleeper(&format!("system.slice:strata-test:{id}"));
    let unit = format!("strata-test-{id}.scope");
    let cgroup = format!("/system.slice/{unit}");
    b.create(&id).ok();
    assert_eq!(unit_property(&unit, "ActiveState"), "active", "after create");
    assert_eq!(unit_property(&unit, "Delegate"), "yes");
    assert_eq!(unit_property(&unit, "Slice"), "system.slice");
    assert_eq!(cgroup_of(pid_of(&b, &id)), cgroup, "the init is in the scope");
    b.rt(&["start", &id]).ok();
    assert_eq!(b.status(&id), "running");
    assert_eq!(unit_property(&unit, "ActiveState"), "active", "while running");
    b.rt(&["delete", "--force", &id]).ok();
    assert!(!unit_loaded(&unit), "the unit is gone after delete");
    assert!(!cgroup_exists(&cgroup), "the scope's cgroup is gone after delete");
    assert!(b.leftover_state().is_empty());
}

/// An empty cgroupsPath gets strata's default unit, `strata-ID.scope` in
/// system.slice.
fn empty_cgroups_path_gets_the_default_unit() {
    let test = "empty_cgroups_path_gets_the_default_unit";
    if !is_strata() {
        return skip(test, "the default unit name is each runtime's own (runc: runc-ID.scope)");
    }
    let id = unique("sd");
    let b = Bundle::new(&["sleep", "1000"]);
    b.create(&id).ok();
    assert_eq!(cgroup_of(pid_of(&b, &id)), format!("/system.slice/strata-{id}.scope"));
    b.rt(&["delete", "--force", &id]).ok();
    assert!(!unit_loaded(&format!("strata-{id}.scope")));
}

/// kubelet's nested slices (`kubepods-besteffort-pod<uid>.slice`) expand as
/// systemd lays them out, the slices being made on demand.
fn kubelet_style_nested_slices() {
    let id = unique("sd");
    let pod = format!("kubepods-besteffort-pod{}", id.replace('-', "_"));
    let b = sleeper(&format!("{pod}.slice:cri-containerd:{id}"));
    b.create(&id).ok();
    let want = format!("/kubepods.slice/kubepods-besteffort.slice/{pod}.slice/cri-containerd-{id}.scope");
    assert_eq!(cgroup_of(pid_of(&b, &id)), want);
    assert_eq!(unit_property(&format!("cri-containerd-{id}.scope"), "Slice"), format!("{pod}.slice"));
    b.rt(&["delete", "--force", &id]).ok();
    assert!(!cgroup_exists(&want));
    // The pod's slice is kubelet's to remove, as with runc.
    inside(&["systemctl", "stop", &format!("{pod}.slice")]).ok();
}

/// Limits for a controller this host has on v2 (hugetlb) land in the scope's
/// files, at create and at `update`; those whose controller it lacks are
/// refused naming it, and leave no unit behind.
fn limits_and_update_on_the_scope() {
    let test = "limits_and_update_on_the_scope";
    let id = unique("sd");
    let mut b = sleeper(&format!("system.slice:strata-test:{id}"));
    let unit = format!("strata-test-{id}.scope");
    let cgroup = format!("/system.slice/{unit}");
    b.config["linux"]["resources"] = json!({ "hugepageLimits": [{ "pageSize": "2MB", "limit": 4_194_304 }] });
    b.create(&id).ok();
    assert_eq!(cgroup_file(&cgroup, "hugetlb.2MB.max").as_deref(), Some("4194304"));
    let res = b.dir.path().join("update.json");
    std::fs::write(&res, r#"{"hugepageLimits":[{"pageSize":"2MB","limit":8388608}]}"#).expect("write");
    b.rt(&["update", "-r", &res.to_string_lossy(), &id]).ok();
    if is_strata() {
        assert_eq!(cgroup_file(&cgroup, "hugetlb.2MB.max").as_deref(), Some("8388608"));
    } else {
        skip(test, "runc 1.1.5's update leaves hugepageLimits alone");
    }
    let before = unit_property(&unit, "TasksMax");
    let out = b.rt(&["update", "--pids-limit", "20", &id]);
    if is_strata() {
        assert!(out.failed().contains("\"pids\""), "{out:?}");
        assert_eq!(unit_property(&unit, "TasksMax"), before, "a refused update leaves the unit as it was");
    }
    b.rt(&["delete", "--force", &id]).ok();

    // memory, cpu, io and pids are bound to cgroup v1 here.
    let available = cgroup_file("", "cgroup.controllers").unwrap_or_default();
    if available.split_whitespace().any(|c| c == "pids") {
        skip(test, "this host has the pids controller on v2: the refusal is not exercised");
        return;
    }
    let id = unique("sd");
    let mut b = sleeper(&format!("system.slice:strata-test:{id}"));
    b.config["linux"]["resources"] = json!({ "pids": { "limit": 20 } });
    let out = b.create(&id);
    if is_strata() {
        assert!(out.failed().contains("\"pids\""), "the refusal names the controller: {out:?}");
    } else {
        // runc 1.1.5 sets TasksMax and skips the missing controller's file.
        b.rt(&["delete", "--force", &id]);
    }
    assert!(!unit_loaded(&format!("strata-test-{id}.scope")), "no unit is left behind");
    skip(
        test,
        "memory, cpu, io and pids are on cgroup v1 here, so their unit properties (MemoryMax, CPUWeight, \
         CPUQuota*, AllowedCPUs, TasksMax, IOWeight) are checked by unit tests only",
    );
}

/// `pause` freezes the scope's cgroup and `resume` thaws it; the unit stays active.
fn pause_and_resume_the_scope() {
    let id = unique("sd");
    let b = sleeper(&format!("system.slice:strata-test:{id}"));
    let unit = format!("strata-test-{id}.scope");
    let cgroup = format!("/system.slice/{unit}");
    b.create(&id).ok();
    b.rt(&["start", &id]).ok();
    b.rt(&["pause", &id]).ok();
    assert_eq!(b.status(&id), "paused");
    assert_eq!(cgroup_file(&cgroup, "cgroup.freeze").as_deref(), Some("1"));
    assert_eq!(unit_property(&unit, "ActiveState"), "active");
    b.rt(&["resume", &id]).ok();
    assert_eq!(b.status(&id), "running");
    assert_eq!(cgroup_file(&cgroup, "cgroup.freeze").as_deref(), Some("0"));
    b.rt(&["delete", "--force", &id]).ok();
}

/// `ps`, `events --stats` and `kill --all` work on the scope: every process in
/// it is listed and killed, and the unit goes once it is empty.
fn ps_stats_and_kill_all_on_the_scope() {
    let id = unique("sd");
    let mut b = sleeper(&format!("system.slice:strata-test:{id}"));
    // Its own pid namespace would hide nothing here: the init forks a child.
    b.config["process"]["args"] = json!(["sh", "-c", "sleep 1000 & exec sleep 1001"]);
    let unit = format!("strata-test-{id}.scope");
    b.create(&id).ok();
    b.rt(&["start", &id]).ok();
    let mut pids = Vec::new();
    for _ in 0..100 {
        pids = b.rt(&["ps", "--format", "json", &id]).ok().trim().to_string().into_bytes();
        if serde_json::from_slice::<Vec<i64>>(&pids).map(|p| p.len()).unwrap_or(0) == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pids: Vec<i64> = serde_json::from_slice(&pids).expect("ps json");
    assert_eq!(pids.len(), 2, "{pids:?}");
    let stats = b.rt(&["events", "--stats", &id]);
    let stats: Value = serde_json::from_str(stats.ok()).expect("stats json");
    assert_eq!(stats["type"], "stats", "{stats}");
    assert!(stats["data"]["hugetlb"].is_object(), "hugetlb statistics from the scope: {stats}");
    b.rt(&["kill", "--all", &id, "KILL"]).ok();
    for _ in 0..200 {
        if b.status(&id) == "stopped" && !unit_loaded(&unit) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(b.status(&id), "stopped");
    for pid in pids {
        assert_ne!(inside(&["test", "-d", &format!("/proc/{pid}")]).code, 0, "pid {pid} survived kill --all");
    }
    b.rt(&["delete", &id]).ok();
    assert!(!unit_loaded(&unit));
}

/// The device allowlist stays the runtime's eBPF program: systemd attaches no
/// program of its own (DevicePolicy=auto, no DeviceAllow) and ours is enforced:
/// a block device node the container makes can be read only when a rule allows it.
fn device_rules_stay_the_runtimes() {
    let mut units = Vec::new();
    for (allow, want) in [(false, "read-denied\n"), (true, "read-ok\n")] {
        let id = unique("sd");
        let mut b = sleeper(&format!("system.slice:strata-test:{id}"));
        let mut rules = vec![json!({ "allow": false, "access": "rwm" })];
        if allow {
            rules.push(json!({ "allow": true, "type": "b", "major": 7, "minor": 0, "access": "r" }));
        }
        b.config["linux"]["resources"] = json!({ "devices": rules });
        for set in ["bounding", "effective", "permitted"] {
            b.config["process"]["capabilities"][set] = json!(["CAP_MKNOD"]);
        }
        b.config["process"]["args"] = json!([
            "sh",
            "-c",
            "mknod /dev/blk7 b 7 0 && if head -c1 /dev/blk7 >/dev/null 2>&1; then echo read-ok; else echo read-denied; fi"
        ]);
        let out = b.run(&id);
        assert_eq!(out.ok(), want, "allowed: {allow}");
        units.push(format!("strata-test-{id}.scope"));
    }
    assert!(units.iter().all(|u| !unit_loaded(u)));
    if !is_strata() {
        // runc mirrors its rules in DevicePolicy=strict and DeviceAllow, then
        // removes the program systemd attaches.
        return skip("device_rules_stay_the_runtimes", "runc's unit device properties are its own");
    }
    let id = unique("sd");
    let b = sleeper(&format!("system.slice:strata-test:{id}"));
    b.create(&id).ok();
    let unit = format!("strata-test-{id}.scope");
    assert_eq!(unit_property(&unit, "DevicePolicy"), "auto");
    assert_eq!(unit_property(&unit, "DeviceAllow"), "");
    b.rt(&["delete", "--force", &id]).ok();
    assert!(!unit_loaded(&unit));
}

/// A create that fails after the scope exists (here: the process cannot be
/// found) leaves no unit, no cgroup and no state.
fn a_failed_create_leaves_no_unit() {
    let id = unique("sd");
    let mut b = sleeper(&format!("system.slice:strata-test:{id}"));
    b.config["process"]["args"] = json!(["/no/such/binary"]);
    let unit = format!("strata-test-{id}.scope");
    let out = b.create(&id);
    if out.code == 0 {
        // runc reports a missing binary at start.
        b.rt(&["start", &id]);
        b.rt(&["delete", "--force", &id]).ok();
    } else {
        assert!(out.stderr.contains("/no/such/binary"), "{out:?}");
    }
    assert!(!unit_loaded(&unit), "no unit left");
    assert!(!cgroup_exists(&format!("/system.slice/{unit}")));
    assert!(b.leftover_state().is_empty());
}

/// A unit name in use by a running container is refused, naming it, and the
/// running one is untouched; once deleted, the name can be used at once.
fn a_unit_name_in_use_is_refused_and_reusable_after_delete() {
    let id = unique("sd");
    let path = format!("system.slice:strata-test:{id}");
    let b = sleeper(&path);
    let unit = format!("strata-test-{id}.scope");
    b.create(&id).ok();
    if is_strata() {
        let other = unique("sd");
        let out = b.create(&other);
        assert!(out.failed().contains(&unit), "{out:?}");
        assert_eq!(b.status(&id), "created", "the first container is untouched");
        assert_eq!(unit_property(&unit, "ActiveState"), "active");
        assert!(b.state(&other).is_none(), "nothing is left of the refused create");
    } else {
        skip(
            "a_unit_name_in_use_is_refused_and_reusable_after_delete",
            "runc 1.1.5 joins a running container's scope, with a warning",
        );
    }
    b.rt(&["delete", "--force", &id]).ok();
    for round in 0..3 {
        let again = unique("sd");
        let out = b.create(&again);
        assert_eq!(out.code, 0, "round {round}: {out:?}");
        assert_eq!(unit_property(&unit, "ActiveState"), "active");
        b.rt(&["delete", "--force", &again]).ok();
    }
    assert!(!unit_loaded(&unit));
}

/// Without systemd reachable, `--systemd-cgroup` fails naming the bus, and
/// leaves nothing (run outside the rig).
fn without_systemd_the_driver_says_so() {
    let test = "without_systemd_the_driver_says_so";
    if !is_strata() {
        return skip(test, "the message is strata's own");
    }
    let dir = strata_tests::TempDir::new("nosd");
    let b = Bundle::new(&["true"]);
    b.write_config();
    let out = run_to_files(
        Command::new(runtime_bin())
            .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", dir.path().join("none").display()))
            .arg("--root")
            .arg(b.root.path())
            .args(["--systemd-cgroup", "create", "--bundle"])
            .arg(b.dir.path())
            .arg("nosd")
            .stdin(Stdio::null()),
    );
    let err = out.failed();
    assert!(err.contains("system bus"), "{err}");
    assert!(b.leftover_state().is_empty());
}

/// strata-fn on a systemd host picks the systemd driver by itself: each
/// invocation's container is a scope in `strata_fn.slice`, and a server that
/// stops leaves no scope and no slice.
fn strata_fn_puts_invocations_in_scopes() {
    let test = "strata_fn_puts_invocations_in_scopes";
    if !is_strata() {
        return skip(test, "strata-fn runs strata's library");
    }
    let fn_bin = runtime_bin().with_file_name("strata-fn");
    let dir = strata_tests::TempDir::new("fn");
    let state = dir.path().join("state");
    let func = dir.path().join("hello");
    std::fs::create_dir_all(&func).expect("mkdir");
    std::fs::write(
        func.join("function.toml"),
        format!(
            "name = \"hello\"\nrootfs = {:?}\ncommand = [\"sh\", \"-c\", \"sleep 1; echo hello\"]\n",
            strata_tests::shared_rootfs().to_string_lossy()
        ),
    )
    .expect("write function.toml");
    let prefix = RIG.get().expect("rig");
    let mut server = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(&fn_bin)
        .args(["--state", &state.to_string_lossy(), "serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata-fn");
    let mut err = std::io::BufReader::new(server.stderr.take().expect("stderr"));
    let mut addr = String::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap_or(0) > 0 {
        if let Some(a) = line.trim().strip_prefix("strata-fn: serving on http://") {
            addr = a.to_string();
            break;
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::Read::read_to_string(&mut err, &mut String::new()));
    let result = std::panic::catch_unwind(|| {
        assert!(!addr.is_empty(), "strata-fn serve did not start: {line}");
        inside(&[&fn_bin.to_string_lossy(), "--state", &state.to_string_lossy(), "deploy", &func.to_string_lossy()])
            .ok();
        let call = std::thread::spawn(move || {
            let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
            let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
            strata_tests::http::call(&mut conn, "POST", "/functions/hello/invoke", b"", &mut reader).expect("invoke")
        });
        // While the invocation runs, its container is a scope of the slice.
        let mut seen = Vec::new();
        for _ in 0..100 {
            let units = inside(&["systemctl", "list-units", "--state=active", "--plain", "--no-legend", "strata-fn-*"]);
            seen = units.stdout.lines().filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect();
            if !seen.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!seen.is_empty(), "no active strata-fn scope while the invocation ran");
        for s in &seen {
            assert_eq!(unit_property(s, "Slice"), "strata_fn.slice", "{s}");
        }
        let answer = call.join().expect("invoke");
        assert_eq!((answer.status, answer.body.as_slice()), (200, b"hello\n".as_slice()));
    });
    inside(&["pkill", "-TERM", "-x", "strata-fn"]);
    let stopped = server.wait().expect("wait");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(stopped.success() || stopped.code() == Some(143), "{stopped:?}");
    let units = inside(&["systemctl", "list-units", "--all", "--plain", "--no-legend", "strata-fn-*"]);
    assert_eq!(units.stdout.trim(), "", "no scope is left");
    assert!(!unit_loaded("strata_fn.slice") || unit_property("strata_fn.slice", "ActiveState") == "inactive");
    assert!(!cgroup_exists("/strata_fn.slice"));
}

/// containerd's stock runc shim with `SystemdCgroup` (ctr's
/// `--runc-systemd-cgroup`) and the runtime as its binary (`BinaryName`), and
/// strata's own shim: the task is a scope unit in the pod slice its cgroupsPath
/// names, gone after removal.
fn containerd_runc_shim_with_systemd_cgroup() {
    let test = "containerd_runc_shim_with_systemd_cgroup";
    if inside(&["sh", "-c", "command -v containerd && command -v ctr"]).code != 0 {
        return skip(test, "containerd is not installed (tests/clients/run.sh installs it)");
    }
    let dir = strata_tests::TempDir::new("ctrd");
    let d = dir.path();
    let sock = d.join("containerd.sock");
    std::fs::write(
        d.join("config.toml"),
        format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {:?}\n[ttrpc]\n  address = \"{}.ttrpc\"\n",
            d.join("root"),
            d.join("state"),
            sock,
            sock.display()
        ),
    )
    .expect("config");
    let prefix = RIG.get().expect("rig");
    let log = std::fs::File::create(d.join("containerd.log")).expect("log");
    // containerd finds strata's shim on its PATH.
    let path = format!("{}:{}", runtime_bin().with_file_name("").display(), std::env::var("PATH").unwrap_or_default());
    let mut daemon = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(["containerd", "--config"])
        .env("PATH", path)
        .arg(d.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start containerd");
    let result = std::panic::catch_unwind(|| {
        for _ in 0..500 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            sock.exists(),
            "containerd did not start: {}",
            std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
        );
        let image = "docker.io/library/busybox:strata";
        let tar = d.join("busybox.tar");
        let made = Command::new("python3")
            .arg(repo_root().join("hack/mkimage.py"))
            .arg(strata_tests::shared_rootfs())
            .arg(&tar)
            .arg(image)
            .status()
            .expect("mkimage");
        assert!(made.success());
        let sock_s = sock.to_string_lossy().into_owned();
        let ctr = |args: &[&str]| {
            let mut all = vec!["ctr", "--address", &sock_s, "--namespace", "strata-systemd"];
            all.extend_from_slice(args);
            inside(&all)
        };
        ctr(&["image", "import", &tar.to_string_lossy()]).ok();
        let bin = runtime_bin().to_string_lossy().into_owned();
        // The stock runc shim with SystemdCgroup; then strata's own shim, which
        // takes the driver from the cgroup path's form (as CRI writes it for a
        // pod in a slice).
        let modes: &[(&str, &[&str])] = if is_strata() {
            &[
                ("runc shim", &["--runc-binary", &bin, "--runc-systemd-cgroup"]),
                ("strata shim", &["--runtime", "io.containerd.strata.v2"]),
            ]
        } else {
            &[("runc shim", &["--runc-binary", &bin, "--runc-systemd-cgroup"])]
        };
        for (mode, flags) in modes {
            let id = unique("ctr");
            let pod = format!("kubepods-besteffort-pod{}", id.replace('-', "_"));
            let cgroup = format!("{pod}.slice:cri-containerd:{id}");
            let unit = format!("cri-containerd-{id}.scope");
            let dir = format!("/kubepods.slice/kubepods-besteffort.slice/{pod}.slice/{unit}");
            let run = |extra: &[&str]| {
                let mut a = vec!["run"];
                a.extend_from_slice(flags);
                a.extend_from_slice(&["--cgroup", &cgroup, "--cpu-shares", "0"]);
                a.extend_from_slice(extra);
                ctr(&a)
            };
            assert_eq!(run(&["--rm", image, &id, "echo", "hello"]).ok(), "hello\n", "{mode}");
            assert!(!unit_loaded(&unit), "{mode}: the scope of a removed task is gone");
            run(&["-d", image, &id, "sleep", "1000"]).ok();
            assert_eq!(unit_property(&unit, "ActiveState"), "active", "{mode}");
            assert_eq!(unit_property(&unit, "Slice"), format!("{pod}.slice"), "{mode}");
            let pid = ctr(&["task", "ls"])
                .stdout
                .lines()
                .find(|l| l.starts_with(&id))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i64>().ok())
                .expect("task pid");
            assert_eq!(cgroup_of(pid), dir, "{mode}");
            ctr(&["task", "kill", "-s", "KILL", &id]).ok();
            for _ in 0..200 {
                if ctr(&["task", "ls"]).stdout.lines().any(|l| l.starts_with(&id) && l.contains("STOPPED")) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            ctr(&["task", "rm", &id]).ok();
            ctr(&["container", "rm", &id]).ok();
            assert!(!unit_loaded(&unit), "{mode}: the scope is gone with the task");
            assert!(!cgroup_exists(&dir), "{mode}");
            inside(&["systemctl", "stop", &format!("{pod}.slice")]).ok();
        }
    });
    inside(&["pkill", "-TERM", "-x", "containerd"]);
    let _ = daemon.wait();
    inside(&["sh", "-c", "pkill -KILL -f 'containerd-shim-(runc|strata)-v2'; true"]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Rootless: an unprivileged user's container is a scope of the user's own
/// systemd instance (user@UID.service), reached on the session bus; systemd
/// moves the runtime's intermediate process in, and the unit goes at delete.
fn a_users_container_is_a_scope_of_its_systemd_instance() {
    let test = "a_users_container_is_a_scope_of_its_systemd_instance";
    if !is_strata() {
        return skip(test, "runc 1.1.5's rootless systemd driver needs a user session this rig does not log in");
    }
    let user = "strata-sd-user";
    inside(&["sh", "-c", &format!("userdel -f -r {user} 2>/dev/null; useradd -m {user}")]).ok();
    let uid: u32 = inside(&["id", "-u", user]).ok().trim().parse().expect("uid");
    let result = std::panic::catch_unwind(|| {
        inside(&["systemctl", "start", &format!("user@{uid}.service")]).ok();
        let mut b = Bundle::new(&["sleep", "100"]);
        strata_tests::make_rootless(&mut b.config, uid, uid);
        b.write_config();
        std::os::unix::fs::chown(b.root.path(), Some(uid), Some(uid)).expect("chown");
        let id = unique("rl");
        let as_user = |args: &[&str]| {
            let mut all = vec![
                "setpriv".to_string(),
                "--reuid".into(),
                uid.to_string(),
                "--regid".into(),
                uid.to_string(),
                "--clear-groups".into(),
                "env".into(),
                format!("XDG_RUNTIME_DIR=/run/user/{uid}"),
                runtime_bin().to_string_lossy().into_owned(),
                "--root".into(),
                b.root.path().to_string_lossy().into_owned(),
                "--systemd-cgroup".into(),
            ];
            all.extend(args.iter().map(|a| a.to_string()));
            inside(&all.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let dir = b.dir.path().to_string_lossy().into_owned();
        as_user(&["create", "--bundle", &dir, &id]).ok();
        let st: Value = serde_json::from_str(as_user(&["state", &id]).ok()).expect("state");
        let want = format!("/user.slice/user-{uid}.slice/user@{uid}.service/user.slice/strata-{id}.scope");
        assert_eq!(cgroup_of(st["pid"].as_i64().expect("pid")), want);
        as_user(&["delete", "--force", &id]).ok();
        assert!(!cgroup_exists(&want), "the scope is gone after delete");
    });
    let _ = inside(&["systemctl", "stop", &format!("user@{uid}.service")]);
    let _ = inside(&["sh", "-c", &format!("pkill -KILL -u {user}; sleep 0.3; userdel -f -r {user}")]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

const CHECKS: &[(&str, fn())] = &[
    ("scope_lives_and_goes_with_the_container", scope_lives_and_goes_with_the_container),
    ("empty_cgroups_path_gets_the_default_unit", empty_cgroups_path_gets_the_default_unit),
    ("kubelet_style_nested_slices", kubelet_style_nested_slices),
    ("limits_and_update_on_the_scope", limits_and_update_on_the_scope),
    ("pause_and_resume_the_scope", pause_and_resume_the_scope),
    ("ps_stats_and_kill_all_on_the_scope", ps_stats_and_kill_all_on_the_scope),
    ("device_rules_stay_the_runtimes", device_rules_stay_the_runtimes),
    ("a_failed_create_leaves_no_unit", a_failed_create_leaves_no_unit),
    (
        "a_unit_name_in_use_is_refused_and_reusable_after_delete",
        a_unit_name_in_use_is_refused_and_reusable_after_delete,
    ),
    ("strata_fn_puts_invocations_in_scopes", strata_fn_puts_invocations_in_scopes),
    ("containerd_runc_shim_with_systemd_cgroup", containerd_runc_shim_with_systemd_cgroup),
    ("a_users_container_is_a_scope_of_its_systemd_instance", a_users_container_is_a_scope_of_its_systemd_instance),
];

fn main() {
    // `cargo test` passes its own flags; a plain word filters the checks.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in CHECKS {
            println!("{name}: test");
        }
        return;
    }
    if !is_root() {
        skip("systemd", "needs root");
        return;
    }
    if !Path::new("/lib/systemd/systemd").exists() || !Path::new("/usr/bin/dbus-daemon").exists() {
        skip("systemd", "systemd and dbus are not installed (hack/setup.sh --tests installs them)");
        return;
    }
    let mut failed = Vec::new();
    if selected("without_systemd_the_driver_says_so") {
        run_check("without_systemd_the_driver_says_so", without_systemd_the_driver_says_so, &mut failed);
    }
    let todo: Vec<&(&str, fn())> = CHECKS.iter().filter(|(n, _)| selected(n)).collect();
    if !todo.is_empty() {
        let scratch = SystemdRig::scratch("systemd");
        match SystemdRig::start_with_scratch(&scratch) {
            Ok(rig) => {
                let _ = RIG.set(rig.prefix());
                let flags = vec!["--systemd-cgroup".to_string()];
                strata_tests::set_runtime_wrapper(rig.prefix(), flags);
                for (name, check) in todo {
                    run_check(name, *check, &mut failed);
                }
                drop(rig);
            }
            Err(e) => {
                println!("test rig ... FAILED\n{e}");
                failed.push("rig".to_string());
            }
        }
        SystemdRig::remove_scratch(&scratch);
    }
    if failed.is_empty() {
        println!("\ntest result: ok");
    } else {
        println!("\ntest result: FAILED: {}", failed.join(", "));
        std::process::exit(1);
    }
}

fn run_check(name: &str, check: fn(), failed: &mut Vec<String>) {
    let started = std::time::Instant::now();
    match std::panic::catch_unwind(check) {
        Ok(()) => println!("test {name} ... ok ({} ms)", started.elapsed().as_millis()),
        Err(_) => {
            println!("test {name} ... FAILED");
            failed.push(name.to_string());
        }
    }
}
