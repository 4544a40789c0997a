//! New and joined namespaces, user namespace mappings, time namespace offsets.

use serde_json::json;
use strata_tests::*;

fn host_ns(name: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{name}")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

#[test]
fn namespaces_are_new() {
    let mut b = Bundle::new(&["true"]);
    let names = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];
    let script: String = names.iter().map(|n| format!("readlink /proc/self/ns/{n}; ")).collect();
    let out = b.sh(&script);
    let inside: Vec<&str> = out.ok().lines().collect();
    assert_eq!(inside.len(), names.len());
    for (n, ns) in names.iter().zip(&inside) {
        assert_ne!(*ns, host_ns(n), "{n} namespace is the host's");
    }
    // pid 1 inside is the container's process.
    assert_eq!(b.sh("echo $$").ok(), "1\n");
}

#[test]
fn namespaces_omitted_are_shared_with_the_host() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["namespaces"] = json!([{ "type": "mount" }, { "type": "pid" }, { "type": "uts" }]);
    let out = b.sh("readlink /proc/self/ns/net; readlink /proc/self/ns/ipc");
    assert_eq!(out.ok(), format!("{}\n{}\n", host_ns("net"), host_ns("ipc")));
}

#[test]
fn namespaces_joined_by_path() {
    let a = Bundle::new(&["sleep", "100"]);
    a.create("owner").ok();
    let pid = a.state("owner").expect("state")["pid"].as_i64().expect("pid");
    let target_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns").to_string_lossy().into_owned();
    let target_ipc = std::fs::read_link(format!("/proc/{pid}/ns/ipc")).expect("ns").to_string_lossy().into_owned();
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["namespaces"] = json!([
        { "type": "mount" }, { "type": "pid" }, { "type": "uts" },
        { "type": "network", "path": format!("/proc/{pid}/ns/net") },
        { "type": "ipc", "path": format!("/proc/{pid}/ns/ipc") }
    ]);
    let out = b.sh("readlink /proc/self/ns/net; readlink /proc/self/ns/ipc");
    assert_eq!(out.ok(), format!("{target_net}\n{target_ipc}\n"));
}

#[test]
fn user_namespace_with_mappings() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["namespaces"].as_array_mut().expect("array").push(json!({ "type": "user" }));
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]);
    // sysfs of the host cannot be mounted by the container's root: drop it.
    let mounts = b.config["mounts"].as_array_mut().expect("array");
    mounts.retain(|m| m["destination"] != "/sys");
    let out = b.sh("id -u; cat /proc/self/uid_map | tr -s ' '; readlink /proc/self/ns/user");
    let text = out.ok().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1].trim(), "0 100000 65536");
    assert_ne!(lines[2], host_ns("user"));
}

#[test]
fn time_namespace_offsets() {
    if !is_strata() {
        return skip("time_namespace_offsets", "runc 1.1.5 predates time namespaces");
    }
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["namespaces"].as_array_mut().expect("array").push(json!({ "type": "time" }));
    let year = 365 * 86400;
    b.config["linux"]["timeOffsets"] = json!({ "boottime": { "secs": year, "nanosecs": 0 } });
    let out = b.sh("cut -d. -f1 /proc/uptime");
    let uptime: i64 = out.ok().trim().parse().expect("uptime");
    assert!(uptime >= year, "uptime {uptime} lacks the offset");
}

#[test]
fn hostname_domainname_and_sysctl() {
    let mut b = Bundle::new(&["true"]);
    b.config["hostname"] = json!("box-1");
    // runc 1.1.5 predates domainname support.
    let domain = if is_strata() { "example.test" } else { "(none)" };
    if is_strata() {
        b.config["domainname"] = json!(domain);
    }
    b.config["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1", "kernel.shmmni": "1234" });
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    let out = b.sh("hostname; cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni");
    assert_eq!(out.ok(), format!("box-1\n{domain}\n1\n1234\n"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default(),
        host_fwd,
        "host sysctl changed"
    );
}

#[test]
fn exec_joins_the_user_namespace() {
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["linux"]["namespaces"].as_array_mut().expect("array").push(json!({ "type": "user" }));
    b.config["linux"]["uidMappings"] = json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
    b.config["linux"]["gidMappings"] = json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]);
    b.config["mounts"].as_array_mut().expect("array").retain(|m| m["destination"] != "/sys");
    b.create("uexec").ok();
    b.rt(&["start", "uexec"]).ok();
    let pid = b.state("uexec").expect("state")["pid"].as_i64().expect("pid");
    let init_user = std::fs::read_link(format!("/proc/{pid}/ns/user")).expect("ns");
    let out =
        b.rt(&["exec", "uexec", "sh", "-c", "id -u; readlink /proc/self/ns/user; touch /tmp/x 2>/dev/null || echo ro"]);
    assert_eq!(out.ok(), format!("0\n{}\nro\n", init_user.to_string_lossy()));
    // Seen from the host, the exec'd process runs as the mapped uid.
    let pidfile = b.dir.path().join("e.pid");
    b.rt(&["exec", "--detach", "--pid-file", &pidfile.to_string_lossy(), "uexec", "sleep", "50"]).ok();
    let epid = std::fs::read_to_string(&pidfile).expect("pid").trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{epid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_string();
    assert!(uid_line.starts_with("Uid:\t200000\t"), "{uid_line}");
}
