//! Pods through containerd's CRI plugin, the way Kubernetes runs them.
//!
//! containerd 1.6 runs with its CRI plugin, CNI from Debian's plugins (loopback
//! and a bridge with host-local addresses) and locally built pause and busybox
//! images, driven over its gRPC socket by a CRI client (k8s-cri, tonic).
//! Everything runs inside a private systemd (`hack/systemd-rig.sh`), in a
//! network namespace of the suite's own: the bridge, the veths and the pods'
//! namespaces never touch the host's network, and both cgroup drivers are at
//! hand (a pod's cgroup parent is a slice for the systemd driver, a path for
//! cgroupfs).
//!
//! Runtime handlers: `strata`, exactly as README.md writes it (containerd's
//! runc shim, strata as BinaryName, SystemdCgroup = true), the same with
//! SystemdCgroup = false, and `strata-shim`, README's strata shim, with either
//! driver; `runc` handlers give the baseline the pod start latency is compared
//! with. With `STRATA_TEST_RUNTIME=runc` the strata handlers run runc, which
//! validates the suite (strata's own shim is then skipped).
//!
//! The binary runs twice: on the host it boots the rig and runs itself again
//! (`--inner`) inside it, in the new network namespace.

use k8s_cri::v1 as cri;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use strata_tests::{is_root, is_strata, probe_binary, repo_root, runtime_bin, shared_rootfs, skip, SystemdRig};

const BUSYBOX: &str = "docker.io/library/busybox:strata";
const PAUSE: &str = "registry.k8s.io/pause:strata";
const NAMESPACE: &str = "k8s.io";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("cri: test");
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("--inner") {
        let scratch = PathBuf::from(std::env::args().nth(2).expect("scratch dir"));
        std::process::exit(inner(&scratch));
    }
    if !is_root() {
        return skip("cri", "needs root");
    }
    for (path, package) in [
        ("/lib/systemd/systemd", "systemd"),
        ("/usr/bin/dbus-daemon", "dbus"),
        ("/usr/bin/containerd", "containerd"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ] {
        if !Path::new(path).exists() {
            return skip("cri", &format!("{package} is not installed (hack/setup.sh --tests installs it)"));
        }
    }
    // Built here: the rig sees the checkout but cannot run a compiler of the host's for sure.
    let pause = probe_binary("pause");
    let scratch = SystemdRig::scratch("cri");
    std::fs::copy(&pause, scratch.join("pause")).expect("copy pause");
    let code = match SystemdRig::start_with_scratch(&scratch) {
        Ok(rig) => {
            let prefix = rig.prefix();
            let me = std::env::current_exe().expect("own path");
            let status = Command::new(&prefix[0])
                .args(&prefix[1..])
                .args(["unshare", "--net", "--mount", "--"])
                .arg(me)
                .arg("--inner")
                .arg(&scratch)
                .stdin(Stdio::null())
                .status()
                .expect("run the suite inside the rig");
            drop(rig);
            status.code().unwrap_or(1)
        }
        Err(e) => {
            println!("test rig ... FAILED\n{e}");
            1
        }
    };
    SystemdRig::remove_scratch(&scratch);
    std::process::exit(code);
}

/// A runtime handler and a cgroup driver to run pods with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Systemd,
    Cgroupfs,
}

#[derive(Clone, Copy)]
struct Case {
    handler: &'static str,
    driver: Driver,
}

fn sh(cmd: &str) -> (i32, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn must(cmd: &str) -> String {
    let (code, out) = sh(cmd);
    assert_eq!(code, 0, "{cmd}: {out}");
    out
}

/// The ```toml blocks of README.md's Kubernetes section, as written there.
fn readme_toml() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = text.split("\n## Kubernetes").nth(1).expect("README.md has a Kubernetes section");
    toml_in(section.split("\n## ").next().unwrap_or_default())
}

