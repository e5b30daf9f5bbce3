#!/usr/bin/env bash
# The test cluster's one real node: a kubelet that runs real pods from our real
# images, beside the kwok nodes. Called by cluster.sh (up/down); usable alone.
#
#   node.sh up            start the node (the control plane must be up), build and load
#                         the images (GPUBATCH_NODE_BUILD_IMAGES=0: load only those built)
#   node.sh down          stop it and undo everything `up` did
#   node.sh status        exit 0 when the node's kubelet answers, 1 otherwise
#   node.sh load-images   load the images `make images` built into the node's containerd; when the
#                         node is not running, into its image store through a containerd of
#                         its own (no CRI, private mounts), stopped again: `make images` does
#                         this while the Go builds go on, so `up` finds the images loaded
#   node.sh data-dir      print the host folder under which provisioned volumes live
#
# What runs, all built or installed here (nothing is pulled):
#   containerd + runc (Debian), CNI bridge/host-local/portmap (Debian),
#   kubelet + kube-proxy (k8s-binaries.sh, from Go modules), the pause image
#   and local-path-provisioner (the dynamic provisioner kind uses, run as a
#   host process) behind a default StorageClass, and cluster DNS: CoreDNS
#   (k8s-binaries.sh, from its Go module) in the node's network namespace on
#   the node's address, port 53, its kubernetes plugin watching the API server
#   and the kubelet's clusterDNS pointing at it, so pods resolve Services and
#   an Indexed Job's pods (`JOB-i.SERVICE`) by name.
#
# Isolation, so that `down` can undo everything:
#   - network: the node lives in its own network namespace `gpubatch-node`
#     (10.87.0.2), joined to the host by a veth pair (host side 10.87.0.1, where
#     the API server advertises itself); pods get 10.88.0.0/16 on bridge gpb0
#     inside it. Bridge, iptables chains of kubelet and kube-proxy, conntrack
#     and per-namespace sysctls all live in that namespace and go with it.
#   - mounts: containerd, kubelet and kube-proxy share one private mount
#     namespace (tmpfs over /run/containerd, /var/lib/cni, /var/log/containers),
#     so no mount, socket or log link appears on the host; it goes with them.
#   - host changes that cannot be namespaced are recorded and undone: the
#     kernel sysctls the kubelet sets (kernel.panic, kernel.panic_on_oops,
#     vm.overcommit_memory, ...), the kubepods cgroups, the route to the pod
#     network (it goes with the veth).
#   - state: $GPUBATCH_CACHE/cluster/node (removed by down); containerd's image
#     store is kept in $GPUBATCH_CACHE/node-containerd so images load once.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${GPUBATCH_CACHE:-$HOME/.cache/gpubatch}
state=$cache_root/cluster
node=$state/node
croot=$cache_root/node-containerd
kubeconfig=$state/kubeconfig
data=$state/data

NODE_NAME=real-0
NETNS=gpubatch-node
HOST_IF=gpb-host
NODE_IF=gpb-node
HOST_IP=10.87.0.1
NODE_IP=10.87.0.2
LINK_CIDR=30
POD_CIDR=10.88.0.0/16
POD_GW=10.88.0.1
BRIDGE=gpb0
CLUSTER_DOMAIN=cluster.local
# Cluster DNS: CoreDNS listens on the node's own address (pods reach it through
# their gateway, the node), so no Service or kube-proxy rule is involved.
DNS_IP=$NODE_IP
STORAGE_NS=local-path-storage
# Image names: images/build.sh, which builds them, is the one place they are written.
image_named() { bash "$repo/images/build.sh" --list | awk -v n="$1" '$1 == n { print $2 }'; }
PAUSE_IMAGE=$(image_named pause)
HELPER_IMAGE=$(image_named helper)
SOCK=$node/run/containerd.sock
# The kernel settings the kubelet changes at start (its "kernel tunables").
KERNEL_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Host folders the private mount namespace covers with a tmpfs.
PRIVATE_DIRS=(/run/containerd /var/lib/cni /var/log/containers /var/log/pods)

log() { echo "node: $*" >&2; }
die() { log "$*"; exit 1; }
bin_dir() { bash "$here/k8s-binaries.sh" --bin-dir; }
kubectl() { "$(bin_dir)/kubectl" --kubeconfig "$kubeconfig" "$@"; }
ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }
in_netns() { ip netns exec "$NETNS" "$@"; }

node_pids() { pgrep -f -- "$node/" || true; }

status() {
  [[ -S $SOCK ]] && ip netns list 2>/dev/null | grep -qw "$NETNS" &&
    in_netns curl -fsS --max-time 3 http://127.0.0.1:10248/healthz >/dev/null 2>&1
}

