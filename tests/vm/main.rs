//! The VM backend end to end: `strata run --vm` boots the guest kernel under
//! QEMU (TCG where this host's KVM cannot run Linux guests), and the guest
//! agent runs the bundle with the same runtime code. Each boot costs seconds,
//! so the tests are few and run one at a time.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_tests::{repo_root, skip, Bundle};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn kernel() -> Option<std::path::PathBuf> {
    let k = std::env::var_os("STRATA_VM_KERNEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/cache/strata/vm/vmlinux"));
    k.exists().then_some(k)
}

fn ready(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if kernel().is_none() {
        skip(test, "no guest kernel: hack/vm-assets.sh builds it");
        return None;
    }
    if Command::new("qemu-system-x86_64").arg("--version").output().is_err() {
        skip(test, "qemu-system-x86_64 is not installed (hack/vm-assets.sh installs it)");
        return None;
    }
    Some(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Processes whose command line mentions `needle` (a leaked QEMU would).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

/// `run --vm` of the bundle as `id`, started with the given stdio.
fn spawn_vm(b: &Bundle, id: &str, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> std::process::Child {
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    b.cmd(&["run", "--vm", "--bundle", &dir, id]).stdin(stdin).stdout(stdout).stderr(stderr).spawn().expect("spawn")
}

fn vm_run(b: &Bundle, id: &str) -> strata_tests::Out {
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    b.rt(&["run", "--vm", "--bundle", &dir, id])
}

#[test]
fn the_hello_bundle_greets_from_a_vm() {
    let Some(_g) = ready("the_hello_bundle_greets_from_a_vm") else { return };
    let root = strata_tests::TempDir::new("vmroot");
    let hello = repo_root().join("bundles/hello");
    strata_tests::shared_rootfs();
    let out = strata_tests::run_to_files(
        strata_tests::runtime_cmd()
            .current_dir(&hello)
            .arg("--root")
            .arg(root.path())
            .args(["run", "--vm", "hello-vm"])
            .stdin(Stdio::null()),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "Hello from a Strata container!\n");
    assert!(processes_mentioning(&root.path().to_string_lossy()).is_empty(), "QEMU left behind");
    assert_eq!(std::fs::read_dir(root.path()).expect("root").count(), 0, "run dir left behind");
}

#[test]
fn debians_own_kernel_runs_a_bundle_with_the_modules_it_needs() {
    let test = "debians_own_kernel_runs_a_bundle_with_the_modules_it_needs";
    let Some(_g) = ready(test) else { return };
    let cache = std::env::var_os("STRATA_VM_CACHE").unwrap_or_else(|| "/var/cache/strata/vm".into());
    let stock = std::path::Path::new(&cache).join("stock-vmlinux");
    let Ok(kernel) = std::fs::canonicalize(&stock) else {
        skip(test, "no stock kernel: hack/vm-assets.sh --stock fetches it");
        return;
    };
    // (The folder is named after the package: stock-linux-image-VERSION-VERSION-KEY.)
    let dir = kernel.parent().expect("folder").file_name().expect("name").to_string_lossy().into_owned();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "uname -r; grep -o '^[a-z_0-9]*' /proc/modules | sort | tr '\\n' ' '; echo; cat /shared/greeting; exit 5",
    ]);
    // A bind mount: its folder reaches the guest over 9p, also modules here.
    let shared = strata_tests::TempDir::new("vm-stock-share");
    std::fs::write(shared.path().join("greeting"), "through 9p\n").expect("write");
    b.config["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/shared", "type": "bind", "source": shared.path(), "options": ["rbind", "ro"]
    }));
    b.write_config();
    let bundle = b.dir.path().to_string_lossy().into_owned();
    let out = b.rt(&["run", "--vm", "--vm-kernel", &kernel.to_string_lossy(), "--bundle", &bundle, "vm-stock"]);
    assert_eq!(out.code, 5, "{out:?}");
    let mut lines = out.stdout.lines();
    let release = lines.next().unwrap_or_default();
    assert!(release.ends_with("-amd64") && dir.contains(release), "guest kernel {release:?}, package {dir}");
    // The root image is erofs and the agent's channel a virtio console: both
    // came as modules, loaded by the agent before it could run anything.
    let modules = lines.next().unwrap_or_default();
    for m in ["erofs", "virtio_blk", "virtio_console", "virtio_mmio", "9p", "9pnet_virtio"] {
        assert!(modules.split(' ').any(|x| x == m), "{m} not loaded: {modules}");
    }
    assert_eq!(lines.next(), Some("through 9p"), "{out:?}");
    assert!(processes_mentioning(&bundle).is_empty(), "QEMU left behind");
}

