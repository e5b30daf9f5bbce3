"""Spark on Kubernetes for real: a PredictJob's pod is the Spark driver of executor pods.

On the real node, from the CPU image: the operator gives the job pod the
`gpubatch-spark-driver` ServiceAccount and its IP; Spark (client mode) makes
the executor pods, owned by the driver pod, on the same image; the output is
the file the local engine writes. An executor deleted mid-run is replaced.
With s3:// paths on a real S3 server (SeaweedFS on the host), the executors
read the input and write their parts through s3a:// with the Secret's keys,
which reach them as `secretKeyRef`s only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.cluster import harness
from tests.e2e.conftest import CPU_IMAGE, claim_dir, diagnose, get, make_claims
from tests.e2e.test_objstore_pods import HOST_ADDRESS
from tests.e2e.test_real_pods import SMOKE, make_data, wait_final
from tests.s3.server import ADMIN, SeaweedS3, running_server

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

API = "gpubatch.dev/v1alpha1"
EXECUTORS = "spark-role=executor"
# Small executors: the test machine's memory is shared. The overhead holds the Python worker (TensorFlow).
# spark.kubernetes.* keys are the engine's (refused at admission): an executor asks for the CPU its
# driver (the job pod, spec.resources) asks for.
SMALL = {"spark.executor.memory": "512m", "spark.executor.memoryOverhead": "1200m"}
SMALL_CPU = {"requests": {"cpu": "250m"}}


@pytest.fixture(scope="module")
def trained(k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str, data_dir: Path) -> Path:
    """Claims `data` and `out`, a model trained in the cluster (out/model), and a larger input (data/many.parquet)."""
    data = claim_dir(data_dir, e2e_namespace, "data")
    out = claim_dir(data_dir, e2e_namespace, "out")
    make_data.main(str(data))
    rng = np.random.default_rng(11)
    frames = []
    for doc in range(60):
        features = rng.normal(size=(200, 4)).astype("float32")
        frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(4)])
        frame.insert(0, "pos", np.arange(200))
        frame.insert(0, "doc", f"doc-{doc}")
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_parquet(data / "many.parquet", index=False)
    make_claims(k8s_cluster, e2e_namespace, "data", "out")
    k8s_cluster.kubectl("-n", e2e_namespace, "apply", "-f", str(SMOKE / "02-train.yaml"), check=True)
    status = wait_final(k8s_cluster, e2e_namespace, "trainjob", "smoke-train")["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    return out


def predict_job(name: str, output: str, **spec: Any) -> dict[str, Any]:
    body = {"model": "pvc://out/model", "input": {"path": "pvc://data/many.parquet"},
            "output": {"path": f"pvc://out/{output}", "overwrite": True}, "device": {"policy": "cpu"}}
    body.update(spec)
    return {"apiVersion": API, "kind": "PredictJob", "metadata": {"name": name}, "spec": body}


def run_watching_executors(cluster: harness.Cluster, ns: str, job: dict[str, Any], *, kill_one: bool = False,
                           timeout: float = 900) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str | None]:
    """Apply a PredictJob and follow it to the end, keeping the last state of every executor pod
    seen; with `kill_one`, delete the first executor pod once it runs. Returns (status, pods, killed)."""
    cluster.apply(job, namespace=ns)
    name = job["metadata"]["name"]
    seen: dict[str, dict[str, Any]] = {}
    killed = None
    deadline = time.monotonic() + timeout
    while True:
        for pod in cluster.get("pods", "-n", ns, "-l", EXECUTORS)["items"]:
            seen[pod["metadata"]["name"]] = pod
            if kill_one and killed is None and pod["status"].get("phase") == "Running":
                killed = pod["metadata"]["name"]
                cluster.kubectl("-n", ns, "delete", "pod", killed, "--wait=false", check=True)
        status = get(cluster, ns, "predictjob", name).get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return status, seen, killed
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not final after {timeout:.0f}s: {status}\n{diagnose(cluster, ns)}")
        time.sleep(0.5)


def driver_pod(cluster: harness.Cluster, ns: str, job_name: str) -> dict[str, Any]:
    (pod,) = cluster.get("pods", "-n", ns, "-l", f"job-name={job_name}")["items"]
    return pod


def assert_same_predictions(local: Path, spark: Path) -> None:
    a, b = pd.read_parquet(local), pd.read_parquet(spark)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    assert a["doc"].tolist() == b["doc"].tolist() and a["pos"].tolist() == b["pos"].tolist()  # the input's order
    assert a["label"].tolist() == b["label"].tolist()
    probabilities = [c for c in a.columns if c.startswith("p_")]
    assert probabilities
    np.testing.assert_allclose(a[probabilities].to_numpy(), b[probabilities].to_numpy(), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def local_output(k8s_cluster: harness.Cluster, e2e_namespace: str, trained: Path) -> Path:
    k8s_cluster.apply(predict_job("many-local", "many-local.parquet"), namespace=e2e_namespace)
    status = wait_final(k8s_cluster, e2e_namespace, "predictjob", "many-local")["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    return trained / "many-local.parquet"


@pytest.fixture(scope="module")
def two_executors(k8s_cluster: harness.Cluster, e2e_namespace: str,
                  trained: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A PredictJob with 2 executor pods, run once: (its status, the executor pods seen)."""
    job = predict_job("many-spark", "many-spark.parquet", engine="spark",
                      spark={"executors": 2, "partitions": 8, "conf": SMALL}, resources=SMALL_CPU)
    status, executors, _ = run_watching_executors(k8s_cluster, e2e_namespace, job)
    return status, executors


