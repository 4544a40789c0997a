//! What the unit tests share.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A writer the test can read back (a device's or the serial port's output).
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// What was written, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture")).into_owned()
    }
}

/// A scratch directory of its own, removed when dropped (a failing test too).
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    /// A new empty directory named after `what` and this process.
    pub fn new(what: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("strata-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
