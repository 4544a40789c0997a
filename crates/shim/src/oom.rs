//! OOM events: the kernel counts OOM kills in a cgroup's `memory.events`
//! (`oom_kill`) and notifies inotify watchers when the file changes. One thread
//! watches the cgroups of all the shim's tasks and reports each new kill.

use containerd_shim::protos::events::task::TaskOOM;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

type Events = Sender<crate::events::Event>;

/// A watched task: its id, its `memory.events` and the kills seen so far.
struct Watched {
    id: String,
    file: PathBuf,
    kills: u64,
}

pub struct OomWatcher {
    inotify: Arc<Inotify>,
    watched: Arc<Mutex<HashMap<WatchDescriptor, Watched>>>,
}

fn oom_kills(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok())))
        .unwrap_or(0)
}

impl OomWatcher {
    /// Starts the watcher thread, which sends a `/tasks/oom` event on `events`
    /// for every OOM kill in a watched cgroup.
    pub fn start(events: Events) -> std::io::Result<OomWatcher> {
        let inotify = Arc::new(Inotify::init(InitFlags::IN_CLOEXEC)?);
        let watched: Arc<Mutex<HashMap<WatchDescriptor, Watched>>> = Arc::default();
        let (reader, map) = (inotify.clone(), watched.clone());
        std::thread::spawn(move || loop {
            let batch = match reader.read_events() {
                Ok(b) => b,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    log::warn!("OOM watcher stopped: {e}");
                    return;
                }
            };
            for ev in batch {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The cgroup is gone.
                    map.remove(&ev.wd);
                    continue;
                }
                let Some(w) = map.get_mut(&ev.wd) else { continue };
                let kills = oom_kills(&w.file);
                if kills > w.kills {
                    w.kills = kills;
                    let oom = TaskOOM { container_id: w.id.clone(), ..Default::default() };
                    let _ = events.send(crate::events::Event::new("/tasks/oom", &oom));
                }
            }
        });
        Ok(OomWatcher { inotify, watched })
    }

    /// Watches the cgroup `dir` of task `id`; a no-op where the memory
    /// controller is not enabled there (no `memory.events`).
    pub fn watch(&self, id: &str, dir: &Path) {
        let file = dir.join("memory.events");
        if !file.exists() {
            return;
        }
        let kills = oom_kills(&file);
        if let Ok(wd) = self.inotify.add_watch(&file, AddWatchFlags::IN_MODIFY) {
            self.watched.lock().unwrap_or_else(|e| e.into_inner()).insert(wd, Watched { id: id.into(), file, kills });
        }
    }
}