preflight() {
  [[ $(id -u) == 0 ]] || die "the real node needs root (network namespace, containerd, cgroups)"
  local missing=() c
  for c in containerd containerd-shim-runc-v2 runc ctr ip iptables nsenter unshare curl docker; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] || missing+=(containernetworking-plugins)
  ((${#missing[@]} == 0)) || die "missing: ${missing[*]} (the Makefile's 'node-deps' target installs them: make node-deps)"
  local bin
  bin=$(bin_dir)
  for c in kubelet kube-proxy local-path-provisioner kubectl coredns; do
    [[ -x $bin/$c ]] || die "$bin/$c is missing; run tests/cluster/k8s-binaries.sh"
  done
  [[ -f $kubeconfig ]] || die "no control plane ($kubeconfig missing); run cluster.sh up"
}

# --- host changes we must undo ------------------------------------------------------------------
save_sysctls() {
  [[ -f $node/sysctls.orig ]] && return 0
  local key
  for key in "${KERNEL_SYSCTLS[@]}"; do
    echo "$key $(sysctl -n "$key")"
  done >"$node/sysctls.orig"
}

restore_sysctls() {
  [[ -f $node/sysctls.orig ]] || return 0
  local key value
  while read -r key value; do
    [[ $(sysctl -n "$key") == "$value" ]] || sysctl -q -w "$key=$value" >/dev/null || log "could not restore $key=$value"
  done <"$node/sysctls.orig"
  return 0
}

cgroup_roots() {
  local d
  for d in /sys/fs/cgroup/*/; do
    [[ -f $d/cgroup.procs ]] && echo "${d%/}"
  done
}

# The kubelet creates kubepods under every cgroup hierarchy; record which existed.
save_cgroups() {
  [[ -f $node/cgroups.created ]] && return 0
  local r
  for r in $(cgroup_roots); do
    [[ -d $r/kubepods ]] || echo "$r/kubepods"
  done >"$node/cgroups.created"
}

remove_cgroups() {
  [[ -f $node/cgroups.created ]] || return 0
  local dir
  while read -r dir; do
    [[ -d $dir ]] || continue
    # Deepest first; a cgroup with no process left can be removed.
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ ! -d $dir ]] || log "cgroup $dir still in use; left in place"
  done <"$node/cgroups.created"
  return 0
}

net_up() {
  # `ip netns add` makes /run/netns a mount point: remember whether it was one.
  [[ -f $node/netns-mount.existed ]] || { mountpoint -q /run/netns && echo yes || echo no; } >"$node/netns-mount.existed"
  ip netns list | grep -qw "$NETNS" || ip netns add "$NETNS"
  if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link add "$HOST_IF" type veth peer name "$NODE_IF" netns "$NETNS"
    ip addr add "$HOST_IP/$LINK_CIDR" dev "$HOST_IF"
    ip link set "$HOST_IF" up
    in_netns ip addr add "$NODE_IP/$LINK_CIDR" dev "$NODE_IF"
    in_netns ip link set "$NODE_IF" up
    in_netns ip link set lo up
    in_netns ip route add default via "$HOST_IP"
    # Replies from the API server to pods go back through the node.
    ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_IF"
  fi
  # Per-namespace settings: they go with the namespace.
  in_netns sysctl -q -w net.ipv4.ip_forward=1 >/dev/null
}

net_down() {
  if ip link show "$HOST_IF" >/dev/null 2>&1; then ip link del "$HOST_IF"; fi # its route goes with it
  if ip netns list 2>/dev/null | grep -qw "$NETNS"; then ip netns del "$NETNS"; fi
  if [[ $(cat "$node/netns-mount.existed" 2>/dev/null) == no ]] && [[ -z $(ip netns list 2>/dev/null) ]]; then
    umount /run/netns 2>/dev/null || true
    rmdir /run/netns 2>/dev/null || true
  fi
  return 0
}

# --- configuration ------------------------------------------------------------------------------
write_configs() {
  local server ca
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  # The node reaches the API server on the host end of the veth, not on loopback.
  sed "s#server: .*#server: https://$HOST_IP:${server##*:}#" "$kubeconfig" >"$node/kubeconfig"
  ca=$(dirname "$kubeconfig")/kwok/clusters/gpubatch/pki/ca.crt
  [[ -f $ca ]] || ca=$(find "$state/kwok" -name ca.crt | head -n 1)
  [[ -f $ca ]] || die "the cluster's CA (ca.crt) was not found under $state/kwok"

  mkdir -p "$node/cni" "$node/cni-ipam" "$node/run" "$node/kubelet" "$node/pod-logs" "$node/opt" "$croot"
  cat >"$node/containerd.toml" <<EOF
version = 2
root = "$croot"
state = "$node/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$node/run/containerd.sock.ttrpc"
[debug]
  address = "$node/run/containerd-debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj is refused and
  # runc then fails every sandbox ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$node/run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
EOF
  cat >"$node/cni/10-gpubatch.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "gpubatch",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$node/cni-ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroups are v1 on our machines; 1.35+ refuses v1 unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podLogsDir: $node/pod-logs
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: $ca}
authorization: {mode: AlwaysAllow}
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_IP]
resolvConf: /etc/resolv.conf
# The images are large and the test machines' disks are shared: never evict
# or garbage-collect for disk, only for memory.
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 110
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
EOF
  cat >"$node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $node/kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {localhostNodePorts: false}
# 0: leave the (host-wide) conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# Cluster DNS: the kubernetes plugin answers for the cluster domain (Services,
# headless Services' pods, pod IPs) from a watch of the API server. Nothing is
# forwarded (the node has no upstream resolver to offer) and nothing is cached:
# a worker asks for a peer that is still starting until its record appears.
start_dns() {
  local bin
  bin=$(bin_dir)
  cat >"$node/Corefile" <<EOF
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $DNS_IP
    errors
    health 127.0.0.1:8053
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $node/kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
}
EOF
  setsid nsenter --net="/run/netns/$NETNS" "$bin/coredns" -conf "$node/Corefile" \
    >"$node/coredns.log" 2>&1 </dev/null &
  echo $! >"$node/coredns.pid"
  local deadline=$((SECONDS + 60))
  until in_netns curl -fsS --max-time 2 http://127.0.0.1:8053/health >/dev/null 2>&1; do
    if ((SECONDS >= deadline)) || ! kill -0 "$(cat "$node/coredns.pid")" 2>/dev/null; then
      tail -n 20 "$node/coredns.log" >&2 || true
      die "CoreDNS did not come up on $DNS_IP:53"
    fi
    sleep 0.5
  done
  log "cluster DNS: CoreDNS on $DNS_IP:53 for $CLUSTER_DOMAIN"
}

dns_running() { [[ -f $node/coredns.pid ]] && kill -0 "$(cat "$node/coredns.pid")" 2>/dev/null; }

# The node's processes: one private mount namespace inside the node's network namespace.
start_processes() {
  local bin
  bin=$(bin_dir)
  cat >"$node/run-node.sh" <<EOF
#!/usr/bin/env bash
# Runs inside the node's network and mount namespaces (node.sh start_processes).
set -euo pipefail
for d in ${PRIVATE_DIRS[*]}; do mount -t tmpfs -o mode=0755 gpubatch-node "\$d"; done
containerd --config "$node/containerd.toml" >"$node/containerd.log" 2>&1 &
echo \$! >"$node/containerd.pid"
for _ in \$(seq 120); do [[ -S "$SOCK" ]] && break; sleep 0.25; done
"$bin/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$node/kubeconfig" --root-dir "$node/kubelet" \\
  --cert-dir "$node/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \\
  --node-labels "gpubatch.dev/node-type=real" --v 1 >"$node/kubelet.log" 2>&1 &
echo \$! >"$node/kubelet.pid"
"$bin/kube-proxy" --config "$node/kube-proxy.yaml" --v 1 >"$node/kube-proxy.log" 2>&1 &
echo \$! >"$node/kube-proxy.pid"
wait
EOF
  # Directories the tmpfs mounts need; remember the ones we create on the host.
  local d
  for d in "${PRIVATE_DIRS[@]}"; do
    [[ -d $d ]] || { mkdir -p "$d"; echo "$d" >>"$node/dirs.created"; }
  done
  # A preload of the images (preload_images) holds the store until it is done.
  (flock 9) 9>"$croot/.gpubatch-lock"
  # setsid: its own session, so the shell that ran `up` can go.
  setsid nsenter --net="/run/netns/$NETNS" unshare --mount --propagation slave \
    bash "$node/run-node.sh" >"$node/run-node.log" 2>&1 </dev/null &
  echo $! >"$node/supervisor.pid"
}

start_provisioner() {
  local bin
  bin=$(bin_dir)
  mkdir -p "$data"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $STORAGE_NS}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: $STORAGE_NS}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: $STORAGE_NS}
data:
  config.json: |-
    {"nodePathMap": [{"node": "$NODE_NAME", "paths": ["$data"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -p "\$VOL_DIR" && chmod 0777 "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata: {name: helper-pod}
    spec:
      containers:
      - name: helper-pod
        image: $HELPER_IMAGE
        imagePullPolicy: Never
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
# A claim's folder is DATA_DIR/NAMESPACE/CLAIM: known before the volume exists,
# so data can be copied in ahead of the first pod.
parameters:
  pathPattern: "{{ .PVC.Namespace }}/{{ .PVC.Name }}"
# Volumes exist only on the real node: a pod with a claim of this class is
# scheduled there, never on a kwok node.
allowedTopologies:
- matchLabelExpressions:
  - {key: kubernetes.io/hostname, values: [$NODE_NAME]}
EOF
  setsid "$bin/local-path-provisioner" --debug start --kubeconfig "$kubeconfig" \
    --namespace "$STORAGE_NS" --helper-image "$HELPER_IMAGE" \
    --config "$node/lpp-config.json" >"$node/local-path-provisioner.log" 2>&1 </dev/null &
  echo $! >"$node/local-path-provisioner.pid"
  # The provisioner reads its node map from this file, the scripts from the ConfigMap.
  echo "{\"nodePathMap\": [{\"node\": \"$NODE_NAME\", \"paths\": [\"$data\"]}]}" >"$node/lpp-config.json"
}

wait_ready() {
  local deadline=$((SECONDS + 180))
  until kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True; do
    if ((SECONDS >= deadline)); then
      log "node $NODE_NAME not Ready after 180 s; last kubelet lines:"
      tail -n 30 "$node/kubelet.log" >&2 || true
      return 1
    fi
    if ! kill -0 "$(cat "$node/supervisor.pid")" 2>/dev/null; then
      log "the node's processes exited; logs in $node"
      tail -n 30 "$node/kubelet.log" "$node/containerd.log" "$node/run-node.log" >&2 || true
      return 1
    fi
    sleep 1
  done
}

# --- images -------------------------------------------------------------------------------------
# Once unpacked, an image's layer blobs are dead weight: containerd runs
# containers from the unpacked snapshots, and kubelet (pull policy Never here)
# asks only for the image's manifest and config. Removing the blobs halves the
# node's store (the layers arrive uncompressed: 12 GB with the GPU image).
# Kept: the manifest, the config, and every blob of an image not fully unpacked.
discard_layer_blobs() { # IMAGE_REF
  local target layers
  target=$(ctr_ images ls | awk -v r="$1" '$1 == r { print $3 }')
  [[ -n $target ]] || return 0
  layers=$(ctr_ content get "$target" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
print("\n".join(layer["digest"] for layer in doc.get("layers", [])))')
  [[ -n $layers ]] || return 0
  # Only when every layer is unpacked (its snapshot exists, named by its chain ID).
  # (`ctr images check`: REF TYPE DIGEST STATUS SIZE UNPACKED.)
  ctr_ images check "name==$1" 2>/dev/null | tail -n +2 | grep -q 'true$' || return 0
  # shellcheck disable=SC2086
  ctr_ content rm $layers >/dev/null 2>&1 || true
}

# Load every image `images/build.sh --list` names into containerd, unless the
# same image (same ID) was loaded before.
load_images() {
  [[ -S $SOCK ]] || { preload_images; return; }
  mkdir -p "$croot/.gpubatch-loaded"
  local name image id stamp ref loaded=0 t0
  while read -r name image; do
    id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || { log "image $image not built yet (make images)"; continue; }
    stamp=$croot/.gpubatch-loaded/${image//[\/:]/_}
    ref=$image
    [[ $ref == *.*/* ]] || ref=docker.io/$ref
    if [[ -f $stamp && $(cat "$stamp") == "$id" ]] && ctr_ images ls -q | grep -qxF "$ref"; then
      continue
    fi
    t0=$SECONDS
    # `docker save | ctr import`: layers move uncompressed, and containerd
    # unpacks only those it lacks. (A push to a registry on the node gzips
    # every layer the registry lacks and the pull unzips it again, on the CPU:
    # 9 min for a cold node against 279 s this way, measured.)
    docker save "$image" | ctr_ images import - >/dev/null
    discard_layer_blobs "$ref"
    log "loaded $image with docker save | ctr import in $((SECONDS - t0)) s"
    echo "$id" >"$stamp"
    loaded=$((loaded + 1))
  done < <(bash "$repo/images/build.sh" --list)
  log "images loaded ($loaded new)"
}

