//! Payload tests: small hand-assembled guests that run under any KVM,
//! including this project's CI host whose KVM boots no Linux kernel.

use std::io::Write;

use super::*;
use crate::mmio::reg;

use crate::test_util::Capture;

fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("{test}: skipped: /dev/kvm is not usable here ({e})");
            false
        }
    }
}

fn payload(code: Vec<u8>, mode: CpuMode, serial: &Capture, console: Option<&Capture>) -> MachineConfig {
    MachineConfig {
        vcpus: 1,
        memory_mib: 16,
        boot: Boot::Payload { code, load_at: 0x10000, mode },
        serial: Some(Box::new(serial.clone())),
        console: console.map(|c| ConsoleChannel { out: Box::new(c.clone()), input: ConsoleInput::default() }),
        disks: Vec::new(),
        jail: false,
    }
}

/// Runs a long-mode payload on a machine with a console (virtio device 0)
/// until it halts; returns what it wrote to the serial port.
fn run_long_with_console(code: Vec<u8>) -> Vec<u8> {
    let serial = Capture::default();
    let console = Capture::default();
    let machine = Machine::new(payload(code, CpuMode::Long, &serial, Some(&console))).expect("machine");
    assert_eq!(machine.run(None).expect("run"), Exit::Halted);
    let out = serial.0.lock().expect("capture").clone();
    out
}

/// A tiny long-mode assembler for the instructions the payloads use.
#[derive(Default)]
struct Asm(Vec<u8>);
impl Asm {
    fn mov_rbx(mut self, imm: u64) -> Self {
        self.0.extend_from_slice(&[0x48, 0xbb]);
        self.0.extend_from_slice(&imm.to_le_bytes());
        self
    }
    /// mov dword [rbx+disp], imm
    fn store(mut self, disp: u64, imm: u32) -> Self {
        self.0.extend_from_slice(&[0xc7, 0x83]);
        self.0.extend_from_slice(&(disp as u32).to_le_bytes());
        self.0.extend_from_slice(&imm.to_le_bytes());
        self
    }
    /// mov eax, dword [rbx+disp]
    fn load(mut self, disp: u64) -> Self {
        self.0.extend_from_slice(&[0x8b, 0x83]);
        self.0.extend_from_slice(&(disp as u32).to_le_bytes());
        self
    }
    /// out 0x3f8, al
    fn out_al(mut self) -> Self {
        self.0.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xee]);
        self
    }
    /// add al, imm
    fn add_al(mut self, imm: u8) -> Self {
        self.0.extend_from_slice(&[0x04, imm]);
        self
    }
    /// shr eax, n
    fn shr_eax(mut self, n: u8) -> Self {
        self.0.extend_from_slice(&[0xc1, 0xe8, n]);
        self
    }
    fn hlt(mut self) -> Vec<u8> {
        self.0.push(0xf4);
        self.0
    }
}

#[test]
fn real_mode_payload_writes_to_the_serial_port_and_halts() {
    if !kvm_or_skip("real_mode_payload") {
        return;
    }
    // mov dx, 0x3f8; mov al, 'H'; out dx, al; mov al, 'i'; out dx, al; hlt
    let code = vec![0xba, 0xf8, 0x03, 0xb0, b'H', 0xee, 0xb0, b'i', 0xee, 0xf4];
    let serial = Capture::default();
    let machine = Machine::new(payload(code, CpuMode::Real, &serial, None)).expect("machine");
    assert_eq!(machine.run(None).expect("run"), Exit::Halted);
    assert_eq!(serial.text(), "Hi");
}

#[test]
fn long_mode_payload_reads_the_virtio_mmio_window() {
    if !kvm_or_skip("long_mode_payload") {
        return;
    }
    // Print the 4 bytes of MagicValue, then DeviceID + '0', then a byte from
    // outside any window (0xff).
    let mut asm = Asm::default().mov_rbx(layout::VIRTIO_MMIO_BASE).load(reg::MAGIC);
    for _ in 0..4 {
        asm = asm.out_al().shr_eax(8);
    }
    let code = asm
        .load(reg::DEVICE_ID)
        .add_al(b'0')
        .out_al()
        .load(reg::VERSION)
        .add_al(b'0')
        .out_al()
        .mov_rbx(layout::VIRTIO_MMIO_BASE + 0x10_0000)
        .load(0)
        .out_al()
        .hlt();
    let out = run_long_with_console(code);
    assert_eq!(&out[..6], b"virt32", "magic, device id 3 (console), version 2");
    assert_eq!(out[6], 0xff, "nothing answers outside the windows");
}

