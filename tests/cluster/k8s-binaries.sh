#!/usr/bin/env bash
# Build the test control plane from Go modules into a cache outside the repo.
#
# No container runtime and no release download is available where the cluster
# tests run, but the Go module proxy is, so every binary the test cluster needs
# is compiled from its published module: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kubectl (Kubernetes version from
# tests/cluster/k8s-version), kwok/kwokctl, helm, CoreDNS (the real node's cluster DNS) and Kueue. A stamp per component
# makes a second run a no-op that takes well under a second.
#
# Usage:
#   k8s-binaries.sh            build what is missing; last stdout line is the bin dir
#   k8s-binaries.sh --bin-dir  print the bin dir, build nothing
#   k8s-binaries.sh --check    exit 0 when every binary is built, 1 otherwise
#
# Environment:
#   GPUBATCH_CACHE        cache root (default ~/.cache/gpubatch)
#   GPUBATCH_BUILD_JOBS   go build -p (default: number of CPUs)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=$(tr -d '[:space:]' <"$here/k8s-version")
# Tool pins. kwok v0.8.0 supports Kubernetes up to 1.36; helm v3 installs the
# apiVersion v2 chart. etcd's version is the one Kubernetes itself is built
# against (its go.mod), so the server matches the client the apiserver uses.
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
LPP_VERSION=v0.0.30
# Cluster DNS for the real node's pods (Services and Indexed Job workers by name).
COREDNS_VERSION=v1.14.7
# Kueue (tests/e2e/test_kueue.py): its manager, and its CRDs and webhook
# manifests copied from the module into $dest/kueue-$KUEUE_VERSION.
KUEUE_VERSION=v0.17.0

if [[ ! $K8S_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
  echo "k8s-binaries: $here/k8s-version must hold one version like v1.36.1, got '$K8S_VERSION'" >&2
  exit 2
fi
K8S_MINOR=${BASH_REMATCH[1]}
# Staging modules (k8s.io/api, k8s.io/client-go, ...) are published as v0.MINOR.PATCH.
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

cache_root=${GPUBATCH_CACHE:-$HOME/.cache/gpubatch}
dest=$cache_root/k8s-$K8S_VERSION
bin=$dest/bin
stamps=$dest/stamps

k8s_binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl helm
  kubelet kube-proxy local-path-provisioner coredns kueue)

all_built() {
  local b
  for b in "${k8s_binaries[@]}"; do [[ -x $bin/$b ]] || return 1; done
  [[ -f $stamps/k8s-$K8S_VERSION && -f $stamps/node-$K8S_VERSION && -f $stamps/kwok-$KWOK_VERSION &&
    -f $stamps/helm-$HELM_VERSION && -f $stamps/lpp-$LPP_VERSION &&
    -f $stamps/coredns-$COREDNS_VERSION && -f $stamps/kueue-$KUEUE_VERSION ]] || return 1
  compgen -G "$stamps/etcd-*" >/dev/null
}

case "${1:-}" in
  --bin-dir) echo "$bin"; exit 0 ;;
  --check) all_built; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--bin-dir|--check]" >&2; exit 2 ;;
esac

if all_built; then
  echo "k8s-binaries: $K8S_VERSION already built in $bin" >&2
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "k8s-binaries: 'go' is not on PATH; install Go 1.26+ to build the test control plane" >&2
  exit 1
fi

mkdir -p "$bin" "$stamps"
# Two builds at once (make and pytest) would fight over the same files.
exec 9>"$dest/.lock"
flock 9
if all_built; then echo "$bin"; exit 0; fi

