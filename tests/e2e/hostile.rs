//! Hostile and malformed configs: every case of `tests/hostile/` (its README.md
//! describes the format) and a few generated ones too big to store, each run
//! through `create`. Every one must fail within 10 s with exactly one line on
//! stderr that contains the case's expected text, without a panic, and leave
//! nothing behind: no state directory, no cgroup, no host mount of the bundle.
//! A case marked `known_issue` is a runtime bug not fixed yet: it is reported as
//! skipped, never passed silently. Against another runtime
//! (`STRATA_TEST_RUNTIME=runc`) only a non-zero exit is checked, and a case that
//! runtime accepts is noted, not failed. `STRATA_TEST_HOSTILE_KNOWN=1` runs the
//! known-issue cases too (to check a fix before removing its marker).

use serde_json::{json, Map, Value};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use strata_tests::*;

/// Longest a `create` may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Address-space limit of the runtime (KiB, for `ulimit -v`): a runtime that
/// reads without bound fails instead of taking the machine's memory.
const MEMORY_LIMIT_KIB: u64 = 4 << 20;
/// Longest acceptable error message: a hostile value must not be echoed whole.
const MAX_STDERR: usize = 64 << 10;
const MIB: usize = 1 << 20;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Makes config.json's bytes from the base config.
type Renderer = dyn Fn(&Value) -> Vec<u8>;

/// How a case's bundle is made.
enum Setup {
    /// Edits to the base config (see README.md).
    Edits { set: Map<String, Value>, remove: Vec<String> },
    /// config.json holds exactly these bytes.
    Raw(Vec<u8>),
    /// config.json holds what this makes of the base config (for text no JSON
    /// value can hold, such as nesting deeper than serde_json's recursion limit).
    Render(Box<Renderer>),
    /// A change to the base config made in code (values too big to store).
    Config(Box<dyn Fn(&mut Value)>),
    /// Replaces config.json by something else (a FIFO, a directory, a symlink).
    File(Box<dyn Fn(&Path)>),
}

struct Case {
    name: String,
    /// Texts the error line must contain.
    expect: Vec<String>,
    known_issue: Option<String>,
    setup: Setup,
    private_rootfs: bool,
    host_paths_absent: Vec<String>,
}

impl Case {
    fn generated(name: &str, expect: &str, known_issue: Option<&str>, setup: Setup) -> Case {
        Case {
            name: name.to_string(),
            expect: vec![expect.to_string()],
            known_issue: known_issue.map(str::to_string),
            setup,
            private_rootfs: false,
            host_paths_absent: Vec::new(),
        }
    }
}

fn corpus_dir() -> PathBuf {
    repo_root().join("tests/hostile")
}

/// Every case stored in tests/hostile, in name order.
fn load_corpus() -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("read tests/hostile")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "txt"))
        .collect();
    files.sort();
    files.iter().map(|p| load_case(p)).collect()
}

fn load_case(path: &Path) -> Case {
    let name = path.file_stem().and_then(|s| s.to_str()).expect("case name").to_string();
    let raw = path.extension().is_some_and(|e| e == "txt");
    let meta_path = if raw { path.with_extension("expect") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&meta_path).unwrap_or_else(|e| panic!("{}: {e}", meta_path.display()));
    let meta: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", meta_path.display()));
    let obj = meta.as_object().unwrap_or_else(|| panic!("{}: not an object", meta_path.display()));
    let known = ["expect", "known_issue", "set", "remove", "private_rootfs", "host_paths_absent"];
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        panic!("{}: unknown key {k:?}", meta_path.display());
    }
    let strings = |key: &str| -> Vec<String> {
        obj.get(key)
            .map(|v| {
                v.as_array()
                    .unwrap_or_else(|| panic!("{name}: {key} must be a list"))
                    .iter()
                    .map(|s| s.as_str().unwrap_or_else(|| panic!("{name}: {key} holds a non-string")).to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let setup = if raw {
        Setup::Raw(std::fs::read(path).expect("read raw case"))
    } else {
        let set = match obj.get("set") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => panic!("{name}: set must be an object"),
        };
        Setup::Edits { set, remove: strings("remove") }
    };
    Case {
        expect: match obj.get("expect") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(_)) => strings("expect"),
            _ => panic!("{name}: needs an \"expect\" string or list of strings"),
        },
        known_issue: obj.get("known_issue").and_then(Value::as_str).map(str::to_string),
        private_rootfs: obj.get("private_rootfs").and_then(Value::as_bool).unwrap_or(false),
        host_paths_absent: strings("host_paths_absent"),
        setup,
        name,
    }
}