#[test]
fn bind_mounts_reach_the_guest_and_only_their_sources_do() {
    let Some(_g) = ready("bind_mounts_reach_the_guest_and_only_their_sources_do") else { return };
    let host = strata_tests::TempDir::new("vm-binds");
    let data = host.path().join("data");
    let files = host.path().join("files");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::write(data.join("in.txt"), "from the host\n").expect("write");
    std::fs::write(files.join("greeting"), "hello, guest\n").expect("write");
    // A neighbour of the file bound: the guest must not get it.
    std::fs::write(files.join("secret"), "not for the guest\n").expect("write");
    // A mode and an owner the guest must see as they are.
    std::fs::set_permissions(data.join("in.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o604)).expect("chmod");
    std::os::unix::fs::chown(data.join("in.txt"), Some(1234), Some(1234)).expect("chown");
    // The workload writes, then waits for the test to look at the share. (Its
    // root stays read-only, though the guest needs a layer for /data.)
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /data/in.txt /etc/greeting; stat -c '%u %a' /data/in.txt; \
         echo changed > /etc/greeting 2>/dev/null && echo wrote-read-only; \
         touch /made 2>/dev/null && echo root-writable; \
         mkdir /data/sub; echo written-in-guest > /data/out.txt; \
         for i in $(seq 600); do [ -e /data/go ] && exit 3; sleep 0.1; done; exit 9",
    ]);
    let n = b.config["mounts"].as_array().expect("mounts").len();
    b.config["mounts"].as_array_mut().expect("mounts").extend([
        json!({ "destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"] }),
        json!({ "destination": "/etc/greeting", "type": "bind", "source": files.join("greeting"), "options": ["bind", "ro"] }),
    ]);
    let child = spawn_vm(&b, "vm-binds", Stdio::null(), Stdio::piped(), Stdio::piped());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !data.join("out.txt").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // What QEMU serves, seen from its own mount namespace: an entry per bind
    // mount, each the source alone.
    let state_dir = b.root.path().join("vm-binds");
    let qemu = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .find(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.starts_with("qemu-system") && cmd.contains(&*state_dir.to_string_lossy())
        })
        .map(|e| e.path());
    let served = qemu.as_ref().map(|q| {
        let share = q.join("root").join(state_dir.join("share").strip_prefix("/").expect("absolute"));
        let mut names: Vec<String> = std::fs::read_dir(&share)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        (names, std::fs::read_to_string(share.join((n + 1).to_string())).unwrap_or_default())
    });
    // On the host the folder is empty: nothing is mounted there.
    let on_host =
        std::fs::read_dir(state_dir.join("share").join(n.to_string())).map(|d| d.count()).unwrap_or(usize::MAX);
    std::fs::write(data.join("go"), "").expect("go");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "from the host\nhello, guest\n1234 604\n");
    let (names, file) = served.expect("QEMU was not found while the workload ran");
    assert_eq!(names, vec![n.to_string(), (n + 1).to_string()]);
    assert_eq!(file, "hello, guest\n");
    assert_eq!(on_host, 0, "the host's view of the shared folder");
    // Writes through a read-write bind land on the host.
    assert_eq!(std::fs::read_to_string(data.join("out.txt")).expect("out.txt"), "written-in-guest\n");
    assert!(data.join("sub").is_dir());
    assert_eq!(std::fs::read_to_string(files.join("greeting")).expect("greeting"), "hello, guest\n");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mountinfo.contains(&*host.path().to_string_lossy()), "{mountinfo}");
    assert!(processes_mentioning(&b.root.path().to_string_lossy()).is_empty(), "QEMU left behind");
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());
}

#[test]
fn stdio_exit_status_and_a_kernel_of_its_own() {
    let Some(_g) = ready("stdio_exit_status_and_a_kernel_of_its_own") else { return };
    let host_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/sys/kernel/random/boot_id; cat; echo to-stderr >&2; \
         touch /ro 2>/dev/null && echo root-writable; exit 7",
    ]);
    let mut child = spawn_vm(&b, "vm-stdio", Stdio::piped(), Stdio::piped(), Stdio::piped());
    child.stdin.take().expect("stdin").write_all(b"from-host-stdin\n").expect("stdin");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stdout} {stderr}");
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_ne!(lines[0], host_boot.trim(), "the guest has its own kernel");
    assert_eq!(lines[1], "from-host-stdin");
    assert!(stderr.contains("to-stderr"), "{stderr}");
    assert!(!stdout.contains("root-writable"), "root.readonly holds in the guest");

    // A writable root gets a tmpfs overlay in the guest; the image is untouched.
    b.config["root"]["readonly"] = json!(false);
    b.config["process"]["args"] = json!(["sh", "-c", "echo kept > /made-in-vm && cat /made-in-vm"]);
    let out = vm_run(&b, "vm-rw");
    assert_eq!((out.code, out.stdout.as_str()), (0, "kept\n"), "{out:?}");
    assert!(!b.rootfs().join("made-in-vm").exists(), "writes stay in the guest");
}

#[test]
fn a_signal_to_strata_reaches_the_workload() {
    let Some(_g) = ready("a_signal_to_strata_reaches_the_workload") else { return };
    let b = Bundle::new(&["sh", "-c", "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done"]);
    let mut child = spawn_vm(&b, "vm-signal", Stdio::null(), Stdio::piped(), Stdio::inherit());
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("kill");
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("got-term"));
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(42));

    // SIGKILL to `strata run`: as with a container, the workload goes on
    // (its monitor is the container's process), and `delete --force` ends
    // it, QEMU included.
    let mut child = spawn_vm(&b, "vm-signal", Stdio::null(), Stdio::piped(), Stdio::inherit());
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert_eq!(b.status("vm-signal"), "running");
    let root = b.root.path().to_string_lossy().into_owned();
    assert_eq!(processes_mentioning(&root).iter().filter(|c| c.starts_with("qemu")).count(), 1);
    let out = b.rt(&["delete", "--force", "vm-signal"]);
    assert_eq!(out.code, 0, "{out:?}");
    gone(&root);
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());
}

