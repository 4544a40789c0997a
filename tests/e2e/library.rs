//! The library serves multi-threaded callers: containers created from several
//! threads of one process at once all run.

use std::path::Path;
use strata_runtime::{Container, CreateOptions};
use strata_tests::*;

#[test]
fn concurrent_creates_from_threads() {
    if !is_strata() {
        return skip("concurrent_creates_from_threads", "uses the strata library directly");
    }
    let b = Bundle::new(&["sh", "-c", "exit 5"]);
    b.write_config();
    let root = b.root.path().to_path_buf();
    let bundle = b.dir.path().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (root, bundle) = (root.clone(), bundle.clone());
            std::thread::spawn(move || run_one(&root, &bundle, &format!("t{i}")))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), 5);
    }
    assert!(b.leftover_state().is_empty());
}

fn run_one(root: &Path, bundle: &Path, id: &str) -> i32 {
    let opts = CreateOptions { bundle: bundle.to_path_buf(), ..Default::default() };
    let st = Container::create(root, id, &opts).expect("create");
    let c = Container::load(root, id).expect("load");
    c.start().expect("start");
    // The init is a child of this process (CLONE_PARENT): reap it here.
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(st.pid), None).expect("wait");
    c.delete(false).expect("delete");
    match status {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("{other:?}"),
    }
}

/// A library caller (a shim, the function platform) gives each container and
/// exec'd process its own stdin, stdout and stderr, whatever its own are.
#[test]
fn per_container_stdio() {
    use std::os::fd::AsRawFd;
    use strata_runtime::ExecOptions;
    if !is_strata() {
        return skip("per_container_stdio", "uses the strata library directly");
    }
    let b = Bundle::new(&["sh", "-c", "read line; echo \"out:$line\"; echo err >&2; sleep 100"]);
    b.write_config();
    let files = TempDir::new("stdio");
    std::fs::write(files.path().join("in"), "hello\n").expect("write");
    let open = |name: &str, write: bool| {
        std::fs::OpenOptions::new().read(!write).write(write).create(write).open(files.path().join(name)).expect("open")
    };
    let (stdin, stdout, stderr) = (open("in", false), open("out", true), open("err", true));
    let opts = CreateOptions {
        bundle: b.dir.path().to_path_buf(),
        stdio: Some([stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()]),
        ..Default::default()
    };
    let root = b.root.path();
    let st = Container::create(root, "stdio", &opts).expect("create");
    let c = Container::load(root, "stdio").expect("load");
    c.start().expect("start");
    let wait_for = |name: &str, want: &str| {
        for _ in 0..100 {
            if std::fs::read_to_string(files.path().join(name)).unwrap_or_default() == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{name}: {:?}", std::fs::read_to_string(files.path().join(name)));
    };
    wait_for("out", "out:hello\n");
    wait_for("err", "err\n");
    let exec_out = open("exec-out", true);
    let process: oci_spec::runtime::Process =
        serde_json::from_value(base_config(&["echo", "from-exec"])["process"].clone()).expect("process");
    let eopts = ExecOptions {
        stdio: Some([stdin.as_raw_fd(), exec_out.as_raw_fd(), exec_out.as_raw_fd()]),
        ..Default::default()
    };
    let pid = c.exec(&process, &eopts).expect("exec");
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).expect("wait exec");
    wait_for("exec-out", "from-exec\n");
    c.delete(true).expect("delete");
    // The init is our child (CLONE_PARENT): reap it.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(st.pid), None);
}

/// A long-lived caller (a shim) that updates a container's device rules to
/// the ones it already has reuses its loaded program, which is attached
/// already: the update keeps it (the kernel refuses one program attached twice).
#[test]
fn updating_device_rules_to_the_same_rules_in_one_process() {
    if !is_strata() {
        return skip("updating_device_rules_to_the_same_rules_in_one_process", "uses the strata library directly");
    }
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["resources"] = serde_json::json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    b.write_config();
    let root = b.root.path();
    let opts = CreateOptions { bundle: b.dir.path().to_path_buf(), ..Default::default() };
    let st = Container::create(root, "samedev", &opts).expect("create");
    let c = Container::load(root, "samedev").expect("load");
    let same: oci_spec::runtime::LinuxResources =
        serde_json::from_value(serde_json::json!({ "devices": [{ "allow": false, "access": "rwm" }] })).expect("json");
    for round in 0..2 {
        c.update(&same).unwrap_or_else(|e| panic!("update {round}: {e}"));
    }
    let other: oci_spec::runtime::LinuxResources = serde_json::from_value(serde_json::json!({ "devices": [
        { "allow": false, "access": "rwm" }, { "allow": true, "type": "b", "major": 7, "minor": 0, "access": "r" }
    ] }))
    .expect("json");
    c.update(&other).expect("update to other rules");
    c.update(&same).expect("and back");
    c.delete(true).expect("delete");
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(st.pid), None);
    assert!(b.leftover_state().is_empty());
}
