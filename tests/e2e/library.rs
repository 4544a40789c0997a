//! The library serves multi-threaded callers: containers created from several
//! threads of one process at once all run.

use std::path::Path;
use strata_runtime::{Container, CreateOptions};
use strata_tests::*;

#[test]
fn concurrent_creates_from_threads() {
    if !is_strata() {
        return skip("concurrent_creates_from_threads", "uses the strata library directly");
    }
    let b = Bundle::new(&["sh", "-c", "exit 5"]);
    b.write_config();
    let root = b.root.path().to_path_buf();
    let bundle = b.dir.path().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (root, bundle) = (root.clone(), bundle.clone());
            std::thread::spawn(move || run_one(&root, &bundle, &format!("t{i}")))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), 5);
    }
    assert!(b.leftover_state().is_empty());
}

fn run_one(root: &Path, bundle: &Path, id: &str) -> i32 {
    let opts = CreateOptions { bundle: bundle.to_path_buf(), ..Default::default() };
    let st = Container::create(root, id, &opts).expect("create");
    let c = Container::load(root, id).expect("load");
    c.start().expect("start");
    // The init is a child of this process (CLONE_PARENT): reap it here.
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(st.pid), None).expect("wait");
    c.delete(false).expect("delete");
    match status {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        other => panic!("{other:?}"),
    }
}