/// Host-side ring setup: one descriptor with `data` in queue memory at 0x40000.
fn stage_tx_ring(mem: &GuestMemoryMmap, data: &[u8]) {
    let desc_table = 0x40000u64;
    let avail = 0x41000u64;
    mem.write_slice(data, GuestAddress(0x50000)).expect("data");
    // descriptor 0: addr, len, flags 0 (device-readable), next 0
    mem.write_obj(0x50000u64, GuestAddress(desc_table)).expect("desc");
    mem.write_obj(data.len() as u32, GuestAddress(desc_table + 8)).expect("desc");
    mem.write_obj(0u32, GuestAddress(desc_table + 12)).expect("desc");
    // avail ring: flags 0, idx 1, ring[0] = 0
    mem.write_obj(0u16, GuestAddress(avail)).expect("avail");
    mem.write_obj(1u16, GuestAddress(avail + 2)).expect("avail");
    mem.write_obj(0u16, GuestAddress(avail + 4)).expect("avail");
}

/// The register writes a virtio driver makes to bring up queue `q`.
fn driver_bringup(asm: Asm, q: u32) -> Asm {
    asm.store(reg::STATUS, 1)
        .store(reg::STATUS, 3)
        .store(reg::DRIVER_FEATURES_SEL, 1)
        .store(reg::DRIVER_FEATURES, 1) // VIRTIO_F_VERSION_1
        .store(reg::STATUS, 0xb)
        .store(reg::QUEUE_SEL, q)
        .store(reg::QUEUE_NUM, 8)
        .store(reg::QUEUE_DESC_LOW, 0x40000)
        .store(reg::QUEUE_DESC_HIGH, 0)
        .store(reg::QUEUE_AVAIL_LOW, 0x41000)
        .store(reg::QUEUE_AVAIL_HIGH, 0)
        .store(reg::QUEUE_USED_LOW, 0x42000)
        .store(reg::QUEUE_USED_HIGH, 0)
        .store(reg::QUEUE_READY, 1)
        .store(reg::STATUS, 0xf)
}

#[test]
fn virtqueue_round_trip_through_the_console() {
    if !kvm_or_skip("virtqueue_round_trip") {
        return;
    }
    let asm = driver_bringup(Asm::default().mov_rbx(layout::VIRTIO_MMIO_BASE), 1);
    let code = asm
        .store(reg::QUEUE_NOTIFY, 1)
        .load(reg::INTERRUPT_STATUS)
        .add_al(b'0')
        .out_al()
        .store(reg::INTERRUPT_ACK, 1)
        .load(reg::INTERRUPT_STATUS)
        .add_al(b'0')
        .out_al()
        .load(reg::STATUS)
        .out_al()
        .hlt();
    let serial = Capture::default();
    let console = Capture::default();
    let machine = Machine::new(payload(code, CpuMode::Long, &serial, Some(&console))).expect("machine");
    stage_tx_ring(machine.memory(), b"hello from the guest");
    let mem = machine.memory().clone();
    assert_eq!(machine.run(None).expect("run"), Exit::Halted);
    assert_eq!(console.text(), "hello from the guest");
    let out = serial.0.lock().expect("capture").clone();
    assert_eq!(out, vec![b'1', b'0', 0xf], "used-buffer interrupt raised, then acknowledged; DRIVER_OK kept");
    let used_idx: u16 = mem.read_obj(GuestAddress(0x42002)).expect("used idx");
    let used_id: u32 = mem.read_obj(GuestAddress(0x42004)).expect("used elem");
    assert_eq!((used_idx, used_id), (1, 0), "the device returned descriptor 0");
}

#[test]
fn a_driver_asking_for_unoffered_features_does_not_get_features_ok() {
    if !kvm_or_skip("feature_negotiation") {
        return;
    }
    let code = Asm::default()
        .mov_rbx(layout::VIRTIO_MMIO_BASE)
        .store(reg::STATUS, 3)
        .store(reg::DRIVER_FEATURES_SEL, 0)
        .store(reg::DRIVER_FEATURES, 1 << 20) // not offered
        .store(reg::DRIVER_FEATURES_SEL, 1)
        .store(reg::DRIVER_FEATURES, 1)
        .store(reg::STATUS, 0xb)
        .load(reg::STATUS)
        .out_al()
        .hlt();
    assert_eq!(run_long_with_console(code), vec![3]);
}

