//! Network namespaces reused from one invocation to the next, when the last
//! one provably left no trace in its namespace.
//!
//! An invocation's container gets a network namespace of its own with only
//! the loopback interface. Making one (the loopback device registered, its
//! sysctl tables, IPv4 and IPv6 set up) and tearing it down afterwards (in a
//! kernel worker) were about a sixth of all the CPU an event costs. So the
//! server keeps namespaces whose container is gone and hands each to the next
//! container, which joins it instead of making one.
//!
//! What is preserved: a namespace is handed on only when everything the kernel
//! shows of it reads exactly as in a namespace just made with its loopback up:
//! the interface list and every counter (`/proc/net/dev`, `snmp`, `snmp6`,
//! `netstat`, `dev_snmp6`), the addresses and routes, and the socket tables of
//! every family (`tcp`, `udp`, `raw`, `unix`, `packet`, ICMP, multicast
//! groups). Any packet, any socket left behind (a TCP connection closing), any
//! failed send (a counter) makes it differ, and it is dropped for the kernel to
//! tear down. The check runs only after the container's init was seen to exit:
//! it was pid 1 of the container's pid namespace, so every process that could
//! have held a socket there has exited too. A function cannot change the
//! namespace in ways these files do not show: it runs without CAP_NET_ADMIN,
//! CAP_NET_RAW and CAP_SYS_ADMIN (so no interface, address, route, firewall
//! rule or raw socket), with `/proc/sys` read-only (so no sysctl), and a user
//! namespace it makes owns nothing of this one. What a later invocation can
//! still see is the namespace's identity (the inode number of
//! `/proc/self/ns/net`), not anything an earlier one did in it. The check
//! runs on a thread of its own, off the request path. `strata-fn serve
//! --fresh-network-namespaces` turns reuse off.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Namespaces kept ready at most.
const KEEP: usize = 32;
/// Namespaces waiting for their check at most; more are dropped.
const WAITING: usize = 64;
/// A namespace unused this long is dropped, so that an idle server holds
/// none (the default of [`Pool::start`]'s `keep`).
pub const KEEP_IDLE: Duration = Duration::from_secs(30);

/// The files of `/proc/thread-self/net` compared with the reference's. A
/// file the kernel lacks reads as missing in the reference too. The socket
/// tables of TCP, UDP and raw sockets are not among them: reading one walks
/// the host's whole hash table of that protocol (milliseconds), so their
/// sockets are counted through `sockstat` and `sockstat6` instead.
/// (The loopback's own IPv6 counters, `dev_snmp6/lo`, move with `snmp6`.)
const FILES: [&str; 13] = [
    "dev",
    "dev_mcast",
    "snmp",
    "snmp6",
    "netstat",
    "if_inet6",
    "route",
    "ipv6_route",
    "igmp",
    "igmp6",
    "unix",
    "packet",
    // IPv6 flow labels outlive their socket for a few seconds, and need no
    // privilege or packet to make.
    "ip6_flowlabel",
];

/// The files counting this namespace's sockets per protocol (`TCP: inuse 0
/// orphan 2 tw 0 alloc 9 mem 1`). Only `inuse`, `tw` and the fragments'
/// `memory` are the namespace's own (the rest is the host's), and each must
/// be 0.
const SOCKSTATS: [&str; 2] = ["sockstat", "sockstat6"];

/// Counts kept for the metrics and the tests.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Namespaces handed to a container.
    pub reused: u64,
    /// Namespaces checked and found as new.
    pub clean: u64,
    /// Namespaces checked and dropped: something was left in them.
    pub dropped: u64,
}

/// Namespaces ready for a container, and the thread that checks returned ones.
pub struct Pool {
    ready: Mutex<Vec<(OwnedFd, Instant)>>,
    checks: Mutex<Option<SyncSender<OwnedFd>>>,
    counts: Mutex<Counts>,
}

