//! The virtio-mmio transport (version 2, "modern"): the register window a
//! driver programs to find a device, negotiate features, place its queues and
//! notify them, and the interrupt that tells it the device used a buffer.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Transport version 2 (virtio 1.x).
pub const VERSION: u32 = 2;
/// The vendor id strata's devices report.
pub const VENDOR: u32 = 0x5354_5241; // "STRA"
/// Feature bit 32: the device follows virtio 1.x.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Register offsets in the window.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits the driver sets.
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const FAILED: u32 = 128;
}

/// Interrupt status bit: a used buffer was returned.
pub const INT_USED_RING: u32 = 1;

/// How a device raises its interrupt: a bit in the status register and, when
/// the machine has an in-kernel irqchip, an irqfd wired to its line.
#[derive(Clone)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    irqfd: Option<Arc<EventFd>>,
}

impl Interrupt {
    /// An interrupt that only sets the status register (no irqchip).
    pub fn status_only() -> Self {
        Self { status: Arc::new(AtomicU32::new(0)), irqfd: None }
    }

    /// An interrupt wired to an irqfd.
    pub fn with_irqfd(irqfd: Arc<EventFd>) -> Self {
        Self { status: Arc::new(AtomicU32::new(0)), irqfd: Some(irqfd) }
    }

    /// Tells the driver the device used a buffer.
    pub fn signal_used(&self) {
        self.status.fetch_or(INT_USED_RING, Ordering::SeqCst);
        if let Some(fd) = &self.irqfd {
            // A full counter still has the interrupt pending; nothing is lost.
            let _ = fd.write(1);
        }
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// A virtio device model behind the transport.
pub trait VirtioDevice: Send {
    /// The virtio device id (2 block, 3 console, ...).
    fn device_type(&self) -> u32;
    /// The features offered, [`VIRTIO_F_VERSION_1`] included.
    fn features(&self) -> u64;
    /// Largest size of each of the device's queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver accepted `features` and set DRIVER_OK: the queues are live.
    fn activate(&mut self, features: u64);
    /// The driver notified queue `index`. Returns whether a buffer was used.
    fn process_queue(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue], index: usize) -> bool;
    /// Work from outside the guest (input arriving). Returns whether a buffer
    /// was used. Called with the transport locked.
    fn process_input(&mut self, _mem: &GuestMemoryMmap, _queues: &mut [Queue]) -> bool {
        false
    }
    /// The driver reset the device.
    fn reset(&mut self) {}
}

/// One virtio-mmio window with its device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
}

impl MmioTransport {
    /// Wraps `device`, whose queues live in `mem`.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap, interrupt: Interrupt) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("device queue sizes are powers of two up to 32768"))
            .collect();
        Self {
            device,
            mem,
            queues,
            interrupt,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
        }
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// Whether the driver has set DRIVER_OK and not failed.
    pub fn is_active(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::FAILED == 0
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A driver read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected().map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A driver write at `offset`. Returns whether a buffer was used (the
    /// interrupt has then been raised).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        if offset >= reg::CONFIG || data.len() != 4 {
            return false; // no writable configuration in strata's devices
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        // Queue layout is fixed once the driver says FEATURES_OK … DRIVER_OK.
        let may_configure_queue = self.status & status::DRIVER_OK == 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32),
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM if may_configure_queue => {
                if let Some(q) = self.selected() {
                    q.set_size(value as u16)
                }
            }
            reg::QUEUE_READY if may_configure_queue => {
                if let Some(q) = self.selected() {
                    q.set_ready(value == 1)
                }
            }
            reg::QUEUE_DESC_LOW if may_configure_queue => {
                self.set_address(|q, v| q.set_desc_table_address(Some(v), None), value)
            }
            reg::QUEUE_DESC_HIGH if may_configure_queue => {
                self.set_address(|q, v| q.set_desc_table_address(None, Some(v)), value)
            }
            reg::QUEUE_AVAIL_LOW if may_configure_queue => {
                self.set_address(|q, v| q.set_avail_ring_address(Some(v), None), value)
            }
            reg::QUEUE_AVAIL_HIGH if may_configure_queue => {
                self.set_address(|q, v| q.set_avail_ring_address(None, Some(v)), value)
            }
            reg::QUEUE_USED_LOW if may_configure_queue => {
                self.set_address(|q, v| q.set_used_ring_address(Some(v), None), value)
            }
            reg::QUEUE_USED_HIGH if may_configure_queue => {
                self.set_address(|q, v| q.set_used_ring_address(None, Some(v)), value)
            }
            reg::QUEUE_NOTIFY => return self.notify(value as usize),
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.set_status(value),
            _ => {}
        }
        false
    }

    fn set_address(&mut self, set: impl FnOnce(&mut Queue, u32), value: u32) {
        if let Some(q) = self.selected() {
            set(q, value)
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let was_ok = self.status & status::DRIVER_OK != 0;
        if value & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            // A driver that asks for what the device does not offer fails
            // negotiation: FEATURES_OK does not stick.
            if self.driver_features & !self.device.features() != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                self.status = value & !status::FEATURES_OK;
                return;
            }
        }
        self.status = value;
        if !was_ok && value & status::DRIVER_OK != 0 {
            let mem = &self.mem;
            if self.queues.iter().any(|q| q.ready() && !q.is_valid(mem)) {
                self.status |= status::FAILED;
                return;
            }
            self.device.activate(self.driver_features);
        }
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt.ack(u32::MAX);
        self.device.reset();
    }

    fn notify(&mut self, index: usize) -> bool {
        if !self.is_active() || index >= self.queues.len() || !self.queues[index].ready() {
            return false;
        }
        let used = self.device.process_queue(&self.mem, &mut self.queues, index);
        if used {
            self.interrupt.signal_used();
        }
        used
    }

    /// Lets the device take work from outside the guest.
    pub fn poll_input(&mut self) -> bool {
        if !self.is_active() {
            return false;
        }
        let used = self.device.process_input(&self.mem, &mut self.queues);
        if used {
            self.interrupt.signal_used();
        }
        used
    }
}