#[test]
fn reset_line_and_triple_fault_end_the_machine() {
    if !kvm_or_skip("reset") {
        return;
    }
    // mov al, 0xfe; out 0x64, al
    let serial = Capture::default();
    let m = Machine::new(payload(vec![0xb0, 0xfe, 0xe6, 0x64, 0xf4], CpuMode::Real, &serial, None)).expect("machine");
    assert_eq!(m.run(None).expect("run"), Exit::Reset);
    // Real mode with an empty IDT: lidt [limit 0], then int3: #GP → double
    // fault → triple fault → shutdown (how Linux's reboot=t ends a guest).
    // The 6-byte IDT descriptor of zeros sits right after the code.
    if let Err(e) = probe() {
        eprintln!("reset: triple fault skipped: this KVM does not deliver guest exceptions ({e})");
        return;
    }
    let code = vec![0x0f, 0x01, 0x1e, 0x08, 0x00, 0xcc, 0xf4, 0x90, 0, 0, 0, 0, 0, 0];
    let m = Machine::new(payload(code, CpuMode::Real, &serial, None)).expect("machine");
    assert_eq!(m.run(None).expect("run"), Exit::Reset);
}

/// A minimal ELF64 kernel with a PVH note whose 32-bit entry checks the
/// start-info magic and prints the command line and the module count.
fn pvh_elf(with_note: bool) -> Vec<u8> {
    let code: Vec<u8> = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33, // cmp dword [ebx], 0x336ec578
        0x75, 0x14, // jne fail
        0x8b, 0x73, 0x18, // mov esi, [ebx+24] (cmdline_paddr)
        0x8a, 0x06, // L: mov al, [esi]
        0x84, 0xc0, // test al, al
        0x74, 0x04, // jz done
        0xee, // out dx, al
        0x46, // inc esi
        0xeb, 0xf6, // jmp L
        0x8a, 0x43, 0x0c, // done: mov al, [ebx+12] (nr_modules)
        0x04, 0x30, // add al, '0'
        0xee, 0xf4, // out dx, al; hlt
        0xb0, b'!', 0xee, 0xf4, // fail: mov al, '!'; out; hlt
    ];
    let entry: u64 = 0x10_0000;
    let phnum: u16 = if with_note { 2 } else { 1 };
    let mut elf = vec![0u8; 0x1000];
    elf[0..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&entry.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    elf[56..58].copy_from_slice(&phnum.to_le_bytes());
    let phdr = |kind: u32, offset: u64, addr: u64, size: u64| {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&kind.to_le_bytes());
        p[4..8].copy_from_slice(&5u32.to_le_bytes());
        p[8..16].copy_from_slice(&offset.to_le_bytes());
        p[16..24].copy_from_slice(&addr.to_le_bytes());
        p[24..32].copy_from_slice(&addr.to_le_bytes());
        p[32..40].copy_from_slice(&size.to_le_bytes());
        p[40..48].copy_from_slice(&size.to_le_bytes());
        p
    };
    elf[64..120].copy_from_slice(&phdr(1, 0x1000, entry, code.len() as u64));
    if with_note {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes()); // namesz
        note.extend_from_slice(&4u32.to_le_bytes()); // descsz
        note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&(entry as u32).to_le_bytes());
        elf[120..176].copy_from_slice(&phdr(4, 0x800, 0, note.len() as u64));
        elf[0x800..0x800 + note.len()].copy_from_slice(&note);
    }
    elf.extend_from_slice(&code);
    elf
}

fn write_temp(name: &str, bytes: &[u8]) -> tempfile_path::TempPath {
    tempfile_path::TempPath::new(name, bytes)
}