/// The ```toml blocks of a document.
fn toml_blocks(path: &Path) -> Vec<String> {
    toml_in(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn toml_in(section: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in section.lines() {
        match (&mut cur, line) {
            (None, "```toml") => cur = Some(String::new()),
            (Some(b), "```") => {
                blocks.push(std::mem::take(b));
                cur = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// containerd's config: the README's runtimes verbatim (strata installed where
/// the README says, in this mount namespace), then the suite's own settings.
fn containerd_config(scratch: &Path) -> String {
    let blocks = readme_toml();
    assert_eq!(blocks.len(), 2, "README.md's Kubernetes section has the runc-shim and strata-shim snippets");
    // Top-level keys first (TOML puts later ones in the last table), then the
    // README's tables as they are.
    assert!(blocks.iter().all(|b| b.starts_with("version = 2\n")), "each snippet is a whole config file");
    let sock = scratch.join("containerd.sock");
    let mut cfg = format!(
        "version = 2\nroot = {:?}\nstate = {:?}\n",
        scratch.join("containerd/root"),
        scratch.join("containerd/state")
    );
    for b in &blocks {
        for line in b.lines() {
            if line.trim() == "version = 2" {
                continue;
            }
            if !is_strata() && line.contains("BinaryName") {
                // Validating the suite: the runc shim runs runc instead.
                cfg.push_str(&format!("    BinaryName = {:?}\n", runc_binary()));
                continue;
            }
            cfg.push_str(line);
            cfg.push('\n');
        }
    }
    assert!(cfg.contains("runtimes.strata]") && cfg.contains("runtimes.strata-shim]"), "{cfg}");
    let runc = runc_binary();
    let strata_bin = if is_strata() { "/usr/local/bin/strata".to_string() } else { runc.clone() };
    let r = |name: &str, ty: &str, bin: &str, systemd: bool| {
        format!(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}]\n  runtime_type = \"{ty}\"\n  \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{name}.options]\n    BinaryName = {bin:?}\n    \
             SystemdCgroup = {systemd}\n"
        )
    };
    cfg.push_str(&r("strata-cgroupfs", "io.containerd.runc.v2", &strata_bin, false));
    // Pods that ask for a VM by annotation get one: docs/containerd.md's handler.
    for handler in ["strata-vm", "strata-microvm"] {
        let vm = toml_blocks(&repo_root().join("docs/containerd.md"))
            .into_iter()
            .find(|b| b.contains(&format!("runtimes.{handler}]")))
            .unwrap_or_else(|| panic!("docs/containerd.md has the {handler} handler"));
        cfg.extend(vm.lines().filter(|l| l.trim() != "version = 2").map(|l| format!("{l}\n")));
    }
    cfg.push_str(&r("runc", "io.containerd.runc.v2", &runc, true));
    cfg.push_str(&r("runc-cgroupfs", "io.containerd.runc.v2", &runc, false));
    cfg.push_str(&format!(
        "[grpc]\n  address = {sock:?}\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = {PAUSE:?}\n  stream_server_address = \"127.0.0.1\"\n  \
         stream_server_port = \"0\"\n  disable_apparmor = true\n  restrict_oom_score_adj = true\n  enable_selinux = false\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = {cni:?}\n",
        sock = sock.display(),
        cni = scratch.join("cni"),
    ));
    cfg
}

/// Whether this host's cgroup v2 has the cpu controller. containerd gives
/// every sandbox 2 cpu shares, which no runtime can apply without it.
fn cpu_controller() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "cpu")
}

/// Where a pod's cpu shares cannot be applied, runc (which has no setting to
/// let them go) runs through a wrapper that drops them from the bundle.
const RUNC_WRAPPER: &str = "/usr/local/bin/runc-without-cpu-shares";

fn runc_binary() -> String {
    if cpu_controller() {
        which("runc")
    } else {
        RUNC_WRAPPER.into()
    }
}

fn install_runc_wrapper() {
    // A shell and one sed: the baseline's pod start latency barely moves.
    // (containerd writes config.json as Go does, with cpu.shares first.)
    let script = format!(
        r#"#!/bin/sh
# runc without linux.resources.cpu.shares: this host's cgroup v2 has no cpu
# controller, and containerd gives every pod sandbox 2 cpu shares.
prev=
for a in "$@"; do
  if [ "$prev" = --bundle ] || [ "$prev" = -b ]; then
    sed -i 's/"shares":[0-9]*,\{{0,1\}}//' "$a/config.json"
  fi
  prev=$a
done
exec {runc} "$@"
"#,
        runc = which("runc")
    );
    std::fs::write(RUNC_WRAPPER, script).expect("write the runc wrapper");
    std::fs::set_permissions(RUNC_WRAPPER, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
}

fn which(name: &str) -> String {
    let (code, out) = sh(&format!("command -v {name}"));
    assert_eq!(code, 0, "{name} is not installed");
    out.trim().to_string()
}

/// The CNI network: a bridge with host-local addresses (containerd adds the
/// loopback itself).
fn write_cni(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cni dir");
    std::fs::write(
        dir.join("10-strata.conflist"),
        r#"{
  "cniVersion": "1.0.0",
  "name": "strata-test",
  "plugins": [
    { "type": "bridge", "bridge": "strata0", "isGateway": true, "ipMasq": false,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.88.0.0/16" }]], "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": "/run/strata-test-ipam" } }
  ]
}
"#,
    )
    .expect("write cni config");
}

/// The suite inside the rig: 0 when every check passed.
fn inner(scratch: &Path) -> i32 {
    // strata where the README installs it, in this mount namespace only.
    let ulb = scratch.join("usr-local-bin");
    std::fs::create_dir_all(ulb.join("upper")).expect("mkdir");
    std::fs::create_dir_all(ulb.join("work")).expect("mkdir");
    must(&format!(
        "mount -t tmpfs tmpfs {d} && mkdir -p {d}/upper {d}/work && mount -t overlay overlay \
         -o lowerdir=/usr/local/bin,upperdir={d}/upper,workdir={d}/work /usr/local/bin && ip link set lo up",
        d = ulb.display()
    ));
    let debug = runtime_bin().with_file_name("");
    // (The VM runtime's shim is strata's under another name, as docs/containerd.md installs it.)
    for (bin, name) in [
        ("strata", "strata"),
        ("containerd-shim-strata-v2", "containerd-shim-strata-v2"),
        ("containerd-shim-strata-v2", "containerd-shim-strata-vm-v2"),
    ] {
        let from = debug.join(bin);
        if from.exists() {
            std::os::unix::fs::symlink(&from, Path::new("/usr/local/bin").join(name))
                .expect("link into /usr/local/bin");
        }
    }
    let mut env = Vec::new();
    if !cpu_controller() {
        install_runc_wrapper();
        // strata lets such limits go with a warning when the operator says so.
        env.push((strata_runtime::cgroups::UNAVAILABLE_ENV, "warn"));
        skip(
            "cri cpu shares",
            "this host's cgroup v2 has no cpu controller (bound to v1): the 2 cpu shares containerd gives each \
             sandbox go unapplied (strata: STRATA_CGROUP_UNAVAILABLE=warn; runc: through a wrapper dropping them)",
        );
    }
    write_cni(&scratch.join("cni"));
    let cfg = containerd_config(scratch);
    std::fs::write(scratch.join("containerd.toml"), &cfg).expect("write config");
    let log = std::fs::File::create(scratch.join("containerd.log")).expect("log");
    let mut daemon = Command::new("containerd")
        .envs(env)
        .arg("--config")
        .arg(scratch.join("containerd.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start containerd");
    let sock = scratch.join("containerd.sock");
    let result = std::panic::catch_unwind(|| run_suite(scratch, &sock));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.wait();
    // Shims outlive containerd by design; the suite removed every pod, so any
    // left is a leak (reported by the checks), and goes now.
    let _ = sh("pkill -KILL -f 'containerd-shim-(runc|strata)-v2'");
    let _ = sh(&format!("umount -R {} 2>/dev/null", scratch.join("containerd").display()));
    match result {
        Ok(failed) if failed.is_empty() => {
            println!("\ntest result: ok");
            0
        }
        Ok(failed) => {
            println!("\ntest result: FAILED: {}", failed.join(", "));
            println!("containerd log: {}", tail(&scratch.join("containerd.log"), 30));
            1
        }
        Err(_) => {
            println!("\ntest result: FAILED (the suite panicked)");
            println!("containerd log: {}", tail(&scratch.join("containerd.log"), 30));
            1
        }
    }
}

fn tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A synchronous CRI client over containerd's socket.
struct Cri {
    rt: tokio::runtime::Runtime,
    rs: cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
}

macro_rules! rpc {
    ($c:expr, $method:ident, $req:expr) => {{
        let Cri { rt, rs } = &mut *$c;
        rt.block_on(rs.$method($req)).map(|r| r.into_inner())
    }};
}

impl Cri {
    fn connect(sock: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        let path = sock.to_path_buf();
        let channel = rt
            .block_on(async {
                tonic::transport::Endpoint::try_from("http://[::]:0")
                    .expect("endpoint")
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
            })
            .expect("connect to containerd's CRI");
        Cri { rt, rs: cri::runtime_service_client::RuntimeServiceClient::new(channel) }
    }
}

type Failed = Vec<String>;

fn run_suite(scratch: &Path, sock: &Path) -> Failed {
    for _ in 0..1000 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sock.exists(), "containerd did not start: {}", tail(&scratch.join("containerd.log"), 30));
    let ctr = |args: &str| must(&format!("ctr --address {} --namespace {NAMESPACE} {args}", sock.display()));
    // The images: busybox from the shared rootfs, pause from the probe.
    let images = scratch.join("images");
    std::fs::create_dir_all(images.join("pause-rootfs")).expect("mkdir");
    std::fs::rename(scratch.join("pause"), images.join("pause-rootfs/pause")).expect("pause binary");
    let mkimage = repo_root().join("hack/mkimage.py");
    must(&format!(
        "python3 {m} {rootfs} {i}/busybox.tar {BUSYBOX} && python3 {m} {i}/pause-rootfs {i}/pause.tar {PAUSE} /pause",
        m = mkimage.display(),
        rootfs = shared_rootfs().display(),
        i = images.display()
    ));
    ctr(&format!("image import {}/busybox.tar", images.display()));
    ctr(&format!("image import {}/pause.tar", images.display()));
    let mut c = Cri::connect(sock);
    let version = rpc!(&mut c, version, cri::VersionRequest::default()).expect("CRI Version");
    println!("CRI: {} {} (API {})", version.runtime_name, version.runtime_version, version.runtime_api_version);

    let mut cases = vec![
        Case { handler: "strata", driver: Driver::Systemd },
        Case { handler: "strata-cgroupfs", driver: Driver::Cgroupfs },
    ];
    if is_strata() {
        cases.push(Case { handler: "strata-shim", driver: Driver::Systemd });
        cases.push(Case { handler: "strata-shim", driver: Driver::Cgroupfs });
    } else {
        skip("strata-shim", "strata's own shim has no runc counterpart");
    }
    let mut failed = Vec::new();
    for case in &cases {
        let name = format!("{} ({:?})", case.handler, case.driver);
        let started = Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pod_checks(&mut c, scratch, case))) {
            Ok(()) => println!("test pods with {name} ... ok ({} ms)", started.elapsed().as_millis()),
            Err(_) => {
                println!("test pods with {name} ... FAILED");
                failed.push(name);
            }
        }
    }
    if is_strata() {
        type Check = fn(&mut Cri, &Path);
        let vm_cases: [(&str, Check); 2] = [
            ("a pod in one VM", vm_pod_checks),
            ("a pod of the VM runtime, without an annotation", vm_runtime_pod_checks),
        ];
        for (name, checks) in vm_cases {
            match vm_ready() {
                Ok(()) => {
                    let started = Instant::now();
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| checks(&mut c, scratch))) {
                        Ok(()) => println!("test {name} ... ok ({} ms)", started.elapsed().as_millis()),
                        Err(_) => {
                            println!("test {name} ... FAILED");
                            failed.push(name.into());
                        }
                    }
                }
                Err(why) => skip(name, &why),
            }
        }
    }
    // Pod start latency, side by side with the runc shim running runc:
    // RunPodSandbox to a started container.
    let mut latency_cases = cases.clone();
    latency_cases.push(Case { handler: "runc", driver: Driver::Systemd });
    latency_cases.push(Case { handler: "runc-cgroupfs", driver: Driver::Cgroupfs });
    let rounds = 7;
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..rounds {
            for case in &latency_cases {
                let ms = pod_start_latency(&mut c, scratch, case);
                samples.entry(format!("{} ({:?})", case.handler, case.driver)).or_default().push(ms);
            }
        }
    }));
    if result.is_err() {
        failed.push("pod start latency".into());
    }
    println!("pod start latency (RunPodSandbox to a started container), median of {rounds}:");
    for (name, mut v) in samples {
        v.sort_by(f64::total_cmp);
        println!("  {name:<28} {:>7.1} ms", v[v.len() / 2]);
    }
    if let Err(e) = std::panic::catch_unwind(|| nothing_left(scratch)) {
        drop(e);
        failed.push("nothing left behind".into());
    }
    failed
}

