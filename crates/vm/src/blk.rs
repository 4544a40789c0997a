//! virtio-blk over a host file: reads, writes (refused on a read-only disk),
//! flush and the device id. The rootfs image reaches the guest this way.

use std::fs::File;
use std::os::unix::fs::FileExt;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use crate::mmio::{VirtioDevice, VIRTIO_F_VERSION_1};

/// virtio device id of a block device.
pub const DEVICE_ID: u32 = 2;
const SECTOR: u64 = 512;
const QUEUE_SIZES: [u16; 1] = [256];
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// Largest transfer one request may ask for.
const MAX_REQUEST: u64 = 16 << 20;

/// A block device.
pub struct Block {
    file: File,
    sectors: u64,
    read_only: bool,
    id: [u8; 20],
}

impl Block {
    /// A disk over `file`; its size is rounded down to whole sectors.
    pub fn new(file: File, read_only: bool, id: &str) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        let mut serial = [0u8; 20];
        let n = id.len().min(20);
        serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Self { file, sectors: len / SECTOR, read_only, id: serial })
    }

    /// Serves one request: returns the status byte and how many bytes were
    /// written into the guest.
    fn serve(
        &mut self,
        mem: &GuestMemoryMmap,
        kind: u32,
        sector: u64,
        data: &[(vm_memory::GuestAddress, u32)],
    ) -> (u8, u32) {
        let total: u64 = data.iter().map(|(_, l)| u64::from(*l)).sum();
        match kind {
            T_IN | T_OUT => {
                if kind == T_OUT && self.read_only {
                    return (S_IOERR, 0);
                }
                if total > MAX_REQUEST || !total.is_multiple_of(SECTOR) {
                    return (S_IOERR, 0);
                }
                let end = sector.checked_add(total / SECTOR);
                if end.is_none_or(|e| e > self.sectors) {
                    return (S_IOERR, 0);
                }
                let mut offset = sector * SECTOR;
                let mut written = 0u32;
                for &(addr, len) in data {
                    let mut buf = vec![0u8; len as usize];
                    if kind == T_IN {
                        if self.file.read_exact_at(&mut buf, offset).is_err() || mem.write_slice(&buf, addr).is_err() {
                            return (S_IOERR, written);
                        }
                        written += len;
                    } else if mem.read_slice(&mut buf, addr).is_err() || self.file.write_all_at(&buf, offset).is_err() {
                        return (S_IOERR, 0);
                    }
                    offset += u64::from(len);
                }
                (S_OK, written)
            }
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => match data.first() {
                Some(&(addr, len)) if len >= 20 => match mem.write_slice(&self.id, addr) {
                    Ok(()) => (S_OK, 20),
                    Err(_) => (S_IOERR, 0),
                },
                _ => (S_IOERR, 0),
            },
            _ => (S_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | F_FLUSH | if self.read_only { F_RO } else { 0 }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // capacity (le64, in sectors) is all of the configuration strata fills
        let config = self.sectors.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn activate(&mut self, _features: u64) {}

    fn process_queue(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue], _index: usize) -> bool {
        let mut used = false;
        let queue = &mut queues[0];
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let descs: Vec<_> = chain.collect();
            let mut len = 0;
            // header (readable, 16 bytes) … data … status (writable, 1 byte)
            if descs.len() >= 2 {
                let header = descs[0];
                let status = descs[descs.len() - 1];
                let mut raw = [0u8; 16];
                let malformed =
                    header.is_write_only() || header.len() < 16 || !status.is_write_only() || status.len() < 1;
                let (code, n) = if malformed || mem.read_slice(&mut raw, header.addr()).is_err() {
                    (S_IOERR, 0)
                } else {
                    let kind = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                    let sector =
                        u64::from_le_bytes([raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]]);
                    let data: Vec<_> = descs[1..descs.len() - 1].iter().map(|d| (d.addr(), d.len())).collect();
                    let wrong_direction = descs[1..descs.len() - 1]
                        .iter()
                        .any(|d| d.is_write_only() != (kind == T_IN || kind == T_GET_ID));
                    if wrong_direction {
                        (S_IOERR, 0)
                    } else {
                        self.serve(mem, kind, sector, &data)
                    }
                };
                if mem.write_obj(code, status.addr()).is_ok() {
                    len = n + 1;
                }
            }
            if queue.add_used(mem, head, len).is_err() {
                break;
            }
            used = true;
        }
        used
    }
}
