//! The Intel MultiProcessor table: how a kernel booted without ACPI learns
//! how many CPUs it has and where the IOAPIC is. Written at the start of the
//! EBDA, where the kernel looks for the `_MP_` floating pointer.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::MPTABLE_ADDR;
use crate::Error;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_ADDR: u32 = 0xfec0_0000;
const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Interrupt pins the IOAPIC of KVM's in-kernel irqchip has.
const IOAPIC_PINS: u8 = 24;

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg()
}

/// The table's bytes for `cpus` processors, to be placed at `at`.
pub fn build(cpus: u8, at: u32) -> Vec<u8> {
    let ioapic_id = cpus + 1;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.push(0u8); // processor
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(if id == 0 { 0x3 } else { 0x1 }); // enabled, boot processor
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // signature: family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]); // bus 0
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        // pin 0 is the 8259's ExtINT, the rest plain ISA interrupts
        let kind = if pin == 0 { 3 } else { 0 };
        entries.extend_from_slice(&[3, kind, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    // LINT0 takes ExtINT, LINT1 NMI, on every local APIC.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let header_len = 44usize;
    let table_at = at + 16;
    let mut table = Vec::with_capacity(header_len + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((header_len + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"STRATA  ");
    table.extend_from_slice(b"STRATA-VM   ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&table_at.to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(4);
    floating.push(0); // checksum, below
    floating.extend_from_slice(&[0; 5]);
    floating[10] = checksum(&floating);
    floating.extend_from_slice(&table);
    floating
}

/// Writes the table for `cpus` processors into guest memory.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), Error> {
    let bytes = build(cpus, MPTABLE_ADDR as u32);
    if bytes.len() > 0x400 {
        return Err(Error::Config(format!("{cpus} vCPUs do not fit in the MP table")));
    }
    mem.write_slice(&bytes, GuestAddress(MPTABLE_ADDR)).map_err(|e| Error::Memory(format!("MP table: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        for cpus in [1u8, 2, 16] {
            let bytes = build(cpus, 0x9fc00);
            assert_eq!(&bytes[0..4], b"_MP_");
            assert_eq!(bytes[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            assert_eq!(u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]), 0x9fc10);
            let table = &bytes[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            let entries = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(entries, u16::from(cpus) + 2 + 24 + 2);
            assert_eq!(len, 44 + 20 * cpus as usize + 8 * (2 + 24 + 2));
            assert!(bytes.len() <= 0x400);
        }
    }
}
