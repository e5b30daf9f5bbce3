"""End to end on real images: build both, load them into kind, run one job of each kind.

Needs Docker and kind (and builds three images: minutes, several GB). Where
either is missing the tests skip with the reason printed; they never run on
the machines the other test suites use. Use an existing kind cluster with
KIND_CLUSTER=NAME, or let the test create (and delete) `gpubatch-e2e`.

    pytest -m kind tests/e2e -s
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness

pytestmark = pytest.mark.kind

ROOT = harness.REPO_ROOT
SMOKE = ROOT / "images" / "smoke"
TAG = "e2e"
IMAGES = {
    "cpu": (f"gpubatch/gpubatch-cpu:{TAG}", ["-f", "Dockerfile.cpu"]),
    "operator": (f"gpubatch/gpubatch-operator:{TAG}", ["-f", "Dockerfile.cpu", "--target", "operator"]),
    "gpu": (f"gpubatch/gpubatch-gpu:{TAG}", ["-f", "Dockerfile.gpu"]),
}


def tool(name: str) -> str:
    """A tool on PATH, else the one the test cluster's build cached (kubectl, helm)."""
    found = shutil.which(name) or (str(harness.bin_dir() / name) if (harness.bin_dir() / name).exists() else None)
    if not found:
        reason = f"kind e2e: `{name}` is not installed"
        print(reason)
        pytest.skip(reason)
    return found


def run(*args: str, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed (exit {result.returncode}):\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def docker() -> str:
    docker = tool("docker")
    if subprocess.run([docker, "info"], capture_output=True, check=False).returncode != 0:
        reason = "kind e2e: no Docker engine answers (`docker info` fails)"
        print(reason)
        pytest.skip(reason)
    return docker


@pytest.fixture(scope="module")
def images(docker: str) -> dict[str, str]:
    for image, args in IMAGES.values():
        run(docker, "build", *args, "-t", image, str(ROOT), timeout=3600)
    return {key: image for key, (image, _) in IMAGES.items()}


@pytest.fixture(scope="module")
def kind_cluster(docker: str, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    kind = tool("kind")
    name = os.environ.get("KIND_CLUSTER", "gpubatch-e2e")
    created = name not in run(kind, "get", "clusters").stdout.split()
    if created:
        run(kind, "create", "cluster", "--name", name, "--wait", "120s", timeout=900)
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    kubeconfig.write_text(run(kind, "get", "kubeconfig", "--name", name).stdout)
    for image in images.values():
        run(kind, "load", "docker-image", image, "--name", name, timeout=1800)
    yield kubeconfig
    if created:
        run(kind, "delete", "cluster", "--name", name, timeout=300)


@pytest.fixture(scope="module")
def namespace(kind_cluster: Path) -> Iterator[str]:
    kubectl, helm = tool("kubectl"), tool("helm")
    config = ["--kubeconfig", str(kind_cluster)]
    ns = f"gpubatch-e2e-{uuid.uuid4().hex[:6]}"
    run(kubectl, *config, "create", "namespace", ns)
    run(helm, *config, "install", "gpubatch", str(ROOT / "charts" / "gpubatch"), "-n", ns, "--wait",
        "--timeout", "5m", "--set", f"watchNamespaces={{{ns}}}",
        "--set", f"image.tag={TAG}", "--set", "image.pullPolicy=Never",
        "--set", f"jobImages.gpu.tag={TAG}", "--set", f"jobImages.cpu.tag={TAG}",
        "--set", "jobImages.pullPolicy=Never", timeout=400)
    yield ns
    subprocess.run([helm, *config, "uninstall", "gpubatch", "-n", ns, "--wait"], capture_output=True, check=False)
    subprocess.run([kubectl, *config, "delete", "namespace", ns, "--wait=false"], capture_output=True, check=False)


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    return run(tool("kubectl"), "--kubeconfig", str(kubeconfig), *args, input=input).stdout


def seed_data(kubeconfig: Path, ns: str, cpu_image: str) -> None:
    """PVCs `data` and `out`, and a Job on the CPU image that writes the smoke inputs into `data`."""
    claims = [{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
              for claim in ("data", "out")]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "seed-data"}, "spec": {
        "backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
            "containers": [{"name": "seed", "image": cpu_image, "imagePullPolicy": "Never",
                            "command": ["python", "/opt/gpubatch/smoke/smoke/make_data.py", "/mnt/pvc/data"],
                            "volumeMounts": [{"name": "data", "mountPath": "/mnt/pvc/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}}
    kubectl(kubeconfig, "-n", ns, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                        "items": [*claims, job]}))
    kubectl(kubeconfig, "-n", ns, "wait", "--for=condition=complete", "job/seed-data", "--timeout=300s")


def wait_for_phase(kubeconfig: Path, ns: str, kind: str, name: str, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        obj = json.loads(kubectl(kubeconfig, "-n", ns, "get", kind, name, "-o", "json"))
        phase = obj.get("status", {}).get("phase")
        if phase in {"Succeeded", "Failed"} or time.monotonic() > deadline:
            return obj
        time.sleep(5)


@pytest.mark.parametrize("image_key", ["cpu", "gpu"])
def test_smoke_script_inside_the_image(docker: str, images: dict[str, str], image_key: str) -> None:
    """`gpubatch doctor` and a job of each kind in the image itself (the GPU image falls back to the CPU)."""
    result = run(docker, "run", "--rm", "--entrypoint", "/opt/gpubatch/smoke/smoke.sh", images[image_key],
                 timeout=1200)
    assert "== smoke test passed" in result.stdout, result.stdout[-4000:]


def test_one_job_of_each_kind_on_kind(kind_cluster: Path, namespace: str, images: dict[str, str]) -> None:
    seed_data(kind_cluster, namespace, images["cpu"])
    for manifest in sorted(SMOKE.glob("*.yaml")):
        resource = yaml.safe_load(manifest.read_text())
        kubectl(kind_cluster, "-n", namespace, "apply", "-f", str(manifest))
        done = wait_for_phase(kind_cluster, namespace, resource["kind"].lower(), resource["metadata"]["name"])
        status = done.get("status", {})
        assert status.get("phase") == "Succeeded", json.dumps(status, indent=2)[-4000:]
        assert status.get("result", {}).get("ok") is True, status
        # kind has no GPU: auto lands on the CPU image, or the GPU image fell back.
        assert status.get("device") == "cpu", status
