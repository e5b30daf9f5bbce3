#!/usr/bin/env bash
# Start, stop and locate the gpubatch test cluster.
#
# A real control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) run as local processes by kwokctl's binary runtime from the
# binaries k8s-binaries.sh built, plus a kwok controller that plays kubelet for
# four fake nodes (tests/cluster/nodes.yaml) following the Stages in
# tests/cluster/kwok-stages.yaml, and one real node `real-0` (node.sh: kubelet,
# kube-proxy, containerd, our images, a default StorageClass) that kwok leaves
# alone. kwokctl is handed every binary explicitly, so it never downloads anything.
#
# Usage:
#   cluster.sh up          build binaries if missing, start (or reuse) the cluster
#   cluster.sh down        stop every process of the cluster, remove its state
#   cluster.sh kubeconfig  print the kubeconfig path, nothing else
#   cluster.sh data-dir    print the host folder under which provisioned volumes live
#   cluster.sh status      exit 0 when the cluster answers, 1 otherwise
#
# GPUBATCH_REAL_NODE=0 starts the control plane and the kwok nodes only.
#
# State lives outside the repo in ${GPUBATCH_CACHE:-~/.cache/gpubatch}/cluster.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${GPUBATCH_CACHE:-$HOME/.cache/gpubatch}
state=$cache_root/cluster
cluster_name=gpubatch
kubeconfig=$state/kubeconfig

# kwokctl reads KWOK_* variables as overrides of its configuration; only ours count.
while IFS= read -r var; do
  [[ $var == KWOK_* ]] && unset "$var"
done < <(compgen -e)
export KWOK_WORKDIR=$state/kwok

log() { echo "cluster: $*" >&2; }

bin_dir() { bash "$here/k8s-binaries.sh" --bin-dir; }

answers() {
  local bin
  bin=$(bin_dir)
  [[ -f $kubeconfig && -x $bin/kubectl ]] &&
    "$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

# PIDs of processes whose command line names the state dir: every component
# kwokctl started keeps its config, certs or data there.
cluster_pids() {
  pgrep -f -- "$KWOK_WORKDIR/" || true
}

write_config() {
  local bin=$1 version
  version=$(tr -d '[:space:]' <"$here/k8s-version")
  {
    cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: $version
  quietPull: true
  kubeBinaryPrefix: $bin
  etcdBinaryPrefix: $bin
  kwokBinaryPrefix: $bin
  kubeApiserverBinary: $bin/kube-apiserver
  kubeControllerManagerBinary: $bin/kube-controller-manager
  kubeSchedulerBinary: $bin/kube-scheduler
  kubectlBinary: $bin/kubectl
  etcdBinary: $bin/etcd
  kwokControllerBinary: $bin/kwok
  etcdctlBinary: $bin/etcdctl
  etcdutlBinary: $bin/etcdutl
  kectlBinary: $bin/kectl
  # The real node (node.sh) reaches the API server at the host end of its veth,
  # and its pods at the kubernetes Service's first IP (range 10.0.0.0/24).
  kubeApiserverCertSANs: [10.87.0.1, 10.0.0.1]
componentsPatches:
- name: kube-apiserver
  extraArgs:
  # The kubernetes Service's endpoint: where the real node's pods find the API server.
  - {key: advertise-address, value: 10.87.0.1}
  # Namespace annotations pick the nodes of a test (kwok or real).
  - {key: enable-admission-plugins, value: PodNodeSelector}
  # Logs, exec and port-forward reach the kubelet by the node's IP: no DNS here.
  - {key: kubelet-preferred-address-types, value: "InternalIP,Hostname"}
- name: kwok-controller
  extraArgs:
  # Play kubelet only for the fake nodes (nodes.yaml), never for real-0.
  - {key: manage-all-nodes, value: "false"}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
---
EOF
    cat "$here/kwok-stages.yaml"
  } >"$state/kwokctl.yaml"
}

wait_for() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 1
  done
}

