//! Where things sit in guest physical memory and in the I/O spaces.
//!
//! One RAM region from 0 up to the guest's size, capped below the MMIO hole
//! at 3 GiB; the virtio-mmio windows at the start of that hole, each a page,
//! each with its own interrupt line.

/// Global descriptor table written for the boot vCPU.
pub const GDT_ADDR: u64 = 0x500;
/// An empty interrupt descriptor table (the guest installs its own).
pub const IDT_ADDR: u64 = 0x520;
/// Intel MP table (how a kernel without ACPI finds its CPUs and IOAPIC).
pub const MPTABLE_ADDR: u64 = 0x9fc00;
/// PVH `hvm_start_info`, followed by its memory map and module list.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH memory map entries.
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// PVH module list (the initramfs).
pub const PVH_MODLIST_ADDR: u64 = 0x6100;
/// Page tables for 64-bit payloads: PML4, one PDPT, four page directories of
/// 2 MiB pages identity-mapping the low 4 GiB.
pub const PML4_ADDR: u64 = 0x9000;
/// The page-directory-pointer table under [`PML4_ADDR`].
pub const PDPT_ADDR: u64 = 0xa000;
/// The first of four page directories.
pub const PD_ADDR: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Longest command line accepted, with its terminating NUL.
pub const CMDLINE_MAX: usize = 0x10000;
/// End of conventional memory below 1 MiB (the EBDA starts here).
pub const EBDA_START: u64 = 0x9fc00;
/// Where high memory (and the kernel) starts.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO hole; RAM never reaches it.
pub const MMIO_START: u64 = 0xc000_0000;
/// First virtio-mmio window.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Interrupt line of the first virtio-mmio device; later ones count up.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Most virtio-mmio devices one machine gets (IRQs 5 to 15 less 8).
pub const VIRTIO_MAX_DEVICES: usize = 8;
/// The 8250 UART (COM1) and its interrupt line.
pub const SERIAL_PORT: u16 = 0x3f8;
/// COM1's interrupt line.
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 command port: writing 0xfe there asks for a reset.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// The smallest guest accepted, in MiB.
pub const MIN_MEMORY_MIB: u32 = 16;
/// The largest guest accepted, in MiB (RAM stays below the MMIO hole).
pub const MAX_MEMORY_MIB: u32 = (MMIO_START >> 20) as u32;

// The fixed structures never overlap, and all fit below the kernel.
const _: () = assert!(PVH_MODLIST_ADDR + 0x100 <= PML4_ADDR);
const _: () = assert!(PD_ADDR + 4 * 0x1000 <= CMDLINE_ADDR);
const _: () = assert!(CMDLINE_ADDR + CMDLINE_MAX as u64 <= EBDA_START);
const _: () = assert!(MPTABLE_ADDR + 0x400 <= HIMEM_START);

/// The virtio-mmio window and interrupt line of device `index`.
pub fn virtio_slot(index: usize) -> (u64, u32) {
    let irq = VIRTIO_IRQ_BASE + index as u32;
    // Skip 8 (the RTC's line) so that a legacy guest never sees it shared.
    let irq = if irq >= 8 { irq + 1 } else { irq };
    (VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE, irq)
}

/// The kernel command-line argument that declares device `index` to a guest
/// built with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`.
pub fn virtio_cmdline(index: usize) -> String {
    let (base, irq) = virtio_slot(index);
    format!("virtio_mmio.device=4K@{base:#x}:{irq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap_and_avoid_the_rtc_line() {
        let mut seen = Vec::new();
        for i in 0..VIRTIO_MAX_DEVICES {
            let (base, irq) = virtio_slot(i);
            assert!(base >= VIRTIO_MMIO_BASE && base + VIRTIO_MMIO_SIZE <= 0xe000_0000);
            assert_ne!(irq, 8);
            assert!(irq < 16 && irq != SERIAL_IRQ);
            assert!(!seen.contains(&irq));
            seen.push(irq);
        }
        assert_eq!(virtio_cmdline(0), "virtio_mmio.device=4K@0xd0000000:5");
        assert_eq!(virtio_cmdline(3), "virtio_mmio.device=4K@0xd0003000:9");
    }
}