def test_two_executor_pods_give_the_local_engines_output(
        k8s_cluster: harness.Cluster, e2e_namespace: str, trained: Path, local_output: Path,
        two_executors: tuple[dict[str, Any], dict[str, dict[str, Any]]]) -> None:
    status, executors = two_executors
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    result = status["result"]
    assert result["engine"] == "spark" and result["master"].startswith("k8s://https://"), result
    assert_same_predictions(local_output, trained / "many-spark.parquet")
    # Real executor pods on the job's image, owned by the driver (the job's pod), which ran as the driver identity.
    assert len(executors) >= 2, sorted(executors)
    driver = driver_pod(k8s_cluster, e2e_namespace, status["jobName"])
    assert driver["spec"]["serviceAccountName"] == "gpubatch-spark-driver"
    for pod in executors.values():
        assert pod["spec"]["containers"][0]["image"] == CPU_IMAGE
        owners = pod["metadata"]["ownerReferences"]
        assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
            ("Pod", driver["metadata"]["name"], driver["metadata"]["uid"])], owners
        assert pod["spec"].get("automountServiceAccountToken") is False
    # They went when the driver was done.
    harness.wait_until(lambda: not k8s_cluster.get("pods", "-n", e2e_namespace, "-l", EXECUTORS)["items"],
                       timeout=120, what="executor pods gone")


def test_an_executor_deleted_mid_run_is_replaced(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                 trained: Path, local_output: Path) -> None:
    job = predict_job("many-spark-kill", "many-spark-kill.parquet", engine="spark",
                      spark={"executors": 2, "partitions": 16, "conf": SMALL}, resources=SMALL_CPU)
    status, executors, killed = run_watching_executors(k8s_cluster, e2e_namespace, job, kill_one=True)
    assert killed is not None, sorted(executors)
    assert status["phase"] == "Succeeded", f"{status}\n{diagnose(k8s_cluster, e2e_namespace)}"
    # Spark asked for a new executor pod in place of the deleted one.
    assert len(executors) >= 3, sorted(executors)
    assert_same_predictions(local_output, trained / "many-spark-kill.parquet")


