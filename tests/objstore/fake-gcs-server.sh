#!/usr/bin/env bash
# Build fake-gcs-server, the real GCS JSON/XML API server the gs:// tests use,
# from its pinned Go module (through the Go module proxy) into a cache outside
# the repo. A stamp keyed by the version makes a second run a no-op; a lock
# lets `make -j` and parallel test workers share one build.
#
# Usage:
#   fake-gcs-server.sh            build when missing; last stdout line is the binary's path
#   fake-gcs-server.sh --path     print the binary's path, build nothing
#   fake-gcs-server.sh --check    exit 0 when built, 1 otherwise
#
# Environment:
#   GPUBATCH_CACHE        cache root (default ~/.cache/gpubatch)
#   GPUBATCH_BUILD_JOBS   go build -p (default: number of CPUs)
set -euo pipefail

FAKE_GCS_MODULE=github.com/fsouza/fake-gcs-server
FAKE_GCS_VERSION=v1.56.1

cache_root=${GPUBATCH_CACHE:-$HOME/.cache/gpubatch}
dest=$cache_root/fake-gcs-server-$FAKE_GCS_VERSION
binary=$dest/bin/fake-gcs-server
stamp=$dest/stamp

built() { [[ -x $binary && -f $stamp ]]; }

case "${1:-}" in
  --path) echo "$binary"; exit 0 ;;
  --check) built; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--path|--check]" >&2; exit 2 ;;
esac

if built; then
  echo "fake-gcs-server: $FAKE_GCS_VERSION already built at $binary" >&2
  echo "$binary"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "fake-gcs-server: 'go' is not on PATH; install Go 1.24+ to build the GCS test server" >&2
  exit 1
fi

mkdir -p "$dest/bin"
exec 9>"$dest/.lock"
flock 9
if built; then echo "$binary"; exit 0; fi

started=$SECONDS
log() { echo "fake-gcs-server: [$((SECONDS - started))s] $*" >&2; }

moddir=$(go mod download -json "$FAKE_GCS_MODULE@$FAKE_GCS_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z $moddir || ! -d $moddir ]]; then
  echo "fake-gcs-server: could not download $FAKE_GCS_MODULE@$FAKE_GCS_VERSION" >&2
  exit 1
fi
src=$dest/src
rm -rf "$src"
cp -r "$moddir" "$src"
chmod -R u+w "$src"
log "building fake-gcs-server $FAKE_GCS_VERSION in $src"
(cd "$src" && CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -gcflags=all=-dwarf=false" \
  go build -p "${GPUBATCH_BUILD_JOBS:-$(nproc)}" -ldflags "-s -w" -o "$binary.tmp" .)
mv "$binary.tmp" "$binary"
rm -rf "$src"
touch "$stamp"
log "built $binary"
echo "$binary"
