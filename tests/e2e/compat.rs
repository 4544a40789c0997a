//! Configs and checks written outside the project, where strata once differed
//! from the spec or from runc: each check here failed before its fix.

use serde_json::{json, Value};
use strata_tests::*;

/// What a busybox `sh -c 'echo ...'` (and `sleep`) needs, and nothing of the
/// runtime's own steps (no close_range, capset, setresuid, setgroups, getcwd,
/// chdir, sendmsg, fcntl): an allowlist written for the workload, as the OCI
/// suite's default profile is.
fn workload_allowlist() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{
            "names": ["execve", "arch_prctl", "brk", "exit", "exit_group", "getpid", "getppid", "getrandom",
                      "getuid", "mmap", "munmap", "mprotect", "newfstatat", "fstat", "prctl", "prlimit64", "read",
                      "readlink", "rseq", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "set_robust_list",
                      "set_tid_address", "uname", "write", "writev", "openat", "close", "ioctl", "nanosleep",
                      "clock_nanosleep", "wait4"],
            "action": "SCMP_ACT_ALLOW"
        }]
    })
}

/// runc 1.1.5 loads the filter before several of its own system calls.
fn runc_calls_after_the_filter(test: &str) -> bool {
    if is_strata() {
        return false;
    }
    skip(test, "runc 1.1.5 makes system calls (capset, setresuid, the fifo) after loading the filter");
    true
}

#[test]
fn an_allowlist_for_the_workload_is_enough_for_create_and_start() {
    if runc_calls_after_the_filter("an_allowlist_for_the_workload_is_enough_for_create_and_start") {
        return;
    }
    for nnp in [true, false] {
        for terminal in [false, true] {
            let mut b = Bundle::new(&["sh", "-c", "echo hello"]);
            b.config["linux"]["seccomp"] = workload_allowlist();
            b.config["process"]["noNewPrivileges"] = json!(nnp);
            b.config["process"]["terminal"] = json!(terminal);
            let what = format!("noNewPrivileges={nnp} terminal={terminal}");
            let text = if terminal {
                let mut console = ConsoleSocket::new();
                b.write_config();
                let bundle = b.dir.path().to_string_lossy().into_owned();
                let out = b.rt(&["create", "--bundle", &bundle, "--console-socket", &console.arg(), "allow"]);
                assert_eq!(out.code, 0, "{what}: {out:?}");
                b.rt(&["start", "allow"]).ok();
                let text = console.output();
                b.rt(&["delete", "--force", "allow"]).ok();
                text
            } else {
                let out = b.run("allow");
                assert_eq!(out.code, 0, "{what}: {out:?}");
                out.stdout
            };
            assert_eq!(text, "hello\n", "{what}");
        }
    }
}

#[test]
fn an_allowlist_for_the_workload_is_enough_for_exec() {
    if runc_calls_after_the_filter("an_allowlist_for_the_workload_is_enough_for_exec") {
        return;
    }
    for nnp in [true, false] {
        let mut b = Bundle::new(&["sleep", "100"]);
        b.config["linux"]["seccomp"] = workload_allowlist();
        b.config["process"]["noNewPrivileges"] = json!(nnp);
        b.create("ex").ok();
        b.rt(&["start", "ex"]).ok();
        let out = b.rt(&["exec", "ex", "sh", "-c", "echo plain"]);
        assert_eq!(out.ok(), "plain\n", "noNewPrivileges={nnp}");
        let mut console = ConsoleSocket::new();
        let out =
            b.rt(&["exec", "--tty", "--detach", "--console-socket", &console.arg(), "ex", "sh", "-c", "echo tty"]);
        assert_eq!(out.code, 0, "noNewPrivileges={nnp}: {out:?}");
        assert_eq!(console.output(), "tty\n", "noNewPrivileges={nnp}");
        b.rt(&["delete", "--force", "ex"]).ok();
    }
}

