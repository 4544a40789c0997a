//! A task's stdio: the fifos containerd gives are handed to the container
//! process as its own descriptors (no copying) unless it has a terminal, whose
//! master is then copied to and from the fifos by two threads.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opened stdio for one process.
pub struct Stdio {
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

fn open(path: &str, write: bool) -> std::io::Result<File> {
    if path.is_empty() {
        return std::fs::OpenOptions::new().read(!write).write(write).open("/dev/null");
    }
    // Read-write never blocks on a fifo whose other end is not open yet; the
    // container then holds the only write end once we close ours.
    let f = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(Path::new(path))?;
    Ok(f)
}

impl Stdio {
    /// Opens the fifos (an empty path means /dev/null).
    pub fn open(stdin: &str, stdout: &str, stderr: &str) -> std::io::Result<Stdio> {
        let stdin = if stdin.is_empty() {
            open("", false)?
        } else {
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK).open(stdin)?
        };
        // Blocking again for the process that reads it.
        let flags = nix::fcntl::fcntl(stdin.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(stdin.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Stdio { stdin, stdout: open(stdout, true)?, stderr: open(stderr, true)? })
    }

    /// The descriptors in stdin, stdout, stderr order.
    pub fn fds(&self) -> [RawFd; 3] {
        [self.stdin.as_raw_fd(), self.stdout.as_raw_fd(), self.stderr.as_raw_fd()]
    }
}

/// Copies between a terminal master and the fifos until the terminal closes.
pub fn copy_terminal(master: OwnedFd, stdio: Stdio) -> std::io::Result<File> {
    let master = File::from(master);
    let for_input = master.try_clone()?;
    let for_output = master.try_clone()?;
    let Stdio { mut stdin, mut stdout, .. } = stdio;
    std::thread::spawn(move || {
        let mut to = for_input;
        let _ = std::io::copy(&mut stdin, &mut to);
    });
    std::thread::spawn(move || {
        let mut from = for_output;
        let _ = std::io::copy(&mut from, &mut stdout);
    });
    Ok(master)
}
