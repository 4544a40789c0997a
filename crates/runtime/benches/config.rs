//! Hot pure-Rust pieces of `create`, measured without root: parsing and validating
//! config.json, the mount-option translation, the cgroup resource plan and the
//! device-rule compiler.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use strata_runtime::{cgroups, config, rootfs};

fn bench(c: &mut Criterion) {
    let mut spec_json = config::default_spec_json();
    spec_json["linux"]["resources"] = serde_json::json!({
        "devices": [{ "allow": false, "access": "rwm" }, { "allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw" }],
        "memory": { "limit": 67108864 }, "cpu": { "shares": 512, "quota": 50000, "period": 100000 }, "pids": { "limit": 100 }
    });
    let text = spec_json.to_string();
    let bundle = std::env::temp_dir().join(format!("strata-bench-{}", std::process::id()));
    std::fs::create_dir_all(bundle.join("rootfs")).expect("bundle");
    std::fs::write(bundle.join("config.json"), &text).expect("config");

    c.bench_function("parse config.json", |b| b.iter(|| config::parse(black_box(text.as_bytes())).expect("parse")));
    let spec = config::parse(text.as_bytes()).expect("parse");
    c.bench_function("validate config", |b| b.iter(|| config::validate(black_box(&spec), &bundle).expect("valid")));
    let options: Vec<String> = ["rbind", "ro", "nosuid", "nodev", "rprivate", "rro", "mode=755", "size=65536k"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.bench_function("mount options", |b| {
        b.iter(|| rootfs::options::parse(black_box(&options), "mounts[0]").expect("options"))
    });
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone()).expect("resources");
    c.bench_function("cgroup resource plan", |b| {
        b.iter(|| cgroups::resources::plan(black_box(&resources)).expect("plan"))
    });
    let rules = resources.devices().clone().unwrap_or_default();
    c.bench_function("device program", |b| {
        b.iter(|| {
            cgroups::devices::compile(&cgroups::devices::rules(black_box(&rules), &[]).expect("rules").expect("some"))
        })
    });
    let _ = std::fs::remove_dir_all(&bundle);
}

criterion_group!(benches, bench);
criterion_main!(benches);
