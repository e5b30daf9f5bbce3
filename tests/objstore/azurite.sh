#!/usr/bin/env bash
# Install Azurite, the Azure Blob Storage server the az:// tests use, from the
# npm registry into a cache outside the repo, exactly as pinned by
# tests/objstore/azurite/package-lock.json (`npm ci`: the locked versions and
# their integrity hashes, no install scripts). A stamp keyed by the version
# and the lock's hash makes a second run a no-op; a lock lets `make -j` and
# parallel test workers share one install.
#
# Usage:
#   azurite.sh            install when missing; last stdout line is the server's path
#   azurite.sh --path     print the server's path, install nothing
#   azurite.sh --check    exit 0 when installed, 1 otherwise
#
# Environment:
#   GPUBATCH_CACHE        cache root (default ~/.cache/gpubatch)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
AZURITE_VERSION=$(sed -n 's/^[[:space:]]*"azurite": "\([0-9.]*\)".*/\1/p' "$here/azurite/package.json")
lock_hash=$(sha1sum "$here/azurite/package-lock.json" | cut -c1-12)

cache_root=${GPUBATCH_CACHE:-$HOME/.cache/gpubatch}
dest=$cache_root/azurite-$AZURITE_VERSION
server=$dest/node_modules/azurite/dist/src/blob/main.js
stamp=$dest/stamp-$lock_hash

installed() { [[ -f $server && -f $stamp ]]; }

case "${1:-}" in
  --path) echo "$server"; exit 0 ;;
  --check) installed; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--path|--check]" >&2; exit 2 ;;
esac

if installed; then
  echo "azurite: $AZURITE_VERSION already installed at $dest" >&2
  echo "$server"
  exit 0
fi
for tool in node npm; do
  if ! command -v $tool >/dev/null; then
    echo "azurite: '$tool' is not on PATH; install Node.js 20+ (with npm) to run the Azure test server" >&2
    exit 1
  fi
done

mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9
if installed; then echo "$server"; exit 0; fi

started=$SECONDS
cp "$here/azurite/package.json" "$here/azurite/package-lock.json" "$dest/"
rm -rf "$dest/node_modules" "$dest"/stamp-*
echo "azurite: installing $AZURITE_VERSION into $dest" >&2
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --omit=dev --loglevel=error >&2)
[[ -f $server ]] || { echo "azurite: $server missing after npm ci" >&2; exit 1; }
touch "$stamp"
echo "azurite: [$((SECONDS - started))s] installed $dest" >&2
echo "$server"
