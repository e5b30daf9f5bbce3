#!/usr/bin/env bash
# Build the SeaweedFS server (`weed`), the real S3 server the s3:// tests use,
# from its pinned Go module into a cache outside the repo.
#
# `go install github.com/seaweedfs/seaweedfs/weed@VERSION` is refused because
# the module's go.mod has replace directives, so the downloaded module is
# copied to a writable folder and built there, exactly as in its own tree.
# A stamp keyed by the version makes a second run a no-op.
#
# Usage:
#   seaweedfs.sh            build when missing; last stdout line is the binary's path
#   seaweedfs.sh --path     print the binary's path, build nothing
#   seaweedfs.sh --check    exit 0 when built, 1 otherwise
#
# Environment:
#   GPUBATCH_CACHE        cache root (default ~/.cache/gpubatch)
#   GPUBATCH_BUILD_JOBS   go build -p (default: number of CPUs)
set -euo pipefail

SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

cache_root=${GPUBATCH_CACHE:-$HOME/.cache/gpubatch}
dest=$cache_root/seaweedfs-$SEAWEEDFS_VERSION
weed=$dest/bin/weed
stamp=$dest/stamp

built() { [[ -x $weed && -f $stamp ]]; }

case "${1:-}" in
  --path) echo "$weed"; exit 0 ;;
  --check) built; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--path|--check]" >&2; exit 2 ;;
esac

if built; then
  echo "seaweedfs: $SEAWEEDFS_VERSION already built at $weed" >&2
  echo "$weed"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "seaweedfs: 'go' is not on PATH; install Go 1.25+ to build the S3 test server" >&2
  exit 1
fi

mkdir -p "$dest/bin"
exec 9>"$dest/.lock"
flock 9
if built; then echo "$weed"; exit 0; fi

started=$SECONDS
log() { echo "seaweedfs: [$((SECONDS - started))s] $*" >&2; }

moddir=$(go mod download -json "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z $moddir || ! -d $moddir ]]; then
  echo "seaweedfs: could not download $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" >&2
  exit 1
fi
src=$dest/src
rm -rf "$src"
cp -r "$moddir" "$src"
chmod -R u+w "$src"
log "building weed $SEAWEEDFS_VERSION in $src"
(cd "$src" && CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -gcflags=all=-dwarf=false" \
  go build -p "${GPUBATCH_BUILD_JOBS:-$(nproc)}" -ldflags "-s -w" -o "$weed.tmp" ./weed)
mv "$weed.tmp" "$weed"
rm -rf "$src"
touch "$stamp"
log "built $weed"
echo "$weed"
