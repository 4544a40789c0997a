//! virtio-console with one port: what the guest writes on its `hvc0` goes to
//! a host writer, and bytes pushed from the host fill the guest's receive
//! buffers as the guest offers them.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use crate::mmio::{VirtioDevice, VIRTIO_F_VERSION_1};

/// virtio device id of a console.
pub const DEVICE_ID: u32 = 3;
const RX: usize = 0;
const TX: usize = 1;
const QUEUE_SIZES: [u16; 2] = [256, 256];
/// Host input held while the guest offers no buffer.
const MAX_PENDING: usize = 1 << 20;

/// Bytes from the host waiting for the guest, shared with whoever feeds them.
#[derive(Clone, Default)]
pub struct ConsoleInput(Arc<Mutex<VecDeque<u8>>>);

impl ConsoleInput {
    /// Queues bytes for the guest. Returns false (and drops them) when more
    /// than a MiB is already waiting: the guest is not reading.
    pub fn push(&self, bytes: &[u8]) -> bool {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() + bytes.len() > MAX_PENDING {
            return false;
        }
        q.extend(bytes);
        true
    }

    /// How many bytes wait.
    pub fn pending(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The console device.
pub struct Console {
    out: Box<dyn Write + Send>,
    input: ConsoleInput,
}

impl Console {
    /// A console whose output goes to `out` and whose input comes from `input`.
    pub fn new(out: Box<dyn Write + Send>, input: ConsoleInput) -> Self {
        Self { out, input }
    }

    fn fill_rx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        let mut used = false;
        let mut pending = self.input.0.lock().unwrap_or_else(|e| e.into_inner());
        while !pending.is_empty() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else { break };
            let head = chain.head_index();
            let mut written = 0u32;
            for desc in chain.filter(|d| d.is_write_only()) {
                let n = (desc.len() as usize).min(pending.len());
                if n == 0 {
                    break;
                }
                let bytes: Vec<u8> = pending.drain(..n).collect();
                if mem.write_slice(&bytes, desc.addr()).is_err() {
                    break;
                }
                written += n as u32;
            }
            if queue.add_used(mem, head, written).is_err() {
                break;
            }
            used = true;
        }
        used
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, _features: u64) {}

    fn process_queue(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue], index: usize) -> bool {
        match index {
            RX => self.fill_rx(mem, &mut queues[RX]),
            TX => {
                let mut used = false;
                let queue = &mut queues[TX];
                while let Some(chain) = queue.pop_descriptor_chain(mem) {
                    let head = chain.head_index();
                    for desc in chain.filter(|d| !d.is_write_only()) {
                        let mut buf = vec![0u8; desc.len() as usize];
                        if mem.read_slice(&mut buf, desc.addr()).is_ok() {
                            // A host side that went away loses the output,
                            // never the guest's progress.
                            let _ = self.out.write_all(&buf);
                        }
                    }
                    let _ = self.out.flush();
                    if queue.add_used(mem, head, 0).is_err() {
                        break;
                    }
                    used = true;
                }
                used
            }
            _ => false,
        }
    }

    fn process_input(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue]) -> bool {
        self.fill_rx(mem, &mut queues[RX])
    }
}
