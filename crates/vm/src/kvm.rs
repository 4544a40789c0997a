//! The in-process VMM: this process opens `/dev/kvm`, maps the guest's RAM,
//! loads the kernel (or a payload), and runs the vCPUs on its own threads.
//! Port I/O reaches the 8250 serial port and the i8042 reset line, MMIO
//! reaches the virtio-mmio windows; everything else exits with a clear error.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::console::{Console, ConsoleInput};
use crate::cpu::{self, CpuMode};
use crate::layout::{self, I8042_COMMAND_PORT, SERIAL_IRQ, SERIAL_PORT};
use crate::mmio::{Interrupt, MmioTransport};
use crate::{blk, boot, jail, mptable, Error};

/// What the guest runs.
pub enum Boot {
    /// A Linux kernel through its PVH entry.
    Kernel {
        /// Uncompressed ELF `vmlinux` with a PVH note.
        kernel: PathBuf,
        /// The initramfs (newc cpio), if any.
        initrd: Option<Vec<u8>>,
        /// Arguments after the ones the machine adds (console, devices).
        cmdline: String,
    },
    /// Raw machine code at `load_at`, started in `mode`. The machine has no
    /// interrupt controller then, so a `hlt` ends the run.
    Payload {
        /// The code.
        code: Vec<u8>,
        /// Its guest-physical address; execution starts at its first byte.
        load_at: u64,
        /// The processor mode it starts in.
        mode: CpuMode,
    },
}

/// A disk for the guest.
pub struct Disk {
    /// The backing file.
    pub file: File,
    /// Refuse writes (and tell the guest so).
    pub read_only: bool,
    /// The id the guest reads (`/sys/block/vdX/serial`).
    pub id: String,
}

/// The console channel: the guest's `hvc0`.
pub struct ConsoleChannel {
    /// Where the guest's output goes.
    pub out: Box<dyn Write + Send>,
    /// Where input for the guest is queued.
    pub input: ConsoleInput,
}

/// A machine to build.
pub struct MachineConfig {
    /// vCPUs, 1 to 16.
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// What to run.
    pub boot: Boot,
    /// The 8250's output (the kernel's log with `console=ttyS0`).
    pub serial: Option<Box<dyn Write + Send>>,
    /// The virtio console, first virtio device when present.
    pub console: Option<ConsoleChannel>,
    /// Disks, virtio devices after the console, `vda` first.
    pub disks: Vec<Disk>,
    /// Jail every VMM thread with seccomp when the vCPUs start.
    pub jail: bool,
}

/// Why a machine stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A vCPU halted with no interrupt controller to wake it (payloads).
    Halted,
    /// The guest asked for a reset: triple fault (Linux's `reboot=t`),
    /// the i8042 reset line, or a system event. strata's agent ends a guest
    /// this way once the workload is gone.
    Reset,
    /// The guest powered off through a system event.
    PowerOff,
    /// The host stopped it ([`Stopper::stop`]).
    Stopped,
}

struct Noop;
impl Trigger for Noop {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// The serial port's interrupt: an irqfd when the machine has an irqchip.
struct SerialIrq(Option<EventFd>);
impl Trigger for SerialIrq {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        match &self.0 {
            Some(fd) => fd.write(1),
            None => Noop.trigger().map_err(|e| match e {}),
        }
    }
}

struct Sink;
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The devices the vCPUs reach.
struct Bus {
    serial: Mutex<Serial<SerialIrq, vm_superio::serial::NoEvents, Box<dyn Write + Send>>>,
    virtio: Vec<(u64, Arc<Mutex<MmioTransport>>)>,
}

impl Bus {
    fn mmio(&self, addr: u64) -> Option<(&Arc<Mutex<MmioTransport>>, u64)> {
        self.virtio
            .iter()
            .find(|(base, _)| addr >= *base && addr < base + layout::VIRTIO_MMIO_SIZE)
            .map(|(base, t)| (t, addr - base))
    }
}

/// A built machine, ready to run.
pub struct Machine {
    _kvm: Kvm,
    _vm: VmFd,
    mem: GuestMemoryMmap,
    vcpus: Vec<VcpuFd>,
    bus: Arc<Bus>,
    consoles: Vec<Arc<Mutex<MmioTransport>>>,
    jail: bool,
    stopper: Stopper,
}