/// The reference tokens of a JSON pointer (RFC 6901).
fn pointer_tokens(pointer: &str) -> Vec<String> {
    assert!(pointer.starts_with('/'), "{pointer:?} is not a JSON pointer");
    pointer[1..].split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect()
}

/// Sets the value at `pointer`, creating missing (or null) objects on the way;
/// `-` or the length as the last array index appends.
fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let tokens = pointer_tokens(pointer);
    let (last, parents) = tokens.split_last().expect("empty pointer");
    let mut cur = doc;
    for t in parents {
        cur = match cur {
            Value::Array(a) => {
                let i: usize = t.parse().unwrap_or_else(|_| panic!("{pointer}: bad index {t:?}"));
                a.get_mut(i).unwrap_or_else(|| panic!("{pointer}: no element {i}"))
            }
            Value::Object(o) => {
                let e = o.entry(t.clone()).or_insert(Value::Null);
                if e.is_null() {
                    *e = json!({});
                }
                e
            }
            _ => panic!("{pointer}: {t:?} is inside a scalar"),
        };
    }
    match cur {
        Value::Array(a) => {
            let i = if last == "-" { a.len() } else { last.parse().unwrap_or_else(|_| panic!("{pointer}: bad index")) };
            if i == a.len() {
                a.push(value);
            } else {
                *a.get_mut(i).unwrap_or_else(|| panic!("{pointer}: no element {i}")) = value;
            }
        }
        Value::Object(o) => {
            o.insert(last.clone(), value);
        }
        _ => panic!("{pointer}: parent is a scalar"),
    }
}

/// Removes the value at `pointer`.
fn remove_pointer(doc: &mut Value, pointer: &str) {
    let tokens = pointer_tokens(pointer);
    let (last, parents) = tokens.split_last().expect("empty pointer");
    let parent = parents
        .iter()
        .try_fold(doc, |cur, t| match cur {
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            Value::Object(o) => o.get_mut(t),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{pointer}: no such parent"));
    match parent {
        Value::Array(a) => {
            a.remove(last.parse().unwrap_or_else(|_| panic!("{pointer}: bad index")));
        }
        Value::Object(o) => {
            o.remove(last).unwrap_or_else(|| panic!("{pointer}: nothing to remove"));
        }
        _ => panic!("{pointer}: parent is a scalar"),
    }
}

/// `value` with every `@BUNDLE@` in its strings replaced by the bundle directory.
fn substitute(value: &Value, bundle: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("@BUNDLE@", bundle)),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, bundle)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), substitute(v, bundle))).collect()),
        other => other.clone(),
    }
}

/// Writes the case's bundle: config.json and, for every case, a FIFO `fifo`.
fn prepare(case: &Case, b: &mut Bundle) {
    let dir = b.dir.path().to_path_buf();
    nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let bundle = dir.to_string_lossy().into_owned();
    match &case.setup {
        Setup::Edits { set, remove } => {
            for p in remove {
                remove_pointer(&mut b.config, p);
            }
            // serde_json's map is sorted: a parent is set before its children.
            for (p, v) in set {
                set_pointer(&mut b.config, p, substitute(v, &bundle));
            }
            b.write_config();
        }
        Setup::Raw(bytes) => std::fs::write(dir.join("config.json"), bytes).expect("write config"),
        Setup::Render(render) => std::fs::write(dir.join("config.json"), render(&b.config)).expect("write config"),
        Setup::Config(edit) => {
            edit(&mut b.config);
            // Compact: these are the big ones.
            std::fs::write(dir.join("config.json"), serde_json::to_vec(&b.config).expect("json")).expect("write");
        }
        Setup::File(make) => make(&dir.join("config.json")),
    }
}

