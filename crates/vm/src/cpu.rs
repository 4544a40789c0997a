//! vCPU register state for the three ways a guest starts: 16-bit real mode,
//! 32-bit protected mode without paging (the PVH entry), and 64-bit long mode
//! with identity-mapped pages.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, CpuId};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR};
use crate::Error;

/// The mode a vCPU starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// 16-bit real mode, segments based at 0.
    Real,
    /// 32-bit protected mode with flat segments and paging off (PVH).
    Protected,
    /// 64-bit long mode over identity-mapped 2 MiB pages for the low 4 GiB.
    Long,
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT entry from its flags (access byte in the low 8 bits, granularity
/// nibble in bits 12-15), base and limit, in the processor's packed layout.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
        | ((limit & 0xf_0000) << 32)
        | ((flags & 0xf0ff) << 40)
}

/// The cached form of a GDT entry that KVM wants in `kvm_sregs`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit_raw = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 { (limit_raw << 12) | 0xfff } else { limit_raw };
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(((entry >> 47) & 1) == 0),
        padding: 0,
    }
}

/// The GDT a mode needs: null, code, data, TSS.
pub fn gdt_for(mode: CpuMode) -> [u64; 4] {
    let code = match mode {
        CpuMode::Long => gdt_entry(0xa09b, 0, 0xfffff),
        _ => gdt_entry(0xc09b, 0, 0xfffff),
    };
    [0, code, gdt_entry(0xc093, 0, 0xfffff), gdt_entry(0x808b, 0, 0xfffff)]
}

/// Writes the GDT, an empty IDT and (for long mode) the page tables, and sets
/// the vCPU's special registers for `mode`.
///
/// In real mode, code segment and instruction pointer are split so that
/// `entry` may sit anywhere in the first MiB: see [`real_mode_split`].
pub fn setup_sregs(mem: &GuestMemoryMmap, vcpu: &VcpuFd, mode: CpuMode, entry: u64) -> Result<(), Error> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
    match mode {
        CpuMode::Real => {
            for seg in [&mut sregs.cs, &mut sregs.ds, &mut sregs.es, &mut sregs.fs, &mut sregs.gs, &mut sregs.ss] {
                seg.base = 0;
                seg.selector = 0;
            }
            let (base, _) = real_mode_split(entry);
            sregs.cs.base = base;
            sregs.cs.selector = (base >> 4) as u16;
        }
        CpuMode::Protected | CpuMode::Long => {
            let gdt = gdt_for(mode);
            for (i, entry) in gdt.iter().enumerate() {
                mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
                    .map_err(|e| Error::Memory(format!("GDT: {e}")))?;
            }
            mem.write_obj(0u64, GuestAddress(IDT_ADDR)).map_err(|e| Error::Memory(format!("IDT: {e}")))?;
            sregs.gdt.base = GDT_ADDR;
            sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
            sregs.idt.base = IDT_ADDR;
            sregs.idt.limit = 7;
            let code = segment_from_gdt(gdt[1], 1);
            let data = segment_from_gdt(gdt[2], 2);
            sregs.cs = code;
            sregs.ds = data;
            sregs.es = data;
            sregs.fs = data;
            sregs.gs = data;
            sregs.ss = data;
            sregs.tr = segment_from_gdt(gdt[3], 3);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            if mode == CpuMode::Long {
                write_identity_page_tables(mem)?;
                sregs.cr3 = PML4_ADDR;
                sregs.cr4 |= CR4_PAE;
                sregs.cr0 |= CR0_PG;
                sregs.efer |= EFER_LME | EFER_LMA;
            }
        }
    }
    vcpu.set_sregs(&sregs).map_err(|e| Error::kvm("KVM_SET_SREGS", e))
}

/// Code segment base and instruction pointer for a real-mode `entry`: the
/// 64 KiB segment that holds it, and the offset in it.
pub fn real_mode_split(entry: u64) -> (u64, u64) {
    (entry & !0xffff, entry & 0xffff)
}

/// Identity-maps the low 4 GiB with 2 MiB pages: PML4 → one PDPT → four PDs.
pub fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), Error> {
    let werr = |e: vm_memory::GuestMemoryError| Error::Memory(format!("page tables: {e}"));
    mem.write_obj(PDPT_ADDR | 0x3, GuestAddress(PML4_ADDR)).map_err(werr)?;
    for gib in 0..4u64 {
        let pd = PD_ADDR + gib * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(PDPT_ADDR + gib * 8)).map_err(werr)?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            // present, writable, page size (2 MiB)
            mem.write_obj(phys | 0x83, GuestAddress(pd + i * 8)).map_err(werr)?;
        }
    }
    Ok(())
}

/// Sets the general registers: where to start, a stack, and `rbx` / `rsi`
/// (PVH passes its start-info address in `ebx`).
pub fn setup_regs(vcpu: &VcpuFd, entry: u64, rbx: u64) -> Result<(), Error> {
    let regs = kvm_regs { rflags: 0x2, rip: entry, rbx, rsp: 0x8ff0, rbp: 0x8ff0, ..Default::default() };
    vcpu.set_regs(&regs).map_err(|e| Error::kvm("KVM_SET_REGS", e))
}

/// The CPUID this host's KVM supports, with the APIC id of vCPU `id` and the
/// vCPU count filled in where the guest reads them.
pub fn cpuid_for(kvm: &Kvm, id: u8, count: u8) -> Result<CpuId, Error> {
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| Error::kvm("KVM_GET_SUPPORTED_CPUID", e))?;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                // Hypervisor present.
                entry.ecx |= 1 << 31;
            }
            0xb => entry.edx = u32::from(id),
            _ => {}
        }
    }
    Ok(cpuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_round_trip_to_kvm_segments() {
        let code = gdt_entry(0xa09b, 0, 0xfffff);
        assert_eq!(code, 0x00af_9b00_0000_ffff);
        let seg = segment_from_gdt(code, 1);
        assert_eq!((seg.selector, seg.type_, seg.present, seg.l, seg.db, seg.s, seg.g), (8, 0xb, 1, 1, 0, 1, 1));
        assert_eq!(seg.limit, 0xffff_ffff);
        let data = segment_from_gdt(gdt_entry(0xc093, 0, 0xfffff), 2);
        assert_eq!((data.selector, data.type_, data.db, data.l), (16, 3, 1, 0));
        let tss = segment_from_gdt(gdt_entry(0x808b, 0x1234_5678, 0xfffff), 3);
        assert_eq!(tss.base, 0x1234_5678);
        assert_eq!(tss.type_, 0xb);
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn page_tables_identity_map_the_low_4gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
        write_identity_page_tables(&mem).expect("tables");
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).expect("read");
        assert_eq!(pml4 & !0xfff, PDPT_ADDR);
        // 0xd0000000 (the virtio window) is in the fourth GiB, entry 128.
        let pdpte: u64 = mem.read_obj(GuestAddress(PDPT_ADDR + 3 * 8)).expect("read");
        let pde: u64 = mem.read_obj(GuestAddress((pdpte & !0xfff) + 128 * 8)).expect("read");
        assert_eq!(pde & !0xfff, 0xd000_0000);
        assert_eq!(pde & 0x83, 0x83);
    }
}