export CGO_ENABLED=0
# No DWARF from the compiler (the links strip it anyway: -ldflags -s -w): 6% less compile CPU, measured
# on k8s.io/client-go with an empty GOCACHE (126 s user without the flag, 118 s with). The same flags
# in tests/s3/seaweedfs.sh and tests/objstore/fake-gcs-server.sh let the three share compiled packages.
export GOFLAGS="-trimpath -buildvcs=false -gcflags=all=-dwarf=false"
jobs=${GPUBATCH_BUILD_JOBS:-$(nproc)}
work=$(mktemp -d "$dest/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

log() { echo "k8s-binaries: [$((SECONDS - started))s] $*" >&2; }

# Path of the go.mod of MODULE@VERSION in the module cache (downloads it).
module_gomod() {
  go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p'
}

# Replace lines of a published go.mod that point inside its own repository
# ("k8s.io/api => ./staging/src/k8s.io/api", "go.etcd.io/etcd/api/v3 => ../api")
# are ignored for dependents; print "OLD NEW" for each, NEW a local path.
local_replaces() {
  sed -e 's/^replace[[:space:]]*//' "$1" |
    awk '$2 == "=>" && ($3 ~ /^\.\.?\//) && $3 !~ /FORBIDDEN/ { print $1 }'
}

# Replace lines that point at another module version carry over unchanged.
remote_replaces() {
  sed -e 's/^replace[[:space:]]*//' "$1" |
    awk '$2 == "=>" && NF == 4 && $3 !~ /^\.\.?\// { print $1 "=" $3 "@" $4 }'
}

# A wrapper module that requires MODULE@VERSION and maps each of its in-repo
# replaces to the published module at SIBLING_VERSION, so its commands build
# exactly as they do in-tree.
make_wrapper() {
  local dir=$1 module=$2 version=$3 sibling_version=$4 gomod go_line m
  gomod=$(module_gomod "$module" "$version")
  go_line=$(awk '$1 == "go" { print $2; exit }' "$gomod")
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module gpubatch.test/build/$(basename "$dir")

go $go_line

require $module $version
EOF
  local -a edits=()
  for m in $(local_replaces "$gomod"); do edits+=("-replace=$m=$m@$sibling_version"); done
  for m in $(remote_replaces "$gomod"); do edits+=("-replace=$m"); done
  if ((${#edits[@]} == 0)); then
    echo "k8s-binaries: no in-repo replace lines found in $gomod" >&2
    return 1
  fi
  (cd "$dir" && go mod edit "${edits[@]}")
  log "$module@$version: wrapper with ${#edits[@]} replace lines derived from its go.mod"
}

# Build commands of k8s.io/kubernetes at $K8S_VERSION; $1 names the stamp, the
# rest are the package names under k8s.io/kubernetes/cmd.
build_kubernetes_cmds() {
  local stamp=$1 dir date
  shift
  [[ -f $stamps/$stamp-$K8S_VERSION ]] && return 0
  dir=$work/kubernetes-$stamp
  make_wrapper "$dir" k8s.io/kubernetes "$K8S_VERSION" "$STAGING_VERSION"
  # The module's publication time stands in for the build date: reproducible.
  date=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null &&
    sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.info")
  local -a ldflags=(-s -w)
  local key val
  for kv in "gitVersion=$K8S_VERSION" "gitMajor=1" "gitMinor=$K8S_MINOR" \
    "gitTreeState=clean" "buildDate=${date:-1970-01-01T00:00:00Z}"; do
    key=${kv%%=*} val=${kv#*=}
    ldflags+=("-X=k8s.io/component-base/version.$key=$val" "-X=k8s.io/client-go/pkg/version.$key=$val")
  done
  local -a pkgs=()
  local c
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  log "resolving Kubernetes dependencies"
  (cd "$dir" && go get "${pkgs[@]/%/@$K8S_VERSION}" >&2)
  log "building $* (-p $jobs)"
  (cd "$dir" && go build -p "$jobs" -ldflags "${ldflags[*]}" -o "$work/out/" "${pkgs[@]}")
  mv "$work/out/"* "$bin/"
  touch "$stamps/$stamp-$K8S_VERSION"
  log "Kubernetes $K8S_VERSION: $* built"
}

build_kubernetes() {
  build_kubernetes_cmds k8s kube-apiserver kube-controller-manager kube-scheduler kubectl
}

# The real node: kubelet and kube-proxy (pure Go; cgroupfs driver, no systemd).
build_node() {
  build_kubernetes_cmds node kubelet kube-proxy
}

# `go install` of pinned module commands into $bin, once per stamp:
# go_install STAMP DESCRIPTION LDFLAGS PACKAGE@VERSION...
go_install() {
  local stamp=$1 what=$2 ldflags=$3
  shift 3
  [[ -f $stamps/$stamp ]] && return 0
  log "building $what"
  GOBIN=$bin go install -p "$jobs" -ldflags "-s -w $ldflags" "$@"
  touch "$stamps/$stamp"
  log "$what built"
}

build_lpp() {
  go_install "lpp-$LPP_VERSION" "local-path-provisioner $LPP_VERSION" "-X=main.VERSION=$LPP_VERSION" \
    "github.com/rancher/local-path-provisioner@$LPP_VERSION"
}

build_etcd() {
  local dir=$work/etcd gomod version
  gomod=$(module_gomod k8s.io/kubernetes "$K8S_VERSION")
  version=${ETCD_VERSION:-$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$gomod")}
  if [[ -z $version ]]; then
    echo "k8s-binaries: go.etcd.io/etcd/server/v3 not found in $gomod; set ETCD_VERSION" >&2
    return 1
  fi
  [[ -f $stamps/etcd-$version ]] && return 0
  make_wrapper "$dir" go.etcd.io/etcd/server/v3 "$version" "$version"
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$version" >&2)
  log "building etcd $version"
  (cd "$dir" && go build -p "$jobs" -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3)
  mv "$work/out/etcd" "$bin/etcd"
  rm -f "$stamps"/etcd-*
  touch "$stamps/etcd-$version"
  log "etcd $version built"
}

build_kwok() {
  go_install "kwok-$KWOK_VERSION" "kwok, kwokctl $KWOK_VERSION" \
    "-X=sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X=sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

build_helm() {
  go_install "helm-$HELM_VERSION" "helm $HELM_VERSION" \
    "-X=helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X=helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_coredns() {
  go_install "coredns-$COREDNS_VERSION" "coredns $COREDNS_VERSION" \
    "-X=github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
}

# Kueue's manager, and the manifests its users apply (CRDs, webhook configurations,
# the conversion-webhook patches) from the same module version.
build_kueue() {
  [[ -f $stamps/kueue-$KUEUE_VERSION ]] && return 0
  local mod manifests=$dest/kueue-$KUEUE_VERSION
  go_install "kueue-build-$KUEUE_VERSION" "kueue $KUEUE_VERSION" \
    "-X=sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  mod=$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  rm -rf "$manifests" && mkdir -p "$manifests/crd" "$manifests/crd-patches" "$manifests/webhook"
  cp "$mod"/config/components/crd/bases/*.yaml "$manifests/crd/"
  cp "$mod"/config/components/crd/patches/webhook_in_*.yaml "$manifests/crd-patches/"
  cp "$mod"/config/components/crd/kustomization.yaml "$manifests/crd-patches/"
  cp "$mod"/config/components/webhook/manifests.yaml "$manifests/webhook/"
  chmod -R u+w "$manifests"
  rm -f "$stamps/kueue-build-$KUEUE_VERSION"
  touch "$stamps/kueue-$KUEUE_VERSION"
}

log "building into $bin"
# Two chains at once: each go build is parallel inside (-p), but module
# resolution, downloads and the single-threaded link of each large binary leave
# cores idle that the other chain fills (GOCACHE and GOMODCACHE are safe to share).
# Balanced by a cold run's times (2 cores): etcd 5 min, the control plane 25,
# kubelet and kube-proxy 1, Kueue 4; kwok 13, helm 8, the rest 9.
( build_etcd && build_kubernetes && build_node && build_kueue ) &
chain_k8s=$!
( build_kwok && build_helm && build_lpp && build_coredns ) &
chain_tools=$!
failed=0
wait "$chain_k8s" || failed=1
wait "$chain_tools" || failed=1
((failed == 0)) || { echo "k8s-binaries: a build failed (above)" >&2; exit 1; }
all_built || { echo "k8s-binaries: build finished but $bin is incomplete" >&2; exit 1; }
log "done: $(cd "$bin" && echo *)"
echo "$bin"
