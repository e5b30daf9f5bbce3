#!/usr/bin/env bash
# Build the gpubatch images with a real Docker engine (`make images`).
#
#   images/build.sh [NAME...]     NAME: operator cpu gpu (default: all three)
#   images/build.sh --list        print "NAME TAG" for each image, build nothing
#
# - Starts dockerd when none answers (images/dockerd.sh: no iptables rules, no
#   bridge, builds use the host network; its data root, images included, under
#   $GPUBATCH_CACHE/docker) and stops it again at exit, removing whatever it
#   made outside that folder, so nothing is left running or behind.
# - Base images: where no registry can be reached, the public Python base the
#   Dockerfiles name is replaced by one built here from Debian packages
#   (images/base.sh) and passed as BASE_IMAGE. GPUBATCH_BASE_IMAGE=python:3.11-slim-bookworm
#   (or any other) uses that instead. Also builds the pause image the test
#   node's containerd needs (images/pause/pause.go).
# - Cache: every image is labelled with a hash of its inputs (Dockerfile, the
#   files of the build context, the base); an image whose label matches is not
#   rebuilt. Docker keeps the images (and its layer cache) outside the repo;
#   the Debian base root is kept as a tarball in $GPUBATCH_CACHE/images.
# - Then the images are loaded into the test cluster's real node
#   (tests/cluster/node.sh load-images): into its containerd when it runs, else
#   into its image store, so that starting it later does not wait for the load.
#
# Tags: gpubatch/gpubatch-{operator,cpu,gpu}:$GPUBATCH_IMAGE_TAG (default dev).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${GPUBATCH_CACHE:-$HOME/.cache/gpubatch}
cache=$cache_root/images
tag=${GPUBATCH_IMAGE_TAG:-dev}
label=dev.gpubatch.inputs
PAUSE_IMAGE=gpubatch.local/pause:3.10
HELPER_IMAGE=gpubatch.local/helper:bookworm # the base, for local-path-provisioner's helper pods

# name -> "Dockerfile target"
declare -A SPEC=([operator]="Dockerfile.cpu operator" [cpu]="Dockerfile.cpu job" [gpu]="Dockerfile.gpu job")
ORDER=(operator cpu gpu)

image_tag() { echo "gpubatch/gpubatch-$1:$tag"; }

if [[ ${1:-} == --list ]]; then
  for name in "${ORDER[@]}"; do echo "$name $(image_tag "$name")"; done
  echo "pause $PAUSE_IMAGE"
  echo "helper $HELPER_IMAGE"
  exit 0
