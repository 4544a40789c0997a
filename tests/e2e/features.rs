//! `features` tells the truth about this build on this host, and the LSM fields
//! are refused where the host cannot apply them.

use serde_json::{json, Value};
use strata_tests::*;

fn features() -> Value {
    let out = run_to_files(std::process::Command::new(runtime_bin()).arg("features"));
    serde_json::from_str(out.ok()).expect("features JSON")
}

#[test]
fn features_reports_what_this_build_and_host_support() {
    if !is_strata() {
        return skip("features_reports_what_this_build_and_host_support", "checks strata's own answers");
    }
    let f = features();
    assert_eq!(f["ociVersionMax"], json!("1.3.0"));
    let ns: Vec<&str> =
        f["linux"]["namespaces"].as_array().expect("namespaces").iter().filter_map(|v| v.as_str()).collect();
    for want in ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"] {
        assert!(ns.contains(&want), "namespace {want} missing: {ns:?}");
    }
    // Every capability the running kernel knows, no more.
    let last: usize =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").expect("cap_last_cap").trim().parse().expect("number");
    assert_eq!(f["linux"]["capabilities"].as_array().expect("caps").len(), last + 1);
    // Seccomp actions are the ones the kernel offers.
    let avail = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let actions = f["linux"]["seccomp"]["actions"].as_array().expect("actions").clone();
    assert_eq!(actions.contains(&json!("SCMP_ACT_NOTIFY")), avail.contains("user_notif"));
    assert_eq!(actions.contains(&json!("SCMP_ACT_LOG")), avail.contains("log"));
    assert_eq!(f["linux"]["seccomp"]["operators"].as_array().expect("ops").len(), 7);
    // A flag reported as supported must be accepted by create, and one left out
    // refused with its name.
    let known: Vec<String> = serde_json::from_value(f["linux"]["seccomp"]["knownFlags"].clone()).expect("flags");
    let supported: Vec<String> =
        serde_json::from_value(f["linux"]["seccomp"]["supportedFlags"].clone()).expect("flags");
    for (i, flag) in known.iter().enumerate() {
        let mut b = Bundle::new(&["true"]);
        b.config["linux"]["seccomp"] = json!({ "defaultAction": "SCMP_ACT_ALLOW", "flags": [flag] });
        let out = b.run(&format!("flag{i}"));
        if supported.contains(flag) {
            out.ok();
        } else {
            assert!(out.failed().contains(flag.as_str()), "{out:?}");
        }
    }
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'));
    assert_eq!(f["linux"]["apparmor"]["enabled"], json!(apparmor));
    assert_eq!(f["linux"]["selinux"]["enabled"], json!(std::path::Path::new("/sys/fs/selinux/enforce").exists()));
    assert_eq!(f["linux"]["cgroup"]["v2"], json!(true));
    // (mount_setattr exists since Linux 5.12.)
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], json!(true));
}

#[test]
fn every_reported_mount_option_is_accepted() {
    if !is_strata() {
        return skip("every_reported_mount_option_is_accepted", "checks strata's own answers");
    }
    let f = features();
    let options: Vec<String> = serde_json::from_value(f["mountOptions"].clone()).expect("options");
    assert!(options.len() > 40, "{options:?}");
    // All on one bind mount of a scratch directory (the later option of a pair wins).
    let scratch = TempDir::new("opts");
    let mut b = Bundle::new(&["true"]);
    // (idmap and ridmap need mappings: tests/e2e/oci13.rs.)
    let skip_opts = ["remount", "tmpcopyup", "idmap", "ridmap"];
    let opts: Vec<&String> = options.iter().filter(|o| !skip_opts.contains(&o.as_str())).collect();
    b.config["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/scratch", "type": "bind", "source": scratch.path(), "options": opts
    }));
    b.run("opts").ok();
}

#[test]
fn lsm_labels_the_host_cannot_apply_are_refused() {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'));
    let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: [(&str, bool, Edit, &str); 3] = [
        (
            "apparmor",
            apparmor,
            Box::new(|c| c["process"]["apparmorProfile"] = json!("strata-test")),
            "process.apparmorProfile: AppArmor is not enabled",
        ),
        (
            "selinux",
            selinux,
            Box::new(|c| c["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0")),
            "process.selinuxLabel: SELinux is not enabled",
        ),
        (
            "mountlabel",
            selinux,
            Box::new(|c| c["linux"]["mountLabel"] = json!("system_u:object_r:container_file_t:s0")),
            "linux.mountLabel: SELinux is not enabled",
        ),
    ];
    for (name, host_has_it, edit, want) in cases {
        if host_has_it {
            skip("lsm_labels_the_host_cannot_apply_are_refused", &format!("this host runs {name}"));
            continue;
        }
        let mut b = Bundle::new(&["true"]);
        edit(&mut b.config);
        let out = b.create(name);
        let err = out.failed();
        if is_strata() {
            assert!(err.contains(want), "{name}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
        assert!(b.leftover_state().is_empty(), "{name}");
    }
    // exec refuses them the same way.
    if !apparmor && is_strata() {
        let b = Bundle::new(&["sleep", "100"]);
        b.create("lsmexec").ok();
        b.rt(&["start", "lsmexec"]).ok();
        let proc_json = b.dir.path().join("process.json");
        let mut p = base_config(&["true"])["process"].clone();
        p["apparmorProfile"] = json!("strata-test");
        std::fs::write(&proc_json, p.to_string()).expect("write");
        let out = b.rt(&["exec", "--process", &proc_json.to_string_lossy(), "lsmexec"]);
        assert!(out.failed().contains("AppArmor is not enabled"), "{out:?}");
        b.rt(&["delete", "--force", "lsmexec"]).ok();
    }
}