impl Pool {
    /// Starts the checking thread, which first makes the reference namespace
    /// (loopback up) whose files every returned one must match. A ready
    /// namespace unused for `keep` is dropped. None, with the reason on
    /// stderr, when that fails (no privilege to make one).
    pub fn start(keep: Duration) -> Option<Arc<Pool>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(WAITING);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let pool =
            Arc::new(Pool { ready: Mutex::new(Vec::new()), checks: Mutex::new(Some(tx)), counts: Default::default() });
        let weak = Arc::downgrade(&pool);
        let spawned = std::thread::Builder::new().name("strata-fn-netns".into()).spawn(move || {
            let home = match reference() {
                Ok(r) => {
                    let _ = ready_tx.send(Ok(()));
                    r
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            check_loop(weak, rx, home, keep);
        });
        let started = match spawned {
            Ok(_) => ready_rx.recv().unwrap_or_else(|_| Err("the thread ended".into())),
            Err(e) => Err(e.to_string()),
        };
        match started {
            Ok(()) => Some(pool),
            Err(e) => {
                eprintln!("strata-fn: every invocation makes a new network namespace (reuse is off: {e})");
                None
            }
        }
    }

    /// A namespace proved as new, if one is ready.
    pub fn take(&self) -> Option<OwnedFd> {
        let fd = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop().map(|(fd, _)| fd);
        if fd.is_some() {
            self.counts.lock().unwrap_or_else(|e| e.into_inner()).reused += 1;
        }
        fd
    }

    /// Hands back the namespace of a container whose init has exited, to be
    /// checked. Dropped when the checks are behind or stopped.
    pub fn give_back(&self, ns: OwnedFd) {
        if let Some(tx) = self.checks.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.try_send(ns);
        }
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Namespaces ready now.
    pub fn ready(&self) -> usize {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Drops every ready namespace and stops the checks.
    pub fn close(&self) {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The reference: this thread moves to a new network namespace with its
/// loopback up, as a container's, and reads its files.
fn reference() -> Result<(OwnedFd, Vec<u8>), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
    strata_runtime::network::loopback_up().map_err(|e| e.to_string())?;
    let home = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| format!("/proc/thread-self/ns/net: {e}"))?;
    let reference = snapshot().map_err(|e| format!("/proc/thread-self/net: {e}"))?;
    // A new namespace has no socket: counts that do not read so would make
    // every comparison of them meaningless.
    if reference.windows(SOCKETS_IN_USE.len()).any(|w| w == SOCKETS_IN_USE.as_bytes()) {
        return Err("a new network namespace's sockstat does not read as empty".into());
    }
    Ok((home.into(), reference))
}

/// How the snapshot writes a sockstat file with a socket of the namespace's
/// own (or one that does not read as expected).
const SOCKETS_IN_USE: &str = ": sockets in use\n";

/// What the kernel shows of this thread's network namespace.
fn snapshot() -> std::io::Result<Vec<u8>> {
    let mut all = Vec::with_capacity(16 << 10);
    // The directory is looked up once; its files by name in it.
    let dir = std::fs::File::open("/proc/thread-self/net")?;
    let read = |name: &str, into: &mut Vec<u8>| -> std::io::Result<()> {
        let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
        // SAFETY: openat reads the NUL-terminated name; the descriptor it
        // returns is owned by the File made from it.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: see above.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.read_to_end(into).map(drop)
    };
    for f in FILES {
        all.extend_from_slice(f.as_bytes());
        all.push(b'\n');
        if let Err(e) = read(f, &mut all) {
            all.extend_from_slice(format!("missing: {:?}\n", e.kind()).as_bytes());
        }
    }
    for f in SOCKSTATS {
        let mut text = Vec::new();
        all.extend_from_slice(f.as_bytes());
        match read(f, &mut text) {
            // (No sockstat6: the kernel has no IPv6, and no such socket.)
            Err(e) => all.extend_from_slice(format!(": missing: {:?}\n", e.kind()).as_bytes()),
            Ok(()) if own_sockets(&String::from_utf8_lossy(&text)).is_some() => all.extend_from_slice(b": none\n"),
            Ok(()) => all.extend_from_slice(SOCKETS_IN_USE.as_bytes()),
        }
    }
    Ok(all)
}

/// The namespace's own socket counts in a `sockstat` file: None when there
/// is one that is not 0 (or the file does not read as expected).
fn own_sockets(text: &str) -> Option<()> {
    for line in text.lines() {
        let (proto, counts) = line.split_once(':')?;
        let words: Vec<&str> = counts.split_whitespace().collect();
        for pair in words.chunks(2) {
            let [key, value] = pair else { return None };
            let own = matches!(*key, "inuse" | "tw") || (proto.starts_with("FRAG") && *key == "memory");
            if own && *value != "0" {
                return None;
            }
        }
    }
    Some(())
}

/// Checks returned namespaces until the pool is gone; drops ready ones
/// unused for `keep`.
fn check_loop(
    pool: std::sync::Weak<Pool>,
    rx: Receiver<OwnedFd>,
    (home, reference): (OwnedFd, Vec<u8>),
    keep: Duration,
) {
    // Off the request path, as the deletes are.
    // SAFETY: setpriority on this thread (who 0) has no memory effects.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    loop {
        let got = rx.recv_timeout(keep / 2);
        let Some(pool) = pool.upgrade() else { return };
        pool.ready.lock().unwrap_or_else(|e| e.into_inner()).retain(|(_, at)| at.elapsed() < keep);
        let ns = match got {
            Ok(ns) => ns,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let clean = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
            && snapshot().is_ok_and(|s| s == reference);
        // Home again, holding no container's namespace. Should that fail,
        // this thread stops and nothing more is reused.
        if nix::sched::setns(home.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
            eprintln!("strata-fn: network namespace reuse stopped: could not return to the reference namespace");
            pool.close();
            return;
        }
        let mut counts = pool.counts.lock().unwrap_or_else(|e| e.into_inner());
        if clean {
            counts.clean += 1;
            drop(counts);
            let mut ready = pool.ready.lock().unwrap_or_else(|e| e.into_inner());
            if ready.len() < KEEP {
                ready.push((ns, Instant::now()));
            }
        } else {
            counts.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{own_sockets, reference, snapshot};

    /// In a namespace of its own (a thread's), a socket that never sent a
    /// packet still makes the snapshot differ from the reference, and closed
    /// it leaves none.
    #[test]
    fn a_socket_without_traffic_shows_in_the_snapshot() {
        std::thread::spawn(|| {
            let (_home, reference) = match reference() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("skipped: no network namespace of our own ({e}); needs root");
                    return;
                }
            };
            for bind in ["127.0.0.1:0", "[::1]:0"] {
                let socket = std::net::UdpSocket::bind(bind).expect("bind");
                assert!(snapshot().expect("snapshot") != reference, "{bind}: a socket does not show");
                drop(socket);
                assert!(snapshot().expect("snapshot") == reference, "{bind}: a closed socket shows");
            }
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
            assert!(snapshot().expect("snapshot") != reference, "a listening socket does not show");
            drop(listener);
            assert!(snapshot().expect("snapshot") == reference);
        })
        .join()
        .expect("the test's thread");
    }

    #[test]
    fn only_the_namespaces_own_socket_counts_must_be_zero() {
        // The host's counts (sockets used, orphans, allocated, memory) do not count.
        let quiet = "sockets: used 9\nTCP: inuse 0 orphan 3 tw 0 alloc 7 mem 2\nUDP: inuse 0 mem 5\nUDPLITE: inuse 0\n\
                     RAW: inuse 0\nFRAG: inuse 0 memory 0\n";
        assert_eq!(own_sockets(quiet), Some(()));
        assert_eq!(own_sockets("TCP6: inuse 0\nUDP6: inuse 0\nFRAG6: inuse 0 memory 0\n"), Some(()));
        for (name, line) in [
            ("a TCP socket", "TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 0"),
            ("a closing connection", "TCP: inuse 0 orphan 0 tw 2 alloc 0 mem 0"),
            ("a UDP socket", "UDP: inuse 1 mem 0"),
            ("fragments waiting", "FRAG: inuse 0 memory 4096"),
            ("an IPv6 raw socket", "RAW6: inuse 1"),
        ] {
            assert_eq!(own_sockets(&format!("sockets: used 9\n{line}\n")), None, "{name}");
        }
        // A file that does not read as expected is not taken as clean.
        assert_eq!(own_sockets("TCP: inuse\n"), None);
        assert_eq!(own_sockets("no colon here\n"), None);
    }
}