/// Stops a running machine from another thread: its vCPUs leave the guest
/// and [`Machine::run`] returns [`Exit::Stopped`].
#[derive(Clone, Default)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    vcpu_threads: Arc<Mutex<Vec<libc::pthread_t>>>,
}

impl Stopper {
    /// Asks the machine to stop, kicking its vCPUs out of the guest until
    /// one of them has noticed (at most a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let threads = self.vcpu_threads.lock().unwrap_or_else(|e| e.into_inner());
            if threads.is_empty() || Instant::now() > deadline {
                return;
            }
            for t in threads.iter() {
                // SAFETY: the list only holds threads `run` has not joined
                // yet (it empties the list, under this lock, before joining).
                unsafe { libc::pthread_kill(*t, kick_signal()) };
            }
            drop(threads);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn open_kvm() -> Result<Kvm, Error> {
    let kvm = Kvm::new().map_err(|e| Error::KvmUnavailable(format!("cannot open /dev/kvm: {e}")))?;
    if kvm.get_api_version() != 12 {
        return Err(Error::KvmUnavailable(format!("/dev/kvm speaks API {}, not 12", kvm.get_api_version())));
    }
    Ok(kvm)
}

impl Machine {
    /// Builds the machine: memory, devices, vCPUs and the loaded guest.
    pub fn new(config: MachineConfig) -> Result<Self, Error> {
        if config.vcpus == 0 || config.vcpus > 16 {
            return Err(Error::Config(format!("{} vCPUs asked for; 1 to 16 are supported", config.vcpus)));
        }
        if config.memory_mib < layout::MIN_MEMORY_MIB || config.memory_mib > layout::MAX_MEMORY_MIB {
            return Err(Error::Config(format!(
                "{} MiB of guest memory asked for; {} to {} MiB are supported",
                config.memory_mib,
                layout::MIN_MEMORY_MIB,
                layout::MAX_MEMORY_MIB
            )));
        }
        let n_virtio = usize::from(config.console.is_some()) + config.disks.len();
        if n_virtio > layout::VIRTIO_MAX_DEVICES {
            return Err(Error::Config(format!(
                "{n_virtio} virtio devices asked for; at most {}",
                layout::VIRTIO_MAX_DEVICES
            )));
        }
        let kernel_boot = matches!(config.boot, Boot::Kernel { .. });
        if !kernel_boot && config.vcpus != 1 {
            return Err(Error::Config("a payload runs on one vCPU".into()));
        }

        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
        let mem_size = u64::from(config.memory_mib) << 20;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size as usize)])
            .map_err(|e| Error::Memory(format!("cannot map {} MiB: {e}", config.memory_mib)))?;
        for (slot, region) in mem.iter().enumerate() {
            let host =
                mem.get_host_address(region.start_addr()).map_err(|e| Error::Memory(format!("host address: {e}")))?;
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the
            // machine keeps for as long as the VM fd exists.
            unsafe { vm.set_user_memory_region(region) }.map_err(|e| Error::kvm("KVM_SET_USER_MEMORY_REGION", e))?;
        }
        vm.set_tss_address(0xfffb_d000).map_err(|e| Error::kvm("KVM_SET_TSS_ADDR", e))?;

        let mut serial_irqfd = None;
        if kernel_boot {
            vm.create_irq_chip().map_err(|e| Error::kvm("KVM_CREATE_IRQCHIP", e))?;
            let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
            vm.create_pit2(pit).map_err(|e| Error::kvm("KVM_CREATE_PIT2", e))?;
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Host(format!("eventfd: {e}")))?;
            vm.register_irqfd(&fd, SERIAL_IRQ).map_err(|e| Error::kvm("KVM_IRQFD", e))?;
            serial_irqfd = Some(fd);
        }

        // virtio devices: console first, then disks
        let mut virtio = Vec::new();
        let mut consoles = Vec::new();
        let mut cmdline_devices = Vec::new();
        let mut add = |device: Box<dyn crate::mmio::VirtioDevice>| -> Result<Arc<Mutex<MmioTransport>>, Error> {
            let index = virtio.len();
            let (base, irq) = layout::virtio_slot(index);
            let interrupt = if kernel_boot {
                let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Host(format!("eventfd: {e}")))?;
                vm.register_irqfd(&fd, irq).map_err(|e| Error::kvm("KVM_IRQFD", e))?;
                Interrupt::with_irqfd(Arc::new(fd))
            } else {
                Interrupt::status_only()
            };
            let transport = Arc::new(Mutex::new(MmioTransport::new(device, mem.clone(), interrupt)));
            virtio.push((base, transport.clone()));
            cmdline_devices.push(layout::virtio_cmdline(index));
            Ok(transport)
        };
        if let Some(console) = config.console {
            consoles.push(add(Box::new(Console::new(console.out, console.input)))?);
        }
        for disk in config.disks {
            let device = blk::Block::new(disk.file, disk.read_only, &disk.id)
                .map_err(|e| Error::Host(format!("disk {}: {e}", disk.id)))?;
            add(Box::new(device))?;
        }

        let (entry, rbx, mode) = match &config.boot {
            Boot::Kernel { kernel, initrd, cmdline } => {
                let full = format!(
                    "console=ttyS0 reboot=t panic=-1 pci=off nomodule i8042.noaux i8042.nomux {} {}",
                    cmdline_devices.join(" "),
                    cmdline
                );
                let loaded = boot::load_pvh(&mem, mem_size, kernel, initrd.as_deref(), full.trim_end())?;
                mptable::write(&mem, config.vcpus)?;
                (loaded.entry, loaded.start_info, CpuMode::Protected)
            }
            Boot::Payload { code, load_at, mode } => {
                let end = load_at.checked_add(code.len() as u64);
                let outside = match mode {
                    CpuMode::Real => end.is_none_or(|e| e > 0x10_0000 || (e - 1) >> 16 != load_at >> 16),
                    _ => end.is_none_or(|e| e > mem_size) || *load_at < 0x1000,
                };
                if outside {
                    return Err(Error::Config(format!("payload at {load_at:#x} does not fit in guest memory")));
                }
                mem.write_slice(code, GuestAddress(*load_at)).map_err(|e| Error::Memory(format!("payload: {e}")))?;
                (*load_at, 0, *mode)
            }
        };

        let mut vcpus = Vec::new();
        for id in 0..config.vcpus {
            let vcpu = vm.create_vcpu(u64::from(id)).map_err(|e| Error::kvm("KVM_CREATE_VCPU", e))?;
            let cpuid = cpu::cpuid_for(&kvm, id, config.vcpus)?;
            vcpu.set_cpuid2(&cpuid).map_err(|e| Error::kvm("KVM_SET_CPUID2", e))?;
            if id == 0 {
                cpu::setup_sregs(&mem, &vcpu, mode, entry)?;
                let rip = if mode == CpuMode::Real { cpu::real_mode_split(entry).1 } else { entry };
                cpu::setup_regs(&vcpu, rip, rbx)?;
            }
            vcpus.push(vcpu);
        }

        let serial_out = config.serial.unwrap_or_else(|| Box::new(Sink));
        let bus = Arc::new(Bus { serial: Mutex::new(Serial::new(SerialIrq(serial_irqfd), serial_out)), virtio });
        Ok(Self { _kvm: kvm, _vm: vm, mem, vcpus, bus, consoles, jail: config.jail, stopper: Stopper::default() })
    }

    /// A handle that stops the machine once it runs.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// The guest's memory (tests and the benchmark look at it).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// How many bytes of guest RAM are resident in this process.
    pub fn resident_guest_bytes(&self) -> u64 {
        let mut total = 0;
        for region in self.mem.iter() {
            let Ok(host) = self.mem.get_host_address(region.start_addr()) else { continue };
            let len = region.len() as usize;
            let pages = len.div_ceil(4096);
            let mut vec = vec![0u8; pages];
            // SAFETY: `host..host+len` is the region's live mapping and `vec`
            // has one byte per page of it.
            let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
            if rc == 0 {
                total += vec.iter().filter(|b| **b & 1 == 1).count() as u64 * 4096;
            }
        }
        total
    }

    /// Runs the guest until it halts, resets or powers off, or a vCPU fails.
    /// With a console, bytes queued on its input reach the guest as they
    /// arrive (`input_wakeup` is written by whoever queues them).
    pub fn run(self, input_wakeup: Option<Arc<EventFd>>) -> Result<Exit, Error> {
        let stop = self.stopper.stop.clone();
        install_kick_handler()?;
        let (tx, rx) = mpsc::channel::<Result<Exit, Error>>();
        let mut threads = Vec::new();
        let consoles = self.consoles.clone();
        // The vCPU threads (and the input thread) wait until the jail (if
        // any) covers every thread.
        let gate = Arc::new(Gate::default());
        let input_thread = input_wakeup.map(|wakeup| {
            let stop = stop.clone();
            let igate = gate.clone();
            std::thread::Builder::new().name("vmm-input".into()).spawn(move || {
                if !igate.wait() {
                    return;
                }
                while !stop.load(Ordering::SeqCst) {
                    // a short timeout lets the thread see `stop`
                    let mut pfd = libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(&*wakeup),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    let n = unsafe { libc::poll(&mut pfd, 1, 50) };
                    if n > 0 {
                        let _ = wakeup.read();
                    }
                    for c in &consoles {
                        let _ = c.lock().unwrap_or_else(|e| e.into_inner()).poll_input();
                    }
                }
            })
        });
        for (i, mut vcpu) in self.vcpus.into_iter().enumerate() {
            let bus = self.bus.clone();
            let vstop = stop.clone();
            let tx = tx.clone();
            let vgate = gate.clone();
            let handle = std::thread::Builder::new().name(format!("vcpu{i}")).spawn(move || {
                if !vgate.wait() {
                    return;
                }
                let result = run_vcpu(&mut vcpu, &bus, &vstop);
                let _ = tx.send(result);
            });
            match handle {
                Ok(h) => threads.push(h),
                Err(e) => {
                    // Nothing runs yet: the threads made so far end at the gate.
                    gate.open(false);
                    for t in threads {
                        let _ = t.join();
                    }
                    stop.store(true, Ordering::SeqCst);
                    return Err(Error::Host(format!("vCPU thread: {e}")));
                }
            }
        }
        drop(tx);
        let input_started = matches!(input_thread, Some(Ok(_)));
        gate.all_arrived(threads.len() + usize::from(input_started));
        let jailed = if self.jail { jail::install() } else { Ok(()) };
        gate.open(jailed.is_ok());
        if let Err(e) = jailed {
            for t in threads {
                let _ = t.join();
            }
            stop.store(true, Ordering::SeqCst);
            return Err(e);
        }
        let pthreads: Vec<_> = threads.iter().map(std::os::unix::thread::JoinHandleExt::as_pthread_t).collect();
        *self.stopper.vcpu_threads.lock().unwrap_or_else(|e| e.into_inner()) = pthreads.clone();
        let first = rx.recv().unwrap_or(Err(Error::Host("every vCPU thread ended without a result".into())));
        stop.store(true, Ordering::SeqCst);
        self.stopper.vcpu_threads.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // Kick the others out of KVM_RUN until they notice.
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            for (t, p) in threads.iter().zip(&pthreads) {
                if !t.is_finished() {
                    // SAFETY: the thread has not been joined, so its handle is live.
                    unsafe { libc::pthread_kill(*p, kick_signal()) };
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for t in threads {
            let _ = t.join();
        }
        if let Some(Ok(t)) = input_thread {
            let _ = t.join();
        }
        first
    }
}

/// Holds the vCPU threads until the machine says go (or not).
/// A thread's own start-up makes system calls the jail forbids, so the jail
/// goes on only once every vCPU thread waits here.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, Option<bool>)>,
    cond: std::sync::Condvar,
}

