# A Docker engine for the lifetime of one script, leaving nothing on the host.
# Sourced by images/build.sh (and by tests/cluster/test_dockerd_teardown.py):
#
#   source images/dockerd.sh
#   dockerd_up STATE_DIR LOG_PREFIX   use the engine that answers, else start one
#   dockerd_down                      stop the engine dockerd_up started, undo what it made
#
# When no engine answers, dockerd is started with every path it writes under
# STATE_DIR: its data root (images and layer cache, kept there so the next
# build reuses them), exec root, pid file and API socket (DOCKER_HOST is
# exported for this script and its children). No iptables rules, no ip_forward
# change, no docker0 bridge: builds run with --network host.
#
# dockerd also makes a few things outside its configured roots: /run/docker
# (plugin discovery), /run/containerd/s (containerd 1.6's shim sockets),
# /etc/docker, and cgroups named docker for the build containers. dockerd_down
# removes each of them that did not exist before dockerd_up, so a host on which
# Docker never ran is left as it was (tests/cluster/host-state.sh checks that).

# /run/containerd/s on its own too: the test node makes an empty /run/containerd (its containerd's
# mount point) while it runs, and a dockerd started meanwhile must not leave its shim sockets there.
DOCKERD_OWN_PATHS=(/run/docker /run/docker.sock /run/docker.pid /run/containerd/s /run/containerd /etc/docker
  /var/lib/docker)
_dockerd_pid=
_dockerd_state=
_dockerd_run=
_dockerd_absent=()

_dockerd_log() { echo "${_dockerd_prefix:-dockerd}: $*" >&2; }

dockerd_up() {
  local state=$1
  _dockerd_prefix=${2:-dockerd}
  if docker info >/dev/null 2>&1; then
    return 0 # an engine the user runs: use it, leave it running
  fi
  command -v dockerd >/dev/null || {
    _dockerd_log "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
    return 1
  }
  _dockerd_state=$state
  mkdir -p "$state"
  local p cg
  _dockerd_absent=()
  for p in "${DOCKERD_OWN_PATHS[@]}"; do [[ -e $p || -L $p ]] || _dockerd_absent+=("$p"); done
  for cg in /sys/fs/cgroup/*/; do [[ -e ${cg}docker ]] || _dockerd_absent+=("${cg}docker"); done
  # Unix socket paths are limited to 107 bytes: a deep STATE_DIR gets its
  # exec root (containerd's sockets) and API socket in a short folder instead.
  _dockerd_run=$state/run
  if ((${#_dockerd_run} > 60)); then _dockerd_run=$(mktemp -d /tmp/gpubatch-dockerd.XXXXXX); fi
  export DOCKER_HOST=unix://$_dockerd_run/docker.sock
  _dockerd_log "starting dockerd, all its state in $state (log: $state/dockerd.log)"
  # File descriptors 8 and 9 are the callers' locks: dockerd must not hold them.
  dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    --data-root "$state/data" --exec-root "$_dockerd_run" --pidfile "$state/dockerd.pid" \
    -H "$DOCKER_HOST" >"$state/dockerd.log" 2>&1 8>&- 9>&- &
  _dockerd_pid=$!
  local _
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return 0
    if ! kill -0 "$_dockerd_pid" 2>/dev/null; then
      tail -20 "$state/dockerd.log" >&2
      _dockerd_log "dockerd exited"
      _dockerd_pid=
      dockerd_down
      return 1
    fi
    sleep 0.5
  done
  _dockerd_log "dockerd did not answer within 60 s (see $state/dockerd.log)"
  dockerd_down
  return 1
}

dockerd_down() {
  if [[ -n $_dockerd_pid ]]; then
    _dockerd_log "stopping the dockerd this script started (pid $_dockerd_pid)"
    kill "$_dockerd_pid" 2>/dev/null || true
    local _
    for _ in $(seq 60); do kill -0 "$_dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$_dockerd_pid" 2>/dev/null || true
    wait "$_dockerd_pid" 2>/dev/null || true
    _dockerd_pid=
  fi
  [[ -n $_dockerd_state ]] || return 0
  # Its network namespace handles are mounts under the exec root.
  local m p
  for m in $(awk -v root="$_dockerd_run/" 'index($2, root) == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  rm -rf "$_dockerd_run" "$_dockerd_state/dockerd.pid"
  for p in "${_dockerd_absent[@]}"; do
    [[ -e $p || -L $p ]] || continue
    if [[ $p == /sys/fs/cgroup/* ]]; then
      # cgroups are removed leaf first, and only when empty of processes.
      find "$p" -depth -type d -exec rmdir {} + 2>/dev/null || true
    else
      rm -rf "$p"
    fi
  done
  _dockerd_state=
  _dockerd_run=
  _dockerd_absent=()
  unset DOCKER_HOST
}