#[test]
fn syscalls_the_profile_does_not_know_get_enosys() {
    if runc_calls_after_the_filter("syscalls_the_profile_does_not_know_get_enosys") {
        return;
    }
    // glibc falls back from clone3, faccessat2... only on ENOSYS: a syscall
    // numbered beyond the profile (here 1000, which no kernel has) must read as
    // unknown, while one the profile left out below its newest stays refused.
    let mut b = Bundle::private_rootfs(&["true"]);
    std::fs::copy(probe_binary("syscall"), b.rootfs().join("bin/syscall")).expect("copy probe");
    let mut filter = workload_allowlist();
    // What the shell needs to run a command: fork (clone; clone3 is newer than
    // every name here, so it gets ENOSYS and glibc falls back) and redirections.
    for name in ["clone", "fork", "vfork", "fcntl", "dup2", "dup3"] {
        filter["syscalls"][0]["names"].as_array_mut().expect("names").push(json!(name));
    }
    b.config["linux"]["seccomp"] = filter;
    b.config["root"]["readonly"] = json!(false);
    // 1000: unknown to every kernel; 39 (getpid, x86_64) allowed; 95 (umask) refused.
    let out = b.sh("syscall 1000; syscall 39 >/dev/null && echo allowed; syscall 95");
    assert_eq!(out.ok(), "errno ENOSYS\nallowed\nerrno EPERM\n");
}

/// A listener that answers every notification with "continue" until the
/// container's process is gone (the listener descriptor then reports hang-up).
fn continuing_agent(sock: &std::path::Path) -> std::thread::JoinHandle<Result<u32, String>> {
    use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
    let listener = std::os::unix::net::UnixListener::bind(sock).expect("bind");
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
        let (_, fd) = receive_seccomp_listener(&conn)?;
        let mut answered = 0;
        loop {
            let mut p = [nix::poll::PollFd::new(
                // SAFETY: `fd` stays open until the loop ends.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut p, nix::poll::PollTimeout::from(20_000u16)) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => break,
            }
            let r = p[0].revents().unwrap_or(nix::poll::PollFlags::empty());
            if !r.contains(nix::poll::PollFlags::POLLIN) {
                break;
            }
            let Ok(req) = ScmpNotifReq::receive(fd) else { break };
            let _ = ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::CONTINUE).respond(fd);
            answered += 1;
        }
        // SAFETY: the descriptor came from the message and is ours to close.
        unsafe { libc::close(fd) };
        Ok(answered)
    })
}

#[test]
fn notify_on_the_runtimes_own_syscalls_does_not_hang() {
    // The listener descriptor must reach the agent before the container process
    // makes any call the filter notifies: read, close, openat, execve here.
    for nnp in [false, true] {
        let dir = TempDir::new("notify");
        let sock = dir.path().join("agent.sock");
        let agent = continuing_agent(&sock);
        let mut b = Bundle::new(&["sh", "-c", "cat /etc/passwd >/dev/null && echo notified"]);
        b.config["process"]["noNewPrivileges"] = json!(nnp);
        b.config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock,
            "syscalls": [{ "names": ["read", "close", "openat", "execve"], "action": "SCMP_ACT_NOTIFY" }]
        });
        let mut cmd = b.cmd(&["run", "--bundle", &b.dir.path().to_string_lossy(), "notify"]);
        b.write_config();
        let out = run_with_timeout(&mut cmd, std::time::Duration::from_secs(30));
        assert_eq!(out.ok(), "notified\n", "noNewPrivileges={nnp}");
        let answered = agent.join().expect("agent thread").expect("agent");
        assert!(answered > 0, "noNewPrivileges={nnp}: the agent answered nothing");
        assert!(b.leftover_state().is_empty());
    }
}

#[test]
fn a_missing_seccomp_agent_fails_create_cleanly() {
    let dir = TempDir::new("noagent");
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": dir.path().join("nobody-listens.sock"),
        "syscalls": [{ "names": ["openat"], "action": "SCMP_ACT_NOTIFY" }]
    });
    b.write_config();
    let mut cmd = b.cmd(&["create", "--bundle", &b.dir.path().to_string_lossy(), "noagent"]);
    let out = run_with_timeout(&mut cmd, std::time::Duration::from_secs(30));
    out.failed();
    if is_strata() {
        assert!(out.stderr.contains("nobody-listens.sock"), "{out:?}");
    }
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());
}

/// Runs `cmd` with output to files; kills it and fails the test after `limit`.
fn run_with_timeout(cmd: &mut std::process::Command, limit: std::time::Duration) -> Out {
    let dir = TempDir::new("timed");
    let (o, e) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&o).expect("stdout"))
        .stderr(std::fs::File::create(&e).expect("stderr"))
        .spawn()
        .expect("spawn");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} hung for {limit:?}: {}", std::fs::read_to_string(&e).unwrap_or_default());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Out::from(std::process::Output {
        status,
        stdout: std::fs::read(&o).unwrap_or_default(),
        stderr: std::fs::read(&e).unwrap_or_default(),
    })
}