/// Result of one `create`: its output, or how long it ran before it was killed.
enum Outcome {
    Finished(Out),
    Hung(Duration),
}

/// Runs `create` of the bundle as `id`, killing its process group after TIMEOUT.
fn create_with_timeout(b: &Bundle, id: &str) -> Outcome {
    let out_dir = TempDir::new("hostile-out");
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let script = format!("ulimit -v {MEMORY_LIMIT_KIB} && exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(runtime_bin())
        .arg("--root")
        .arg(b.root.path())
        .args(["create", "--bundle"])
        .arg(b.dir.path())
        .arg(id)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn runtime");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Outcome::Hung(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome::Finished(Out::from(std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }))
}

/// The cgroup directories the case's container could leave behind: its cgroup
/// (the default `/strata/<id>` or `linux.cgroupsPath`) and the top directory of a
/// `linux.cgroupsPath`, those of them that do not exist before the run.
fn new_cgroup_paths(config: &Value, id: &str) -> Vec<PathBuf> {
    let Ok(mount) = strata_runtime::cgroups::find_mount() else { return Vec::new() };
    let mut paths = vec![mount.join("strata").join(id)];
    if let Some(p) = config["linux"]["cgroupsPath"].as_str().filter(|p| !p.is_empty()) {
        if let Ok(rel) = strata_runtime::cgroups::container_path(Some(Path::new(p)), id) {
            paths.push(mount.join(&rel));
            if let Some(Component::Normal(top)) = rel.components().next() {
                // (The shared parent of default cgroups comes and goes with other tests.)
                if top != "strata" {
                    paths.push(mount.join(top));
                }
            }
        }
    }
    paths.retain(|p| !p.exists());
    paths
}

/// Removes the empty cgroups called `id` at the top of every hierarchy (v1 and
/// v2), where another runtime killed in the middle of `create` leaves them (runc
/// puts a container without cgroupsPath at `/<id>`).
fn remove_empty_cgroups_named(id: &str) {
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(id));
    for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(h.path().join(id));
    }
}

