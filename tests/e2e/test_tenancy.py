"""A tenant with rights on gpubatch resources only, against the chart's operator running as a pod.

The tenant is an impersonated user (`kubectl --as=... --as-group=...`) bound to
a Role that allows the three kinds (create, get, list, watch, delete) and their
status (get) in the e2e namespace, nothing else: the install docs/security.md
describes. Each category of issue 23 is tried the way such a tenant would, and
must end refused (by the API server) or Failed (by the operator or the pod),
with nothing of a token, a Secret or a file in `status` or the Events, no pod on
an image the admin did not allow, and the identities answering
`kubectl auth can-i` as docs/security.md says.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.cluster import harness
from tests.e2e.conftest import claim_dir, diagnose, get, make_claims
from tests.e2e.test_real_pods import wait_final

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

API = "gpubatch.dev/v1alpha1"
TENANT = "tenant-a"
TENANT_GROUP = "ml-team-a"
# A Secret value the tenant must never read back through gpubatch.
SECRET_VALUE = "s3cr3t-VALUE-" + os.urandom(6).hex()
TOKEN_MARK = "eyJhbGciOi"  # how every ServiceAccount token (a JWT) begins


@pytest.fixture(scope="module")
def tenant(k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str,
           data_dir: Path) -> Iterator[str]:
    """The tenant's Role and RoleBinding, the claims `data` and `out`, and an S3 Secret of the namespace."""
    k8s_cluster.apply(
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "gpubatch-tenant", "namespace": e2e_namespace},
         "rules": [{"apiGroups": ["gpubatch.dev"], "resources": ["trainjobs", "predictjobs", "renderjobs"],
                    "verbs": ["create", "get", "list", "watch", "delete"]},
                   {"apiGroups": ["gpubatch.dev"],
                    "resources": ["trainjobs/status", "predictjobs/status", "renderjobs/status"],
                    "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "gpubatch-tenant", "namespace": e2e_namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gpubatch-tenant"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}]},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds", "namespace": e2e_namespace},
         "stringData": {"AWS_ACCESS_KEY_ID": "tenant", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE}},
        namespace=e2e_namespace,
    )
    data = claim_dir(data_dir, e2e_namespace, "data")
    claim_dir(data_dir, e2e_namespace, "out")
    make_claims(k8s_cluster, e2e_namespace, "data", "out")
    # A symlink on the claim to where, inside a job pod, its identity's token lies.
    link = data / "token.csv"
    if not link.is_symlink():
        link.symlink_to("/var/run/secrets/kubernetes.io/serviceaccount/token")
    (data / "environ.csv").unlink(missing_ok=True)
    (data / "environ.csv").symlink_to("/proc/self/environ")
    yield TENANT


def as_tenant(cluster: harness.Cluster, namespace: str, *args: str, body: dict[str, Any] | None = None) -> Any:
    return cluster.kubectl(*args, "-n", namespace, f"--as={TENANT}", f"--as-group={TENANT_GROUP}",
                           *(["-f", "-"] if body is not None else []),
                           input=json.dumps(body) if body is not None else None)


