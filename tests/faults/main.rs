//! The chaos suite: the runtime is killed (SIGKILL) or stopped and continued
//! (SIGSTOP/SIGCONT) at seeded random moments of create, start, exec, delete,
//! update and pause, with several containers in flight at once. After every
//! round the host is checked: whatever `list` shows, `delete --force` removes
//! entirely, and then no state directory, no cgroup under the runtime's parent,
//! no mount from the bundle and no process of the round is left.
//!
//! `STRATA_FAULTS_ROUNDS` (default 12), `STRATA_FAULTS_SEED` (default 1) and
//! `STRATA_FAULTS_PARALLEL` (containers per round, default 6) size a run;
//! `hack/chaos.sh ROUNDS [SEED]` runs long ones (and against runc with
//! STRATA_TEST_RUNTIME, in a pure cgroup v2 view). A failing round prints its
//! seed; seeds that found bugs are kept in `REGRESSIONS`.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_tests::*;

/// Seeds of rounds that once left something behind.
const REGRESSIONS: &[(u64, &str)] = &[
    (1011, "a create killed before naming its state directory left it in ~creating"),
    (1048, "a delete killed while removing files left a directory list could not show"),
];

/// How an operation is interrupted.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Left alone.
    None,
    /// SIGKILL after this many microseconds.
    Kill(u64),
    /// SIGSTOP after this many microseconds, SIGCONT 50 ms later.
    Stop(u64),
}

/// Counts for the report.
#[derive(Default)]
struct Tally {
    kill_points: u64,
    stops: u64,
    operations: u64,
}

/// A round's environment: bundle, state root, the marker every process of the
/// round carries in its environment.
struct Round {
    bundle: Bundle,
    mark: String,
}

impl Round {
    fn new(seed: u64) -> Round {
        let mut bundle = Bundle::new(&["sleep", "30"]);
        let mark = format!("STRATA_FAULTS_MARK={}-{seed}", std::process::id());
        bundle.config["process"]["env"].as_array_mut().expect("env").push(json!(mark));
        // A hook makes create take long enough for kills to land inside it.
        bundle.config["hooks"] = json!({ "createRuntime": [{ "path": "/bin/sleep", "args": ["sleep", "0.02"] }] });
        bundle.write_config();
        Round { bundle, mark }
    }

