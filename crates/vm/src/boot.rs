//! Direct boot of a Linux kernel through its PVH entry: the ELF is loaded
//! where its program headers say, the initramfs goes to the top of RAM, and
//! an `hvm_start_info` tells the kernel about memory, command line and
//! initramfs. No firmware, no decompression, no real-mode setup code.

use std::fs::File;
use std::path::Path;

use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{
    CMDLINE_ADDR, CMDLINE_MAX, EBDA_START, HIMEM_START, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR,
};
use crate::Error;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// What loading a kernel decided.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// The PVH entry point (32-bit protected mode, paging off).
    pub entry: u64,
    /// Where `hvm_start_info` was written; the boot vCPU gets it in `ebx`.
    pub start_info: u64,
    /// First byte after the kernel image.
    pub kernel_end: u64,
    /// Where the initramfs was put, and its length.
    pub initrd: Option<(u64, u64)>,
}

/// Loads `kernel` (an uncompressed ELF `vmlinux` with a PVH note) and
/// `initrd` into `mem`, and writes the command line and start info.
pub fn load_pvh(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<Loaded, Error> {
    let kerr = |what: String| Error::Kernel { path: kernel.to_path_buf(), what };
    let mut file = File::open(kernel).map_err(|e| kerr(format!("cannot open: {e}")))?;
    let loaded = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|e| {
        kerr(format!("not a loadable ELF vmlinux ({e}); the VM backend boots an uncompressed kernel with a PVH entry"))
    })?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr.0,
        _ => return Err(kerr("has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y".into())),
    };
    let kernel_end = loaded.kernel_end;

    if cmdline.len() + 1 > CMDLINE_MAX || cmdline.as_bytes().contains(&0) {
        return Err(Error::Config(format!(
            "kernel command line is longer than {} bytes or holds a NUL",
            CMDLINE_MAX - 1
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR)).map_err(|e| Error::Memory(format!("command line: {e}")))?;

    let mut initrd_at = None;
    if let Some(image) = initrd {
        let len = image.len() as u64;
        let top = mem_size.checked_sub(len).map(|a| a & !0xfff);
        let addr = match top {
            Some(a) if a >= kernel_end.next_multiple_of(0x1000) => a,
            _ => {
                return Err(Error::Config(format!(
                    "the initramfs ({} KiB) and the kernel do not fit in {} MiB of guest memory",
                    len >> 10,
                    mem_size >> 20
                )))
            }
        };
        mem.write_slice(image, GuestAddress(addr)).map_err(|e| Error::Memory(format!("initramfs: {e}")))?;
        initrd_at = Some((addr, len));
    }

    let memmap = [
        hvm_memmap_table_entry { addr: 0, size: EBDA_START, type_: E820_RAM, reserved: 0 },
        hvm_memmap_table_entry { addr: EBDA_START, size: HIMEM_START - EBDA_START, type_: E820_RESERVED, reserved: 0 },
        hvm_memmap_table_entry { addr: HIMEM_START, size: mem_size - HIMEM_START, type_: E820_RAM, reserved: 0 },
    ];
    for (i, entry) in memmap.iter().enumerate() {
        mem.write_obj(
            *entry,
            GuestAddress(PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64),
        )
        .map_err(|e| Error::Memory(format!("memory map: {e}")))?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    if let Some((addr, len)) = initrd_at {
        let module = hvm_modlist_entry { paddr: addr, size: len, ..Default::default() };
        mem.write_obj(module, GuestAddress(PVH_MODLIST_ADDR))
            .map_err(|e| Error::Memory(format!("module list: {e}")))?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_ADDR;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_ADDR)).map_err(|e| Error::Memory(format!("start info: {e}")))?;
    Ok(Loaded { entry, start_info: PVH_INFO_ADDR, kernel_end, initrd: initrd_at })
}