def submit(cluster: harness.Cluster, namespace: str, kind: str, name: str, spec: dict[str, Any]) -> Any:
    body = {"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return as_tenant(cluster, namespace, "create", body=body)


def render(**spec: Any) -> dict[str, Any]:
    return {"input": {"path": "pvc://data/x.csv", "column": "x"}, "output": {"path": "pvc://out/x.h5"},
            "device": {"policy": "cpu"}, **spec}


def failed_condition(obj: dict[str, Any]) -> dict[str, Any]:
    (condition,) = [c for c in obj["status"]["conditions"] if c["type"] == "Failed"]
    return condition


def assert_nothing_leaked(cluster: harness.Cluster, namespace: str) -> None:
    """No token, Secret value or environment in any resource's status, nor in any Event, as the tenant reads them."""
    seen = as_tenant(cluster, namespace, "get", "renderjobs,trainjobs,predictjobs", "-o", "json").stdout
    events = cluster.kubectl("-n", namespace, "get", "events", "-o", "json", check=True).stdout
    for text in (seen, events):
        assert TOKEN_MARK not in text
        assert SECRET_VALUE not in text
        assert "AWS_SECRET_ACCESS_KEY=" not in text and "KUBERNETES_SERVICE_HOST=" not in text


def test_the_tenant_has_gpubatch_rights_only(k8s_cluster: harness.Cluster, e2e_namespace: str, tenant: str) -> None:
    def tenant_can(verb: str, resource: str) -> str:
        return as_tenant(k8s_cluster, e2e_namespace, "auth", "can-i", verb, resource).stdout.strip()

    assert tenant_can("create", "renderjobs.gpubatch.dev") == "yes"
    for verb, resource in (("create", "pods"), ("get", "secrets"), ("create", "jobs.batch"), ("get", "pods"),
                           ("create", "services"), ("patch", "renderjobs.gpubatch.dev")):
        assert tenant_can(verb, resource) == "no", (verb, resource)


# --- 1. paths ------------------------------------------------------------------------------------------


def test_a_parent_segment_is_refused_at_admission(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                  tenant: str) -> None:
    result = submit(k8s_cluster, e2e_namespace, "RenderJob", "climb", render(
        input={"path": "pvc://data/../../../var/run/secrets/kubernetes.io/serviceaccount/token", "column": "x"}))
    assert result.returncode != 0 and "'..' segment" in result.stderr, result.stderr
    assert k8s_cluster.kubectl("-n", e2e_namespace, "get", "renderjob", "climb").returncode != 0


@pytest.mark.parametrize(("name", "path", "why"), [
    ("token-link", "pvc://data/token.csv", "outside its claim"),
    ("environ-link", "pvc://data/environ.csv", "outside its claim"),
    ("local-token", "/var/run/secrets/kubernetes.io/serviceaccount/token", "pvc://CLAIM"),
    ("local-environ", "/proc/self/environ", "pvc://CLAIM"),
])
def test_a_path_out_of_the_claims_fails_and_leaks_nothing(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                          tenant: str, name: str, path: str, why: str) -> None:
    result = submit(k8s_cluster, e2e_namespace, "RenderJob", name,
                    render(input={"path": path, "format": "csv", "column": "x"}, storage={"secretName": "s3-creds"}))
    assert result.returncode == 0, result.stderr
    obj = wait_final(k8s_cluster, e2e_namespace, "renderjob", name, timeout=300)
    condition = failed_condition(obj)
    assert obj["status"]["phase"] == "Failed" and condition["reason"] == "BadInput", obj["status"]
    assert why in condition["message"] and "spec.input.path" in condition["message"], condition
    assert_nothing_leaked(k8s_cluster, e2e_namespace)


# --- 2. images -----------------------------------------------------------------------------------------


def test_an_untrusted_image_fails_at_once_and_no_pod_runs_it(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                             tenant: str) -> None:
    result = submit(k8s_cluster, e2e_namespace, "RenderJob", "miner", render(image={"cpu": "busybox:latest"}))
    assert result.returncode == 0, result.stderr
    obj = wait_final(k8s_cluster, e2e_namespace, "renderjob", "miner", timeout=60)
    assert failed_condition(obj)["reason"] == "ImageNotAllowed", obj["status"]
    assert not obj["status"].get("jobName")
    assert not k8s_cluster.get("jobs", "-n", e2e_namespace, "-l", f"gpubatch.dev/owner-uid={obj['metadata']['uid']}")[
        "items"]
    images = {c["image"] for pod in k8s_cluster.get("pods", "-n", e2e_namespace)["items"]
              for c in pod["spec"]["containers"]}
    assert not [image for image in images if "busybox" in image], images
    reasons = {e["reason"] for e in k8s_cluster.get("events", "-n", e2e_namespace,
                                                    "--field-selector", "involvedObject.name=miner")["items"]}
    assert "ImageNotAllowed" in reasons


# --- 3. Spark ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spark", "named"), [
    ({"executors": 2, "conf": {"spark.kubernetes.executor.podTemplateFile": "/tmp/evil.yaml"}},
     "spark.kubernetes.executor.podTemplateFile"),
    ({"executors": 2, "conf": {"spark.kubernetes.container.image": "busybox"}}, "spark.kubernetes.container.image"),
    ({"conf": {"spark.authenticate": "false"}}, "spark.authenticate"),
    ({"master": "k8s://https://203.0.113.7:6443", "executors": 2}, "spec.spark.master"),
])
def test_spark_settings_of_ours_are_refused_naming_the_key(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                           tenant: str, spark: dict[str, Any], named: str) -> None:
    spec = {"model": "pvc://out/model", "input": {"path": "pvc://data/x.parquet"},
            "output": {"path": "pvc://out/p.parquet"}, "engine": "spark", "spark": spark}
    result = submit(k8s_cluster, e2e_namespace, "PredictJob", "spark-bad", spec)
    assert result.returncode != 0 and named in result.stderr, result.stderr