/// Whether a guest kernel and QEMU are here (hack/vm-assets.sh).
fn vm_ready() -> Result<(), String> {
    let kernel = std::env::var_os("STRATA_VM_KERNEL").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(&std::env::var_os("STRATA_VM_CACHE").unwrap_or_else(|| "/var/cache/strata/vm".into())).join("vmlinux")
    });
    if !kernel.exists() {
        return Err("no guest kernel: hack/vm-assets.sh builds it".into());
    }
    if Command::new("qemu-system-x86_64").arg("--version").output().is_err() {
        return Err("qemu-system-x86_64 is not installed (hack/vm-assets.sh installs it)".into());
    }
    Ok(())
}

/// A pod whose annotation asks for a VM: its sandbox boots one, and its
/// containers run in it, in the sandbox's namespaces there.
fn vm_pod_checks(c: &mut Cri, scratch: &Path) {
    let mut pod_cfg = pod_config(scratch, Driver::Cgroupfs, "vm");
    pod_cfg.annotations.insert("run.strata.isolation".into(), "vm".into());
    in_a_vm_pod(c, pod_cfg, "strata-vm", |c, pod, pod_cfg, ids| {
        let a = start(c, pod, pod_cfg, container_config("vm-a", "echo a-up; while :; do sleep 0.2; done"));
        ids.push(a.clone());
        let b = start(c, pod, pod_cfg, container_config("vm-b", "while :; do sleep 0.2; done"));
        ids.push(b.clone());
        let look = |c: &mut Cri, id: &str| {
            let r = exec_sync(
                c,
                id,
                &["sh", "-c", "uname -r; hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/mnt"],
                20,
            )
            .expect("ExecSync");
            assert_eq!(r.exit_code, 0, "{}", text(&r.stderr));
            text(&r.stdout)
        };
        let (in_a, in_b) = (look(c, &a), look(c, &b));
        let (a_lines, b_lines): (Vec<&str>, Vec<&str>) = (in_a.lines().collect(), in_b.lines().collect());
        assert_eq!(a_lines.len(), 4, "{in_a}");
        let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        assert_ne!(a_lines[0], host_kernel.trim(), "the pod runs on a kernel of its own");
        // One guest, the pod's hostname, one network namespace, a mount
        // namespace each.
        assert_eq!(a_lines[..3], b_lines[..3], "{in_a} vs {in_b}");
        assert_eq!(a_lines[1], "strata-pod");
        assert_ne!(a_lines[3], b_lines[3], "{in_a} vs {in_b}");
        let (_, qemus) = sh("pgrep -c qemu-system");
        assert_eq!(qemus.trim(), "1", "one VM for the pod");
        // The pod's network is the VM's: its address from the bridge network
        // reaches a server in the guest, and the guest reaches the gateway.
        let ip =
            rpc!(c, pod_sandbox_status, cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false })
                .expect("PodSandboxStatus")
                .status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default();
        assert!(ip.starts_with("10.88."), "the pod's address: {ip:?}");
        let server = start(c, pod, pod_cfg, container_config("vm-server", "exec nc -ll -p 8080 -e /bin/echo hi"));
        ids.push(server.clone());
        let reached = eventually(30, || {
            let Ok(mut conn) = std::net::TcpStream::connect_timeout(
                &format!("{ip}:8080").parse().expect("address"),
                Duration::from_secs(2),
            ) else {
                return false;
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut got = String::new();
            let _ = std::io::Read::read_to_string(&mut conn, &mut got);
            got.trim() == "hi"
        });
        assert!(reached, "{ip}:8080 in the VM is not reached from the host");
        // (Accepted while the exec runs: nc waits for the server's close.)
        let listener = std::net::TcpListener::bind("10.88.0.1:0").expect("listen on the gateway");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let server_side = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                if let Ok((mut conn, peer)) = listener.accept() {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut got = String::new();
                    let _ = std::io::Read::read_to_string(&mut conn, &mut got);
                    return Some((peer.ip().to_string(), got));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        });
        let r =
            exec_sync(c, &b, &["sh", "-c", &format!("echo from-the-vm | nc 10.88.0.1 {port}")], 20).expect("ExecSync");
        let got = server_side.join().expect("server thread");
        assert_eq!(r.exit_code, 0, "{}", text(&r.stderr));
        let (peer, got) = got.expect("the guest never connected to the gateway");
        assert_eq!(peer, ip, "the guest speaks from the pod's address");
        assert_eq!(got, "from-the-vm\n");
        // Statistics of a container in the VM: its cgroup's in the guest.
        let stats = rpc!(c, container_stats, cri::ContainerStatsRequest { container_id: b.clone() })
            .expect("ContainerStats")
            .stats
            .expect("stats");
        let cpu = stats.cpu.and_then(|c| c.usage_core_nano_seconds).map(|v| v.value).unwrap_or(0);
        let memory = stats.memory.and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0);
        assert!(cpu > 0, "cpu time of a busy container in the VM: {cpu}");
        assert!(memory > 0, "memory of a container in the VM: {memory}");
        // Its limits change in the guest, on its cgroup there.
        rpc!(
            c,
            update_container_resources,
            cri::UpdateContainerResourcesRequest {
                container_id: b.clone(),
                linux: Some(cri::LinuxContainerResources { memory_limit_in_bytes: 100 << 20, ..Default::default() }),
                ..Default::default()
            }
        )
        .expect("UpdateContainerResources");
        let r = exec_sync(c, &b, &["sh", "-c", "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max"], 20)
            .expect("ExecSync");
        assert_eq!(text(&r.stdout).trim(), (100u64 << 20).to_string(), "{}", text(&r.stderr));
        let log = PathBuf::from(&pod_cfg.log_directory).join("vm-a.log");
        assert!(eventually(10, || std::fs::read_to_string(&log).is_ok_and(|t| t.contains(" stdout F a-up"))));
        // A container stops (its shell ignores TERM: KILL after the grace
        // period) and goes; the pod stays.
        rpc!(c, stop_container, cri::StopContainerRequest { container_id: a.clone(), timeout: 1 })
            .expect("StopContainer");
        assert_eq!(status(c, &a).state, cri::ContainerState::ContainerExited as i32);
        rpc!(c, remove_container, cri::RemoveContainerRequest { container_id: a.clone() }).expect("RemoveContainer");
        let r = exec_sync(c, &b, &["true"], 20).expect("ExecSync");
        assert_eq!(r.exit_code, 0, "the pod's other container still runs");
    });
}

