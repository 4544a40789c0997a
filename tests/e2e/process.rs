//! The container process: exit codes, stdio, env, cwd, user, rlimits, scheduling.

use serde_json::json;
use std::io::Write;
use std::process::Stdio;
use strata_tests::*;

#[test]
fn exit_codes_propagate() {
    let mut b = Bundle::new(&["true"]);
    assert_eq!(b.sh("exit 42").code, 42);
    // A container killed by a signal reports 128+N, like a shell.
    b.config["process"]["args"] = json!(["sleep", "100"]);
    b.write_config();
    let mut child = b.cmd(&["run", "--bundle", &b.dir.path().to_string_lossy(), "sig"]).spawn().expect("spawn");
    for _ in 0..200 {
        if b.status("sig") == "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    b.rt(&["kill", "sig", "KILL"]).ok();
    assert_eq!(child.wait().expect("wait").code(), Some(137));
    b.config["process"]["args"] = json!(["false"]);
    assert_eq!(b.run("f").code, 1);
}

#[test]
fn stdio_is_the_callers() {
    let mut b = Bundle::new(&["true"]);
    let out = b.sh("echo to-out; echo to-err >&2");
    assert_eq!(out.stdout, "to-out\n");
    assert!(out.stderr.contains("to-err"), "{out:?}");
    b.config["process"]["args"] = json!(["cat"]);
    b.write_config();
    let mut child = b
        .cmd(&["run", "--bundle", &b.dir.path().to_string_lossy(), "stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"through the pipe\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through the pipe\n");
}

#[test]
fn env_and_cwd() {
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["env"] = json!(["PATH=/bin", "GREETING=hi there"]);
    b.config["process"]["cwd"] = json!("/tmp/made/by/runtime");
    let out = b.sh("echo \"$GREETING\"; pwd; env | sort | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_='");
    assert_eq!(out.ok(), "hi there\n/tmp/made/by/runtime\nGREETING=hi there\nHOME=/root\nPATH=/bin\n");
}

#[test]
fn user_groups_and_umask() {
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1001, "additionalGids": [5, 100], "umask": 63 });
    let out = b.sh("id -u; id -g; cat /proc/self/status | grep ^Groups; umask");
    assert_eq!(out.ok(), "1000\n1001\nGroups:\t5 100 \n0077\n");
}

#[test]
fn rlimits_are_applied() {
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["rlimits"] = json!([
        { "type": "RLIMIT_NOFILE", "hard": 512, "soft": 256 },
        { "type": "RLIMIT_CORE", "hard": 0, "soft": 0 }
    ]);
    let out = b.sh("ulimit -n; ulimit -Hn; ulimit -c");
    assert_eq!(out.ok(), "256\n512\n0\n");
}

#[test]
fn raising_a_hard_rlimit_fails_clearly() {
    let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
    let caps = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = caps
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
        .unwrap_or(0);
    if eff & (1 << 24) != 0 {
        return skip("raising_a_hard_rlimit_fails_clearly", "this process has CAP_SYS_RESOURCE");
    }
    let mut b = Bundle::new(&["true"]);
    let hard = cur.rlim_max + 1;
    b.config["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "hard": hard, "soft": hard }]);
    let out = b.run("rl");
    let err = out.failed();
    if is_strata() {
        assert!(err.contains("RLIMIT_NOFILE"), "{err}");
    }
    assert!(b.leftover_state().is_empty());
}

#[test]
fn oom_score_adj_is_applied() {
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["oomScoreAdj"] = json!(500);
    assert_eq!(b.sh("cat /proc/self/oom_score_adj").ok(), "500\n");
}

#[test]
fn personality_affinity_and_scheduler() {
    if !is_strata() {
        return skip("personality_affinity_and_scheduler", "runc 1.1.5 predates these fields");
    }
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["personality"] = json!({ "domain": "LINUX32" });
    b.config["process"]["execCPUAffinity"] = json!({ "final": "0" });
    b.config["process"]["scheduler"] = json!({ "policy": "SCHED_BATCH", "nice": 5 });
    let out = b.sh("uname -m; grep Cpus_allowed_list /proc/self/status; grep ^policy /proc/self/sched | tr -d ' '; cut -d' ' -f19 /proc/self/stat");
    assert_eq!(out.ok(), "i686\nCpus_allowed_list:\t0\npolicy:3\n5\n");
}

#[test]
fn capabilities_match_the_config() {
    // A non-root user keeps exactly the configured sets across the runtime's exec
    // (root would get its bounding set back as permitted on exec).
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    b.config["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "inheritable": ["CAP_KILL"],
        "ambient": ["CAP_KILL"]
    });
    b.config["process"]["noNewPrivileges"] = json!(false);
    // CHOWN=0, KILL=5, NET_RAW=13: after execve a non-root process keeps its
    // ambient set (KILL) as permitted and effective; CHOWN, not ambient, is gone.
    let out = b.sh("grep -E '^(Cap|NoNewPrivs)' /proc/$$/status");
    let want = "CapInh:\t0000000000000020\nCapPrm:\t0000000000000020\nCapEff:\t0000000000000020\nCapBnd:\t0000000000002021\nCapAmb:\t0000000000000020\nNoNewPrivs:\t0\n";
    assert_eq!(out.ok(), want);
}

#[test]
fn no_new_privileges_is_set() {
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["noNewPrivileges"] = json!(true);
    assert_eq!(b.sh("grep NoNewPrivs /proc/self/status").ok(), "NoNewPrivs:\t1\n");
}

#[test]
fn exec_runs_in_the_container() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("ex").ok();
    b.rt(&["start", "ex"]).ok();
    let out = b.rt(&["exec", "ex", "sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; pwd; id -u"]);
    assert_eq!(out.ok(), "e2e\nsleep 100 \n/\n0\n");
    assert_eq!(b.rt(&["exec", "ex", "sh", "-c", "exit 7"]).code, 7);
    let out = b.rt(&[
        "exec",
        "--cwd",
        "/tmp",
        "--env",
        "X=1",
        "--user",
        "65534:65534",
        "ex",
        "sh",
        "-c",
        "pwd; echo $X; id -u; id -g",
    ]);
    assert_eq!(out.ok(), "/tmp\n1\n65534\n65534\n");
    let out = b.rt(&["exec", "ex", "no-such-program"]);
    assert_eq!(out.code, 255, "{out:?}");
    // Same namespaces as the init.
    let pid = b.state("ex").expect("state")["pid"].as_i64().expect("pid");
    let init_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns");
    let out = b.rt(&["exec", "ex", "readlink", "/proc/self/ns/net"]);
    assert_eq!(out.ok().trim(), init_net.to_string_lossy());
}

