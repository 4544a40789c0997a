#!/usr/bin/env bash
# Builds a busybox root filesystem at DIR (default: bundles/hello/rootfs): the static
# busybox binary, a symlink per applet, and the directories a container expects.
# Idempotent; the rootfs is generated, never committed.
set -euo pipefail

dir=${1:-bundles/hello/rootfs}
busybox=/bin/busybox
if [ ! -x "$busybox" ] || [[ "$(ldd "$busybox" 2>&1 || true)" != *"not a dynamic"* ]]; then
  echo "mkrootfs: $busybox is not static; run hack/setup.sh (installs busybox-static)" >&2
  exit 1
fi
mkdir -p "$dir"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,var,run,home,mnt}
chmod 1777 "$dir/tmp"
cp -f "$busybox" "$dir/bin/busybox"
for applet in $("$dir/bin/busybox" --list); do
  [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
done
cat > "$dir/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$dir/etc/group" <<'GROUP'
root:x:0:
tty:x:5:
nogroup:x:65534:
GROUP
echo "mkrootfs: $dir ready"
