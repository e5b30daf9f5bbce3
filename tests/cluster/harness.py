"""Drive the local test cluster from Python, with no pytest in sight.

The cluster is real Kubernetes (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler built from their Go modules) with kwok playing kubelet for four
fake nodes. `cluster.sh` and `k8s-binaries.sh` beside this module do the work;
this module starts and stops them, runs the cached kubectl and helm against
the cluster's kubeconfig, and waits for things to happen. The pytest fixtures
in tests/conftest.py are thin wrappers around it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

CLUSTER_DIR = Path(__file__).resolve().parent
REPO_ROOT = CLUSTER_DIR.parent.parent
CLUSTER_SH = CLUSTER_DIR / "cluster.sh"
BINARIES_SH = CLUSTER_DIR / "k8s-binaries.sh"
K8S_VERSION = (CLUSTER_DIR / "k8s-version").read_text().strip()

# What the fake nodes advertise (tests/cluster/nodes.yaml).
GPU_RESOURCE = "nvidia.com/gpu"
GPUS_PER_NODE = 4
NODE_TYPE_LABEL = "gpubatch.dev/node-type"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}

# The real node (tests/cluster/node.sh) and how a namespace sends its pods to
# one kind of node or the other.
REAL_NODE = "real-0"
NODE_SELECTOR_ANNOTATION = "scheduler.alpha.kubernetes.io/node-selector"
NODE_SELECTORS = {"kwok": "type=kwok", "real": f"kubernetes.io/hostname={REAL_NODE}"}

# Pod annotations the kwok Stages (tests/cluster/kwok-stages.yaml) act on.
EXIT_CODE_ANNOTATION = "gpubatch.dev/test-exit-code"
STAY_PENDING_ANNOTATION = "gpubatch.dev/test-stay-pending"
TERMINATION_MESSAGE_ANNOTATION = "gpubatch.dev/test-termination-message"
RUN_SECONDS_ANNOTATION = "gpubatch.dev/test-run-seconds"

T = TypeVar("T")


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be had here (no Go toolchain to build it)."""


def cache_root() -> Path:
    return Path(os.environ.get("GPUBATCH_CACHE") or Path.home() / ".cache" / "gpubatch")