def test_only_the_driver_identity_may_make_pods(
        k8s_cluster: harness.Cluster, e2e_namespace: str,
        two_executors: tuple[dict[str, Any], dict[str, dict[str, Any]]]) -> None:
    def can(account: str, verb: str, resource: str, namespace: str = e2e_namespace) -> bool:
        resource, _, sub = resource.partition("/")  # kubectl reads pods/exec as a pod named exec
        result = k8s_cluster.kubectl("auth", "can-i", verb, resource, *([f"--subresource={sub}"] if sub else []),
                                     "-n", namespace, f"--as=system:serviceaccount:{e2e_namespace}:{account}")
        return result.stdout.strip() == "yes"

    # Both identities exist here by now (the train job made the plain one, the Spark job the driver's).
    k8s_cluster.kubectl("-n", e2e_namespace, "get", "serviceaccount", "gpubatch-job", "gpubatch-spark-driver",
                        check=True)
    assert not can("gpubatch-job", "create", "pods")
    assert not can("gpubatch-job", "delete", "pods")
    assert can("gpubatch-job", "patch", "pods")  # its progress annotation
    assert can("gpubatch-spark-driver", "create", "pods") and can("gpubatch-spark-driver", "delete", "pods")
    assert can("gpubatch-spark-driver", "create", "configmaps")
    for verb, resource in (("create", "services"), ("create", "secrets"), ("get", "secrets"),
                           ("create", "jobs.batch"), ("create", "persistentvolumeclaims"),
                           ("create", "pods/exec"), ("update", "pods")):
        assert not can("gpubatch-spark-driver", verb, resource), (verb, resource)
    assert not can("gpubatch-spark-driver", "create", "pods", namespace="default")
    # The operator bound the chart's ClusterRole (it holds `bind` on it, not its rules); no Role of its own.
    binding = json.loads(k8s_cluster.kubectl("-n", e2e_namespace, "get", "rolebinding", "gpubatch-spark-driver",
                                             "-o", "json", check=True).stdout)
    assert binding["roleRef"]["kind"] == "ClusterRole"
    role = json.loads(k8s_cluster.kubectl("get", "clusterrole", binding["roleRef"]["name"], "-o", "json",
                                          check=True).stdout)
    assert {r["resources"][0] for r in role["rules"]} == {"pods", "configmaps"}


def _secret(name: str, server: SeaweedS3, secret_key: str) -> dict[str, Any]:
    """The S3 Secret the job and its executor pods read (the server as the real node's pods reach it)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "stringData": {"AWS_ACCESS_KEY_ID": ADMIN[0], "AWS_SECRET_ACCESS_KEY": secret_key,
                           "AWS_ENDPOINT_URL": f"http://{HOST_ADDRESS}:{server.port}", "AWS_REGION": "us-east-1"}}


@pytest.fixture(scope="module")
def s3(real_node: str) -> Iterator[SeaweedS3]:
    with running_server() as server:
        yield server


def test_executor_pods_read_and_write_s3_through_s3a(
        k8s_cluster: harness.Cluster, e2e_namespace: str, data_dir: Path, trained: Path, local_output: Path,
        s3: SeaweedS3, tmp_path: Path) -> None:
    """Model, input and output on s3://: the output equals the local engine's on the same rows."""
    bucket = f"e2e-spark-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket)
    fs = s3.filesystem()
    uploads = {"data/many.parquet": claim_dir(data_dir, e2e_namespace, "data") / "many.parquet"}
    uploads.update({f"models/smoke/{p.relative_to(trained / 'model')}": p
                    for p in sorted((trained / "model").rglob("*")) if p.is_file()})
    for key, path in uploads.items():
        with fs.open_output_stream(f"{bucket}/{key}") as out:
            out.write(path.read_bytes())
    k8s_cluster.apply(_secret("spark-s3", s3, ADMIN[1]), namespace=e2e_namespace)
    job = predict_job("many-spark-s3", "unused", engine="spark", model=f"s3://{bucket}/models/smoke",
                      input={"path": f"s3://{bucket}/data/many.parquet"},
                      storage={"secretName": "spark-s3"},
                      spark={"executors": 2, "partitions": 8, "conf": SMALL}, resources=SMALL_CPU)
    job["spec"]["output"] = {"path": f"s3://{bucket}/out/many-spark.parquet"}
    status, executors, _ = run_watching_executors(k8s_cluster, e2e_namespace, job)
    assert status["phase"] == "Succeeded", f"{status}\n{s3.log_tail()}\n{diagnose(k8s_cluster, e2e_namespace)}"
    result = status["result"]
    assert result["master"].startswith("k8s://https://") and result["objectStorage"] == "s3a", result
    assert result["output"] == f"s3://{bucket}/out/many-spark.parquet", result

    # Published whole under its name; the parts' `.partial` prefix is gone.
    keys = s3.keys(bucket)
    assert "out/many-spark.parquet" in keys and not [k for k in keys if ".partial" in k], keys
    back = tmp_path / "many-spark.parquet"
    with fs.open_input_stream(f"{bucket}/out/many-spark.parquet") as src:
        back.write_bytes(src.read())
    assert_same_predictions(local_output, back)

    # Real executor pods did the work, and got the keys by reference to the Secret, never by value.
    assert len(executors) >= 2, sorted(executors)
    for pod in executors.values():
        env = {e["name"]: e for e in pod["spec"]["containers"][0].get("env") or []}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "spark-s3", env.get(key)
        assert ADMIN[1] not in json.dumps(pod)
