//! The device models against in-memory queues: a host-side driver programs
//! the virtio-mmio registers and rings exactly as a guest's would.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::blk::Block;
use crate::console::{Console, ConsoleInput};
use crate::mmio::{reg, status, Interrupt, MmioTransport, VirtioDevice};
use crate::test_util::Capture;

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const DATA: u64 = 0x10000;
const QSIZE: u16 = 16;

struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    next_desc: u16,
    avail_idx: u16,
}

impl Driver {
    fn new(device: Box<dyn VirtioDevice>, features_hi: u32) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
        let mut t = MmioTransport::new(device, mem.clone(), Interrupt::status_only());
        let mut w = |off, v: u32| {
            t.write(off, &v.to_le_bytes());
        };
        w(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(reg::DRIVER_FEATURES_SEL, 1);
        w(reg::DRIVER_FEATURES, features_hi);
        w(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        Self { t, mem, next_desc: 0, avail_idx: 0 }
    }

    fn read(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(&mut self, off: u64, v: u32) -> bool {
        self.t.write(off, &v.to_le_bytes())
    }

    /// Queue `q` gets its own 16 KiB area above the first queue's.
    fn queue_base(q: u32) -> u64 {
        u64::from(q) * 0x4000
    }

    fn setup_queue(&mut self, q: u32) {
        let base = Self::queue_base(q);
        self.w(reg::QUEUE_SEL, q);
        self.w(reg::QUEUE_NUM, u32::from(QSIZE));
        self.w(reg::QUEUE_DESC_LOW, (base + DESC) as u32);
        self.w(reg::QUEUE_AVAIL_LOW, (base + AVAIL) as u32);
        self.w(reg::QUEUE_USED_LOW, (base + USED) as u32);
        self.w(reg::QUEUE_READY, 1);
    }

    fn go(&mut self) {
        self.w(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    }

    /// Publishes a chain of (addr, len, device-writable) buffers on queue `q`.
    fn submit(&mut self, q: u32, bufs: &[(u64, u32, bool)]) -> u16 {
        let base = Self::queue_base(q);
        // Requests complete before the next is made: descriptors are reused.
        if usize::from(self.next_desc) + bufs.len() > usize::from(QSIZE) {
            self.next_desc = 0;
        }
        let head = self.next_desc;
        for (i, (addr, len, writable)) in bufs.iter().enumerate() {
            let idx = self.next_desc;
            let d = base + DESC + u64::from(idx) * 16;
            let last = i == bufs.len() - 1;
            let flags: u16 = (if last { 0 } else { 1 }) | (if *writable { 2 } else { 0 });
            self.mem.write_obj(*addr, GuestAddress(d)).expect("desc");
            self.mem.write_obj(*len, GuestAddress(d + 8)).expect("desc");
            self.mem.write_obj(flags, GuestAddress(d + 12)).expect("desc");
            self.mem.write_obj(idx + 1, GuestAddress(d + 14)).expect("desc");
            self.next_desc += 1;
        }
        let slot = self.avail_idx % QSIZE;
        self.mem.write_obj(head, GuestAddress(base + AVAIL + 4 + u64::from(slot) * 2)).expect("avail");
        self.avail_idx += 1;
        self.mem.write_obj(self.avail_idx, GuestAddress(base + AVAIL + 2)).expect("avail");
        head
    }

    fn used(&self, q: u32) -> Vec<(u32, u32)> {
        let base = Self::queue_base(q);
        let n: u16 = self.mem.read_obj(GuestAddress(base + USED + 2)).expect("used idx");
        (0..n)
            .map(|i| {
                let e = base + USED + 4 + u64::from(i) * 8;
                (self.mem.read_obj(GuestAddress(e)).expect("id"), self.mem.read_obj(GuestAddress(e + 4)).expect("len"))
            })
            .collect()
    }
}

fn temp_disk(bytes: &[u8]) -> std::fs::File {
    let path =
        std::env::temp_dir().join(format!("strata-vm-disk-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::write(&path, bytes).expect("disk");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("open");
    let _ = std::fs::remove_file(&path);
    f
}

fn blk_request(d: &mut Driver, kind: u32, sector: u64, data: Option<(u64, u32, bool)>, at: u64) -> u8 {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&kind.to_le_bytes());
    header[8..16].copy_from_slice(&sector.to_le_bytes());
    d.mem.write_slice(&header, GuestAddress(at)).expect("header");
    d.mem.write_obj(0xffu8, GuestAddress(at + 16)).expect("status");
    let mut chain = vec![(at, 16, false)];
    chain.extend(data);
    chain.push((at + 16, 1, true));
    d.submit(0, &chain);
    assert!(d.w(reg::QUEUE_NOTIFY, 0), "a used buffer raises the interrupt");
    d.mem.read_obj(GuestAddress(at + 16)).expect("status")
}

#[test]
fn block_reads_writes_flushes_and_names_itself() {
    let mut image = vec![0u8; 8 * 512];
    image[512..517].copy_from_slice(b"hello");
    let mut d = Driver::new(Box::new(Block::new(temp_disk(&image), false, "rootfs").expect("block")), 1);
    assert_eq!(d.read(reg::DEVICE_ID), 2);
    let mut cap = [0u8; 8];
    d.t.read(reg::CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8, "capacity in sectors");
    d.setup_queue(0);
    d.go();
    assert_eq!(blk_request(&mut d, 0, 1, Some((DATA, 512, true)), 0x20000), 0, "read sector 1");
    let mut got = [0u8; 5];
    d.mem.read_slice(&mut got, GuestAddress(DATA)).expect("data");
    assert_eq!(&got, b"hello");
    d.mem.write_slice(b"written", GuestAddress(DATA + 0x1000)).expect("data");
    assert_eq!(blk_request(&mut d, 1, 7, Some((DATA + 0x1000, 512, false)), 0x20100), 0, "write sector 7");
    assert_eq!(blk_request(&mut d, 0, 7, Some((DATA + 0x2000, 512, true)), 0x20200), 0);
    let mut back = [0u8; 7];
    d.mem.read_slice(&mut back, GuestAddress(DATA + 0x2000)).expect("data");
    assert_eq!(&back, b"written");
    assert_eq!(blk_request(&mut d, 4, 0, None, 0x20300), 0, "flush");
    assert_eq!(blk_request(&mut d, 8, 0, Some((DATA + 0x3000, 20, true)), 0x20400), 0, "get id");
    let mut id = [0u8; 6];
    d.mem.read_slice(&mut id, GuestAddress(DATA + 0x3000)).expect("id");
    assert_eq!(&id, b"rootfs");
    // Past the end, a partial sector, an unknown request type.
    assert_eq!(blk_request(&mut d, 0, 8, Some((DATA, 512, true)), 0x20500), 1, "beyond the disk");
    assert_eq!(blk_request(&mut d, 0, 0, Some((DATA, 100, true)), 0x20600), 1, "not whole sectors");
    assert_eq!(blk_request(&mut d, 99, 0, None, 0x20700), 2, "unsupported");
    assert_eq!(d.used(0).len(), 8);
}

#[test]
fn read_only_block_refuses_writes_and_says_so() {
    let image = vec![0u8; 4 * 512];
    let mut d = Driver::new(Box::new(Block::new(temp_disk(&image), true, "ro").expect("block")), 1);
    assert_ne!(d.read(reg::DEVICE_FEATURES) & (1 << 5), 0, "VIRTIO_BLK_F_RO offered");
    d.setup_queue(0);
    d.go();
    assert_eq!(blk_request(&mut d, 1, 0, Some((DATA, 512, false)), 0x20000), 1);
    assert_eq!(blk_request(&mut d, 0, 0, Some((DATA, 512, true)), 0x20100), 0, "reads still work");
}

#[test]
fn console_input_waits_for_guest_buffers_and_output_reaches_the_host() {
    let out = Capture::default();
    let input = ConsoleInput::default();
    let mut d = Driver::new(Box::new(Console::new(Box::new(out.clone()), input.clone())), 1);
    d.setup_queue(0);
    d.setup_queue(1);
    d.go();
    // Input before any receive buffer waits.
    assert!(input.push(b"ping"));
    assert!(!d.t.poll_input(), "no buffer yet");
    assert_eq!(input.pending(), 4);
    d.submit(0, &[(DATA, 2, true)]);
    d.submit(0, &[(DATA + 0x100, 64, true)]);
    assert!(d.w(reg::QUEUE_NOTIFY, 0), "buffers offered: the waiting bytes go in");
    assert_eq!(d.used(0), vec![(0, 2), (1, 2)]);
    let mut got = [0u8; 2];
    d.mem.read_slice(&mut got, GuestAddress(DATA)).expect("rx");
    assert_eq!(&got, b"pi");
    d.mem.read_slice(&mut got, GuestAddress(DATA + 0x100)).expect("rx");
    assert_eq!(&got, b"ng");
    assert_eq!(input.pending(), 0);
    // Output.
    d.mem.write_slice(b"pong", GuestAddress(DATA + 0x200)).expect("tx");
    d.submit(1, &[(DATA + 0x200, 4, false)]);
    assert!(d.w(reg::QUEUE_NOTIFY, 1));
    assert_eq!(out.0.lock().expect("out").as_slice(), b"pong");
    assert_eq!(d.read(reg::INTERRUPT_STATUS), 1);
    d.w(reg::INTERRUPT_ACK, 1);
    assert_eq!(d.read(reg::INTERRUPT_STATUS), 0);
}

#[test]
fn notify_before_driver_ok_and_reset_do_nothing_harmful() {
    let out = Capture::default();
    let mut d = Driver::new(Box::new(Console::new(Box::new(out.clone()), ConsoleInput::default())), 1);
    d.setup_queue(1);
    d.mem.write_slice(b"early", GuestAddress(DATA)).expect("tx");
    d.submit(1, &[(DATA, 5, false)]);
    assert!(!d.w(reg::QUEUE_NOTIFY, 1), "not live before DRIVER_OK");
    assert!(!d.w(reg::QUEUE_NOTIFY, 7), "no such queue");
    assert!(out.0.lock().expect("out").is_empty());
    d.w(reg::STATUS, 0);
    assert_eq!(d.read(reg::STATUS), 0);
    d.w(reg::QUEUE_SEL, 1);
    assert_eq!(d.read(reg::QUEUE_READY), 0, "reset unreadies the queues");
    // Queue addresses outside memory fail DRIVER_OK.
    let mut d = Driver::new(Box::new(Console::new(Box::new(out), ConsoleInput::default())), 1);
    d.w(reg::QUEUE_SEL, 0);
    d.w(reg::QUEUE_NUM, 16);
    d.w(reg::QUEUE_DESC_LOW, 0xfff0_0000);
    d.w(reg::QUEUE_READY, 1);
    d.go();
    assert_ne!(d.read(reg::STATUS) & status::FAILED, 0);
}