#[test]
fn failing_hooks_are_named_with_their_cause() {
    if !is_strata() {
        return skip("failing_hooks_are_named_with_their_cause", "the wording is strata's");
    }
    // (kind, where the failure shows: create, start, or a warning of start/delete)
    for kind in ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"] {
        for (how, script, want) in [
            ("exit", "echo broken-hook >&2; exit 3", "exited with status 3: broken-hook"),
            ("signal", "kill -SYS $$", "killed by SIGSYS (bad system call"),
        ] {
            let mut b = Bundle::new(&["sleep", "100"]);
            b.config["hooks"] = json!({ kind: [{ "path": "/bin/sh", "args": ["sh", "-c", script] }] });
            let create = b.create("hk");
            let start = if create.code == 0 { b.rt(&["start", "hk"]) } else { create.clone() };
            let delete = b.rt(&["delete", "--force", "hk"]);
            let all = format!("{}{}{}", create.stderr, start.stderr, delete.stderr);
            let what = format!("{kind} {how}");
            assert!(all.contains(&format!("{kind} hook /bin/sh")), "{what}: {all:?}");
            assert!(all.contains(want), "{what}: {all:?}");
            match kind {
                "prestart" | "createRuntime" | "createContainer" => assert_ne!(create.code, 0, "{what}"),
                "startContainer" => assert_ne!(start.code, 0, "{what}"),
                // The spec: these only warn.
                _ => assert_eq!((create.code, start.code), (0, 0), "{what}"),
            }
            assert!(b.leftover_state().is_empty(), "{what}");
        }
    }
}

#[test]
fn the_terminal_belongs_to_the_process_user() {
    // The group is the tty group (5) that the config's devpts `gid=5` gives it.
    for (label, uid, gid) in [("root", 0, 0), ("user", 1000, 1001)] {
        let mut b = Bundle::new(&["sh", "-c", "stat -c %u:%g $(tty)"]);
        b.config["process"]["terminal"] = json!(true);
        b.config["process"]["user"] = json!({ "uid": uid, "gid": gid });
        b.write_config();
        let mut console = ConsoleSocket::new();
        let bundle = b.dir.path().to_string_lossy().into_owned();
        b.rt(&["create", "--bundle", &bundle, "--console-socket", &console.arg(), "pty"]).ok();
        b.rt(&["start", "pty"]).ok();
        assert_eq!(console.output(), format!("{uid}:5\n"), "run as {label}");
        b.rt(&["delete", "--force", "pty"]).ok();

        // exec, with a process.json whose consoleSize must reach the terminal.
        let b = Bundle::new(&["sleep", "100"]);
        b.create("ptyx").ok();
        b.rt(&["start", "ptyx"]).ok();
        let process = b.dir.path().join("process.json");
        std::fs::write(
            &process,
            json!({ "terminal": true, "consoleSize": { "height": 33, "width": 77 }, "user": { "uid": uid, "gid": gid },
                    "args": ["sh", "-c", "stat -c %u:%g $(tty); stty size"], "env": ["PATH=/bin"], "cwd": "/" })
            .to_string(),
        )
        .expect("write process.json");
        let mut console = ConsoleSocket::new();
        let out = b.rt(&[
            "exec",
            "--tty",
            "--detach",
            "--console-socket",
            &console.arg(),
            "--process",
            &process.to_string_lossy(),
            "ptyx",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(console.output(), format!("{uid}:5\n33 77\n"), "exec as {label}");
        b.rt(&["delete", "--force", "ptyx"]).ok();
    }
}

#[test]
fn exec_as_root_enters_a_cwd_only_its_owner_may_enter() {
    let mut b = Bundle::private_rootfs(&["sleep", "100"]);
    let home = b.rootfs().join("home/owner");
    std::fs::create_dir_all(&home).expect("mkdir");
    nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(1000)), Some(nix::unistd::Gid::from_raw(1000)))
        .expect("chown");
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    b.config["process"]["cwd"] = json!("/home/owner");
    b.create("cwd").ok();
    b.rt(&["start", "cwd"]).ok();
    // Root without CAP_DAC_OVERRIDE (the config's capabilities) could not enter
    // it once switched to its user and capabilities: it changes directory first.
    let out = b.rt(&["exec", "--user", "0", "cwd", "pwd"]);
    assert_eq!(out.ok(), "/home/owner\n");
    b.rt(&["delete", "--force", "cwd"]).ok();
}