#[test]
fn exec_with_a_process_file_and_detach() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("exp").ok();
    b.rt(&["start", "exp"]).ok();
    let marker = b.dir.path().join("process.json");
    let proc_json = json!({
        "terminal": false, "user": { "uid": 0, "gid": 0 }, "cwd": "/",
        "args": ["sh", "-c", "exit 9"], "env": ["PATH=/bin"]
    });
    std::fs::write(&marker, proc_json.to_string()).expect("write");
    assert_eq!(b.rt(&["exec", "--process", &marker.to_string_lossy(), "exp"]).code, 9);
    let pidfile = b.dir.path().join("exec.pid");
    b.rt(&["exec", "--detach", "--pid-file", &pidfile.to_string_lossy(), "exp", "sleep", "50"]).ok();
    let pid: i32 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("pid");
    let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("process alive");
    assert!(cmd.starts_with("sleep"), "{cmd}");
}

#[test]
fn exec_in_a_stopped_container_fails() {
    let b = Bundle::new(&["true"]);
    b.write_config();
    b.rt(&["run", "--keep", "--bundle", &b.dir.path().to_string_lossy(), "exs"]).ok();
    let out = b.rt(&["exec", "exs", "true"]);
    assert_eq!(out.code, 255, "{out:?}");
}

#[test]
fn preserved_fds_reach_the_container() {
    let b = Bundle::new(&["true"]);
    let mut b = b;
    b.config["process"]["args"] = json!(["sh", "-c", "echo via-fd3 >&3"]);
    b.write_config();
    let out_path = b.dir.path().join("fd3.txt");
    // The shell opens fd 3 on the file and execs the runtime with it.
    let script = "exec \"$0\" --root \"$1\" run --preserve-fds 1 --bundle \"$2\" pfd 3>\"$3\"";
    let out = run_to_files(
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg(runtime_bin())
            .arg(b.root.path())
            .arg(b.dir.path())
            .arg(&out_path),
    );
    out.ok();
    assert_eq!(std::fs::read_to_string(&out_path).expect("read"), "via-fd3\n");
}

#[test]
fn unknown_capability_names_are_refused() {
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["capabilities"]["bounding"].as_array_mut().expect("caps").push(json!("CAP_TELEPORT"));
    if !is_strata() {
        // runc warns and drops the name.
        return skip("unknown_capability_names_are_refused", "runc ignores unknown capability names");
    }
    let err = b.create("badcap").failed().to_string();
    assert!(err.contains("CAP_TELEPORT") && err.trim().lines().count() == 1, "{err}");
    assert!(b.leftover_state().is_empty());
}

#[test]
fn exec_cap_adds_a_capability() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create("execcap").ok();
    b.rt(&["start", "execcap"]).ok();
    // CAP_SYS_NICE is bit 23, outside the default set.
    let has_nice = |out: &str| {
        let eff = out.trim().strip_prefix("CapEff:\t").expect("CapEff line");
        u64::from_str_radix(eff, 16).expect("hex") & (1 << 23) != 0
    };
    let plain = b.rt(&["exec", "execcap", "grep", "CapEff", "/proc/self/status"]);
    assert!(!has_nice(plain.ok()), "{plain:?}");
    let added = b.rt(&["exec", "--cap", "CAP_SYS_NICE", "execcap", "grep", "CapEff", "/proc/self/status"]);
    assert!(has_nice(added.ok()), "{added:?}");
    // runc warns and drops an unknown name; strata refuses it.
    if is_strata() {
        let bad = b.rt(&["exec", "--cap", "CAP_TELEPORT", "execcap", "true"]);
        assert!(bad.failed().contains("CAP_TELEPORT"), "{bad:?}");
    }
    b.rt(&["delete", "--force", "execcap"]).ok();
}