/// A pod of the RuntimeClass handler whose runtime is strata's VM shim
/// (docs/containerd.md's `strata-microvm`): a VM without any annotation.
fn vm_runtime_pod_checks(c: &mut Cri, scratch: &Path) {
    let pod_cfg = pod_config(scratch, Driver::Cgroupfs, "vmrt");
    in_a_vm_pod(c, pod_cfg, "strata-microvm", |c, pod, pod_cfg, ids| {
        let a = start(c, pod, pod_cfg, container_config("vmrt-a", "while :; do sleep 0.2; done"));
        ids.push(a.clone());
        let r = exec_sync(c, &a, &["sh", "-c", "uname -r; hostname"], 20).expect("ExecSync");
        assert_eq!(r.exit_code, 0, "{}", text(&r.stderr));
        let out = text(&r.stdout);
        let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        assert_eq!(out.lines().nth(1), Some("strata-pod"), "{out}");
        assert_ne!(out.lines().next(), Some(host_kernel.trim()), "the pod runs on a kernel of its own");
        let (_, qemus) = sh("pgrep -c qemu-system");
        assert_eq!(qemus.trim(), "1", "one VM for the pod");
    });
}

/// Runs pod `pod_cfg` with `handler`, then `checks` on it (which records the
/// containers it starts in `ids`); the pod goes, pass or fail, and no QEMU
/// may be left once it has.
fn in_a_vm_pod(
    c: &mut Cri,
    pod_cfg: cri::PodSandboxConfig,
    handler: &str,
    checks: impl FnOnce(&mut Cri, &String, &cri::PodSandboxConfig, &mut Vec<String>),
) {
    let pod = rpc!(
        c,
        run_pod_sandbox,
        cri::RunPodSandboxRequest { config: Some(pod_cfg.clone()), runtime_handler: handler.into() }
    )
    .expect("RunPodSandbox")
    .pod_sandbox_id;
    let mut ids = Vec::new();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| checks(c, &pod, &pod_cfg, &mut ids)));
    if let Err(e) = checked {
        let _ = rpc!(c, stop_pod_sandbox, cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() });
        let _ = rpc!(c, remove_pod_sandbox, cri::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() });
        std::panic::resume_unwind(e);
    }
    remove_pod(c, &pod, &pod_cfg, Driver::Cgroupfs, &ids);
    assert!(eventually(10, || sh("pgrep qemu-system").1.trim().is_empty()), "the pod's VM is left");
}

