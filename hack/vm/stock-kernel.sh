#!/usr/bin/env bash
# hack/vm-assets.sh --stock: Debian's own kernel for strata's VM backend, no
# build. Usage: hack/vm/stock-kernel.sh PRINT_ONLY(0|1)
set -euo pipefail

print=${1:-0}
cache=${STRATA_VM_CACHE:-/var/cache/strata/vm}
# What the guest needs that Debian builds as modules; their dependencies come
# from the package's own module index. (9p: the bind mounts' shared folder.)
wanted=(virtio_mmio virtio_blk virtio_console virtio_net erofs overlay 9pnet_virtio 9p)

need=()
for tool in depmod modprobe; do command -v $tool >/dev/null || need+=(kmod); done
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
export DEBIAN_FRONTEND=noninteractive
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ] && [ "$print" = 0 ]; then
  apt-get update -qq
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "vm-assets: no linux-image-amd64 in the package lists" >&2; exit 1; }
version=$(apt-cache show "$pkg" | awk '/^Version:/ {print $2; exit}')
# (Keyed by the module list too: a new module makes a new folder.)
out=$cache/stock-$pkg-$version-$(echo "${wanted[*]}" | sha256sum | cut -c1-8)
# Stock kernels of other packages or module lists are superseded (65 MB
# each): only this one stays. (A fetch in progress elsewhere is a .tmp folder.)
prune() {
  local old
  for old in "$cache"/stock-linux-image-*; do
    case $old in "$out" | *.tmp) ;; *) rm -rf "$old" ;; esac
  done
}
if [ -f "$out/vmlinux" ] && [ -f "$out/modules/order" ]; then
  [ "$print" = 1 ] || prune
  ln -sfn "$out/vmlinux" "$cache/stock-vmlinux"
  ln -sfn "$out/vmlinux" "$cache/vmlinux"
  echo "kernel=$out/vmlinux"
  exit 0
fi
if [ "$print" = 1 ]; then
  echo "vm-assets: no stock kernel ($pkg $version) in $cache; run hack/vm-assets.sh --stock" >&2
  exit 1
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "vm-assets: installing ${need[*]}" >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/stock.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "vm-assets: fetching $pkg $version" >&2
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$version")
dpkg-deb -x "$work"/*.deb "$work/root"
kver=${pkg#linux-image-}

# vmlinuz is a bzImage: the ELF kernel is a compressed payload inside it. Try
# every place a known compression format starts until one unpacks to an ELF.
python3 - "$work/root/boot/vmlinuz-$kver" "$work" <<'EOF'
import subprocess, sys
data = open(sys.argv[1], "rb").read()
work = sys.argv[2]
formats = [(b"\xfd7zXZ\x00", ["xz", "-dc"]), (b"\x28\xb5\x2f\xfd", ["zstd", "-dcq"]),
           (b"\x1f\x8b\x08", ["gzip", "-dc"])]
for magic, cmd in formats:
    at = data.find(magic)
    while at >= 0:
        p = subprocess.run(cmd, input=data[at:], capture_output=True)
        if p.stdout[:4] == b"\x7fELF":
            open(work + "/vmlinux", "wb").write(p.stdout)
            sys.exit(0)
        at = data.find(magic, at + 1)
sys.exit("vm-assets: no ELF kernel found inside " + sys.argv[1])
EOF

# The modules in load order (dependencies first), each once, uncompressed.
depmod -b "$work/root" "$kver"
mkdir -p "$work/modules"
: >"$work/order"
for m in "${wanted[@]}"; do
  modprobe -d "$work/root" -S "$kver" --show-depends "$m" | while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    name=$(basename "$path")
    name=${name%.xz}; name=${name%.zst}
    cut -d- -f2- "$work/order" | grep -qxF -- "$name" && continue
    n=$(($(wc -l <"$work/order") + 1))
    file=$(printf '%02d-%s' "$n" "$name")
    case $path in
    *.xz) xz -dc "$path" >"$work/modules/$file" ;;
    *.zst) zstd -dcq "$path" >"$work/modules/$file" ;;
    *) cp "$path" "$work/modules/$file" ;;
    esac
    echo "$file" >>"$work/order"
  done
done
[ -s "$work/order" ] || { echo "vm-assets: none of ${wanted[*]} is a module of $pkg" >&2; exit 1; }
# The order file last: its presence says the folder is complete.
mv "$work/order" "$work/modules/order"

rm -rf "$out.tmp" "$out"
mkdir -p "$out.tmp"
mv "$work/vmlinux" "$work/modules" "$out.tmp/"
mv "$out.tmp" "$out"
prune
ln -sfn "$out/vmlinux" "$cache/stock-vmlinux"
ln -sfn "$out/vmlinux" "$cache/vmlinux"
echo "kernel=$out/vmlinux"
