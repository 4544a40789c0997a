#!/usr/bin/env bash
# Prepares the guest kernel of strata's VM backend and prints where it is.
#
# The kernel is built from Debian's linux-source package with the options in
# hack/vm/kernel.config (virtio-mmio devices from the command line, virtio-blk,
# virtio-console and virtio-net, ext4/erofs/overlay, 9p over virtio, namespaces, cgroups
# v2, seccomp; PVH entry, no modules) and cached outside the repository, keyed by the source
# version and the options, so a second run on the same machine returns at once.
# The initramfs is not made here: strata generates it from its own binary on
# first use and caches it beside the kernel.
#
# With --stock, nothing is built: Debian's own kernel (the package
# linux-image-amd64 depends on) is downloaded and its vmlinux unpacked from the
# package's vmlinuz (it has a PVH entry), and the modules the guest needs
# (virtio-mmio, virtio-blk, virtio-console, virtio-net, erofs, overlay, 9p, and what they
# depend on) are put in modules/ beside it with a file naming them in load
# order. strata packs them into the initramfs, and its agent loads them first.
#
# Usage: hack/vm-assets.sh [--print] [--stock]
#   STRATA_VM_CACHE   cache folder (default /var/cache/strata/vm)
#   --print           print the cached kernel's path, build nothing; fails when
#                     none is cached
#   --stock           Debian's kernel instead of a build
# Prints one line: kernel=PATH. $STRATA_VM_CACHE/vmlinux always links to it
# (and $STRATA_VM_CACHE/stock-vmlinux to the stock one).
set -euo pipefail

print=0 stock=0
for a in "$@"; do
  case $a in
  --print) print=1 ;;
  --stock) stock=1 ;;
  *) echo "usage: hack/vm-assets.sh [--print] [--stock]" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
cache=${STRATA_VM_CACHE:-/var/cache/strata/vm}
fragment=$here/vm/kernel.config

need=()
[ -f /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
for tool in bc bison flex make gcc cpio xz; do
  command -v $tool >/dev/null || need+=("$tool")
done
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
if [ "$stock" = 1 ]; then
  exec "$(dirname "$0")/vm/stock-kernel.sh" "$print"
fi
if [ "$print" = 0 ] && [ ${#need[@]} -gt 0 ]; then
  echo "vm-assets: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]/xz/xz-utils}" >/dev/null
fi

version=$(dpkg-query -W -f '${Version}' linux-source-6.1 2>/dev/null || echo unknown)
key=$( (echo "$version"; cat "$fragment") | sha256sum | cut -c1-16)
out=$cache/kernel-$key
# Kernels built for other options or sources are superseded (18 MB each):
# only this one stays. (A build in progress elsewhere is a .tmp folder.)
prune() {
  local old
  for old in "$cache"/kernel-*; do
    case $old in "$out" | *.tmp) ;; *) rm -rf "$old" ;; esac
  done
}
if [ -f "$out/vmlinux" ]; then
  ln -sfn "$out/vmlinux" "$cache/vmlinux"
  [ "$print" = 1 ] || prune
  echo "kernel=$out/vmlinux"
  exit 0
fi
if [ "$print" = 1 ]; then
  echo "vm-assets: no kernel built for these options in $cache; run hack/vm-assets.sh" >&2
  exit 1
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "vm-assets: building the guest kernel (linux-source $version) in $work" >&2
tar -C "$work" -xJf /usr/src/linux-source-6.1.tar.xz
src=$work/linux-source-6.1
make -C "$src" -s tinyconfig >/dev/null
(cd "$src" && scripts/kconfig/merge_config.sh -m .config kernel/configs/tiny.config \
  arch/x86/configs/tiny.config kernel/configs/kvm_guest.config "$fragment" >/dev/null)
make -C "$src" -s olddefconfig >/dev/null
# Every option asked for must have survived the dependency resolution.
missing=0
while IFS= read -r line; do
  case $line in
  CONFIG_*=y | CONFIG_*=[0-9]*)
    grep -qx "$line" "$src/.config" || { echo "vm-assets: $line did not take" >&2; missing=1; } ;;
  esac
done <"$fragment"
[ $missing = 0 ] || exit 1
make -C "$src" -s -j"$(nproc)" vmlinux >/dev/null
mkdir -p "$out.tmp"
cp "$src/vmlinux" "$out.tmp/vmlinux"
cp "$src/.config" "$out.tmp/config"
strip --strip-debug "$out.tmp/vmlinux" 2>/dev/null || true
rm -rf "$out"
mv "$out.tmp" "$out"
ln -sfn "$out/vmlinux" "$cache/vmlinux"
prune
echo "kernel=$out/vmlinux"