fi
names=("$@")
((${#names[@]})) || names=("${ORDER[@]}")
for name in "${names[@]}"; do
  [[ -n ${SPEC[$name]:-} ]] || { echo "images: unknown image '$name' (choose from: ${ORDER[*]})" >&2; exit 2; }
done

mkdir -p "$cache"
# One build at a time (make images, cluster.sh up and pytest may all call this).
exec 8>"$cache/build.lock"
flock 8
started=$SECONDS
log() { echo "images: [$((SECONDS - started))s] $*" >&2; }

# --- the Docker engine --------------------------------------------------------------------------
export DOCKER_BUILDKIT=0 # Debian's docker.io has no buildx; the Dockerfiles need no BuildKit feature
# shellcheck source=images/dockerd.sh
source "$root/images/dockerd.sh"
trap dockerd_down EXIT
dockerd_up "$cache_root/docker" images || exit 1

have() { docker image inspect "$1" >/dev/null 2>&1; }
label_of() { docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$1" 2>/dev/null || true; }
hash_files() { (cd "$root" && sha256sum "$@" | sha256sum | cut -c1-16); }

# --- base images ------------------------------------------------------------------------------------
base_image=${GPUBATCH_BASE_IMAGE:-}
if [[ -z $base_image ]]; then
  key=$(hash_files images/base.sh)
  base_image=gpubatch.local/python:3.11-bookworm-$key
  if ! have "$base_image"; then
    tarball=$cache/base-$key.tar
    if [[ ! -f $tarball ]]; then
      log "building the Debian bookworm Python base (images/base.sh)"
      bash "$root/images/base.sh" "$tarball"
    fi
    log "importing $base_image"
    docker import \
      -c 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'ENV VIRTUAL_ENV=/opt/venv' -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' \
      -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
      "$tarball" "$base_image" >/dev/null
  fi
fi

# The test node's local-path-provisioner runs its helper pods (mkdir, rm) on the base.
docker tag "$base_image" "$HELPER_IMAGE"

pause_key=$(hash_files images/pause/pause.go)
if [[ $(label_of "$PAUSE_IMAGE") != "$pause_key" ]]; then
  log "building $PAUSE_IMAGE"
  work=$(mktemp -d)
  (cd "$root/images/pause" && CGO_ENABLED=0 GOFLAGS=-trimpath go build -ldflags "-s -w" -o "$work/pause" pause.go)
  tar -C "$work" -c pause | docker import -c 'ENTRYPOINT ["/pause"]' -c 'USER 65535:65535' \
    -c "LABEL $label=$pause_key" - "$PAUSE_IMAGE" >/dev/null
  rm -rf "$work"
fi

# --- the gpubatch images ----------------------------------------------------------------------------
# The build context is what .dockerignore lets through: hash exactly those files.
context_files() {
  (cd "$root" && git ls-files -co --exclude-standard -- pyproject.toml jobs operator images |
    grep -Ev '(__pycache__/|\.pyc$)' | LC_ALL=C sort | while IFS= read -r f; do [[ -f $f ]] && echo "$f"; done)
}
# The s3a jars the job images COPY (fetched once, checked, cached: images/spark-jars.sh); their
# SHA256SUMS is in the context hash, the jars themselves are ignored by git.
if [[ " ${names[*]} " == *" cpu "* || " ${names[*]} " == *" gpu "* ]]; then
  log "s3a jars: $(bash "$root/images/spark-jars.sh" --into "$root/images/spark-jars/jars")"
fi
mapfile -t ctx < <(context_files)
ctx_hash=$(hash_files .dockerignore "${ctx[@]}")
base_id=$(docker image inspect -f '{{.Id}}' "$base_image" 2>/dev/null || echo "$base_image")

for name in "${names[@]}"; do
  read -r dockerfile target <<<"${SPEC[$name]}"
  image=$(image_tag "$name")
  key=$(echo "$ctx_hash $(hash_files "$dockerfile") $target $base_id" | sha256sum | cut -c1-16)
  if [[ $(label_of "$image") == "$key" ]]; then
    log "$image is up to date (inputs $key)"
    continue
  fi
  log "building $image ($dockerfile --target $target; log: $cache/build-$name.log)"
  t0=$SECONDS
  if ! docker build --network host -f "$root/$dockerfile" --target "$target" \
    --build-arg "BASE_IMAGE=$base_image" --label "$label=$key" -t "$image" "$root" \
    >"$cache/build-$name.log" 2>&1; then
    tail -40 "$cache/build-$name.log" >&2
    echo "images: building $image failed (whole log: $cache/build-$name.log)" >&2
    exit 1
  fi
  size=$(docker image inspect -f '{{.Size}}' "$image")
  echo "$name $((SECONDS - t0)) $size" >"$cache/build-$name.seconds"
  log "$image built in $((SECONDS - t0)) s, $((size / 1000000)) MB"
done

# Dangling layers of superseded builds would fill the disk over many runs.
docker image prune -f >/dev/null 2>&1 || true

# Into the test node's containerd: the running node's, or, when none runs, its image store
# through a containerd of its own (so the first `cluster.sh up` does not wait for the load;
# `make test-deps` does it while the Go binaries compile). GPUBATCH_NODE_PRELOAD=0: only into
# a running node.
if bash "$root/tests/cluster/node.sh" status >/dev/null 2>&1; then
  bash "$root/tests/cluster/node.sh" load-images
elif [[ ${GPUBATCH_NODE_PRELOAD:-1} == 1 ]]; then
  t0=$SECONDS
  if bash "$root/tests/cluster/node.sh" load-images; then
    log "loaded into the test node's image store in $((SECONDS - t0)) s"
  else
    log "not loaded into the test node's image store; cluster.sh up loads them"
  fi
fi
log "done"