#[test]
fn a_read_only_dev_still_gets_its_nodes_and_mounts() {
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"][1]["options"] = json!(["nosuid", "strictatime", "mode=755", "size=65536k", "ro"]);
    let out = b
        .sh("ls /dev/null /dev/pts/ptmx >/dev/null && echo nodes; touch /dev/new 2>/dev/null || echo read-only; \
                    grep ' /dev ' /proc/self/mountinfo | grep -q ' ro,' && echo ro-mount");
    assert_eq!(out.ok(), "nodes\nread-only\nro-mount\n");
}

#[test]
fn no_pivot_does_not_expose_a_bare_proc() {
    // In a user namespace of its own, a process may mount procfs only where a
    // full, unmasked one is visible in its mount namespace. After --no-pivot
    // the host's /proc must not be that one (runc's "must not expose bare /proc").
    let mut b = Bundle::new(&[
        "unshare",
        "-mrpf",
        "sh",
        "-c",
        "mount -t proc none /proc 2>/dev/null && echo mounted || echo refused",
    ]);
    for set in ["bounding", "effective", "permitted"] {
        // Mapping root in the new user namespace needs CAP_SETFCAP.
        b.config["process"]["capabilities"][set].as_array_mut().expect("caps").push(json!("CAP_SETFCAP"));
    }
    b.write_config();
    let bundle = b.dir.path().to_string_lossy().into_owned();
    let out = b.rt(&["run", "--no-pivot", "--bundle", &bundle, "nopivot"]);
    assert_eq!(out.ok(), "refused\n");
    let out = b.rt(&["run", "--bundle", &bundle, "pivot"]);
    assert_eq!(out.ok(), "refused\n");
}

/// A user namespace mapping root to 100000 (and 65536 ids above).
fn with_userns(b: &mut Bundle) {
    b.config["linux"]["namespaces"].as_array_mut().expect("ns").push(json!({ "type": "user" }));
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
}

