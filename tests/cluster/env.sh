# Shared settings for the local control-plane scripts. Sourced, not executed.
# Everything built or downloaded is cached under $CALLFLEET_CACHE so a second run builds nothing.

K8S_VERSION=v1.37.2
CALLFLEET_CACHE=${CALLFLEET_CACHE:-$HOME/.cache/callfleet}
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$CALLFLEET_CACHE/go/mod}
export GOCACHE=${GOCACHE_OVERRIDE:-$CALLFLEET_CACHE/go/build}
export GOFLAGS=-mod=mod
export GOTOOLCHAIN=local

# Where the cluster binaries live. KUBEBUILDER_ASSETS (the envtest convention) or
# CALLFLEET_K8S_BIN win when they name a folder that already holds them.
BUILT_BIN_DIR=$CALLFLEET_CACHE/bin/$K8S_VERSION
CLUSTER_BINARIES="kube-apiserver kube-controller-manager kube-scheduler etcd kwok helm"

have_all_binaries() {
  local dir=$1 b
  [ -n "$dir" ] && [ -d "$dir" ] || return 1
  for b in $CLUSTER_BINARIES; do
    [ -x "$dir/$b" ] || return 1
  done
}

# Prints the folder that holds every cluster binary (prefers user-supplied folders).
# envtest folders carry kube-apiserver and etcd only; missing tools come from our cache.
resolve_bin_dir() {
  local d
  for d in "${CALLFLEET_K8S_BIN:-}" "${KUBEBUILDER_ASSETS:-}"; do
    if have_all_binaries "$d"; then echo "$d"; return 0; fi
  done
  echo "$BUILT_BIN_DIR"
}

# Finds one binary: a user folder first, then the cache.
bin_path() {
  local name=$1 d
  for d in "${CALLFLEET_K8S_BIN:-}" "${KUBEBUILDER_ASSETS:-}" "$BUILT_BIN_DIR"; do
    if [ -n "$d" ] && [ -x "$d/$name" ]; then echo "$d/$name"; return 0; fi
  done
  return 1
}