fn uid() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("{}x{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

fn pod_config(scratch: &Path, driver: Driver, name: &str) -> cri::PodSandboxConfig {
    let uid = uid();
    let cgroup_parent = match driver {
        Driver::Systemd => format!("kubepods-besteffort-pod{uid}.slice"),
        Driver::Cgroupfs => format!("/kubepods/besteffort/pod{uid}"),
    };
    let logs = scratch.join("logs").join(&uid);
    std::fs::create_dir_all(&logs).expect("log dir");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("{name}-{uid}"),
            uid: uid.clone(),
            namespace: "strata-test".into(),
            attempt: 0,
        }),
        hostname: "strata-pod".into(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent,
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The namespaces kubelet asks for a pod without `shareProcessNamespace`:
/// the pod's network and IPC, a pid namespace per container.
fn pod_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn container_config(name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(pod_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// Creates and starts a container in the pod; its id.
fn start(c: &mut Cri, pod: &str, pod_cfg: &cri::PodSandboxConfig, cfg: cri::ContainerConfig) -> String {
    let id = rpc!(
        c,
        create_container,
        cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(cfg),
            sandbox_config: Some(pod_cfg.clone())
        }
    )
    .expect("CreateContainer")
    .container_id;
    rpc!(c, start_container, cri::StartContainerRequest { container_id: id.clone() }).expect("StartContainer");
    id
}

// tonic's Status is what the client returns: boxing it here would only move the cost.
#[allow(clippy::result_large_err)]
fn exec_sync(c: &mut Cri, id: &str, cmd: &[&str], timeout: i64) -> Result<cri::ExecSyncResponse, tonic::Status> {
    rpc!(
        c,
        exec_sync,
        cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout }
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status(c: &mut Cri, id: &str) -> cri::ContainerStatus {
    rpc!(c, container_status, cri::ContainerStatusRequest { container_id: id.into(), verbose: false })
        .expect("ContainerStatus")
        .status
        .expect("a status")
}

/// Waits up to `secs` for `f` to hold.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The cgroup directory of a container of a pod (as the rig's systemd and the
/// runtime lay them out).
fn container_cgroup(pod_cfg: &cri::PodSandboxConfig, driver: Driver, id: &str) -> PathBuf {
    let parent = &pod_cfg.linux.as_ref().expect("linux").cgroup_parent;
    match driver {
        Driver::Systemd => {
            let mut p = PathBuf::from("/sys/fs/cgroup");
            p.push(strata_runtime::cgroups::systemd::slice_path(parent).expect("slice"));
            p.join(format!("cri-containerd-{id}.scope"))
        }
        Driver::Cgroupfs => Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/')).join(id),
    }
}

/// Removes a pod as kubelet does, and what kubelet owns of it (its cgroup
/// parent), checking that the runtime left nothing of its own.
fn remove_pod(c: &mut Cri, pod: &str, pod_cfg: &cri::PodSandboxConfig, driver: Driver, ids: &[String]) {
    rpc!(c, stop_pod_sandbox, cri::StopPodSandboxRequest { pod_sandbox_id: pod.into() }).expect("StopPodSandbox");
    rpc!(c, remove_pod_sandbox, cri::RemovePodSandboxRequest { pod_sandbox_id: pod.into() }).expect("RemovePodSandbox");
    for id in ids.iter().map(String::as_str).chain([pod]) {
        let dir = container_cgroup(pod_cfg, driver, id);
        assert!(!dir.exists(), "{} is left", dir.display());
        let (_, mounts) = sh("cat /proc/self/mountinfo");
        assert!(!mounts.contains(id), "a mount of {id} is left");
    }
    let parent = &pod_cfg.linux.as_ref().expect("linux").cgroup_parent;
    match driver {
        Driver::Systemd => {
            let _ = sh(&format!("systemctl stop {parent}"));
        }
        Driver::Cgroupfs => {
            let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/')));
        }
    }
}

/// Everything a pod needs, through one handler and cgroup driver. A pod whose
/// checks failed is removed all the same.
fn pod_checks(c: &mut Cri, scratch: &Path, case: &Case) {
    let pod_cfg = pod_config(scratch, case.driver, "checks");
    let pod = rpc!(
        c,
        run_pod_sandbox,
        cri::RunPodSandboxRequest { config: Some(pod_cfg.clone()), runtime_handler: case.handler.into() }
    )
    .expect("RunPodSandbox")
    .pod_sandbox_id;
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pod_body(c, &pod, &pod_cfg, case)));
    if let Err(e) = checked {
        let _ = rpc!(c, stop_pod_sandbox, cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() });
        let _ = rpc!(c, remove_pod_sandbox, cri::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() });
        std::panic::resume_unwind(e);
    }
}

