//! `linux.seccomp`: the filter the container process runs under, checked from
//! inside the container by the syscalls it lets through or refuses.

use serde_json::{json, Value};
use strata_tests::*;

fn with_filter(args: &[&str], filter: Value) -> Bundle {
    let mut b = Bundle::new(args);
    b.config["linux"]["seccomp"] = filter;
    b
}

#[test]
fn errno_rules_refuse_the_named_syscalls_with_their_errno() {
    let mut b = with_filter(
        &["true"],
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                // An unknown name is skipped, as runc does; the rest of the rule holds.
                { "names": ["mkdir", "mkdirat", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 },
                { "names": ["rmdir"], "action": "SCMP_ACT_ERRNO" }
            ]
        }),
    );
    let out = b.sh("mkdir /tmp/d 2>&1; echo mkdir=$?; rmdir /tmp 2>&1; echo rmdir=$?; echo still-running");
    let text = out.ok();
    assert!(text.contains("Permission denied") && text.contains("mkdir=1"), "{text}");
    // Without errnoRet, ERRNO means EPERM.
    assert!(text.contains("Operation not permitted") && text.contains("rmdir=1"), "{text}");
    assert!(text.contains("still-running"), "{text}");
}

#[test]
fn argument_conditions_select_calls() {
    // kill(pid, 0) is refused, other signals pass (EQ on argument 1); open with
    // O_CREAT is refused, plain opens pass (MASKED_EQ on argument 2 of openat).
    let mut b = with_filter(
        &["true"],
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                { "names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                  "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }] },
                { "names": ["openat", "open"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30,
                  "args": [{ "index": 2, "value": libc::O_CREAT, "valueTwo": libc::O_CREAT, "op": "SCMP_CMP_MASKED_EQ" }] },
                // Two comparisons of one argument: either matching refuses the call
                // (signals to a pid that does not exist: ESRCH when let through).
                { "names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 7,
                  "args": [{ "index": 1, "value": 5, "op": "SCMP_CMP_EQ" }, { "index": 1, "value": 7, "op": "SCMP_CMP_EQ" }] }
            ]
        }),
    );
    let out = b.sh("kill -0 $$ 2>/dev/null; echo sig0=$?; kill -CONT $$; echo cont=$?; \
         head -c1 /etc/passwd | wc -c; echo x > /tmp/new 2>/dev/null; echo create=$?; \
         for s in 5 6 7; do kill -$s 999999 2>&1 | grep -q 'too long' && echo refused$s || echo passed$s; done");
    assert_eq!(out.ok(), "sig0=1\ncont=0\n1\ncreate=1\nrefused5\npassed6\nrefused7\n");
}

#[test]
fn comparison_operators() {
    // kill(2) of a pid that does not exist with signals 3, 4 and 5 against a bound
    // of 4: each operator refuses exactly the calls it matches (errno 7, E2BIG,
    // marks a refusal; a call let through fails with ESRCH).
    let ops = [
        ("SCMP_CMP_NE", [true, false, true]),
        ("SCMP_CMP_LT", [true, false, false]),
        ("SCMP_CMP_LE", [true, true, false]),
        ("SCMP_CMP_GE", [false, true, true]),
        ("SCMP_CMP_GT", [false, false, true]),
    ];
    for (op, expect) in ops {
        let mut b = with_filter(
            &["true"],
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 7,
                               "args": [{ "index": 1, "value": 4, "op": op }] }]
            }),
        );
        let out = b.sh("for s in 3 4 5; do kill -$s 999999 2>&1 | grep -q 'too long' && echo refused || echo ok; done");
        let want: String = expect.iter().map(|r| if *r { "refused\n" } else { "ok\n" }).collect();
        assert_eq!(out.ok(), want, "operator {op}");
    }
}

#[test]
fn kill_process_action_ends_the_container_with_sigsys() {
    let mut b = with_filter(
        &["true"],
        json!({ "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS" }] }),
    );
    let out = b.sh("echo before; echo $PPID; echo after");
    assert_eq!(out.code, 128 + libc::SIGSYS, "{out:?}");
    assert!(!out.stdout.contains("after"), "{out:?}");
}

#[test]
fn allowlist_with_errno_default() {
    if !is_strata() {
        return skip("allowlist_with_errno_default", "runc makes more syscalls after loading the filter (fstatfs)");
    }
    // The shape of real profiles: refuse everything but what is listed.
    let allowed = [
        "execve",
        "brk",
        "mmap",
        "munmap",
        "mprotect",
        "arch_prctl",
        "set_tid_address",
        "exit_group",
        "exit",
        "write",
        "writev",
        "read",
        "getpid",
        "getppid",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "ioctl",
        "fcntl",
        "close",
        "open",
        "openat",
        "newfstatat",
        "fstat",
        "stat",
        "lstat",
        "uname",
        "prctl",
        "sigaltstack",
        "getcwd",
        "dup2",
        "dup3",
        "wait4",
        "clone",
        "fork",
        "vfork",
        "set_robust_list",
        "rseq",
        "prlimit64",
        "getrandom",
        "access",
        "faccessat",
        "faccessat2",
    ];
    let mut b = with_filter(
        &["true"],
        json!({ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                "syscalls": [{ "names": allowed.as_slice(), "action": "SCMP_ACT_ALLOW" }] }),
    );
    let out = b.sh("echo hello; mkdir /tmp/x 2>&1; hostname x 2>&1; true");
    let text = out.ok();
    assert!(text.starts_with("hello\n"), "{text}");
    // ENOSYS (38) from the default for everything not listed.
    assert!(text.matches("Function not implemented").count() >= 2, "{text}");
}