do_up() {
  local bin kubectl
  bin=$(bash "$here/k8s-binaries.sh" | tail -n 1)
  kubectl=("$bin/kubectl" --kubeconfig "$kubeconfig")
  if answers; then
    log "already up ($kubeconfig)"
  else
    if [[ -d $state ]] || [[ -n $(cluster_pids) ]]; then
      log "stale state in $state; cleaning it up first"
      do_down
    fi
    mkdir -p "$state"
    write_config "$bin"
    log "starting control plane $(tr -d '[:space:]' <"$here/k8s-version") (state: $state)"
    if ! "$bin/kwokctl" create cluster --name "$cluster_name" --config "$state/kwokctl.yaml" \
      --kubeconfig "$kubeconfig" --timeout 5m --wait 3m >"$state/kwokctl-create.log" 2>&1 9>&-; then
      log "kwokctl create cluster failed; its output:"
      cat "$state/kwokctl-create.log" >&2
      return 1
    fi
  fi
  "${kubectl[@]}" apply -f "$here/nodes.yaml" >/dev/null
  wait_for "4 Ready kwok nodes" 120 "${kubectl[@]}" wait --for=condition=Ready node -l type=kwok --timeout=5s
  # The ServiceAccount admission plugin refuses pods until the controller
  # manager has created the namespace's default ServiceAccount.
  wait_for "the default ServiceAccount" 120 "${kubectl[@]}" -n default get serviceaccount default
  if [[ ${GPUBATCH_REAL_NODE:-1} != 0 ]]; then
    bash "$here/node.sh" up
  fi
  log "up: $("${kubectl[@]}" get nodes --no-headers | wc -l) nodes; export KUBECONFIG=$kubeconfig"
}

do_down() {
  local bin pids
  bin=$(bin_dir)
  bash "$here/node.sh" down || log "the real node did not stop cleanly"
  if [[ -d $KWOK_WORKDIR/clusters/$cluster_name && -x $bin/kwokctl ]]; then
    "$bin/kwokctl" delete cluster --name "$cluster_name" --kubeconfig "$kubeconfig" >&2 || log "kwokctl delete cluster failed; stopping the processes directly"
  fi
  pids=$(cluster_pids)
  if [[ -n $pids ]]; then
    log "stopping leftover processes: $(echo $pids)"
    # shellcheck disable=SC2086  # one PID per word
    kill $pids 2>/dev/null || true
    for _ in $(seq 20); do
      [[ -z $(cluster_pids) ]] && break
      sleep 0.5
    done
    pids=$(cluster_pids)
    # shellcheck disable=SC2086
    [[ -n $pids ]] && kill -9 $pids 2>/dev/null || true
  fi
  pids=$(cluster_pids)
  if [[ -n $pids ]]; then
    log "processes still running after down: $(echo $pids)"
    return 1
  fi
  rm -rf "$state"
  log "down"
}

mkdir -p "$cache_root"
case "${1:-}" in
  up | down)
    # make and pytest may both call this: one at a time. The daemons kwokctl
    # starts must not inherit the lock's descriptor (9>&- above), or they
    # would hold the lock for as long as the cluster runs.
    exec 9>"$cache_root/cluster.lock"
    if [[ $1 == up ]]; then
      flock -w 1800 9 || { log "another 'cluster.sh up' has held $cache_root/cluster.lock for 30 min"; exit 1; }
    elif ! flock -w 60 9; then
      # Stopping twice is harmless; never hang on a holder that went astray.
      log "$cache_root/cluster.lock still held after 60s; stopping anyway"
    fi
    "do_$1"
    ;;
  kubeconfig)
    if [[ ! -f $kubeconfig ]]; then
      log "no cluster is up; run 'make cluster-up' (bash tests/cluster/cluster.sh up) first"
      exit 1
    fi
    echo "$kubeconfig"
    ;;
  data-dir) bash "$here/node.sh" data-dir ;;
  status) answers ;;
  *)
    echo "usage: $0 up|down|kubeconfig|status" >&2
    exit 2
    ;;
esac
