#!/usr/bin/env bash
# What the test cluster may change on the host, as text, so that a run can be
# checked for leftovers: .ci/run takes a snapshot before the tests and compares
# after (the cluster is torn down by then).
#
#   host-state.sh snapshot FILE    write the state to FILE
#   host-state.sh compare FILE     exit 1 and show the difference if the host changed
#
# Covered: the kernel sysctls the kubelet sets, network namespaces, links
# (bridges, veths), routes, iptables rules of the host, mounts, kubepods
# and docker cgroups, Docker's folders and files, and processes of the cluster (containerd, kubelet, kube-proxy,
# shims, provisioner, CoreDNS, control plane, kwok, dockerd), and the object-store test servers
# (SeaweedFS, fake-gcs-server, Azurite) with their temporary data folders.
set -euo pipefail

state() {
  echo "## sysctls"
  sysctl kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward 2>/dev/null || true
  echo "## netns"
  ip netns list 2>/dev/null | awk '{ print $1 }' | sort
  echo "## links"
  ip -o link show | awk -F': ' '{ print $2 }' | sed 's/@.*//' | sort
  echo "## routes"
  ip route show | sort
  echo "## iptables"
  { iptables-save 2>/dev/null || true; } | { grep -v '^#' || true; } | sed -E 's/\[[0-9]+:[0-9]+\]//' | sort
  echo "## mounts"
  awk '{ print $2, $3 }' /proc/self/mounts | { grep -Ev '^/proc/[0-9]' || true; } | sort
  echo "## runtime folders"
  for d in /run/netns /run/containerd /run/docker /run/docker.sock /run/docker.pid \
    /etc/docker /var/lib/docker /var/lib/cni /var/log/containers /var/log/pods; do
    [[ ! -e $d ]] || echo "$d"
  done
  echo "## cgroups"
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/docker; do [[ ! -d $d ]] || echo "$d"; done
  echo "## object-store test servers' data folders"
  ls -d "${TMPDIR:-/tmp}"/gpubatch-s3-* "${TMPDIR:-/tmp}"/gpubatch-gcs-* "${TMPDIR:-/tmp}"/gpubatch-azurite-* 2>/dev/null | sort || true
  echo "## processes"
  # Zombies (`<defunct>`: exited, not yet reaped by their parent) hold nothing to tear down.
  { pgrep -a -f 'containerd|kubelet|kube-proxy|kube-apiserver|kube-controller|kube-scheduler|etcd|kwok|local-path-provisioner|coredns|dockerd|pause|fake-gcs-server|azurite|weed server' || true; } |
    { grep -v -e pgrep -e host-state.sh -e '<defunct>' -e 'diff -u' || true; } | awk '{ $1 = ""; print }' | sort
}

case "${1:-}" in
  snapshot) state >"${2:?FILE}" ;;
  compare)
    if ! diff -u "${2:?FILE}" <(state) >&2; then
      echo "host-state: the host changed (above: - before, + after); something was not torn down" >&2
      exit 1
    fi
    echo "host-state: the host is as it was before the tests"
    ;;
  *) echo "usage: $0 snapshot|compare FILE" >&2; exit 2 ;;
esac