#[test]
fn exec_runs_under_the_container_filter() {
    let b = with_filter(
        &["sleep", "100"],
        json!({ "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 }] }),
    );
    b.create("scexec").ok();
    b.rt(&["start", "scexec"]).ok();
    let out = b.rt(&["exec", "scexec", "sh", "-c", "mkdir /tmp/e 2>&1; echo rc=$?"]);
    let text = out.ok();
    assert!(text.contains("Permission denied") && text.contains("rc=1"), "{text}");
    b.rt(&["delete", "--force", "scexec"]).ok();
}

#[test]
fn filter_flags() {
    if !is_strata() {
        return skip("filter_flags", "runc 1.1.5 supports no seccomp flags");
    }
    let mut b = with_filter(
        &["true"],
        json!({ "defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
                "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }] }),
    );
    let out = b.sh("mkdir /tmp/f 2>/dev/null; echo rc=$?");
    assert_eq!(out.ok(), "rc=1\n");
}

#[test]
fn notify_hands_the_listener_a_descriptor_that_answers_syscalls() {
    use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
    let sock_dir = TempDir::new("listener");
    let sock = sock_dir.path().join("seccomp.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    // The listener: receives the container process state and the descriptor, then
    // answers getppid() with 4242.
    let agent = std::thread::spawn(move || -> Result<Value, String> {
        let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
        let (state, fd) = receive_seccomp_listener(&conn)?;
        let state: Value = serde_json::from_slice(&state).map_err(|e| e.to_string())?;
        let req = ScmpNotifReq::receive(fd).map_err(|e| e.to_string())?;
        ScmpNotifResp::new_val(req.id, 4242, ScmpNotifRespFlags::empty()).respond(fd).map_err(|e| e.to_string())?;
        // SAFETY: the descriptor came from the message and is ours to close.
        unsafe { libc::close(fd) };
        Ok(state)
    });
    let mut b = with_filter(
        &["true"],
        json!({ "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": sock, "listenerMetadata": "answer=4242",
                "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" }] }),
    );
    let out = b.sh("echo ppid=$PPID");
    assert_eq!(out.ok(), "ppid=4242\n");
    let state = agent.join().expect("listener thread").expect("listener");
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], json!("answer=4242"));
    assert!(state["pid"].as_i64().is_some_and(|p| p > 0), "{state}");
    assert!(state["state"]["id"].as_str().is_some_and(|id| id.starts_with("sh")), "{state}");
    assert_eq!(state["state"]["status"], json!("creating"));
}

#[test]
fn bad_filters_fail_create_with_the_field_named() {
    let cases = [
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" }] }),
            "listenerPath",
        ),
        (json!({ "defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/tmp/x.sock" }), "defaultAction"),
        (json!({ "defaultAction": "SCMP_ACT_DANCE" }), "SCMP_ACT_DANCE"),
        (json!({ "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"] }), "SCMP_ARCH_VAX"),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"] }),
            "SECCOMP_FILTER_FLAG_FAST",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ERRNO",
                 "args": [{ "index": 9, "value": 1, "op": "SCMP_CMP_EQ" }] }] }),
            "index",
        ),
        (
            json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ERRNO",
                 "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_ALMOST" }] }] }),
            "SCMP_CMP_ALMOST",
        ),
    ];
    for (i, (filter, needle)) in cases.into_iter().enumerate() {
        let b = with_filter(&["true"], filter);
        let id = format!("badsc{i}");
        let err = b.create(&id).failed().to_string();
        assert!(!is_strata() || err.contains(needle), "case {i}: {err}");
        assert!(b.leftover_state().is_empty(), "case {i} left state behind");
    }
}

#[test]
fn every_action_does_what_it_says() {
    // mkdir(2) under each action; kills end the process with SIGSYS.
    let sigsys = 128 + libc::SIGSYS;
    let cases = [
        ("SCMP_ACT_KILL", sigsys, ""),
        ("SCMP_ACT_KILL_THREAD", sigsys, ""),
        ("SCMP_ACT_KILL_PROCESS", sigsys, ""),
        ("SCMP_ACT_TRAP", sigsys, ""),
        ("SCMP_ACT_LOG", 0, ""),
        // No tracer: the call fails with ENOSYS.
        ("SCMP_ACT_TRACE", 1, "Function not implemented"),
        ("SCMP_ACT_ERRNO", 1, "Operation not permitted"),
    ];
    for (i, (action, code, text)) in cases.into_iter().enumerate() {
        let mut b = Bundle::new(&["mkdir", "/tmp/made"]);
        b.config["linux"]["seccomp"] = json!({ "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": action }] });
        b.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs" }));
        let out = b.run(&format!("act{i}"));
        assert_eq!(out.code, code, "{action}: {out:?}");
        assert!(out.stderr.contains(text), "{action}: {out:?}");
    }
}