/// Waits a moment for every process mentioning `needle` to be gone.
fn gone(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let alive = || processes_mentioning(needle).into_iter().filter(|c| !c.is_empty()).collect::<Vec<_>>();
    while !alive().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive().is_empty(), "left behind: {:?}", alive());
}

#[test]
fn create_start_exec_pause_kill_and_delete_a_vm_container() {
    let Some(_g) = ready("create_start_exec_pause_kill_and_delete_a_vm_container") else { return };
    let mut b =
        Bundle::new(&["sh", "-c", "trap 'echo got-term; exit 42' TERM; echo started; while :; do sleep 0.1; done"]);
    b.config["annotations"] = json!({ "run.strata.isolation": "vm" });
    b.config["linux"]["cgroupsPath"] = json!(format!("/strata-vm-test-{}", std::process::id()));
    b.config["mounts"].as_array_mut().expect("mounts").push(cgroup_mount());
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    let out_dir = strata_tests::TempDir::new("vmout");
    let out_path = out_dir.path().join("stdout");
    let pid_file = out_dir.path().join("pid");
    // The container's stdio is create's, as with runc: a file here.
    let status = b
        .cmd(&["create", "--bundle", &dir, "--pid-file", &pid_file.to_string_lossy(), "vm-life"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout"))
        .stderr(Stdio::inherit())
        .status()
        .expect("create");
    assert!(status.success());
    let st = b.state("vm-life").expect("state");
    assert_eq!(st["status"], "created");
    assert_eq!(st["annotations"]["run.strata.isolation"], "vm", "state says it is a VM");
    let pid = st["pid"].as_i64().expect("pid");
    assert_eq!(std::fs::read_to_string(&pid_file).expect("pid file"), pid.to_string());
    let cgroup = strata_runtime_cgroup_dir(&st);

    let out = b.rt(&["start", "vm-life"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(b.status("vm-life"), "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&out_path).unwrap_or_default().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&out_path).expect("out"), "started\n");

    // exec: stdin in, stdout and stderr out, the exit status back.
    let mut child = b
        .cmd(&["exec", "vm-life", "sh", "-c", "cat; echo to-stderr >&2; exit 3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exec");
    child.stdin.take().expect("stdin").write_all(b"through-the-vm\n").expect("stdin");
    let out = child.wait_with_output().expect("exec");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through-the-vm\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));
    // A process that cannot start fails the exec, naming it.
    let out = b.rt(&["exec", "vm-life", "/no/such/binary"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("/no/such/binary"), "{}", out.stderr);
    // --detach returns once it runs; its effect is visible to the next exec.
    let out = b.rt(&["exec", "--detach", "vm-life", "sh", "-c", "echo detached > /dev/shm/mark"]);
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = b.rt(&["exec", "vm-life", "cat", "/dev/shm/mark"]);
        if out.stdout == "detached\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the detached exec never ran: {out:?}");
    }

    // pause freezes the VM's host processes; resume thaws them.
    if let Some(cg) = &cgroup {
        let out = b.rt(&["pause", "vm-life"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(b.status("vm-life"), "paused");
        assert_eq!(std::fs::read_to_string(cg.join("cgroup.freeze")).expect("freeze").trim(), "1");
        let out = b.rt(&["resume", "vm-life"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(b.status("vm-life"), "running");
        let ps = b.rt(&["ps", "vm-life"]);
        assert!(ps.stdout.contains(&pid.to_string()), "ps lists the monitor: {}", ps.stdout);
    } else {
        skip("create_start_exec_pause_kill_and_delete_a_vm_container", "pause and ps: no cgroup v2 here");
    }
    // update: the limits hold in the guest, on the container's cgroup there.
    let out = b.rt(&["update", "--pids-limit", "10", "vm-life"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = b.rt(&["exec", "vm-life", "sh", "-c", OWN_CGROUP_FILE.replace("FILE", "pids.max").as_str()]);
    assert_eq!(out.stdout.trim(), "10", "{out:?}");
    // Intel RDT is the host's: refused by name.
    let out = b.rt(&["update", "--l3-cache-schema", "L3:0=f", "vm-life"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("RDT"), "{}", out.stderr);

    // kill --all goes to the workload (not to QEMU): its trap runs.
    let out = b.rt(&["kill", "--all", "vm-life", "TERM"]);
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.status("vm-life") != "stopped" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.status("vm-life"), "stopped");
    assert_eq!(std::fs::read_to_string(&out_path).expect("out"), "started\ngot-term\n");
    let out = b.rt(&["delete", "vm-life"]);
    assert_eq!(out.code, 0, "{out:?}");
    gone(&b.root.path().to_string_lossy());
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());
    if let Some(cg) = cgroup {
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    }
}

#[test]
fn terminals_in_the_guest_reach_the_console_socket_and_the_caller() {
    let test = "terminals_in_the_guest_reach_the_console_socket_and_the_caller";
    let Some(_g) = ready(test) else { return };
    let mut b = Bundle::new(&["sh", "-c", "tty; echo term=$TERM; trap 'exit 0' TERM; while :; do sleep 0.1; done"]);
    b.config["process"]["terminal"] = json!(true);
    b.config["annotations"] = json!({ "run.strata.isolation": "vm" });
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    // As runc's: a terminal needs a console socket, which gets the master.
    let out = b.rt(&["create", "--bundle", &dir, "vm-tty-none"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--console-socket"), "{}", out.stderr);
    assert!(b.leftover_state().is_empty());
    let mut console = strata_tests::ConsoleSocket::new();
    let out = b.rt(&["create", "--bundle", &dir, "--console-socket", &console.arg(), "vm-tty"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = b.rt(&["start", "vm-tty"]);
    assert_eq!(out.code, 0, "{out:?}");
    // exec -t --detach: its terminal's master goes to its console socket.
    let mut exec_console = strata_tests::ConsoleSocket::new();
    let out = b.rt(&[
        "exec",
        "-t",
        "--detach",
        "--console-socket",
        &exec_console.arg(),
        "vm-tty",
        "sh",
        "-c",
        "tty; echo exec-term=$TERM",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let exec_text = exec_console.output();
    assert!(exec_text.contains("/dev/pts/") && exec_text.contains("exec-term=xterm"), "{exec_text:?}");
    let out = b.rt(&["kill", "vm-tty", "TERM"]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = console.output();
    assert!(text.starts_with("/dev/pts/0\nterm=xterm\n"), "{text:?}");
    let out = b.rt(&["delete", "--force", "vm-tty"]);
    assert_eq!(out.code, 0, "{out:?}");

    // `run` in the foreground proxies the caller's terminal: keys in, output
    // out, its size followed, and the workload's exit status.
    if Command::new("script").arg("--version").output().is_err() {
        skip(test, "the foreground part: script(1) is not installed");
        return;
    }
    b.config["process"]["args"] = json!(["sh", "-c", "sleep 1; stty size; read line; echo typed:$line; exit 6"]);
    b.write_config();
    let strata = strata_tests::runtime_bin();
    let line = format!(
        "stty rows 33 cols 111; {} --root {} run --vm --bundle {dir} vm-tty-run; echo rc=$?",
        strata.display(),
        b.root.path().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("script");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let mut typed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(Ok(l)) = lines.next() {
        let l = l.replace('\r', "");
        if l.trim() == "33 111" && !typed {
            stdin.write_all(b"hello-vm\n").expect("type");
            typed = true;
        }
        seen.push(l);
        if seen.last().is_some_and(|l| l.starts_with("rc=")) || Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l == "33 111"), "the size reached the guest: {seen:?}");
    assert!(seen.iter().any(|l| l == "typed:hello-vm"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("rc=6"), "{seen:?}");
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());
}

/// The host cgroup of a container, when this host gives it one.
fn strata_runtime_cgroup_dir(state: &serde_json::Value) -> Option<std::path::PathBuf> {
    let pid = state["pid"].as_i64()?;
    let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = line.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
    let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|m| m.join("cgroup.controllers").exists())?;
    rel.contains("strata-vm-test").then(|| mount.join(rel.trim_start_matches('/')))
}

#[test]
fn refusals_name_the_problem_and_leave_nothing_behind() {
    let Some(_g) = ready("refusals_name_the_problem_and_leave_nothing_behind") else { return };
    // A device cannot be shared with the guest (its numbers would name the
    // guest's own devices), nor can a source that is not there.
    for (source, why) in [("/dev/null", "only directories and regular files"), ("/nonexistent/strata", "No such file")]
    {
        let mut b = Bundle::new(&["true"]);
        b.config["mounts"].as_array_mut().expect("mounts").push(json!({
            "destination": "/data", "type": "bind", "source": source, "options": ["rbind", "ro"]
        }));
        let out = vm_run(&b, "vm-bind");
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains(&format!("{source} onto /data")) && out.stderr.contains(why), "{}", out.stderr);
        assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());
    }

    let b = Bundle::new(&["true"]);
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    let out = strata_tests::run_to_files(
        b.cmd(&["run", "--vm", "--vm-kernel", "/nonexistent/vmlinux", "--bundle", &dir, "vm-nokernel"])
            .stdin(Stdio::null()),
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("/nonexistent/vmlinux"), "{}", out.stderr);

    // A guest that does not come up in time: QEMU is stopped, nothing stays.
    let started = Instant::now();
    let out = strata_tests::run_to_files(
        b.cmd(&["run", "--vm", "--bundle", &dir, "vm-slow"]).env("STRATA_VM_BOOT_TIMEOUT_S", "1").stdin(Stdio::null()),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("did not come up within 1 s"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    assert!(processes_mentioning(&b.root.path().to_string_lossy()).is_empty(), "QEMU left behind");
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());

    // A create whose guest does not come up leaves nothing either.
    let mut b = Bundle::new(&["true"]);
    b.config["annotations"] = json!({ "run.strata.isolation": "vm" });
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    let out = strata_tests::run_to_files(
        b.cmd(&["create", "--bundle", &dir, "vm-slow-create"])
            .env("STRATA_VM_BOOT_TIMEOUT_S", "1")
            .stdin(Stdio::null()),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("did not come up within 1 s"), "{}", out.stderr);
    gone(&b.root.path().to_string_lossy());
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());

    // A VMM that cannot boot the guest yet, or one strata does not know.
    for (vmm, why) in [("inprocess", "does not boot a Linux guest yet"), ("firecracker", "neither")] {
        b.config["annotations"]["run.strata.vm.vmm"] = json!(vmm);
        let out = b.create("vm-vmm");
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains("run.strata.vm.vmm") && out.stderr.contains(why), "{}", out.stderr);
        assert!(b.leftover_state().is_empty());
    }
    b.config["annotations"] = json!({ "run.strata.isolation": "vm" });

    // createContainer hooks would run the host's binaries in the guest's
    // namespaces: refused by name.
    b.config["hooks"] = json!({ "createContainer": [{ "path": "/bin/true" }] });
    let out = b.create("vm-hooks");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("hooks.createContainer"), "{}", out.stderr);
    assert!(b.leftover_state().is_empty());
}

/// A host hook that saves the state it reads as `NAME.json` in `dir`.
fn saving_hook(dir: &std::path::Path, name: &str) -> serde_json::Value {
    json!({ "path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.json", dir.display())] })
}

fn saved_state(dir: &std::path::Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text:?}"))
}

#[test]
fn hooks_run_on_the_host_and_start_container_hooks_in_the_guest() {
    let Some(_g) = ready("hooks_run_on_the_host_and_start_container_hooks_in_the_guest") else { return };
    let seen = strata_tests::TempDir::new("vm-hooks");
    let out_dir = seen.path().join("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let mut b = Bundle::new(&["sh", "-c", "cat /out/startContainer"]);
    b.config["annotations"] = json!({ "run.strata.isolation": "vm" });
    b.config["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/out", "type": "bind", "source": out_dir, "options": ["rbind", "rw"]
    }));
    b.config["hooks"] = json!({
        "prestart": [saving_hook(seen.path(), "prestart")],
        "createRuntime": [saving_hook(seen.path(), "createRuntime")],
        // The container's own sh, run by the guest's runtime: it sees the
        // guest's kernel and the container's mounts.
        "startContainer": [{ "path": "/bin/sh", "args": ["sh", "-c", "uname -r > /out/startContainer"] }],
        "poststart": [saving_hook(seen.path(), "poststart")],
        "poststop": [saving_hook(seen.path(), "poststop")],
    });
    b.write_config();
    let dir = b.dir.path().to_string_lossy().into_owned();
    let stdout = seen.path().join("stdout");
    let status = b
        .cmd(&["create", "--bundle", &dir, "vm-hooked"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout"))
        .stderr(Stdio::inherit())
        .status()
        .expect("create");
    assert!(status.success());
    let st = b.state("vm-hooked").expect("state");
    for name in ["prestart", "createRuntime"] {
        let hook = saved_state(seen.path(), name);
        assert_eq!(hook["status"], "creating", "{name}: {hook}");
        assert_eq!(hook["id"], "vm-hooked", "{name}: {hook}");
        assert_eq!(hook["pid"], st["pid"], "{name} reads the monitor's pid: {hook}");
    }
    assert!(!out_dir.join("startContainer").exists(), "startContainer ran before start");
    assert!(!seen.path().join("poststart.json").exists(), "poststart ran before start");

    let out = b.rt(&["start", "vm-hooked"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(saved_state(seen.path(), "poststart")["status"], "running");
    let guest_kernel = std::fs::read_to_string(out_dir.join("startContainer")).expect("startContainer ran");
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_ne!(guest_kernel, host_kernel, "startContainer ran on the host");
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.status("vm-hooked") != "stopped" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The workload ran after its startContainer hook.
    assert_eq!(std::fs::read_to_string(&stdout).expect("stdout"), guest_kernel);
    assert!(!seen.path().join("poststop.json").exists(), "poststop ran before delete");
    let out = b.rt(&["delete", "vm-hooked"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(saved_state(seen.path(), "poststop")["status"], "stopped");
    gone(&b.root.path().to_string_lossy());
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());

    // A createRuntime hook that fails fails the create, names the hook, runs
    // poststop, and leaves no VM, monitor or state.
    let _ = std::fs::remove_file(seen.path().join("poststop.json"));
    b.config["hooks"]["createRuntime"] = json!([{ "path": "/bin/false" }]);
    let out = b.create("vm-hook-fails");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("createRuntime") && out.stderr.contains("/bin/false"), "{}", out.stderr);
    assert_eq!(saved_state(seen.path(), "poststop")["status"], "stopped");
    gone(&b.root.path().to_string_lossy());
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());
}

/// A shell command printing FILE of the cgroup the shell is in (below
/// /sys/fs/cgroup with or without a cgroup namespace).
const OWN_CGROUP_FILE: &str = "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/FILE";

/// The container's cgroup, read-only, at /sys/fs/cgroup.
fn cgroup_mount() -> serde_json::Value {
    json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"] })
}

/// What QEMU serves from the shared folder of the VM whose state directory
/// is `state_dir` (seen from its own mount namespace), None when no QEMU runs.
fn served(state_dir: &std::path::Path) -> Option<Vec<String>> {
    let qemu = std::fs::read_dir("/proc").expect("proc").flatten().find(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        cmd.starts_with("qemu-system") && cmd.contains(&*state_dir.to_string_lossy())
    })?;
    let share = qemu.path().join("root").join(state_dir.join("share").strip_prefix("/").expect("absolute"));
    let mut names: Vec<String> = std::fs::read_dir(&share)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    Some(names)
}

#[test]
fn a_pods_containers_join_its_sandbox_in_one_vm() {
    let Some(_g) = ready("a_pods_containers_join_its_sandbox_in_one_vm") else { return };
    // The sandbox: a VM container that sleeps, with the pod's hostname.
    let mut sb = Bundle::new(&["sh", "-c", "while :; do sleep 1; done"]);
    sb.config["annotations"] = json!({
        "run.strata.isolation": "vm",
        "io.kubernetes.cri.container-type": "sandbox",
    });
    sb.config["hostname"] = json!("pod-host");
    let out = sb.create("pod");
    assert_eq!(out.code, 0, "{out:?}");
    let out = sb.rt(&["start", "pod"]);
    assert_eq!(out.code, 0, "{out:?}");
    let sandbox_pid = sb.state("pod").expect("state")["pid"].as_i64().expect("pid");
    let state_dir = sb.root.path().join("pod");
    let pod_net = sb.rt(&["exec", "pod", "readlink", "/proc/self/ns/net"]);
    assert_eq!(pod_net.code, 0, "{pod_net:?}");

    // A container of the pod: the sandbox's namespaces by path, as CRI
    // writes them, and its annotations; no VM annotation of its own.
    let member = |args: &[&str], cri: bool| {
        let mut c = strata_tests::base_config(args);
        c["root"]["path"] = json!(strata_tests::shared_rootfs());
        c["hostname"] = serde_json::Value::Null;
        c["mounts"].as_array_mut().expect("mounts").push(cgroup_mount());
        c["linux"]["namespaces"] = json!([
            { "type": "pid" }, { "type": "mount" }, { "type": "cgroup" },
            { "type": "network", "path": format!("/proc/{sandbox_pid}/ns/net") },
            { "type": "ipc", "path": format!("/proc/{sandbox_pid}/ns/ipc") },
            { "type": "uts", "path": format!("/proc/{sandbox_pid}/ns/uts") },
        ]);
        if cri {
            c["annotations"] = json!({
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.sandbox-id": "pod",
            });
        }
        let dir = strata_tests::TempDir::new("vm-pod-member");
        std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&c).expect("json")).expect("config");
        dir
    };
    let app =
        member(&["sh", "-c", "echo app-up; trap 'echo app-term; exit 42' TERM; while :; do sleep 0.2; done"], true);
    let app_out = app.path().join("stdout");
    let status = sb
        .cmd(&["create", "--bundle", &app.path().to_string_lossy(), "app"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&app_out).expect("stdout"))
        .stderr(Stdio::inherit())
        .status()
        .expect("create");
    assert!(status.success());
    let st = sb.state("app").expect("state");
    assert_eq!(st["status"], "created");
    assert_eq!(st["annotations"]["run.strata.vm.sandbox"], "pod", "{st}");
    let names = served(&state_dir).expect("QEMU runs");
    assert!(names.contains(&"app-rootfs".to_string()), "{names:?}");
    let out = sb.rt(&["start", "app"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.status("app"), "running");
    // In the guest, in the sandbox's namespaces.
    let out = sb.rt(&["exec", "app", "sh", "-c", "hostname; readlink /proc/self/ns/net; uname -r"]);
    assert_eq!(out.code, 0, "{out:?}");
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert_eq!(lines[0], "pod-host");
    assert_eq!(lines[1], pod_net.stdout.trim(), "the sandbox's network namespace");
    assert_ne!(lines[2], host_kernel.trim(), "not the host's kernel");

    // Known by its namespace paths alone: `run` gives its status.
    let side = member(&["sh", "-c", "hostname; exit 7"], false);
    let out = sb.rt(&["run", "--bundle", &side.path().to_string_lossy(), "side"]);
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout, "pod-host\n");
    assert!(sb.state("side").is_none(), "run deletes what it ran");

    // An exec whose proxy dies (as a client's timeout kills it) takes its
    // process in the guest along.
    let scratch = strata_tests::TempDir::new("vm-pod-exec");
    let pid_file = scratch.path().join("pid");
    let out = sb.rt(&["exec", "--detach", "--pid-file", &pid_file.to_string_lossy(), "pod", "sleep", "999"]);
    assert_eq!(out.code, 0, "{out:?}");
    let sleepers =
        || sb.rt(&["exec", "pod", "sh", "-c", "ps -o args | grep -c '^sleep 99[9]'"]).stdout.trim().to_string();
    assert_eq!(sleepers(), "1");
    let proxy = std::fs::read_to_string(&pid_file).expect("pid file");
    assert!(Command::new("kill").args(["-KILL", proxy.trim()]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while sleepers() != "0" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sleepers(), "0", "the exec outlived its proxy");

    // Statistics, pause and resume act on the container's cgroup in the
    // guest: its loop's cpu time stands still while it is paused.
    let stats = |id: &str| {
        let out = sb.rt(&["events", "--stats", id]);
        assert_eq!(out.code, 0, "{out:?}");
        let event: serde_json::Value = serde_json::from_str(&out.stdout).expect("an event");
        assert_eq!(event["type"], "stats", "{event}");
        event["data"].clone()
    };
    let cpu = |data: &serde_json::Value| data["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
    let data = stats("app");
    assert!(cpu(&data) > 0, "cpu time of the guest's cgroup: {data}");
    assert!(data["pids"]["current"].as_u64().unwrap_or(0) >= 1, "its processes: {data}");
    // (Memory is accounted without a limit: every controller is enabled
    // along the cgroup's path, as runc does.)
    assert!(data["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0, "its memory: {data}");
    let out = sb.rt(&["pause", "app"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.status("app"), "paused");
    assert_eq!(sb.status("pod"), "running", "only the container is paused, not its VM");
    let frozen = cpu(&stats("app"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cpu(&stats("app")), frozen, "a paused container ran");
    let out = sb.rt(&["pause", "app"]);
    assert_eq!(out.code, 1, "a second pause: {out:?}");
    assert!(out.stderr.contains("paused"), "{}", out.stderr);
    let out = sb.rt(&["resume", "app"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.status("app"), "running");
    let deadline = Instant::now() + Duration::from_secs(20);
    while cpu(&stats("app")) == frozen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(cpu(&stats("app")) > frozen, "a resumed container stands still");
    let out = sb.rt(&["resume", "app"]);
    assert_eq!(out.code, 1, "resume of a running one: {out:?}");
    // While the pod's VM is paused its guest answers nothing: what needs it
    // fails at once, saying so, instead of waiting.
    if sb.rt(&["pause", "pod"]).code == 0 {
        for args in [&["events", "--stats", "app"][..], &["exec", "app", "true"], &["pause", "app"]] {
            let asked = Instant::now();
            let out = sb.rt(args);
            assert_ne!(out.code, 0, "{args:?}: {out:?}");
            assert!(out.stderr.contains("paused"), "{args:?}: {}", out.stderr);
            assert!(asked.elapsed() < Duration::from_secs(5), "{args:?} waited for a paused VM");
        }
        assert_eq!(sb.rt(&["resume", "pod"]).code, 0);
    } else {
        skip("a_pods_containers_join_its_sandbox_in_one_vm", "pausing the VM: its host cgroup is not there");
    }
    let out = sb.rt(&["update", "--memory", "67108864", "app"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = sb.rt(&["exec", "app", "sh", "-c", OWN_CGROUP_FILE.replace("FILE", "memory.max").as_str()]);
    assert_eq!(out.stdout.trim(), "67108864", "{out:?}");

    // A namespace that is not the sandbox's: refused by field, nothing left.
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(app.path().join("config.json")).expect("config")).expect("json");
    c["linux"]["namespaces"][3]["path"] = json!("/proc/1/ns/net");
    let stray = strata_tests::TempDir::new("vm-pod-stray");
    std::fs::write(stray.path().join("config.json"), serde_json::to_vec(&c).expect("json")).expect("config");
    let out = sb.rt(&["create", "--bundle", &stray.path().to_string_lossy(), "stray"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("linux.namespaces[3].path"), "{}", out.stderr);
    assert!(sb.state("stray").is_none());

    // kill reaches the container in the guest; delete takes its files
    // from the shared folder.
    let out = sb.rt(&["kill", "app", "TERM"]);
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sb.status("app") != "stopped" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sb.status("app"), "stopped");
    assert_eq!(std::fs::read_to_string(&app_out).expect("stdout"), "app-up\napp-term\n");
    let out = sb.rt(&["delete", "app"]);
    assert_eq!(out.code, 0, "{out:?}");

    // A terminal: the guest's, relayed to the console socket's master.
    let tty = member(&["sh", "-c", "tty; echo in-a-pod=$TERM"], true);
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tty.path().join("config.json")).expect("config")).expect("json");
    c["process"]["terminal"] = json!(true);
    std::fs::write(tty.path().join("config.json"), serde_json::to_vec(&c).expect("json")).expect("config");
    let mut console = strata_tests::ConsoleSocket::new();
    let out = sb.rt(&["create", "--console-socket", &console.arg(), "--bundle", &tty.path().to_string_lossy(), "tty"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.rt(&["start", "tty"]).code, 0);
    let text = console.output();
    assert!(text.contains("/dev/pts/") && text.contains("in-a-pod=xterm"), "{text:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sb.status("tty") != "stopped" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sb.rt(&["delete", "tty"]).code, 0);

    // delete --force of a running one: the guest's container goes too.
    let doomed = member(&["sleep", "1000"], true);
    let out = sb.rt(&["create", "--bundle", &doomed.path().to_string_lossy(), "doomed"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(sb.rt(&["start", "doomed"]).code, 0);
    let out = sb.rt(&["delete", "--force", "doomed"]);
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let only_pod = || served(&state_dir).is_some_and(|n| n.is_empty());
    while !only_pod() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // (The monitor lets go of them once the guest has deleted the container.)
    assert_eq!(served(&state_dir), Some(Vec::new()), "the members' files stay shared");

    // A create that fails once the guest has made the container (its
    // createRuntime hook fails) leaves nothing, here or in the guest.
    let failing = member(&["true"], true);
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(failing.path().join("config.json")).expect("config")).expect("json");
    c["hooks"] = json!({ "createRuntime": [{ "path": "/bin/false" }] });
    std::fs::write(failing.path().join("config.json"), serde_json::to_vec(&c).expect("json")).expect("config");
    let out = sb.rt(&["create", "--bundle", &failing.path().to_string_lossy(), "failing"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("createRuntime"), "{}", out.stderr);
    assert!(sb.state("failing").is_none());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !only_pod() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served(&state_dir), Some(Vec::new()), "a failed member's files stay shared");

    let out = sb.rt(&["delete", "--force", "pod"]);
    assert_eq!(out.code, 0, "{out:?}");
    gone(&sb.root.path().to_string_lossy());
    assert!(sb.leftover_state().is_empty(), "{:?}", sb.leftover_state());
}

/// A network namespace made for a test, deleted when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn in_netns(ns: &str, script: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]).output().expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_network_namespace_named_in_the_config_is_handed_to_the_vm_and_back() {
    let test = "a_network_namespace_named_in_the_config_is_handed_to_the_vm_and_back";
    let Some(_g) = ready(test) else { return };
    if Command::new("ip").arg("-V").output().is_err() {
        return skip(test, "the ip command (iproute2) is not installed");
    }
    // A namespace as a CNI plugin leaves it: an interface with an IPv4 and
    // an IPv6 address and a default route of each family. The veth's peer,
    // in a namespace of its own, has a neighbour's addresses for the guest
    // to reach.
    let ns = Netns(format!("strata-vmnet-{}", std::process::id()));
    let peer = Netns(format!("strata-vmpeer-{}", std::process::id()));
    for n in [&ns, &peer] {
        let made = Command::new("ip").args(["netns", "add", &n.0]).status().expect("ip netns add");
        assert!(made.success());
    }
    in_netns(
        &ns.0,
        &format!(
            "ip link add eth0 type veth peer name peer0 netns {} && ip addr add 10.123.0.2/24 dev eth0 && \
             ip -6 addr add fd00:123::2/64 dev eth0 nodad && ip link set eth0 up && \
             ip route add default via 10.123.0.1 && ip -6 route add default via fd00:123::1 dev eth0",
            peer.0
        ),
    );
    in_netns(
        &peer.0,
        "ip addr add 10.123.0.3/24 dev peer0 && ip -6 addr add fd00:123::3/64 dev peer0 nodad && \
         ip link set peer0 up",
    );
    let config = "ip -o addr show dev eth0; ip route; ip -6 route";
    let before = in_netns(&ns.0, config);
    for want in ["10.123.0.2/24", "default via 10.123.0.1", "fd00:123::2/64", "default via fd00:123::1"] {
        assert!(before.contains(want), "{want}: {before}");
    }
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "ip -o addr show dev eth0; ip route; ip -f inet6 route; \
         ping -c 2 -W 10 10.123.0.3 >/dev/null && echo ping4-ok; \
         ping -6 -c 2 -W 10 fd00:123::3 >/dev/null && echo ping6-ok",
    ]);
    for set in ["bounding", "effective", "permitted"] {
        if let Some(caps) = b.config["process"]["capabilities"][set].as_array_mut() {
            caps.push(json!("CAP_NET_RAW"));
        }
    }
    let namespaces = b.config["linux"]["namespaces"].as_array_mut().expect("namespaces");
    for n in namespaces.iter_mut() {
        if n["type"] == "network" {
            n["path"] = json!(format!("/var/run/netns/{}", ns.0));
        }
    }
    let out = vm_run(&b, "vm-net");
    assert_eq!(out.code, 0, "{out:?}");
    // The guest's interface has the namespace's addresses and routes, and
    // reaches the neighbour over both families.
    for want in ["eth0", "10.123.0.2/24", "default via 10.123.0.1", "fd00:123::2/64", "default via fd00:123::1"] {
        assert!(out.stdout.contains(want), "{want}: {}", out.stdout);
    }
    assert!(out.stdout.contains("ping4-ok") && out.stdout.contains("ping6-ok"), "{}", out.stdout);
    // And the namespace has them back, with nothing of the VM's left.
    let after = in_netns(&ns.0, &format!("{config}; ip -o link show"));
    for want in ["10.123.0.2/24", "default via 10.123.0.1", "fd00:123::2/64", "default via fd00:123::1"] {
        assert!(after.contains(want), "{want}: {after}");
    }
    assert!(!after.contains("strata-br") && !after.contains("strata-tap"), "{after}");
    assert!(processes_mentioning(&b.root.path().to_string_lossy()).is_empty(), "QEMU left behind");
    assert!(b.leftover_state().is_empty(), "{:?}", b.leftover_state());
}