# The node is not running: load into its image store ($croot) with a containerd
# of our own (CRI off, state and sockets in a temporary folder, mounts in a
# private mount namespace that goes with it), then stop it. `up` waits on the
# same lock before its containerd opens the store.
preload_images() {
  [[ $(id -u) == 0 ]] || die "loading the node's images needs root (containerd)"
  [[ -z $(node_pids) ]] || die "the node is starting or stopping; load the images when it is up (node.sh load-images)"
  mkdir -p "$croot"
  exec 7>"$croot/.gpubatch-lock"
  flock 7
  local tmp pid rc=0
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpubatch-node-preload.XXXXXX")
  cat >"$tmp/containerd.toml" <<EOF
version = 2
root = "$croot"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$tmp/containerd.sock"
[ttrpc]
  address = "$tmp/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$tmp/opt"
EOF
  setsid unshare --mount --propagation private containerd --config "$tmp/containerd.toml" \
    >"$tmp/containerd.log" 2>&1 </dev/null 7>&- &
  pid=$!
  for _ in $(seq 120); do [[ -S $tmp/containerd.sock ]] && break; sleep 0.25; done
  if [[ -S $tmp/containerd.sock ]]; then
    log "the node is not running: loading the images into its store ($croot)"
    SOCK=$tmp/containerd.sock load_images || rc=$?
  else
    log "containerd (for loading the images) did not start:"; tail -20 "$tmp/containerd.log" >&2; rc=1
  fi
  kill_wait "$pid"
  rm -rf "$tmp"
  flock -u 7
  exec 7>&-
  return $rc
}

