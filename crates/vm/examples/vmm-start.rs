//! Measures the in-process VMM: from building a machine to the guest's first
//! exit to the VMM (a real-mode payload writing one byte to the serial port),
//! and the VMM's memory beyond the guest's RAM. Prints one JSON line per
//! round; hack/bench.sh runs it.
//!
//! Usage: vmm-start [ROUNDS] | vmm-start --probe (prints kvm or tcg: the
//! accelerator `strata run --vm` picks here)

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use strata_vm::cpu::CpuMode;
use strata_vm::kvm::{Boot, Exit, Machine, MachineConfig};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--probe") {
        println!("{}", if strata_vm::kvm::probe().is_ok() { "kvm" } else { "tcg" });
        return;
    }
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    for _ in 0..rounds {
        let serial = Capture::default();
        let started = Instant::now();
        let machine = match Machine::new(MachineConfig {
            vcpus: 1,
            memory_mib: 128,
            // mov dx, 0x3f8; mov al, '!'; out dx, al; hlt
            boot: Boot::Payload {
                code: vec![0xba, 0xf8, 0x03, 0xb0, b'!', 0xee, 0xf4],
                load_at: 0x10000,
                mode: CpuMode::Real,
            },
            serial: Some(Box::new(serial.clone())),
            console: None,
            disks: Vec::new(),
            jail: false,
        }) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("vmm-start: {e}");
                std::process::exit(1);
            }
        };
        let guest = machine.resident_guest_bytes() / 1024;
        let rss = rss_kib();
        let exit = machine.run(None);
        let micros = started.elapsed().as_micros();
        let ok = matches!(exit, Ok(Exit::Halted)) && serial.0.lock().map(|b| b.as_slice() == b"!").unwrap_or(false);
        println!(
            "{{\"start_to_exit_us\": {micros}, \"vmm_overhead_kib\": {}, \"guest_resident_kib\": {guest}, \"process_rss_kib\": {rss}, \"ok\": {ok}}}",
            rss.saturating_sub(guest)
        );
    }
}