/// Runs one case with `rootfs` as its root (unless it has its own); returns what
/// went wrong (empty when it passed or was skipped).
fn run_case(case: &Case, rootfs: &Path) -> Vec<String> {
    let strata = is_strata();
    let run_known = std::env::var_os("STRATA_TEST_HOSTILE_KNOWN").is_some();
    if let (Some(why), true, false) = (&case.known_issue, strata, run_known) {
        skip(&format!("hostile::{}", case.name), &format!("known issue: {why}"));
        return Vec::new();
    }
    let mut b = if case.private_rootfs {
        Bundle::private_rootfs(&["true"])
    } else {
        let mut b = Bundle::new(&["true"]);
        b.config["root"]["path"] = json!(rootfs);
        b
    };
    prepare(case, &mut b);
    let bundle = b.dir.path().to_string_lossy().into_owned();
    // (Not the case's name: the id is part of the error line, and must not
    // satisfy the expected text by itself.)
    let id = format!("hostile-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let cgroups = if strata { new_cgroup_paths(&b.config, &id) } else { Vec::new() };
    let outcome = create_with_timeout(&b, &id);
    let mut problems = Vec::new();
    let out = match outcome {
        Outcome::Hung(t) if strata => {
            problems.push(format!("create did not finish: killed after {t:?}"));
            None
        }
        Outcome::Hung(t) => {
            eprintln!("note: {}: {} did not finish in {t:?}", case.name, runtime_bin().display());
            remove_empty_cgroups_named(&id);
            None
        }
        Outcome::Finished(out) => Some(out),
    };
    if let Some(out) = &out {
        if out.code == 0 {
            if strata {
                problems.push("create succeeded".to_string());
            } else {
                eprintln!("note: {}: accepted by {}", case.name, runtime_bin().display());
            }
            let _ = b.rt(&["delete", "--force", &id]);
        }
        if strata && out.code != 0 {
            let err = out.stderr.trim_end();
            let shown: String = err.chars().take(300).collect();
            if err.lines().count() != 1 {
                problems.push(format!("stderr is not exactly one line: {shown:?}"));
            }
            for want in case.expect.iter().filter(|w| !err.contains(w.as_str())) {
                problems.push(format!("stderr lacks {want:?}: {shown:?}"));
            }
            if err.contains("panicked") {
                problems.push(format!("panic: {shown:?}"));
            }
            if err.len() > MAX_STDERR {
                problems.push(format!("stderr is {} bytes long", err.len()));
            }
        }
    }
    if strata {
        let left = b.leftover_state();
        if !left.is_empty() {
            problems.push(format!("state left in --root: {left:?}"));
        }
        for cg in &cgroups {
            if cg.exists() {
                problems.push(format!("cgroup left: {}", cg.display()));
            }
        }
        if host_mounts_mentioning(&bundle) != 0 {
            problems.push(format!("host mounts mention {bundle}"));
        }
        for p in &case.host_paths_absent {
            let p = p.replace("@BUNDLE@", &bundle);
            if Path::new(&p).exists() {
                problems.push(format!("{p} exists on the host"));
            }
        }
    }
    problems.into_iter().map(|p| format!("{}: {p}", case.name)).collect()
}

/// Runs `cases` and fails listing every problem.
fn run_all(cases: &[Case]) {
    if !is_root() {
        skip("hostile", "needs root");
        return;
    }
    // A copy of the busybox rootfs for the cases to share: a runtime that accepts
    // a case (runc accepts many) may create device nodes or directories in it.
    let scratch = TempDir::new("hostile-rootfs");
    let rootfs = scratch.path().join("rootfs");
    let st = Command::new("cp").arg("-a").arg(shared_rootfs()).arg(&rootfs).status().expect("cp");
    assert!(st.success(), "copy of the rootfs failed");
    let problems: Vec<String> = cases.iter().flat_map(|c| run_case(c, &rootfs)).collect();
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn corpus() {
    let cases = load_corpus();
    assert!(cases.len() >= 55, "tests/hostile holds only {} cases", cases.len());
    run_all(&cases);
}

/// JSON nested `depth` levels deep: `[[[...]]]`.
fn nested_arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

#[test]
fn generated_big_configs() {
    let edit = |f: fn(&mut Value)| Setup::Config(Box::new(f));
    let cases = vec![
        Case::generated("hostname-1mib", "hostname", None, edit(|c| c["hostname"] = json!("h".repeat(MIB)))),
        Case::generated(
            "arg-1mib",
            "process.args",
            None,
            edit(|c| c["process"]["args"] = json!(["echo", "a".repeat(MIB)])),
        ),
        Case::generated(
            "env-1mib",
            "process.env",
            None,
            edit(|c| c["process"]["env"] = json!([format!("BIG={}", "x".repeat(MIB))])),
        ),
        Case::generated(
            "annotation-nested-10000-arrays",
            "annotations: invalid type: sequence",
            None,
            Setup::Render(Box::new(|base| {
                let mut c = base.clone();
                c["annotations"] = json!({ "deep": "@DEEP@" });
                c.to_string().replace("\"@DEEP@\"", &nested_arrays(10_000)).into_bytes()
            })),
        ),
        Case::generated(
            "top-level-nested-100000-arrays",
            "the document must be a JSON object, not an array",
            None,
            Setup::Raw(nested_arrays(100_000).into_bytes()),
        ),
        Case::generated(
            "unknown-field-nested-100000-objects",
            "process.args",
            None,
            Setup::Render(Box::new(|base| {
                let mut c = base.clone();
                c["process"]["args"] = json!([]);
                c["process"]["hostile"] = json!("@DEEP@");
                let deep = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
                c.to_string().replace("\"@DEEP@\"", &deep).into_bytes()
            })),
        ),
        Case::generated(
            "config-10mb",
            "process.args",
            None,
            edit(|c| {
                c["annotations"] = json!({ "pad": "p".repeat(10 * MIB) });
                c["process"]["args"] = json!([]);
            }),
        ),
        Case::generated(
            "config-17mb",
            "larger than",
            None,
            edit(|c| c["annotations"] = json!({ "pad": "p".repeat(17 * MIB) })),
        ),
        Case::generated(
            "devices-20000",
            "/no/such/binary",
            None,
            edit(|c| {
                let devices: Vec<Value> = (0..20_000)
                    .map(|i| json!({ "path": format!("/dev/hostile{i}"), "type": "c", "major": 1, "minor": 3 }))
                    .collect();
                c["linux"]["devices"] = json!(devices);
                c["process"]["args"] = json!(["/no/such/binary"]);
            }),
        ),
    ];
    run_all(&cases);
}

#[test]
fn config_json_that_is_not_a_file() {
    let file = |f: fn(&Path)| Setup::File(Box::new(f));
    let cases = vec![
        Case::generated(
            "config-directory",
            "not a regular file",
            None,
            file(|p| std::fs::create_dir(p).expect("mkdir")),
        ),
        Case::generated(
            "config-fifo",
            "regular file",
            None,
            file(|p| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo")),
        ),
        Case::generated(
            "config-symlink-to-dev-zero",
            "regular file",
            None,
            file(|p| std::os::unix::fs::symlink("/dev/zero", p).expect("symlink")),
        ),
        Case::generated(
            "config-symlink-loop",
            "symbolic links",
            None,
            file(|p| std::os::unix::fs::symlink("config.json", p).expect("symlink")),
        ),
        Case::generated(
            "config-dangling-symlink",
            "No such file or directory",
            None,
            file(|p| std::os::unix::fs::symlink("/nonexistent/config.json", p).expect("symlink")),
        ),
        Case::generated("config-missing", "No such file or directory", None, file(|_| {})),
    ];
    run_all(&cases);
}

/// With `STRATA_FUZZ_SEEDS=DIR` (hack/fuzz.sh), writes the config.json of every
/// stored case to DIR, as seeds for the fuzzer; otherwise does nothing. Needs no
/// root: nothing is run.
#[test]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("STRATA_FUZZ_SEEDS").map(PathBuf::from) else { return };
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    for case in load_corpus() {
        let bytes = match &case.setup {
            Setup::Raw(bytes) => bytes.clone(),
            Setup::Edits { set, remove } => {
                // The fuzz target's bundle has its rootfs at `rootfs`.
                let mut config = base_config(&["true"]);
                for p in remove {
                    remove_pointer(&mut config, p);
                }
                for (p, v) in set {
                    set_pointer(&mut config, p, substitute(v, "/tmp/strata-fuzz-bundle"));
                }
                serde_json::to_vec(&config).expect("json")
            }
            Setup::Render(_) | Setup::Config(_) | Setup::File(_) => continue,
        };
        std::fs::write(dir.join(format!("hostile-{}.json", case.name)), bytes).expect("write seed");
    }
}

#[test]
fn corpus_format_helpers() {
    let mut doc = json!({ "a": { "b": [1, 2] }, "c~/d": 1 });
    set_pointer(&mut doc, "/a/b/-", json!(3));
    set_pointer(&mut doc, "/a/b/0", json!(0));
    set_pointer(&mut doc, "/x/y", json!("new"));
    set_pointer(&mut doc, "/c~0~1d", json!(2));
    remove_pointer(&mut doc, "/a/b/1");
    assert_eq!(doc, json!({ "a": { "b": [0, 3] }, "x": { "y": "new" }, "c~/d": 2 }));
    assert_eq!(substitute(&json!(["@BUNDLE@/fifo", 1]), "/b"), json!(["/b/fifo", 1]));
}
