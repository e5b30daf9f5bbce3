"""s3:// in real pods: a RenderJob on the real node reads its input from and writes its output to a
real S3 server (SeaweedFS on the host, reached at the node's host address), with credentials from
the Secret named in spec.storage.secretName; a Secret with a wrong secret fails the job at once
(exit 1, BadInput) with the engine's message naming the URL and the fix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from tests.cluster import harness
from tests.e2e.conftest import diagnose
from tests.e2e.test_real_pods import API, wait_final
from tests.s3.server import ADMIN, SeaweedS3, running_server

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

HOST_ADDRESS = "10.87.0.1"  # the host side of the real node's veth (tests/cluster/node.sh)


@pytest.fixture(scope="module")
def s3(real_node: str) -> Iterator[SeaweedS3]:
    with running_server() as server:
        yield server


def _secret(name: str, server: SeaweedS3, secret_key: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "stringData": {"AWS_ACCESS_KEY_ID": ADMIN[0], "AWS_SECRET_ACCESS_KEY": secret_key,
                           "AWS_ENDPOINT_URL": f"http://{HOST_ADDRESS}:{server.port}", "AWS_REGION": "us-east-1"}}


def _render(name: str, bucket: str, secret: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "RenderJob", "metadata": {"name": name},
            "spec": {"input": {"path": f"s3://{bucket}/in/series.h5", "dataset": "close"},
                     "output": {"path": f"s3://{bucket}/out/{name}.h5"},
                     "storage": {"secretName": secret}, "shards": 2,
                     "seqLen": 16, "width": 32, "height": 32, "previewImages": 4, "backoffLimit": 0,
                     "device": {"policy": "cpu"}}}


def test_render_job_pod_reads_and_writes_s3_through_the_secret(
        k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str, s3: SeaweedS3,
        tmp_path: Path) -> None:
    from gpubatch_jobs import storage

    bucket = f"e2e-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(bucket)
    points = 5_000
    close = 100 + np.cumsum(np.random.default_rng(5).normal(size=points)).astype("float32")
    with h5py.File(tmp_path / "series.h5", "w") as f:
        f["close"] = close
    fs = s3.filesystem()
    with fs.open_output_stream(f"{bucket}/in/series.h5") as out:
        out.write((tmp_path / "series.h5").read_bytes())

    k8s_cluster.apply(_secret("s3-good", s3, ADMIN[1]), _secret("s3-wrong", s3, "not-the-secret"),
                      _render("s3-render", bucket, "s3-good"), _render("s3-denied", bucket, "s3-wrong"),
                      namespace=e2e_namespace)
    done = wait_final(k8s_cluster, e2e_namespace, "renderjob", "s3-render")
    status = done["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{s3.log_tail()}\n{diagnose(k8s_cluster, e2e_namespace)}"
    # an Indexed Job of 2 pods: status.result is one pod's summary; the pod that published the last
    # part assembled the output (the other names none)
    assert status["result"].get("output") in (None, f"s3://{bucket}/out/s3-render.h5"), status["result"]
    keys = s3.keys(bucket)
    assert {"out/s3-render.h5", "out/s3-render.preview.png", "out/s3-render.shard-00000-of-00002.h5",
            "out/s3-render.shard-00001-of-00002.h5"} <= set(keys), keys
    assert not [k for k in keys if ".partial" in k], keys
    back = tmp_path / "back.h5"
    with fs.open_input_stream(f"{bucket}/out/s3-render.h5") as src:
        back.write_bytes(src.read())
    with h5py.File(back, "r") as f:
        windows = points - 16 + 1
        assert f["images"].shape == (windows, 32, 32)
        assert np.array_equal(f["index"][:], np.arange(windows))
    # the job pod got the Secret's keys as the standard AWS variables, and nothing else of ours
    job = k8s_cluster.get("jobs", "-n", e2e_namespace, "-l", f"gpubatch.dev/owner-uid={done['metadata']['uid']}")
    env = {e["name"]: e for e in job["items"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-good", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert storage  # imported for the module's availability in the test image's venv

    denied = wait_final(k8s_cluster, e2e_namespace, "renderjob", "s3-denied")["status"]
    assert denied["phase"] == "Failed", denied
    failed = {c["type"]: c for c in denied["conditions"]}["Failed"]
    assert failed["reason"] == "BadInput", failed
    assert "AWS_SECRET_ACCESS_KEY" in denied["message"] and f"s3://{bucket}/" in denied["message"], denied
    assert not [k for k in s3.keys(bucket) if k.startswith("out/s3-denied")]
