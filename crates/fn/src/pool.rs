//! Warm pools: per function, containers created ahead and waiting for
//! `start`, so an event pays for the start alone. While a function is being
//! called (its last call within `keep_alive_s`) its pool is kept at
//! `max_warm`; once idle it shrinks to `min_warm` (0: scale to zero).
//! Workers refill and shrink pools in the background; used containers are
//! deleted by cleanup threads, off the request path.

use crate::function::Function;
use crate::runner::{Prepared, Runner};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

struct FnPool {
    f: Arc<Function>,
    ready: Vec<Prepared>,
    creating: u32,
    last_call: Option<Instant>,
    /// Creates that failed in a row (a broken rootfs must not spin).
    failures: u32,
    retry_at: Option<Instant>,
}

impl FnPool {
    fn desired(&self) -> usize {
        let active = self.last_call.is_some_and(|t| t.elapsed() < Duration::from_secs(self.f.pool.keep_alive_s));
        (if active { self.f.pool.max_warm } else { self.f.pool.min_warm }) as usize
    }
}

pub struct Pools {
    runner: Arc<Runner>,
    inner: Mutex<HashMap<String, FnPool>>,
    wake: Condvar,
    trash: Mutex<Vec<Prepared>>,
    trash_wake: Condvar,
    stopping: AtomicBool,
}

enum Work {
    Create(Arc<Function>),
    Destroy(Prepared),
}

impl Pools {
    /// Starts `workers` pool threads and `cleaners` cleanup threads.
    pub fn start(runner: Arc<Runner>, workers: usize, cleaners: usize) -> Arc<Pools> {
        let pools = Arc::new(Pools {
            runner,
            inner: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            trash: Mutex::new(Vec::new()),
            trash_wake: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        for _ in 0..workers {
            let p = pools.clone();
            std::thread::spawn(move || p.work());
        }
        for _ in 0..cleaners {
            let p = pools.clone();
            std::thread::spawn(move || p.clean());
        }
        pools
    }

    /// Makes the pools match the registered functions: new ones get a pool;
    /// a changed or removed function's warm containers are discarded.
    pub fn set_functions(&self, functions: &HashMap<String, Arc<Function>>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = Vec::new();
        inner.retain(|name, pool| {
            let keep = functions.get(name).is_some_and(|f| **f == *pool.f);
            if !keep {
                dropped.append(&mut pool.ready);
            }
            keep
        });
        for (name, f) in functions {
            inner.entry(name.clone()).or_insert_with(|| FnPool {
                f: f.clone(),
                ready: Vec::new(),
                creating: 0,
                last_call: None,
                failures: 0,
                retry_at: None,
            });
        }
        drop(inner);
        for p in dropped {
            self.discard(p);
        }
        self.wake.notify_all();
    }

    /// A warm container of function `name`, if one is ready; notes the call.
    pub fn take(&self, name: &str) -> Option<Prepared> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let pool = inner.get_mut(name)?;
        pool.last_call = Some(Instant::now());
        let p = pool.ready.pop();
        drop(inner);
        self.wake.notify_one();
        p
    }

    /// Warm containers per function.
    pub fn sizes(&self) -> Vec<(String, usize)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, usize)> = inner.iter().map(|(n, p)| (n.clone(), p.ready.len())).collect();
        v.sort();
        v
    }

    /// Hands a used (or unwanted) container to the cleanup threads.
    pub fn discard(&self, p: Prepared) {
        self.trash.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        self.trash_wake.notify_one();
    }

    /// Containers waiting to be deleted.
    pub fn trash_len(&self) -> usize {
        self.trash.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops refilling and deletes every warm and discarded container.
    pub fn drain(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for pool in self.inner.lock().unwrap_or_else(|e| e.into_inner()).values_mut() {
            all.append(&mut pool.ready);
        }
        all.append(&mut self.trash.lock().unwrap_or_else(|e| e.into_inner()));
        for p in all {
            self.runner.destroy(p);
        }
    }

    fn next_work(&self) -> Option<Work> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return None;
            }
            let now = Instant::now();
            let mut soonest = now + Duration::from_secs(1);
            for pool in inner.values_mut() {
                let want = pool.desired();
                if pool.ready.len() > want {
                    // Oldest first.
                    return Some(Work::Destroy(pool.ready.remove(0)));
                }
                if pool.ready.len() + (pool.creating as usize) < want {
                    match pool.retry_at {
                        Some(t) if t > now => soonest = soonest.min(t),
                        _ => {
                            pool.creating += 1;
                            return Some(Work::Create(pool.f.clone()));
                        }
                    }
                }
            }
            let wait = soonest.saturating_duration_since(now).max(Duration::from_millis(10));
            inner = self.wake.wait_timeout(inner, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn work(&self) {
        while let Some(work) = self.next_work() {
            match work {
                Work::Destroy(p) => self.runner.destroy(p),
                Work::Create(f) => {
                    let made = self.runner.prepare(&f, None);
                    let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                    let pool = inner.get_mut(&f.name).filter(|p| *p.f == *f);
                    match (made, pool) {
                        (Ok(p), Some(pool)) => {
                            pool.creating = pool.creating.saturating_sub(1);
                            pool.failures = 0;
                            pool.retry_at = None;
                            pool.ready.push(p);
                        }
                        (Ok(p), None) => {
                            drop(inner);
                            self.runner.destroy(p);
                        }
                        (Err(e), pool) => {
                            if let Some(pool) = pool {
                                pool.creating = pool.creating.saturating_sub(1);
                                pool.failures += 1;
                                // Back off: 100 ms doubling up to 30 s.
                                let ms = (100u64 << pool.failures.min(9)).min(30_000);
                                pool.retry_at = Some(Instant::now() + Duration::from_millis(ms));
                            }
                            eprintln!("strata-fn: warm container for {}: {e}", f.name);
                        }
                    }
                }
            }
        }
    }

    fn clean(&self) {
        // Background work: the requests and the pool's refills come first.
        // SAFETY: setpriority with this thread's own id changes nothing else.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
        loop {
            let p = {
                let mut trash = self.trash.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(p) = trash.pop() {
                        break p;
                    }
                    trash = self.trash_wake.wait(trash).unwrap_or_else(|e| e.into_inner());
                }
            };
            self.runner.destroy(p);
        }
    }
}
