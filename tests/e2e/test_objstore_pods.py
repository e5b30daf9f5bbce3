"""Object storage in real pods, once per scheme: a RenderJob on the real node reads its input from
and writes its output to a real server on the host (SeaweedFS for s3://, fake-gcs-server for
gs://, Azurite for az://; reached at the node's host address), with credentials from the Secret
named in spec.storage.secretName; a Secret with wrong credentials fails the job at once (exit 1,
BadInput) with the engine's message naming the URL and the setting to fix.
"""

from __future__ import annotations

import json
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
from tests.objstore.servers import SCHEMES, AzuriteServer, ObjectServer, running
from tests.s3.server import ADMIN

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

HOST_ADDRESS = "10.87.0.1"  # the host side of the real node's veth (tests/cluster/node.sh)

# A service-account key file in form (the emulator checks no signature; the driver checks the form).
FAKE_SERVICE_ACCOUNT = json.dumps({"type": "service_account", "project_id": "gpubatch-e2e",
                                   "client_email": "e2e@gpubatch-e2e.iam.gserviceaccount.com"})


@pytest.fixture(scope="module", params=SCHEMES)
def server(request: pytest.FixtureRequest, real_node: str) -> Iterator[ObjectServer]:
    # fake-gcs-server names its own address in upload URLs: the one the pods reach.
    kwargs = {"public_host": HOST_ADDRESS} if request.param == "gs" else {}
    with running(request.param, **kwargs) as started:
        yield started


def _secret_data(server: ObjectServer, good: bool) -> dict[str, str]:
    if server.scheme == "s3":
        return {"AWS_ACCESS_KEY_ID": ADMIN[0], "AWS_SECRET_ACCESS_KEY": ADMIN[1] if good else "not-the-secret",
                **{k: v for k, v in server.env(HOST_ADDRESS).items() if k in ("AWS_ENDPOINT_URL", "AWS_REGION")}}
    if server.scheme == "gs":
        return {"service-account.json": FAKE_SERVICE_ACCOUNT if good else '{"client_email": "x@example.com"}',
                **server.env(HOST_ADDRESS)}
    assert isinstance(server, AzuriteServer)
    key = None if good else "d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudCdzLTAxMjM0NTY3ODk="
    return {"AZURE_STORAGE_CONNECTION_STRING": server.connection_string(HOST_ADDRESS, **({"key": key} if key else {}))}


def _secret(name: str, server: ObjectServer, good: bool) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "stringData": _secret_data(server, good)}


def _render(name: str, root: str, secret: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "RenderJob", "metadata": {"name": name},
            "spec": {"input": {"path": f"{root}/in/series.h5", "dataset": "close"},
                     "output": {"path": f"{root}/out/{name}.h5"},
                     "storage": {"secretName": secret}, "shards": 2,
                     "seqLen": 16, "width": 32, "height": 32, "previewImages": 4, "backoffLimit": 0,
                     "device": {"policy": "cpu"}}}


def test_render_job_pod_reads_and_writes_object_storage_through_the_secret(
        k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str, server: ObjectServer,
        tmp_path: Path) -> None:
    scheme = server.scheme
    bucket = f"e2e-{uuid.uuid4().hex[:10]}"
    server.create_bucket(bucket)
    root = server.url(bucket)
    points = 5_000
    close = 100 + np.cumsum(np.random.default_rng(5).normal(size=points)).astype("float32")
    with h5py.File(tmp_path / "series.h5", "w") as f:
        f["close"] = close
    server.put(bucket, "in/series.h5", (tmp_path / "series.h5").read_bytes())

    good, wrong, render, denied = f"{scheme}-good", f"{scheme}-wrong", f"{scheme}-render", f"{scheme}-denied"
    k8s_cluster.apply(_secret(good, server, True), _secret(wrong, server, False),
                      _render(render, root, good), _render(denied, root, wrong), namespace=e2e_namespace)
    done = wait_final(k8s_cluster, e2e_namespace, "renderjob", render)
    status = done["status"]
    assert status["phase"] == "Succeeded", f"{status}\n{server.log_tail()}\n{diagnose(k8s_cluster, e2e_namespace)}"
    # an Indexed Job of 2 pods: status.result is one pod's summary; the pod that published the last
    # part assembled the output (the other names none)
    assert status["result"].get("output") in (None, f"{root}/out/{render}.h5"), status["result"]
    keys = server.keys(bucket)
    assert {f"out/{render}.h5", f"out/{render}.preview.png", f"out/{render}.shard-00000-of-00002.h5",
            f"out/{render}.shard-00001-of-00002.h5"} <= set(keys), keys
    assert not [k for k in keys if ".partial" in k], keys
    back = tmp_path / "back.h5"
    back.write_bytes(server.get(bucket, f"out/{render}.h5"))
    with h5py.File(back, "r") as f:
        windows = points - 16 + 1
        assert f["images"].shape == (windows, 32, 32)
        assert np.array_equal(f["index"][:], np.arange(windows))
    # the job pod got the Secret's keys for this scheme under the cloud's names, and nothing else
    job = k8s_cluster.get("jobs", "-n", e2e_namespace, "-l", f"gpubatch.dev/owner-uid={done['metadata']['uid']}")
    pod = job["items"][0]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
    assert all(ref["name"] == good for ref in refs.values())
    prefix = {"s3": "AWS_", "gs": "STORAGE_EMULATOR_HOST", "az": "AZURE_STORAGE_"}[scheme]
    assert refs and all(name.startswith(prefix) for name in refs), refs
    if scheme == "gs":
        assert env["GOOGLE_APPLICATION_CREDENTIALS"]["value"].endswith("/service-account.json")
        volume = {v["name"]: v for v in pod["volumes"]}["gpubatch-gcs-credentials"]
        assert volume["secret"]["secretName"] == good

    failed_status = wait_final(k8s_cluster, e2e_namespace, "renderjob", denied)["status"]
    assert failed_status["phase"] == "Failed", failed_status
    failed = {c["type"]: c for c in failed_status["conditions"]}["Failed"]
    assert failed["reason"] == "BadInput", failed
    hint = {"s3": "AWS_SECRET_ACCESS_KEY", "gs": "GOOGLE_APPLICATION_CREDENTIALS",
            "az": "AZURE_STORAGE_CONNECTION_STRING"}[scheme]
    assert hint in failed_status["message"] and f"{root}/" in failed_status["message"], failed_status
    assert not [k for k in server.keys(bucket) if k.startswith(f"out/{denied}")]