fn pod_body(c: &mut Cri, pod: &str, pod_cfg: &cri::PodSandboxConfig, case: &Case) {
    let pod = pod.to_string();
    let pod_cfg = pod_cfg.clone();
    let logs = PathBuf::from(&pod_cfg.log_directory);
    let mut ids = Vec::new();

    // Two containers sharing the pod's network and IPC namespaces, each with
    // its own mount and pid namespaces.
    let server =
        start(c, &pod, &pod_cfg, container_config("server", "echo hello; exec nc -ll -p 8080 -e /bin/echo hi"));
    ids.push(server.clone());
    let client = start(c, &pod, &pod_cfg, container_config("client", "while :; do echo tick; sleep 0.2; done"));
    ids.push(client.clone());
    assert!(
        eventually(5, || exec_sync(c, &client, &["nc", "127.0.0.1", "8080"], 5)
            .is_ok_and(|r| text(&r.stdout).trim() == "hi")),
        "the client reaches the server's loopback port"
    );
    let ns = |c: &mut Cri, id: &str, kind: &str| {
        text(&exec_sync(c, id, &["readlink", &format!("/proc/self/ns/{kind}")], 5).expect("readlink").stdout)
    };
    for (kind, shared) in [("net", true), ("ipc", true), ("uts", true), ("mnt", false), ("pid", false)] {
        let (a, b) = (ns(c, &server, kind), ns(c, &client, kind));
        assert_eq!(a == b, shared, "{kind} namespace: {a} vs {b}");
    }
    let sandbox =
        rpc!(c, pod_sandbox_status, cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false })
            .expect("PodSandboxStatus")
            .status
            .expect("status");
    assert_eq!(sandbox.state, cri::PodSandboxState::SandboxReady as i32);
    let ip = sandbox.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    assert!(ip.starts_with("10.88."), "the pod's address from the bridge network: {ip:?}");

    // ExecSync: output, exit code, timeout.
    let r = exec_sync(c, &server, &["sh", "-c", "echo out; echo err >&2; exit 3"], 5).expect("ExecSync");
    assert_eq!((text(&r.stdout).as_str(), text(&r.stderr).as_str(), r.exit_code), ("out\n", "err\n", 3));
    let t0 = Instant::now();
    let timed_out = exec_sync(c, &server, &["sleep", "30"], 1);
    assert!(t0.elapsed() < Duration::from_secs(10), "ExecSync's timeout holds: {:?}", t0.elapsed());
    assert!(
        timed_out.as_ref().is_err_and(|e| e.message().contains("timeout")),
        "a timed-out ExecSync is an error: {timed_out:?}"
    );

    // Streaming exec and attach through the CRI streaming server.
    let url = rpc!(
        c,
        exec,
        cri::ExecRequest {
            container_id: server.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo streamed; echo oops >&2; exit 4".into()],
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    )
    .expect("Exec")
    .url;
    let s = stream(&url, None, |_| false);
    assert_eq!((s.stdout.as_str(), s.stderr.as_str()), ("streamed\n", "oops\n"), "{s:?}");
    assert!(s.status.contains("\"ExitCode\"") && s.status.contains("\"4\""), "exit status 4: {}", s.status);
    let echo = start(
        c,
        &pod,
        &pod_cfg,
        cri::ContainerConfig { stdin: true, ..container_config("echo", "while read l; do echo got:$l; done") },
    );
    ids.push(echo.clone());
    let url = rpc!(
        c,
        attach,
        cri::AttachRequest { container_id: echo.clone(), stdin: true, stdout: true, stderr: true, tty: false }
    )
    .expect("Attach")
    .url;
    let s = stream(&url, Some(b"ping\n"), |s| s.stdout.contains("got:ping"));
    assert!(s.stdout.contains("got:ping"), "attach: {s:?}");

    // Logs in the CRI format, and ReopenContainerLog.
    let log = logs.join("server.log");
    assert!(eventually(5, || std::fs::read_to_string(&log).is_ok_and(|t| t.contains(" stdout F hello"))));
    let line = std::fs::read_to_string(&log).expect("log").lines().next().unwrap_or_default().to_string();
    let fields: Vec<&str> = line.splitn(4, ' ').collect();
    assert!(fields.len() == 4 && fields[0].ends_with('Z') && fields[0].contains('T'), "CRI log line: {line:?}");
    let client_log = logs.join("client.log");
    std::fs::rename(&client_log, logs.join("client.log.1")).expect("rotate");
    rpc!(c, reopen_container_log, cri::ReopenContainerLogRequest { container_id: client.clone() })
        .expect("ReopenContainerLog");
    assert!(
        eventually(5, || std::fs::read_to_string(&client_log).is_ok_and(|t| t.contains(" stdout F tick"))),
        "the reopened log gets new lines"
    );

    // Status, lists and statistics.
    let st = status(c, &server);
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(st.metadata.as_ref().map(|m| m.name.as_str()), Some("server"));
    let listed = rpc!(
        c,
        list_containers,
        cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter { pod_sandbox_id: pod.clone(), ..Default::default() })
        }
    )
    .expect("ListContainers")
    .containers;
    let mut listed: Vec<String> = listed.into_iter().map(|c| c.id).collect();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
    let cpu = |c: &mut Cri| {
        rpc!(c, container_stats, cri::ContainerStatsRequest { container_id: client.clone() })
            .expect("ContainerStats")
            .stats
            .and_then(|s| s.cpu)
            .and_then(|c| c.usage_core_nano_seconds)
            .map(|v| v.value)
            .unwrap_or(0)
    };
    // containerd's runc shim reports cpu only where the cpu controller is
    // enabled; strata's reads the core cpu.stat every cgroup has.
    if case.handler.contains("shim") || cpu_controller() {
        assert!(cpu(c) > 0, "cpu usage of a busy container");
    } else {
        skip("ContainerStats cpu", "containerd's runc shim reports cpu usage only with the cpu controller");
    }
    let all = rpc!(
        c,
        list_container_stats,
        cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter { pod_sandbox_id: pod.clone(), ..Default::default() })
        }
    )
    .expect("ListContainerStats")
    .stats;
    assert_eq!(all.len(), ids.len(), "a stats entry per container");
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || !std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default().contains("memory")
    {
        skip("ContainerStats memory", "no memory controller on this host's cgroup v2");
    }

    // UpdateContainerResources: hugetlb is this host's v2 controller.
    let cg = container_cgroup(&pod_cfg, case.driver, &server);
    assert!(cg.is_dir(), "{} is the container's cgroup", cg.display());
    rpc!(
        c,
        update_container_resources,
        cri::UpdateContainerResourcesRequest {
            container_id: server.clone(),
            // containerd 1.6 passes `unified` on, not `hugepage_limits`.
            linux: Some(cri::LinuxContainerResources {
                unified: [("hugetlb.2MB.max".to_string(), (8u64 << 20).to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    )
    .expect("UpdateContainerResources");
    assert_eq!(std::fs::read_to_string(cg.join("hugetlb.2MB.max")).unwrap_or_default().trim(), "8388608");
    // The update carries the device rules too: the container keeps its devices.
    let r = exec_sync(c, &server, &["sh", "-c", "echo x > /dev/null && head -c1 /dev/zero | wc -c"], 5).expect("exec");
    assert_eq!(text(&r.stdout).trim(), "1", "default devices after the update: {r:?}");

    // StopContainer with a grace period: SIGTERM trapped, then SIGKILL.
    let graceful =
        start(c, &pod, &pod_cfg, container_config("graceful", "trap 'exit 0' TERM; while :; do sleep 0.1; done"));
    ids.push(graceful.clone());
    let stubborn = start(c, &pod, &pod_cfg, container_config("stubborn", "exec sleep 1000"));
    ids.push(stubborn.clone());
    let t0 = Instant::now();
    rpc!(c, stop_container, cri::StopContainerRequest { container_id: graceful.clone(), timeout: 10 }).expect("stop");
    assert!(t0.elapsed() < Duration::from_secs(5), "a trapped SIGTERM ends it at once: {:?}", t0.elapsed());
    let st = status(c, &graceful);
    assert_eq!((st.state, st.exit_code), (cri::ContainerState::ContainerExited as i32, 0));
    let t0 = Instant::now();
    rpc!(c, stop_container, cri::StopContainerRequest { container_id: stubborn.clone(), timeout: 2 }).expect("stop");
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "SIGKILL after the grace: {took:?}");
    assert_eq!(status(c, &stubborn).exit_code, 137);
    for id in [&graceful, &stubborn] {
        rpc!(c, remove_container, cri::RemoveContainerRequest { container_id: id.clone() }).expect("RemoveContainer");
    }
    ids.retain(|i| i != &graceful && i != &stubborn);

    // A container whose create fails reports the runtime's cause.
    let bad = rpc!(
        c,
        create_container,
        cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                command: vec!["/no/such/binary".into()],
                ..container_config("bad", "")
            }),
            sandbox_config: Some(pod_cfg.clone())
        }
    )
    .expect("CreateContainer")
    .container_id;
    let started = rpc!(c, start_container, cri::StartContainerRequest { container_id: bad.clone() });
    let err = started.expect_err("a missing binary cannot start");
    assert!(err.message().contains("/no/such/binary"), "StartContainer's error: {}", err.message());
    let st = status(c, &bad);
    assert!(st.message.contains("/no/such/binary"), "the status carries the cause: {st:?}");
    rpc!(c, remove_container, cri::RemoveContainerRequest { container_id: bad.clone() }).expect("RemoveContainer");

    remove_pod(c, &pod, &pod_cfg, case.driver, &ids);
}

