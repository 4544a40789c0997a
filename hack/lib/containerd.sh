# Sourced by the scripts that run a containerd of their own (the containerd
# client suite, hack/bench-shim.sh, hack/layout/profile.sh).

# private_containerd_config DIR SOCKET: writes DIR/config.toml for a
# containerd whose root and state are below DIR, listening on SOCKET (and
# SOCKET.ttrpc), without the CRI plugin (whose images and pods are another
# suite's). The caller mounts a tmpfs on /run/containerd first, so that the
# paths containerd and the shims use by default are its own too.
private_containerd_config() {
  mkdir -p "$1"
  cat >"$1/config.toml" <<EOT
version = 2
root = "$1/root"
state = "$1/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$2"
[ttrpc]
  address = "$2.ttrpc"
EOT
}