#[test]
fn user_namespaced_bind_sources_under_a_closed_directory() {
    // The container's root (host uid 100000) cannot pass a 000 directory; the
    // runtime, with its own privileges, opens the source for it, as runc does.
    let src = TempDir::new("closed");
    let inner = src.path().join("inner");
    std::fs::create_dir_all(&inner).expect("mkdir");
    std::fs::write(inner.join("file"), "behind a closed door\n").expect("write");
    std::fs::set_permissions(inner.join("file"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(src.path(), std::os::unix::fs::PermissionsExt::from_mode(0o000)).expect("chmod");
    let mut b = Bundle::new(&["sleep", "100"]);
    with_userns(&mut b);
    // Without a pid namespace of its own the container's /proc would not match
    // its user namespace; keep the base config's pid namespace.
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({ "destination": "/home", "type": "bind", "source": inner, "options": ["rbind", "ro"] }));
    let out = b.create("closed");
    std::fs::set_permissions(src.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod back");
    out.ok();
    b.rt(&["start", "closed"]).ok();
    let out = b.rt(&["exec", "closed", "cat", "/home/file"]);
    assert_eq!(out.ok(), "behind a closed door\n");
    b.rt(&["delete", "--force", "closed"]).ok();
}

#[test]
fn update_applies_device_rules_to_a_running_container() {
    if !is_strata() {
        return skip(
            "update_applies_device_rules_to_a_running_container",
            "runc 1.1.5's update -r leaves the device rules of a cgroup v2 container as they were",
        );
    }
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["resources"] = json!({ "devices": [
        { "allow": false, "access": "rwm" },
        { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" }
    ] });
    b.create("devupd").ok();
    b.rt(&["start", "devupd"]).ok();
    assert_eq!(b.rt(&["exec", "devupd", "sh", "-c", "echo x > /dev/null && echo writable"]).ok(), "writable\n");
    let rules = b.dir.path().join("resources.json");
    std::fs::write(
        &rules,
        json!({ "devices": [
            { "allow": false, "access": "rwm" },
            { "allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm" }
        ] })
        .to_string(),
    )
    .expect("write");
    b.rt(&["update", "-r", &rules.to_string_lossy(), "devupd"]).ok();
    let out = b.rt(&["exec", "devupd", "sh", "-c", "echo x > /dev/null 2>/dev/null && echo writable || echo denied"]);
    assert_eq!(out.ok(), "denied\n");
    b.rt(&["delete", "--force", "devupd"]).ok();
}

#[test]
fn kill_with_signal_zero_and_kill_all_of_a_stopped_container() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("k0").ok();
    b.rt(&["start", "k0"]).ok();
    b.rt(&["kill", "k0", "0"]).ok();
    assert_eq!(b.status("k0"), "running");
    b.rt(&["kill", "k0", "KILL"]).ok();
    for _ in 0..100 {
        if b.status("k0") == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    b.rt(&["kill", "--all", "k0", "KILL"]).ok();
    // Without --all a stopped container cannot be signalled (the spec).
    b.rt(&["kill", "k0", "KILL"]).failed();
    b.rt(&["delete", "k0"]).ok();
}

#[test]
fn no_mount_namespace_and_a_joined_uts_namespace() {
    if !is_strata() {
        // It would mount the config's mounts into the shared rootfs, in the
        // runtime's own mount namespace.
        return skip(
            "no_mount_namespace_and_a_joined_uts_namespace",
            "runc 1.1.5 mounts the config's mounts in the runtime's mount namespace when the config has none",
        );
    }
    // No mount namespace: the process is chrooted into the rootfs (nothing is
    // mounted in the host's namespace, masked and read-only paths do not apply).
    let mut b = Bundle::new(&["sh", "-c", "test -x /bin/busybox && echo in-rootfs"]);
    b.config["linux"]["namespaces"] = json!([{ "type": "pid" }]);
    b.config.as_object_mut().expect("config").remove("hostname");
    b.config["linux"].as_object_mut().expect("linux").remove("maskedPaths");
    b.config["linux"].as_object_mut().expect("linux").remove("readonlyPaths");
    let out = b.run("nomnt");
    assert_eq!(out.ok(), "in-rootfs\n");
    // A hostname set in a uts namespace joined by path.
    let mut holder = std::process::Command::new("unshare").args(["--uts", "sleep", "100"]).spawn().expect("unshare");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut b = Bundle::new(&["hostname"]);
    b.config["hostname"] = json!("joined-uts");
    let ns = b.config["linux"]["namespaces"].as_array_mut().expect("ns");
    ns.retain(|n| n["type"] != "uts");
    ns.push(json!({ "type": "uts", "path": format!("/proc/{}/ns/uts", holder.id()) }));
    let out = b.run("joinuts");
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.ok(), "joined-uts\n");
}

#[test]
fn tools_read_runcs_output_shapes() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("shape").ok();
    b.rt(&["start", "shape"]).ok();
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    let list: Value = serde_json::from_str(b.rt(&["list", "--format", "json"]).ok()).expect("list json");
    assert_eq!(keys(&list[0]), ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]);
    assert_eq!(list[0]["owner"], "root");
    let ev: Value = serde_json::from_str(b.rt(&["events", "--stats", "shape"]).ok().trim()).expect("events json");
    assert_eq!(keys(&ev), ["type", "id", "data"]);
    assert_eq!(
        keys(&ev["data"]),
        ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"]
    );
    assert_eq!(ev["data"]["pids"]["current"], 1);
    b.rt(&["delete", "--force", "shape"]).ok();
    if is_strata() {
        let v = b.rt(&["--version"]);
        let lines: Vec<&str> = v.ok().lines().collect();
        assert!(lines[0].starts_with("strata version "), "{lines:?}");
        assert!(lines[1].starts_with("commit: ") && lines[2].starts_with("spec: 1."), "{lines:?}");
    }
    for cmd in [
        "create", "start", "state", "kill", "delete", "run", "exec", "list", "spec", "pause", "resume", "ps", "update",
        "events", "features",
    ] {
        let out = b.rt(&[cmd, "-h"]);
        assert!(out.code == 0 && out.stdout.to_lowercase().contains("usage"), "{cmd} -h: {out:?}");
    }
}

#[test]
fn debug_and_log_files_in_text_and_json() {
    let b = Bundle::new(&["true"]);
    let out = b.rt(&["--debug", "list"]);
    out.ok();
    if is_strata() {
        assert!(out.stderr.contains("debug"), "--debug says nothing: {out:?}");
    }
    let logs = TempDir::new("logs");
    for format in ["text", "json"] {
        let log = logs.path().join(format!("{format}.log"));
        let out = b.rt(&["--log", &log.to_string_lossy(), "--log-format", format, "delete", "no-such-container"]);
        out.failed();
        let text = std::fs::read_to_string(&log).expect("log written");
        assert!(text.contains("does not exist"), "{format}: {text:?}");
        if format == "json" {
            let line: Value = serde_json::from_str(text.lines().last().expect("a line")).expect("json line");
            assert_eq!(line["level"], "error", "{text}");
        }
    }
    // A log that cannot be opened is an error naming it.
    let out = b.rt(&["--log", "/nonexistent-dir/strata.log", "list"]);
    out.failed();
    if is_strata() {
        assert!(out.stderr.contains("/nonexistent-dir/strata.log"), "{out:?}");
    }
}

