#!/usr/bin/env bash
# `make ci-fresh`: rehearse CI on a new machine, and time it.
#
# Clones the committed HEAD into a new folder (with ../shared beside it, as CI
# lays it), points every cache at new empty folders (HOME, so ~/.cache/gpubatch
# with the Go-built binaries, Docker's data root and the node's images; Go's
# module and build caches; pip's and npm's caches) and runs `bash .ci/run` there
# with CI=true. A Docker engine must not be running (the rehearsal starts its
# own on an empty data root), nor the test cluster; a /run/docker left by an
# earlier engine is moved aside meanwhile, as on a host where Docker never ran.
#
#   .ci/fresh.sh [--keep]     --keep: leave the folder (caches, clone, log) for a look;
#                             without it the folder is removed, passed or failed (the log stays)
#
# Environment: GPUBATCH_FRESH_DIR, the parent of the new folder (default /var/tmp).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
keep=false
case "${1:-}" in
  --keep) keep=true ;;
  "") ;;
  *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
esac

say() { echo "ci-fresh: $*" >&2; }

if env -u DOCKER_HOST docker info >/dev/null 2>&1; then
  say "a Docker engine is running; stop it first (the rehearsal starts its own on an empty data root)"
  exit 1
fi
if ip netns list 2>/dev/null | grep -qw gpubatch-node || pgrep -f 'kube-apiserver|kwok' >/dev/null; then
  say "a test cluster is running; stop it first (make cluster-down): the rehearsal starts its own"
  exit 1
fi
if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no) ]]; then
  say "warning: uncommitted changes in $repo are not part of the rehearsal (it clones HEAD)"
fi

parent=${GPUBATCH_FRESH_DIR:-/var/tmp}
top=$(mktemp -d "$parent/gpubatch-fresh.XXXXXX")
clone=$top/gpubatch
aside=
restore() {
  local rc=$?
  [[ -z $aside ]] || { rm -rf /run/docker; mv "$aside" /run/docker; }
  if $keep; then
    say "kept $top"
  else
    chmod -R u+w "$top" 2>/dev/null || true
    rm -rf "$top" 2>/dev/null || say "could not remove all of $top"
  fi
  exit "$rc"
}
trap restore EXIT
if [[ -e /run/docker ]]; then
  aside=/run/docker.gpubatch-fresh-aside
  mv /run/docker "$aside"
fi

git clone -q "$repo" "$clone"
[[ ! -d $repo/../shared ]] || { cp -r "$repo/../shared" "$top/shared" && chmod -R a-w "$top/shared"; }
mkdir -p "$top/home" "$top/go" "$top/go-build" "$top/pip" "$top/npm"

log=$top/ci.log
say "$(git -C "$clone" log -1 --format='%h %s') in $clone, caches under $top; log: $log"
started=$(date +%s)
set +e
(
  cd "$clone"
  exec env -u GPUBATCH_CACHE -u DOCKER_HOST -u VIRTUAL_ENV -u GOFLAGS \
    HOME="$top/home" XDG_CACHE_HOME="$top/home/.cache" \
    GOPATH="$top/go" GOMODCACHE="$top/go/pkg/mod" GOCACHE="$top/go-build" \
    PIP_CACHE_DIR="$top/pip" npm_config_cache="$top/npm" CI=true \
    bash .ci/run </dev/null
) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - started))
summary="ci-fresh: .ci/run exited $rc after $((elapsed / 60)) min $((elapsed % 60)) s (cold: new clone, empty caches)"
echo "$summary" | tee -a "$log"
grep -E '^ci: ' "$log" >&2 || true
cp "$log" "$parent/gpubatch-fresh-last.log" && say "log copied to $parent/gpubatch-fresh-last.log"
# A failed rehearsal keeps only its log: the folder holds some 40 GB (the images twice, the Go
# caches), and a machine left with it has failed the next CI run for want of disk. --keep keeps it.
exit "$rc"