mod tempfile_path {
    use std::path::{Path, PathBuf};
    /// A file under the temp dir, removed when dropped.
    pub struct TempPath(PathBuf);
    impl TempPath {
        pub fn new(name: &str, bytes: &[u8]) -> Self {
            let path = std::env::temp_dir().join(format!("strata-vm-test-{}-{name}", std::process::id()));
            std::fs::write(&path, bytes).expect("write temp file");
            Self(path)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn kernel_config(kernel: &std::path::Path, initrd: Option<Vec<u8>>, serial: &Capture) -> MachineConfig {
    MachineConfig {
        vcpus: 1,
        memory_mib: 32,
        boot: Boot::Kernel { kernel: kernel.to_path_buf(), initrd, cmdline: "strata.test=1".into() },
        serial: Some(Box::new(serial.clone())),
        console: None,
        disks: Vec::new(),
        jail: false,
    }
}

#[test]
fn pvh_boot_hands_the_kernel_its_start_info_and_command_line() {
    let kernel = write_temp("pvh.elf", &pvh_elf(true));
    if !kvm_or_skip("pvh_boot") {
        return;
    }
    let serial = Capture::default();
    let m = Machine::new(kernel_config(kernel.path(), Some(vec![7u8; 4096]), &serial)).expect("machine");
    // The payload halts; with an irqchip KVM keeps a halted vCPU inside the
    // kernel, so wait for the output and then stop the machine from outside.
    let stop_after = serial.clone();
    let stopper = m.stopper();
    let handle = std::thread::spawn(move || m.run(None));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stop_after.text().ends_with('1') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let text = serial.text();
    assert!(text.starts_with("console=ttyS0 reboot=t"), "{text:?}");
    assert!(text.contains(" strata.test=1"), "{text:?}");
    assert!(text.ends_with('1'), "one module (the initramfs): {text:?}");
    stopper.stop();
    assert_eq!(handle.join().expect("run thread").expect("run"), Exit::Stopped);
}

#[test]
fn kernels_that_cannot_boot_are_refused_by_name() {
    let serial = Capture::default();
    let cases: Vec<(tempfile_path::TempPath, &str)> = vec![
        (
            write_temp("not-elf", b"MZ this is no ELF file at all, not even close............................"),
            "not a loadable ELF vmlinux",
        ),
        (write_temp("no-note.elf", &pvh_elf(false)), "has no PVH entry note"),
    ];
    if !kvm_or_skip("kernel_errors") {
        return;
    }
    for (file, want) in &cases {
        let err = Machine::new(kernel_config(file.path(), None, &serial)).err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains(want) && msg.contains(&file.path().display().to_string()), "{msg}");
    }
    let missing = std::path::Path::new("/nonexistent/vmlinux");
    let msg = Machine::new(kernel_config(missing, None, &serial)).err().expect("refused").to_string();
    assert!(msg.contains("/nonexistent/vmlinux") && msg.contains("cannot open"), "{msg}");
    let kernel = write_temp("big-initrd.elf", &pvh_elf(true));
    let msg = Machine::new(kernel_config(kernel.path(), Some(vec![0; 40 << 20]), &serial))
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("do not fit in 32 MiB"), "{msg}");
}

#[test]
fn machine_sizes_outside_the_supported_range_are_refused() {
    let serial = Capture::default();
    for (vcpus, mib, want) in [(0u8, 64u32, "0 vCPUs"), (17, 64, "17 vCPUs"), (1, 8, "8 MiB"), (1, 4096, "4096 MiB")] {
        let mut config = payload(vec![0xf4], CpuMode::Real, &serial, None);
        config.vcpus = vcpus;
        config.memory_mib = mib;
        let msg = Machine::new(config).err().expect("refused").to_string();
        assert!(msg.contains(want), "{msg}");
    }
}

#[test]
fn probe_tells_whether_this_kvm_boots_linux_guests() {
    if !kvm_or_skip("probe") {
        return;
    }
    let started = Instant::now();
    let result = probe();
    assert!(started.elapsed() < Duration::from_secs(5), "the probe never hangs");
    match result {
        Ok(()) => eprintln!("probe: this host's KVM runs XSAVE guests"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("KVM is not usable: a probe guest using XSAVE"), "{msg}");
            eprintln!("probe: {msg}");
        }
    }
}

/// Runs in a child process (see `the_jail_kills_a_vmm_that_opens_a_file`).
#[test]
#[ignore = "run by the_jail_kills_a_vmm_that_opens_a_file in a child process"]
fn jail_child() {
    if std::env::var_os("STRATA_VM_JAIL_CHILD").is_none() {
        return;
    }
    let serial = Capture::default();
    let mut config = payload(vec![0xba, 0xf8, 0x03, 0xb0, b'J', 0xee, 0xf4], CpuMode::Real, &serial, None);
    config.jail = true;
    let m = Machine::new(config).expect("machine");
    assert_eq!(m.run(None).expect("run"), Exit::Halted);
    println!("guest said {}", serial.text());
    let _ = std::io::stdout().flush();
    // The jail is on: opening a file is not allowed.
    let _ = std::fs::File::open("/etc/hostname");
    println!("still alive");
}

#[test]
fn the_jail_kills_a_vmm_that_opens_a_file() {
    if !kvm_or_skip("jail") {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "kvm::tests::jail_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("STRATA_VM_JAIL_CHILD", "1")
        .output()
        .expect("child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    use std::os::unix::process::ExitStatusExt;
    assert!(stdout.contains("guest said J"), "the guest ran under the jail: {stdout}");
    assert!(!stdout.contains("still alive"), "{stdout}");
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{:?} {stdout}", out.status);
}