/// RunPodSandbox to a started container, in ms; the pod is removed after.
fn pod_start_latency(c: &mut Cri, scratch: &Path, case: &Case) -> f64 {
    let pod_cfg = pod_config(scratch, case.driver, "latency");
    let t0 = Instant::now();
    let pod = rpc!(
        c,
        run_pod_sandbox,
        cri::RunPodSandboxRequest { config: Some(pod_cfg.clone()), runtime_handler: case.handler.into() }
    )
    .expect("RunPodSandbox")
    .pod_sandbox_id;
    let id = start(c, &pod, &pod_cfg, container_config("app", "exec sleep 1000"));
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    remove_pod(c, &pod, &pod_cfg, case.driver, &[id]);
    ms
}

/// What a streaming session carried.
#[derive(Debug, Default)]
struct Streamed {
    stdout: String,
    stderr: String,
    /// The JSON status of the error channel (exec's exit).
    status: String,
}

/// Runs a streaming session (exec or attach) over WebSocket with the
/// `v4.channel.k8s.io` protocol: every frame's first byte is its channel.
/// `input` goes to stdin; the session ends when the server closes it or
/// `done` holds.
fn stream(url: &str, input: Option<&[u8]>, done: impl Fn(&Streamed) -> bool) -> Streamed {
    use tungstenite::client::IntoClientRequest;
    let addr = url.trim_start_matches("http://").split('/').next().expect("host:port").to_string();
    let mut req = url.replacen("http://", "ws://", 1).into_client_request().expect("request");
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().expect("header"));
    let tcp = std::net::TcpStream::connect(&addr).expect("connect to the streaming server");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let (mut ws, _) = tungstenite::client(req, tcp).expect("WebSocket handshake");
    if let Some(data) = input {
        let mut frame = vec![0u8];
        frame.extend_from_slice(data);
        ws.send(tungstenite::Message::Binary(frame)).expect("send stdin");
    }
    let mut out = Streamed::default();
    loop {
        if done(&out) {
            let _ = ws.close(None);
            break;
        }
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) if !b.is_empty() => {
                let payload = String::from_utf8_lossy(&b[1..]).into_owned();
                match b[0] {
                    1 => out.stdout.push_str(&payload),
                    2 => out.stderr.push_str(&payload),
                    3 => out.status.push_str(&payload),
                    _ => {}
                }
            }
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// After every pod went: no shim, no pod network namespace, no container
/// state of the runtimes', no mount of containerd's.
fn nothing_left(scratch: &Path) {
    assert!(
        eventually(10, || sh("pgrep -f 'containerd-shim-(runc|strata)-v2'").1.trim().is_empty()),
        "shims are left: {}",
        sh("pgrep -af containerd-shim").1
    );
    let netns: Vec<_> = std::fs::read_dir("/run/netns").into_iter().flatten().flatten().collect();
    assert!(netns.is_empty(), "pod network namespaces are left: {netns:?}");
    for root in ["/run/containerd/runc/k8s.io", "/run/containerd/strata/k8s.io"] {
        let left: Vec<_> = std::fs::read_dir(root).into_iter().flatten().flatten().collect();
        assert!(left.is_empty(), "container state is left in {root}: {left:?}");
    }
    let (_, mounts) = sh("cat /proc/self/mountinfo");
    let ours = format!("{}", scratch.join("containerd").display());
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&ours) && l.contains("/rootfs")).collect();
    assert!(left.is_empty(), "container rootfs mounts are left: {left:?}");
}