# --- 5. children ---------------------------------------------------------------------------------------


def test_a_foreign_workers_service_fails_the_trainjob_naming_it(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                                tenant: str) -> None:
    k8s_cluster.apply({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "victim-workers", "namespace": e2e_namespace},
                       "spec": {"clusterIP": "None", "selector": {"app": "elsewhere"},
                                "ports": [{"port": 2222}]}}, namespace=e2e_namespace)
    spec = {"model": {"type": "dnn"}, "input": {"path": "pvc://data/x.csv"}, "output": {"path": "pvc://out/m"},
            "workers": 2, "batchSize": 64, "device": {"policy": "cpu"}}
    result = submit(k8s_cluster, e2e_namespace, "TrainJob", "victim", spec)
    assert result.returncode == 0, result.stderr
    obj = wait_final(k8s_cluster, e2e_namespace, "trainjob", "victim", timeout=60)
    condition = failed_condition(obj)
    assert condition["reason"] == "NameTaken" and "Service victim-workers" in condition["message"], condition
    service = k8s_cluster.get("service", "victim-workers", "-n", e2e_namespace)
    assert service["spec"]["selector"] == {"app": "elsewhere"} and not service["metadata"].get("ownerReferences")
    assert not k8s_cluster.get("jobs", "-n", e2e_namespace, "-l", f"gpubatch.dev/owner-uid={obj['metadata']['uid']}")[
        "items"]


# --- 6. admission --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "spec", "said"), [
    ("bad.name", render(), "metadata.name"),
    ("1abc", render(), "metadata.name"),
    ("negative", render(resources={"requests": {"cpu": "-1"}}), "spec.resources.requests"),
    ("everywhere", render(tolerations=[{"operator": "Exists"}]), "tolerat"),
])
def test_what_would_fail_later_is_refused_at_admission(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                       tenant: str, name: str, spec: dict[str, Any],
                                                       said: str) -> None:
    result = submit(k8s_cluster, e2e_namespace, "RenderJob", name, spec)
    assert result.returncode != 0 and said in result.stderr, result.stderr


# --- 4. identities -------------------------------------------------------------------------------------


def can_i(cluster: harness.Cluster, user: str, verb: str, resource: str, namespace: str,
          subresource: str | None = None) -> bool:
    result = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}",
                             *([f"--subresource={subresource}"] if subresource else []))
    assert result.stdout.strip() in {"yes", "no"}, result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def test_the_operator_and_job_identities_answer_as_documented(
        k8s_cluster: harness.Cluster, e2e_namespace: str, operator_release: str, tenant: str) -> None:
    operator = f"system:serviceaccount:{e2e_namespace}:{operator_release}"
    job = f"system:serviceaccount:{e2e_namespace}:gpubatch-job"
    assert can_i(k8s_cluster, operator, "create", "jobs.batch", e2e_namespace)
    assert not can_i(k8s_cluster, operator, "create", "pods", "kube-system")
    assert not can_i(k8s_cluster, operator, "create", "pods", e2e_namespace)
    assert not can_i(k8s_cluster, operator, "patch", "pods", e2e_namespace)
    assert not can_i(k8s_cluster, operator, "delete", "pods", e2e_namespace)
    assert not can_i(k8s_cluster, operator, "create", "pods", e2e_namespace, "exec")
    assert not can_i(k8s_cluster, operator, "create", "roles.rbac.authorization.k8s.io", e2e_namespace)
    assert not can_i(k8s_cluster, operator, "escalate", "roles.rbac.authorization.k8s.io", e2e_namespace)
    assert can_i(k8s_cluster, job, "patch", "pods", e2e_namespace)
    for verb in ("get", "list", "create", "delete"):
        assert not can_i(k8s_cluster, job, verb, "pods", e2e_namespace), verb
    assert not can_i(k8s_cluster, job, "get", "secrets", e2e_namespace)