impl Gate {
    fn open(&self, go: bool) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(go);
        self.cond.notify_all();
    }

    /// Waits until `n` threads have arrived.
    fn all_arrived(&self, n: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.0 < n {
            state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += 1;
        self.cond.notify_all();
        loop {
            if let Some(go) = state.1 {
                return go;
            }
            state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

extern "C" fn on_kick(_: libc::c_int) {}

fn install_kick_handler() -> Result<(), Error> {
    // SAFETY: a zeroed sigaction with a handler that does nothing; no
    // SA_RESTART, so KVM_RUN returns EINTR.
    let rc = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(kick_signal(), &act, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(Error::Host(format!("sigaction: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

fn run_vcpu(vcpu: &mut VcpuFd, bus: &Bus, stop: &AtomicBool) -> Result<Exit, Error> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(Exit::Stopped);
        }
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if (SERIAL_PORT..SERIAL_PORT + 8).contains(&port) && data.len() == 1 {
                    let mut serial = bus.serial.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = serial.write((port - SERIAL_PORT) as u8, data[0]);
                } else if port == I8042_COMMAND_PORT && data.first() == Some(&0xfe) {
                    return Ok(Exit::Reset);
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                if (SERIAL_PORT..SERIAL_PORT + 8).contains(&port) && data.len() == 1 {
                    data[0] = bus.serial.lock().unwrap_or_else(|e| e.into_inner()).read((port - SERIAL_PORT) as u8);
                } else if port == I8042_COMMAND_PORT {
                    data.fill(0); // controller idle, no data
                } else {
                    data.fill(0xff); // nothing there
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => match bus.mmio(addr) {
                Some((t, off)) => t.lock().unwrap_or_else(|e| e.into_inner()).read(off, data),
                None => data.fill(0xff),
            },
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if let Some((t, off)) = bus.mmio(addr) {
                    t.lock().unwrap_or_else(|e| e.into_inner()).write(off, data);
                }
            }
            Ok(VcpuExit::Hlt) => return Ok(Exit::Halted),
            Ok(VcpuExit::Shutdown) => return Ok(Exit::Reset),
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return Ok(match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Exit::PowerOff,
                    _ => Exit::Reset,
                })
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Err(Error::Guest(format!("KVM could not enter the guest on vCPU {cpu} (hardware reason {reason:#x})")))
            }
            Ok(VcpuExit::InternalError) => {
                return Err(Error::Guest(
                    "KVM internal error: this host's KVM cannot run this guest (a nested or paravirtual KVM such as PVM); use the QEMU backend".into(),
                ))
            }
            Ok(VcpuExit::Intr) => continue,
            Ok(other) => return Err(Error::Guest(format!("unexpected vCPU exit {other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return Err(Error::kvm("KVM_RUN", e)),
        }
    }
}

/// A long-mode payload that turns on XSAVE and runs `xsetbv`, `xsave` and
/// `xrstor` before halting: what a Linux kernel does early, and what a KVM
/// that cannot boot ordinary guests (PVM here) fails on.
pub const PROBE_PAYLOAD: &[u8] = &[
    0x0f, 0x20, 0xe0, // mov rax, cr4
    0x0d, 0x00, 0x00, 0x04, 0x00, // or eax, 0x40000 (OSXSAVE)
    0x0f, 0x22, 0xe0, // mov cr4, rax
    0x31, 0xc9, // xor ecx, ecx
    0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3 (x87 | SSE)
    0x31, 0xd2, // xor edx, edx
    0x0f, 0x01, 0xd1, // xsetbv
    0xbf, 0x00, 0x00, 0x03, 0x00, // mov edi, 0x30000
    0x0f, 0xae, 0x27, // xsave [rdi]
    0x0f, 0xae, 0x2f, // xrstor [rdi]
    0xf4, // hlt
];

/// Whether `/dev/kvm` here runs what a Linux guest needs: the probe payload
/// must halt cleanly. Errs with the reason when it cannot.
pub fn probe() -> Result<(), Error> {
    let machine = Machine::new(MachineConfig {
        vcpus: 1,
        memory_mib: layout::MIN_MEMORY_MIB,
        boot: Boot::Payload { code: PROBE_PAYLOAD.to_vec(), load_at: 0x10000, mode: CpuMode::Long },
        serial: None,
        console: None,
        disks: Vec::new(),
        jail: false,
    })?;
    match machine.run(None) {
        Ok(Exit::Halted) => Ok(()),
        Ok(other) => {
            Err(Error::KvmUnavailable(format!("a probe guest using XSAVE stopped with {other:?} instead of halting")))
        }
        Err(e) => Err(Error::KvmUnavailable(format!("a probe guest using XSAVE failed: {e}"))),
    }
}

#[cfg(test)]
mod tests;