def _script(
    script: Path, *args: str, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def bin_dir() -> Path:
    """Folder of the cached binaries (kubectl, helm, kube-apiserver, ...)."""
    return Path(_script(BINARIES_SH, "--bin-dir").stdout.strip())


def binaries_built() -> bool:
    return _script(BINARIES_SH, "--check").returncode == 0


def build_binaries(timeout: float = 3600) -> Path:
    """Build whatever is missing (a no-op when the cache is complete)."""
    if not binaries_built() and shutil.which("go") is None:
        raise ClusterUnavailable(
            f"the test cluster is built from Go modules but 'go' is not on PATH and "
            f"{bin_dir()} is incomplete; install Go 1.26+ or run `bash {BINARIES_SH}` where Go is"
        )
    result = _script(BINARIES_SH, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"{BINARIES_SH} failed (exit {result.returncode}):\n{result.stderr[-6000:]}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


def is_up() -> bool:
    return _script(CLUSTER_SH, "status", timeout=60).returncode == 0


def kubeconfig_path() -> Path:
    """Where cluster.sh keeps the admin kubeconfig (whether or not it is up)."""
    return cache_root() / "cluster" / "kubeconfig"


def data_dir() -> Path:
    """The host folder under which the real node's provisioned volumes live."""
    return Path(_script(CLUSTER_SH, "data-dir").stdout.strip())


def up(timeout: float = 3600) -> None:
    # Cold, `up` also builds the images (node.sh -> images/build.sh): tens of minutes.
    result = _script(CLUSTER_SH, "up", timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{CLUSTER_SH} up` failed (exit {result.returncode}):\n{result.stderr[-6000:]}"
        )


def down(timeout: float = 300) -> None:
    result = _script(CLUSTER_SH, "down", timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{CLUSTER_SH} down` failed (exit {result.returncode}):\n{result.stderr[-6000:]}"
        )


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float = 60,
    interval: float = 0.5,
    what: str | Callable[[], str] = "condition",
) -> T:
    """Call `probe` until it returns something truthy and return that.

    On timeout the error names `what` and the last value seen, which is
    usually what a failing test needs to say why. A callable `what` is called
    only then (a diagnosis of the cluster as it is at the timeout, not before the wait).
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {described}; last seen: {last!r}"
            )
        time.sleep(interval)


@dataclass(frozen=True)
class Cluster:
    """A running test cluster and the tools to talk to it."""

    kubeconfig: Path
    bin_dir: Path
    started_here: bool

    @property
    def env(self) -> dict[str, str]:
        """Environment for any client (kubectl, helm, the operator) aimed at this cluster."""
        helm_home = cache_root() / "helm"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl against the cluster; `check` raises with stderr on failure."""
        return self._run(
            "kubectl", ["--kubeconfig", str(self.kubeconfig), *args], input, check, timeout
        )

    def helm(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached helm against the cluster."""
        return self._run(
            "helm", ["--kubeconfig", str(self.kubeconfig), *args], input, check, timeout
        )

    def _run(
        self, tool: str, args: list[str], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed (exit {result.returncode}):\n{result.stderr}"
            )
        return result

    def get(self, *args: str) -> dict[str, Any]:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json", check=True).stdout)

    def apply(self, *objects: Mapping[str, Any], namespace: str | None = None) -> None:
        """Create or update objects given as dicts (server-side apply)."""
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        ns = ["-n", namespace] if namespace else []
        self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=gpubatch-tests",
            *ns,
            "-f",
            "-",
            input=manifest,
            check=True,
        )

    def create_namespace(
        self, name: str, *, pod_security: str | None = "restricted", nodes: str | None = "kwok"
    ) -> str:
        """Create a namespace (PodSecurity enforced at `pod_security`) and wait until pods may be made in it.

        `nodes` picks where its pods may run (the PodNodeSelector admission
        plugin adds the namespace's node selector to every pod): "kwok" the
        fake nodes, "real" the real node, None anywhere.
        """
        labels: dict[str, str] = {"app.kubernetes.io/part-of": "gpubatch-tests"}
        if pod_security:
            for mode in ("enforce", "warn", "audit"):
                labels[f"pod-security.kubernetes.io/{mode}"] = pod_security
                labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
        annotations = {}
        if nodes is not None:
            annotations[NODE_SELECTOR_ANNOTATION] = NODE_SELECTORS[nodes]
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
            }
        )
        wait_until(
            lambda: self.kubectl("-n", name, "get", "serviceaccount", "default").returncode == 0,
            timeout=60,
            what=f"the default ServiceAccount of namespace {name}",
        )
        return name

    def delete_namespace(self, name: str, *, wait: bool = False) -> None:
        self.kubectl(
            "delete",
            "namespace",
            name,
            "--ignore-not-found",
            f"--wait={str(wait).lower()}",
            timeout=180,
        )

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.get("pods", "-n", namespace, "-l", selector)["items"]

    def wait_for_pod(
        self,
        namespace: str,
        selector: str,
        accept: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 60,
        what: str = "a matching pod",
    ) -> dict[str, Any]:
        """Wait until a pod matched by the label `selector` satisfies `accept`; return it."""

        def probe() -> dict[str, Any] | None:
            return next((pod for pod in self.pods(namespace, selector) if accept(pod)), None)

        return wait_until(probe, timeout=timeout, what=f"{what} ({namespace}, -l {selector})")

    def wait_for_phase(
        self, namespace: str, selector: str, phases: Iterable[str], timeout: float = 60
    ) -> dict[str, Any]:
        wanted = set(phases)
        return self.wait_for_pod(
            namespace,
            selector,
            lambda pod: pod.get("status", {}).get("phase") in wanted,
            timeout=timeout,
            what=f"a pod in phase {sorted(wanted)}",
        )

    def wait_for_condition(
        self, kind_and_name: str, namespace: str, condition: str, timeout: float = 60
    ) -> dict[str, Any]:
        """Wait until the object's status.conditions has `condition` True; return the object."""

        def probe() -> dict[str, Any] | None:
            obj = self.get(kind_and_name, "-n", namespace)
            conditions = obj.get("status", {}).get("conditions") or []
            done = any(c.get("type") == condition and c.get("status") == "True" for c in conditions)
            return obj if done else None

        return wait_until(probe, timeout=timeout, what=f"{kind_and_name} condition {condition}")


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def start(*, build_timeout: float = 3600) -> Cluster:
    """Reuse the cluster `make cluster-up` started, or start one (building binaries if needed)."""
    if is_up():
        return Cluster(kubeconfig=kubeconfig_path(), bin_dir=bin_dir(), started_here=False)
    binaries = build_binaries(timeout=build_timeout)
    up()
    return Cluster(kubeconfig=kubeconfig_path(), bin_dir=binaries, started_here=True)


def stop(cluster: Cluster) -> None:
    """Tear down only a cluster this process started."""
    if cluster.started_here:
        down()


# --- Workloads that pass PodSecurity "restricted" --------------------------------------------

RESTRICTED_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


class PodTemplate:
    """Fluent builder of a pod spec the restricted namespace admits.

    `PodTemplate("x").gpus(2).exit_code(75).job()` is a Job whose one pod
    asks for two GPUs and, under kwok, ends Failed with exit code 75.
    """

    def __init__(self, name: str, image: str = "registry.invalid/gpubatch/test:0") -> None:
        self.name = name
        self._labels: dict[str, str] = {"gpubatch-test": name}
        self._annotations: dict[str, str] = {}
        self._resources: dict[str, dict[str, str]] = {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "64Mi"},
        }
        self._tolerations: list[dict[str, Any]] = []
        self._node_selector: dict[str, str] = {}
        self._image = image

    @property
    def selector(self) -> str:
        return f"gpubatch-test={self.name}"

    def gpus(self, count: int, *, tolerate: bool = True) -> PodTemplate:
        self._resources["limits"][GPU_RESOURCE] = str(count)
        if tolerate:
            self._tolerations.append(
                {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
            )
        return self

    def on(self, node_type: str) -> PodTemplate:
        self._node_selector[NODE_TYPE_LABEL] = node_type
        return self

    def annotate(self, key: str, value: str) -> PodTemplate:
        self._annotations[key] = value
        return self

    def exit_code(self, code: int) -> PodTemplate:
        return self.annotate(EXIT_CODE_ANNOTATION, str(code))

    def run_seconds(self, seconds: float) -> PodTemplate:
        return self.annotate(RUN_SECONDS_ANNOTATION, str(seconds))

    def termination_message(self, text: str) -> PodTemplate:
        return self.annotate(TERMINATION_MESSAGE_ANNOTATION, text)

    def stay_pending(self) -> PodTemplate:
        return self.annotate(STAY_PENDING_ANNOTATION, "true")

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": self._image,
                    "resources": self._resources,
                    "securityContext": RESTRICTED_SECURITY_CONTEXT,
                }
            ],
        }
        if self._tolerations:
            spec["tolerations"] = self._tolerations
        if self._node_selector:
            spec["nodeSelector"] = self._node_selector
        return spec

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": dict(self._labels),
            "annotations": dict(self._annotations),
        }

    def pod(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": self.metadata(), "spec": self.spec()}

    def job(self, *, backoff_limit: int = 0) -> dict[str, Any]:
        template = {
            "metadata": {"labels": dict(self._labels), "annotations": dict(self._annotations)},
            "spec": self.spec(),
        }
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": self.name, "labels": dict(self._labels)},
            "spec": {"backoffLimit": backoff_limit, "template": template},
        }