def patch_with_token(cluster: harness.Cluster, namespace: str, pod: str, token: str,
                     patch: dict[str, Any]) -> tuple[int, str]:
    """A merge PATCH of a pod straight to the API server with a bearer token, as a job pod's
    reporter sends it (kubectl would GET first, which the job identity may not)."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"]
    context = ssl.create_default_context(cafile=config["certificate-authority"])
    request = urllib.request.Request(f"{config['server']}/api/v1/namespaces/{namespace}/pods/{pod}",
                                     data=json.dumps(patch).encode(), method="PATCH",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/merge-patch+json"})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_job_identity_cannot_patch_another_pods_labels(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                           tenant: str) -> None:
    """RBAC allows the job identity `patch pods`; the chart's admission policy holds it to its own pod (the
    token's pod-name claim) and to the progress annotation. Real tokens of the job ServiceAccount
    (TokenRequest): one bound to no pod (a token used from elsewhere), one bound to pod A."""
    submit(k8s_cluster, e2e_namespace, "RenderJob", "pod-a", render(input={"path": "pvc://data/none.csv"}))
    submit(k8s_cluster, e2e_namespace, "RenderJob", "pod-b", render(input={"path": "pvc://data/none.csv"}))
    names = {}
    for job in ("pod-a", "pod-b"):
        wait_final(k8s_cluster, e2e_namespace, "renderjob", job, timeout=300)
        names[job] = k8s_cluster.get("pods", "-n", e2e_namespace, "-l", f"job-name={job}-render")["items"][0]
    pod_a, pod_b = (names[j]["metadata"] for j in ("pod-a", "pod-b"))

    def token(*bound: str) -> str:
        result = k8s_cluster.kubectl("-n", e2e_namespace, "create", "token", "gpubatch-job", *bound, check=True)
        return result.stdout.strip()

    loose = token()
    bound_a = token("--bound-object-kind=Pod", f"--bound-object-name={pod_a['name']}",
                    f"--bound-object-uid={pod_a['uid']}")
    label = {"metadata": {"labels": {"hijacked": "yes"}}}
    progress = {"metadata": {"annotations": {"gpubatch.dev/progress": '{"done":1,"total":1}'}}}
    for tok, pod, patch, refusal in ((loose, pod_b, label, "only its own pod"),
                                     (loose, pod_b, progress, "only its own pod"),
                                     (bound_a, pod_b, label, "only its own pod"),
                                     (bound_a, pod_b, progress, "only its own pod"),
                                     (bound_a, pod_a, label, "only the gpubatch.dev/progress annotation")):
        code, body = patch_with_token(k8s_cluster, e2e_namespace, pod["name"], tok, patch)
        assert code in (403, 422) and refusal in body, (pod["name"], patch, code, body)
    # Its own pod's progress annotation: allowed (what every job pod does).
    code, body = patch_with_token(k8s_cluster, e2e_namespace, pod_a["name"], bound_a, progress)
    assert code == 200, body
    for pod in (pod_a, pod_b):
        labels = get(k8s_cluster, e2e_namespace, "pod", pod["name"])["metadata"].get("labels") or {}
        assert "hijacked" not in labels, labels


def test_job_pods_report_progress_through_the_policy(k8s_cluster: harness.Cluster, e2e_namespace: str,
                                                     tenant: str, data_dir: Path) -> None:
    """The legitimate patch still passes: a real render's own pod moves its progress into status."""
    data = claim_dir(data_dir, e2e_namespace, "data")
    pd.DataFrame({"x": np.sin(np.arange(4000) / 9.0)}).to_csv(data / "series.csv", index=False)
    result = submit(k8s_cluster, e2e_namespace, "RenderJob", "honest",
                    render(input={"path": "pvc://data/series.csv", "column": "x"}, seqLen=16, width=32, height=32,
                           output={"path": "pvc://out/honest.h5", "overwrite": True}))
    assert result.returncode == 0, result.stderr
    obj = wait_final(k8s_cluster, e2e_namespace, "renderjob", "honest", timeout=600)
    assert obj["status"]["phase"] == "Succeeded", f"{obj['status']}\n{diagnose(k8s_cluster, e2e_namespace)}"
    assert obj["status"].get("progress"), obj["status"]
    assert_nothing_leaked(k8s_cluster, e2e_namespace)
