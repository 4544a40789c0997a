//! The OCI features document (runtime-spec features.md): what this build
//! supports on this host, so a caller can decide before it writes a config.
//! `strata features` prints it; the shim's `-info` carries it to containerd.

use crate::{lsm, rootfs, seccomp};

/// The version of the libseccomp this build is linked with ("2.5.4").
pub fn libseccomp_version() -> Option<String> {
    libseccomp::ScmpVersion::current().ok().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
}

/// The features document as JSON.
pub fn document() -> serde_json::Value {
    let mut caps: Vec<caps::Capability> = caps::runtime::thread_all_supported().into_iter().collect();
    caps.sort_by_key(|c| c.index());
    let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    let kernel_actions = seccomp::kernel_actions();
    // The config's names of the actions the running kernel knows.
    let actions: Vec<&str> = seccomp::ACTIONS
        .iter()
        .copied()
        .filter(|a| {
            let k = match *a {
                "SCMP_ACT_KILL" => "kill_thread",
                "SCMP_ACT_NOTIFY" => "user_notif",
                other => return kernel_actions.iter().any(|k| k == &other["SCMP_ACT_".len()..].to_lowercase()),
            };
            kernel_actions.iter().any(|x| x == k)
        })
        .collect();
    let archs: Vec<&str> = seccomp::ARCHITECTURES.iter().copied().filter(|a| seccomp::arch_known(a)).collect();
    let known_flags: Vec<&str> = seccomp::FLAGS.iter().map(|(n, _)| *n).collect();
    let supported_flags: Vec<&str> =
        seccomp::FLAGS.iter().filter(|(_, bit)| seccomp::kernel_supports_flag(*bit)).map(|(n, _)| *n).collect();
    let mut annotations = serde_json::Map::new();
    if let Some(v) = libseccomp_version() {
        annotations.insert("io.github.seccomp.libseccomp.version".into(), v.into());
    }
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": rootfs::options::KNOWN,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": false, "v2": true, "systemd": true, "systemdUser": true, "rdma": true },
            "seccomp": {
                "enabled": true,
                "actions": actions,
                "operators": seccomp::OPERATORS,
                "archs": archs,
                "knownFlags": known_flags,
                "supportedFlags": supported_flags,
            },
            "apparmor": { "enabled": lsm::apparmor_enabled() },
            "selinux": { "enabled": lsm::selinux_enabled() },
            "intelRdt": { "enabled": true, "schemata": true, "monitoring": true },
            "memoryPolicy": {
                "modes": crate::process::policies::MODES,
                "flags": crate::process::policies::FLAGS,
            },
            "mountExtensions": { "idmap": { "enabled": crate::sys::mount_setattr_known() } },
            "netDevices": { "enabled": true },
        },
        "annotations": annotations,
        "potentiallyUnsafeConfigAnnotations": [],
    })
}