// Round 2: found by trying configs and checks from elsewhere beside runc.

#[test]
fn loopback_is_up_in_a_new_network_namespace() {
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" }));
    let out = b.sh("cat /sys/class/net/lo/flags; (sleep 10 | nc -l -p 7070 > /tmp/got &); \
         for i in $(seq 50); do echo hi | nc 127.0.0.1 7070 2>/dev/null && break; sleep 0.1; done; \
         for i in $(seq 30); do [ -s /tmp/got ] && break; sleep 0.1; done; cat /tmp/got");
    // IFF_UP | IFF_LOOPBACK, and a server on 127.0.0.1 reached by a client.
    assert_eq!(out.ok(), "0x9\nhi\n");
}

#[test]
fn the_specs_scheduler_flag_spellings_are_accepted() {
    let mut b = Bundle::private_rootfs(&["/bin/sched"]);
    std::fs::copy(probe_binary("sched"), b.rootfs().join("bin/sched")).expect("copy probe");
    b.config["process"]["scheduler"] = json!({ "policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_RESET_ON_FORK"] });
    let out = b.run("sched");
    if !is_strata() {
        // runc 1.1.5 predates process.scheduler and ignores it.
        out.ok();
        return skip("the_specs_scheduler_flag_spellings_are_accepted", "runc 1.1.5 ignores process.scheduler");
    }
    // SCHED_OTHER (0) with SCHED_FLAG_RESET_ON_FORK (1).
    assert_eq!(out.ok(), "policy 0 flags 0x1\n");
    // The config types' own spelling is not the spec's: refused, naming the field.
    b.config["process"]["scheduler"]["flags"] = json!(["SCHED_RESET_ON_FORK"]);
    let out = b.run("sched2");
    assert!(out.failed().contains("process.scheduler.flags[0]"), "{out:?}");
}

#[test]
fn device_nodes_outside_dev() {
    let mut b = Bundle::private_rootfs(&["true"]);
    b.config["root"]["readonly"] = json!(false);
    b.config["linux"]["devices"] =
        json!([{ "path": "/mnt/nul", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0 }]);
    let out = b.sh("ls -l /mnt/nul | cut -c1; echo x > /mnt/nul && echo written");
    assert_eq!(out.ok(), "c\nwritten\n");
}

#[test]
fn exec_gives_the_process_a_group_of_its_own() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("pg").ok();
    b.rt(&["start", "pg"]).ok();
    // Field 5 of /proc/PID/stat is the process group: the shell leads its own.
    let out = b.rt(&["exec", "pg", "sh", "-c", "set -- $(cat /proc/$$/stat); [ \"$5\" = \"$$\" ] && echo own-group"]);
    assert_eq!(out.ok(), "own-group\n");
    b.rt(&["delete", "--force", "pg"]).ok();
}

#[test]
fn a_mount_over_a_dangling_symlink_creates_its_target_in_the_root() {
    let mut b = Bundle::private_rootfs(&["true"]);
    // /var/cache points at a directory that does not exist yet; /etc/link-file
    // at a file that does not either. Relative and absolute.
    std::os::unix::fs::symlink("/srv/cache", b.rootfs().join("var/cache")).expect("symlink");
    std::os::unix::fs::symlink("../srv/file", b.rootfs().join("etc/link-file")).expect("symlink");
    let src = TempDir::new("dangling");
    std::fs::write(src.path().join("f"), "bound\n").expect("write");
    let mounts = b.config["mounts"].as_array_mut().expect("mounts");
    mounts.push(json!({ "destination": "/var/cache/data", "type": "tmpfs", "source": "tmpfs" }));
    mounts.push(
        json!({ "destination": "/etc/link-file", "type": "bind", "source": src.path().join("f"), "options": ["bind"] }),
    );
    let out = b.sh("grep -c ' /srv/cache/data ' /proc/self/mountinfo; cat /srv/file");
    assert_eq!(out.ok(), "1\nbound\n");
    assert!(b.rootfs().join("srv/cache/data").is_dir(), "the target was created inside the root");
}
