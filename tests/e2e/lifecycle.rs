//! create → created → running → stopped → deleted, and the errors in between.

use serde_json::json;
use strata_tests::*;

#[test]
fn hello_bundle_prints_its_greeting() {
    let b = Bundle::new(&["true"]);
    let out = b.rt(&["run", "--bundle", &repo_root().join("bundles/hello").to_string_lossy(), "hello"]);
    assert_eq!(out.ok(), "Hello from a Strata container!\n");
    assert!(b.leftover_state().is_empty(), "run must delete the container");
}

#[test]
fn lifecycle_states_and_state_json() {
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["annotations"] = json!({ "org.example.owner": "e2e" });
    b.create("life").ok();
    let st = b.state("life").expect("state after create");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "life");
    let pid = st["pid"].as_i64().expect("pid");
    assert!(pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(st["bundle"], json!(b.dir.path().to_string_lossy()));
    assert_eq!(st["annotations"]["org.example.owner"], "e2e");
    for key in ["ociVersion", "rootfs", "created"] {
        assert!(st.get(key).is_some(), "state lacks {key}: {st}");
    }
    // The process waits for start: it is not running sleep yet.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_ne!(comm.trim(), "sleep");

    b.rt(&["start", "life"]).ok();
    assert_eq!(b.status("life"), "running");
    b.rt(&["start", "life"]).failed();
    let err = b.rt(&["delete", "life"]).failed().to_string();
    assert!(err.contains("running"), "{err}");

    b.rt(&["kill", "life", "KILL"]).ok();
    for _ in 0..100 {
        if b.status("life") == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(b.status("life"), "stopped");
    b.rt(&["kill", "life", "TERM"]).failed();
    b.rt(&["delete", "life"]).ok();
    b.rt(&["state", "life"]).failed();
    assert!(b.leftover_state().is_empty());
}

#[test]
fn duplicate_id_fails_and_leaves_the_first_container_alone() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("dup").ok();
    let pid = b.state("dup").expect("state")["pid"].clone();
    let err = b.create("dup").failed().to_string();
    assert!(err.contains("already exists"), "{err}");
    let st = b.state("dup").expect("state survives");
    assert_eq!(st["status"], "created");
    assert_eq!(st["pid"], pid);
    b.rt(&["delete", "dup"]).ok();
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("cdel").ok();
    let pid = b.state("cdel").expect("state")["pid"].as_i64().expect("pid");
    b.rt(&["delete", "cdel"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z")).unwrap_or(false);
    assert!(!alive, "init {pid} survived delete");
}

#[test]
fn kill_accepts_names_and_numbers() {
    let b = Bundle::new(&["sleep", "100"]);
    for (i, sig) in ["SIGUSR1", "usr1", "10"].iter().enumerate() {
        let id = format!("k{i}");
        b.create(&id).ok();
        b.rt(&["start", &id]).ok();
        b.rt(&["kill", &id, sig]).ok();
        b.rt(&["delete", "--force", &id]).ok();
    }
    b.create("kbad").ok();
    let err = b.rt(&["kill", "kbad", "NOSUCHSIG"]).failed().to_string();
    assert!(err.to_lowercase().contains("signal"), "{err}");
}

#[test]
fn list_shows_containers() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("la").ok();
    b.create("lb").ok();
    let q = b.rt(&["list", "-q"]);
    assert_eq!(q.ok(), "la\nlb\n");
    let j: serde_json::Value = serde_json::from_str(b.rt(&["list", "--format", "json"]).ok()).expect("json");
    assert_eq!(j.as_array().map(|a| a.len()), Some(2));
    assert_eq!(j[0]["status"], "created");
}

#[test]
fn run_detach_and_keep() {
    let b = Bundle::new(&["sleep", "100"]);
    b.write_config();
    let bd = b.dir.path().to_string_lossy().into_owned();
    b.rt(&["run", "--detach", "--bundle", &bd, "det"]).ok();
    assert_eq!(b.status("det"), "running");
    b.rt(&["delete", "--force", "det"]).ok();

    let mut b = Bundle::new(&["true"]);
    b.config["process"]["args"] = json!(["sh", "-c", "exit 3"]);
    b.write_config();
    let bd = b.dir.path().to_string_lossy().into_owned();
    assert_eq!(b.rt(&["run", "--keep", "--bundle", &bd, "kept"]).code, 3);
    assert_eq!(b.status("kept"), "stopped");
    b.rt(&["delete", "kept"]).ok();
}

#[test]
fn pid_file_holds_the_init_pid() {
    let b = Bundle::new(&["sleep", "100"]);
    b.write_config();
    let pidfile = b.dir.path().join("init.pid");
    let bd = b.dir.path().to_string_lossy().into_owned();
    b.rt(&["create", "--bundle", &bd, "--pid-file", &pidfile.to_string_lossy(), "pf"]).ok();
    let written = std::fs::read_to_string(&pidfile).expect("pid file");
    assert_eq!(written.trim(), b.state("pf").expect("state")["pid"].to_string());
}

#[test]
fn spec_writes_a_config_that_runs() {
    let d = TempDir::new("spec");
    let b = Bundle::new(&["true"]);
    b.rt(&["spec", "--bundle", &d.path().to_string_lossy()]).ok();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("config.json")).expect("config")).expect("json");
    assert_eq!(config["process"]["args"], json!(["sh"]));
    // A second spec must not overwrite it.
    b.rt(&["spec", "--bundle", &d.path().to_string_lossy()]).failed();
    // Run it without a terminal: the default device rules must not stop it.
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(["echo", "from-spec"]);
    config["root"]["path"] = json!(shared_rootfs());
    std::fs::write(d.path().join("config.json"), config.to_string()).expect("write");
    let out = b.rt(&["run", "--bundle", &d.path().to_string_lossy(), "fromspec"]);
    assert_eq!(out.ok(), "from-spec\n");
}

/// A `start` that cannot finish (the init stopped before it reads the gate)
/// holds no lock: `delete --force` goes through, and the start then fails.
#[test]
fn a_stuck_start_does_not_block_delete() {
    if !is_strata() {
        return skip("a_stuck_start_does_not_block_delete", "runc's start does not wait for the process");
    }
    let b = Bundle::new(&["true"]);
    b.create("stuck").ok();
    let pid = b.state("stuck").expect("state")["pid"].as_i64().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGSTOP).expect("stop");
    // Stopped for real before the gate opens: a process woken by the stop
    // takes a byte that arrived meanwhile before it stops.
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
            .unwrap_or(false)
    };
    let since = std::time::Instant::now();
    while !stopped() {
        assert!(since.elapsed() < std::time::Duration::from_secs(10), "the init did not stop");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut start = b.cmd(&["start", "stuck"]).stdin(std::process::Stdio::null()).spawn().expect("spawn start");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(start.try_wait().expect("try_wait").is_none(), "start returned while the init was stopped");
    // A second start is refused at once rather than queued.
    assert!(b.rt(&["start", "stuck"]).failed().contains("already being started"));
    b.rt(&["delete", "--force", "stuck"]).ok();
    let status = start.wait().expect("wait start");
    assert!(!status.success());
    assert!(b.leftover_state().is_empty());
}