    /// A runtime command, started (not waited for), carrying the marker.
    fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.bundle.cmd(args);
        let (k, v) = self.mark.split_once('=').expect("marker");
        c.env(k, v).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        c.spawn().expect("spawn the runtime")
    }

    /// Runs `args` and interrupts it as `fault` says; waits for it.
    fn op(&self, args: &[&str], fault: Fault, tally: &mut Tally) {
        tally.operations += 1;
        let mut child = self.spawn(args);
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        match fault {
            Fault::None => {}
            Fault::Kill(us) => {
                std::thread::sleep(Duration::from_micros(us));
                if child.try_wait().ok().flatten().is_none() {
                    tally.kill_points += 1;
                }
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            Fault::Stop(us) => {
                std::thread::sleep(Duration::from_micros(us));
                if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).is_ok() {
                    tally.stops += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap_or_else(|e| panic!("{args:?}: wait: {e}")).is_none() {
            assert!(Instant::now() < deadline, "{args:?} hangs");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn fault(r: &mut Rng, max_us: u64) -> Fault {
    match r.below(10) {
        0..=1 => Fault::None,
        2 => Fault::Stop(r.below(max_us)),
        _ => Fault::Kill(r.below(max_us)),
    }
}

/// One container's life, interrupted at random points.
fn life(round: &Round, id: &str, seed: u64, tally: &mut Tally) {
    let mut r = Rng(seed);
    let bundle = round.bundle.dir.path().to_string_lossy().into_owned();
    let devices = round.bundle.dir.path().join("devices.json");
    match r.below(3) {
        0 => round.op(&["run", "--detach", "--bundle", &bundle, id], fault(&mut r, 60_000), tally),
        _ => {
            round.op(&["create", "--bundle", &bundle, id], fault(&mut r, 60_000), tally);
            round.op(&["start", id], fault(&mut r, 5_000), tally);
        }
    }
    for _ in 0..r.below(4) {
        match r.below(4) {
            0 => round.op(&["exec", "--detach", id, "sleep", "30"], fault(&mut r, 20_000), tally),
            1 => round.op(&["update", "-r", &devices.to_string_lossy(), id], fault(&mut r, 5_000), tally),
            2 => round.op(&["pause", id], fault(&mut r, 5_000), tally),
            _ => round.op(&["resume", id], fault(&mut r, 5_000), tally),
        }
    }
    if r.below(2) == 0 {
        round.op(&["delete", "--force", id], fault(&mut r, 20_000), tally);
    }
}

/// Everything of the round still on the host, in words; empty when clean.
fn leftovers(round: &Round, cgroup_parent: &Path, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in round.bundle.leftover_state() {
        out.push(format!("state directory {entry}"));
    }
    for id in ids {
        if cgroup_parent.join(id).exists() {
            out.push(format!("cgroup {}", cgroup_parent.join(id).display()));
        }
    }
    let bundle = round.bundle.dir.path().to_string_lossy().into_owned();
    let mounts = host_mounts_mentioning(&bundle);
    if mounts > 0 {
        out.push(format!("{mounts} mounts from the bundle"));
    }
    for pid in marked_processes(&round.mark) {
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
        out.push(format!("process {pid}: {cmd}"));
    }
    out
}

/// Processes whose environment carries `mark` (the runtime's own processes of
/// the round, and the containers' processes).
fn marked_processes(mark: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != me)
                .filter(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    // Zombies are their parents' to reap, not leftovers of the runtime.
                    let zombie = stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
                    !zombie
                        && std::fs::read(format!("/proc/{pid}/environ"))
                            .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == mark.as_bytes()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Held by each test for its whole run: both reap any child of the process
/// that exited, which would take the other's runtime commands from it.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reaps children of ours that exited (inits made with CLONE_PARENT are the
/// runtime's children, and they were ours).
fn reap_children() {
    while let Ok(s) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        if s == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
}

/// One round: `parallel` containers' lives at once, then recovery and checks.
fn round(seed: u64, parallel: u64, cgroup_parent: &Path, tally: &mut Tally) -> Result<(), String> {
    let round = Round::new(seed);
    std::fs::write(
        round.bundle.dir.path().join("devices.json"),
        json!({ "devices": [{ "allow": false, "access": "rwm" }, { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" }] })
            .to_string(),
    )
    .map_err(|e| e.to_string())?;
    let ids: Vec<String> = (0..parallel).map(|i| format!("f{seed}x{i}")).collect();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let round = &round;
                s.spawn(move || {
                    let mut t = Tally::default();
                    life(round, id, seed.wrapping_mul(1000).wrapping_add(i as u64), &mut t);
                    t
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("life thread")).collect()
    });
    for t in tallies {
        tally.kill_points += t.kill_points;
        tally.stops += t.stops;
        tally.operations += t.operations;
    }
    // Recovery, as a user or containerd would do it: delete --force of what
    // `list` shows.
    let listed = round.bundle.rt(&["list", "--quiet"]);
    let mut problems = Vec::new();
    for id in listed.stdout.lines().filter(|l| !l.is_empty()) {
        let out = round.bundle.rt(&["delete", "--force", id]);
        if out.code != 0 {
            problems.push(format!("delete --force {id} failed: {}", out.stderr.trim()));
        }
    }
    reap_children();
    // Processes die asynchronously (SIGKILL of an init, a pdeathsig): give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = leftovers(&round, cgroup_parent, &ids);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        reap_children();
        left = leftovers(&round, cgroup_parent, &ids);
    }
    problems.extend(left);
    if problems.is_empty() {
        Ok(())
    } else {
        // Leave the host clean for the next round whatever happened.
        for pid in marked_processes(&round.mark) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        Err(problems.join("; "))
    }
}

fn cgroup_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .filter(|l| l.split(" - ").nth(1).is_some_and(|r| r.starts_with("cgroup2 ")))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .find(|p| p.join("cgroup.controllers").exists())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn kills_at_any_moment_leave_nothing_delete_cannot_remove() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() {
        return skip("faults", "needs root");
    }
    let Some(mount) = cgroup_mount() else {
        return skip("faults", "no cgroup v2 hierarchy is mounted");
    };
    if !is_strata()
        && nix::sys::statfs::statfs("/sys/fs/cgroup")
            .is_ok_and(|s| s.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    {
        return skip("faults", "another runtime needs a pure cgroup v2 view: run hack/chaos.sh");
    }
    // Containers of the default cgroupsPath live under the runtime's parent.
    let parent = mount.join(if is_strata() { "strata" } else { "" });
    let rounds = env_u64("STRATA_FAULTS_ROUNDS", 12);
    let first = env_u64("STRATA_FAULTS_SEED", 1);
    let parallel = env_u64("STRATA_FAULTS_PARALLEL", 6);
    let seeds: Vec<u64> = REGRESSIONS.iter().map(|(s, _)| *s).chain(first..first + rounds).collect();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let started = Instant::now();
    for seed in &seeds {
        if let Err(e) = round(*seed, parallel, &parent, &mut tally) {
            failures.push(format!("seed {seed}: {e}"));
        }
    }
    let line = format!(
        "faults ({}): {} rounds, {} operations, {} kill points, {} stop/continue, {} rounds left something, {:.0}s\n",
        runtime_bin().display(),
        seeds.len(),
        tally.operations,
        tally.kill_points,
        tally.stops,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_full_state_filesystem_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() || !is_strata() {
        return skip(
            "a_full_state_filesystem_leaves_nothing_behind",
            "strata as root (runc keeps its state elsewhere)",
        );
    }
    let Some(mount) = cgroup_mount() else {
        return skip("a_full_state_filesystem_leaves_nothing_behind", "no cgroup v2 hierarchy is mounted");
    };
    // The state root on a small tmpfs of our own, filled to a few pages short
    // of full: create runs out of space at a different step each time.
    let fs = TempDir::new("fullfs");
    let root = fs.path().join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let st =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"]).arg(&root).status().expect("mount");
    assert!(st.success(), "mount a tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(root.clone());
    let round = Round::new(0);
    let bundle = round.bundle.dir.path().to_string_lossy().into_owned();
    let mut outcomes = Vec::new();
    for (i, free_pages) in [0u64, 1, 2, 3, 4, 6, 8].iter().enumerate() {
        let filler = root.join("filler");
        let _ = std::fs::remove_file(&filler);
        // Fill it up, then give back `free_pages` pages.
        let _ = std::fs::write(&filler, vec![0u8; 256 << 10]);
        let len = std::fs::metadata(&filler).map(|m| m.len()).unwrap_or(0);
        let f = std::fs::OpenOptions::new().write(true).open(&filler).expect("filler");
        f.set_len(len.saturating_sub(free_pages * 4096)).expect("truncate");
        drop(f);
        let id = format!("full{i}");
        let mut c = Command::new(runtime_bin());
        c.arg("--root").arg(&root).args(["create", "--bundle", &bundle, &id]);
        let out = run_to_files(c.stdin(Stdio::null()));
        outcomes.push(out.code == 0);
        // Recovery with space back.
        let _ = std::fs::remove_file(&filler);
        let mut l = Command::new(runtime_bin());
        l.arg("--root").arg(&root).args(["list", "--quiet"]);
        for listed in run_to_files(&mut l).stdout.lines().filter(|l| !l.is_empty()) {
            let mut d = Command::new(runtime_bin());
            d.arg("--root").arg(&root).args(["delete", "--force", listed]);
            run_to_files(&mut d).ok();
        }
        let entries: Vec<String> =
            std::fs::read_dir(&root).expect("root").filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        assert!(entries.is_empty(), "{free_pages} pages free: left in the state root: {entries:?} ({out:?})");
        assert!(!mount.join("strata").join(&id).exists(), "{free_pages} pages free: cgroup left");
        reap_children();
        assert!(marked_processes(&round.mark).is_empty(), "{free_pages} pages free: processes left");
    }
    assert!(outcomes.iter().any(|ok| !ok), "the filesystem never ran out: {outcomes:?}");
    assert!(outcomes.iter().any(|ok| *ok), "creates never got far enough: {outcomes:?}");
}