ensure_images() {
  if [[ ${GPUBATCH_NODE_BUILD_IMAGES:-1} == 0 ]]; then
    # Load what is built; `make images` loads the rest when it is done.
    docker info >/dev/null 2>&1 && load_images || log "images not loaded (no Docker engine answers); run make images"
    return 0
  fi
  # build.sh builds what is missing (cached by inputs), then calls load-images.
  bash "$repo/images/build.sh"
}

# --- up / down ----------------------------------------------------------------------------------
# The node's daemons must not inherit a caller's open files: under
# `flock e2e.lock node.sh up` they would hold the lock for as long as they run.
# (flock itself keeps its own descriptor, so the caller's lock is unaffected.)
close_inherited_fds() {
  local fd
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    if ((fd > 2 && fd != 255)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}

up() {
  close_inherited_fds
  preflight
  if status && kubectl get node "$NODE_NAME" >/dev/null 2>&1 && ! dns_running; then
    # A node started before cluster DNS was added here: its kubelet has no clusterDNS.
    log "the running node has no cluster DNS; restarting it"
    down
  fi
  if status && kubectl get node "$NODE_NAME" >/dev/null 2>&1; then
    log "already up"
  else
    [[ -n $(node_pids) ]] && { log "stale node processes; stopping them first"; down; }
    mkdir -p "$node"
    save_sysctls
    save_cgroups
    net_up
    write_configs
    start_dns
    start_processes
    wait_ready
    start_provisioner
  fi
  ensure_images
  log "up: node $NODE_NAME Ready; volumes under $data"
}

kill_wait() { # PIDS...: TERM, wait up to 15 s, then KILL
  local pid left
  (($#)) || return 0
  kill "$@" 2>/dev/null || true
  for _ in $(seq 30); do
    left=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left=1; done
    ((left)) || return 0
    sleep 0.5
  done
  kill -9 "$@" 2>/dev/null || true
}

pidfile() { [[ -f $node/$1.pid ]] && cat "$node/$1.pid" || true; }

down() {
  local pids
  kill_wait $(pidfile local-path-provisioner) $(pidfile coredns)
  kill_wait $(pidfile kubelet) $(pidfile kube-proxy)
  # Every pod's containers and sandboxes go before containerd does.
  if [[ -S $SOCK ]]; then
    local t
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    sleep 1
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for t in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$t" >/dev/null 2>&1 || true; done
  fi
  kill_wait $(pidfile containerd)
  # Shims, and anything else still naming our state folder.
  pids=$(node_pids)
  if [[ -n $pids ]]; then kill_wait $pids; fi
  kill_wait $(pidfile supervisor)
  pids=$(node_pids)
  [[ -z $pids ]] || log "still running after down: $pids"
  net_down
  remove_cgroups
  restore_sysctls
  if [[ -f $node/dirs.created ]]; then
    local d
    while read -r d; do rmdir "$d" 2>/dev/null || log "$d is not empty; left in place"; done <"$node/dirs.created"
  fi
  rm -rf "$node" "$data"
  [[ -z $pids ]]
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  load-images) load_images ;;
  data-dir) echo "$data" ;;
  *) echo "usage: $0 up|down|status|load-images|data-dir" >&2; exit 2 ;;
esac
