"""Spark on Kubernetes, client mode: the job pod is the driver, the executors are pods on its image.

`engine: spark` with `spark.master: k8s://https://HOST:PORT`, or with
`spark.executors: N` and no master (the in-cluster API server, from the pod's
KUBERNETES_SERVICE_HOST/PORT: the cluster may have no DNS), starts the
SparkSession in this pod with these settings:

- executors reach the driver by this pod's IP (`POD_IP`, from the downward
  API) on fixed ports; no Service is made;
- `spark.kubernetes.driver.pod.name` is this pod, so Spark makes it the owner
  of every executor pod: they go when it goes;
- the executor pods come from a pod template built from this pod (read once
  through the API): the same image, security contexts (PodSecurity
  `restricted` holds), node selector, tolerations and volumes (so the
  `pvc://` paths are the same files at the same paths on every executor),
  with no ServiceAccount token; their command is
  `python -m gpubatch_jobs.predict.spark_executor`, which starts Spark's
  executor backend as Spark's own images do;
- no claims are made or reused by Spark (that would need rights on
  PersistentVolumeClaims);
- the object storage variables (AWS_*, from spec.storage.secretName) reach
  the executors as the driver has them, `secretKeyRef`s to the same Secret:
  they read and write s3:// through s3a:// (spark_s3.py) with those keys,
  and no key is written in the template or in Spark's configuration.

The pod runs under the driver ServiceAccount the operator gives it
(`gpubatch-spark-driver`): pods create/get/list/watch/delete/patch and
configmaps create/get/list/delete in its namespace (Spark keeps the
executors' configuration in a ConfigMap), nothing else. Spark deletes its
executors and that ConfigMap by label (`deletecollection`) when it stops;
instead it is told not to (`spark.kubernetes.executor.deleteOnTermination:
false`) and `delete_executors()` deletes them one by one after the session
stops, so the identity needs no `deletecollection`.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpubatch_jobs.contract import ENV_POD_IP, ENV_POD_NAME, ENV_POD_NAMESPACE
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.predict.spark_s3 import S3_ENV
from gpubatch_jobs.spec.kinds import SparkSpec

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DRIVER_PORT, BLOCK_MANAGER_PORT = 7078, 7079
EXECUTOR_CONTAINER = "executor"
EXECUTOR_MODULE = "gpubatch_jobs.predict.spark_executor"
# Written by the executor launcher in each executor pod (spark_executor.py).
GPU_DISCOVERY = "/tmp/gpubatch-spark/gpus.sh"


def master_url(spark: SparkSpec, environ: Mapping[str, str] = os.environ) -> str:
    """local[...] as given; a k8s:// master (only ever the cluster's own API server, spec.kinds.
    SPARK_MASTER_PATTERN) and `executors` alone: the API server's in-pod address, which needs no DNS."""
    if not spark.on_kubernetes:
        return spark.local_master
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise BadInput("executor pods go through the in-cluster API server, but this is not a Kubernetes pod "
                       "(no KUBERNETES_SERVICE_HOST); set spec.spark.master to local[N]", field="spec.spark.master")
    host = f"[{host}]" if ":" in host else host
    return f"k8s://https://{host}:{port}"


def own_pod(environ: Mapping[str, str] = os.environ, sa_dir: Path = SA_DIR) -> dict[str, Any]:
    """This pod, read with its own ServiceAccount (the driver's may `get` pods)."""
    pod, namespace = environ.get(ENV_POD_NAME), environ.get(ENV_POD_NAMESPACE)
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not (pod and namespace and host and (sa_dir / "token").exists()):
        raise BadInput(f"spark on Kubernetes runs the driver in a job pod ({ENV_POD_NAME}, {ENV_POD_NAMESPACE}, "
                       f"KUBERNETES_SERVICE_HOST and a ServiceAccount token are needed); run it with the operator, "
                       f"or set spec.spark.master to local[N]", field="spec.spark.master")
    request = urllib.request.Request(
        f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{pod}",
        headers={"Authorization": f"Bearer {(sa_dir / 'token').read_text().strip()}"})
    context = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
    with urllib.request.urlopen(request, context=context, timeout=30) as reply:
        body: dict[str, Any] = json.load(reply)
    return body


def _api(method: str, path: str, environ: Mapping[str, str], sa_dir: Path) -> dict[str, Any]:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
    request = urllib.request.Request(
        f"https://{host}:{port}{path}", method=method,
        headers={"Authorization": f"Bearer {(sa_dir / 'token').read_text().strip()}"})
    context = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as reply:
            body: dict[str, Any] = json.load(reply)
            return body
    except urllib.error.HTTPError as err:
        if err.code == 404:  # gone already
            return {}
        raise


def delete_executors(app_id: str, environ: Mapping[str, str] = os.environ, sa_dir: Path = SA_DIR) -> int:
    """Delete this application's executor pods and their ConfigMap, one by one; returns how many objects."""
    namespace = environ.get(ENV_POD_NAMESPACE, "")
    selector = urllib.parse.quote(f"spark-app-selector={app_id},spark-role=executor")
    deleted = 0
    for plural in ("pods", "configmaps"):
        listed = _api("GET", f"/api/v1/namespaces/{namespace}/{plural}?labelSelector={selector}", environ, sa_dir)
        for item in listed.get("items", []):
            _api("DELETE", f"/api/v1/namespaces/{namespace}/{plural}/{item['metadata']['name']}", environ, sa_dir)
            deleted += 1
    return deleted


def _token_mount(mount: Mapping[str, Any]) -> bool:
    return str(mount.get("mountPath", "")).startswith(str(SA_DIR.parent))


def _executor_env(entry: Mapping[str, Any]) -> bool:
    """Plain values but the engine's own (GPUBATCH_*), and the object storage variables as the driver
    has them: references to the Secret of spec.storage.secretName, so no key is written in a pod spec."""
    if "value" in entry:
        return not str(entry.get("name", "")).startswith("GPUBATCH_")
    source = entry.get("valueFrom") or {}
    return entry.get("name") in S3_ENV and set(source) == {"secretKeyRef"}


def executor_template(driver: Mapping[str, Any]) -> dict[str, Any]:
    """The executor pod template: the driver pod's image, security, placement and volumes; no API token."""
    spec = driver.get("spec") or {}
    main = (spec.get("containers") or [{}])[0]
    mounts = [m for m in main.get("volumeMounts") or [] if not _token_mount(m)]
    kept = {m["name"] for m in mounts}
    container: dict[str, Any] = {
        "name": EXECUTOR_CONTAINER,
        "image": main.get("image"),
        "command": [sys.executable, "-m", EXECUTOR_MODULE],
        "volumeMounts": mounts,
        "env": [e for e in main.get("env") or [] if _executor_env(e)],
    }
    for key in ("imagePullPolicy", "securityContext"):
        if key in main:
            container[key] = main[key]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [v for v in spec.get("volumes") or [] if v.get("name") in kept],
    }
    for key in ("securityContext", "nodeSelector", "tolerations", "imagePullSecrets"):
        if spec.get(key):
            pod_spec[key] = spec[key]
    labels = {"app.kubernetes.io/component": "spark-executor", "app.kubernetes.io/part-of": "gpubatch"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": labels}, "spec": pod_spec}


def kubernetes_conf(spark: SparkSpec, *, template_dir: Path = Path("/tmp/gpubatch-spark"),
                    environ: Mapping[str, str] = os.environ, driver: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The settings that make this pod the client-mode driver of executor pods (see the module's doc)."""
    ip = environ.get(ENV_POD_IP)
    if not ip:
        raise BadInput(f"spark on Kubernetes needs this pod's IP in {ENV_POD_IP} (the operator sets it from "
                       "the downward API)", field="spec.spark.master")
    driver = driver if driver is not None else own_pod(environ)
    template_dir.mkdir(parents=True, exist_ok=True)
    template = template_dir / "executor-pod.json"  # JSON is YAML, which Spark reads
    template.write_text(json.dumps(executor_template(driver)))
    main = ((driver.get("spec") or {}).get("containers") or [{}])[0]
    meta = driver.get("metadata") or {}
    conf = {
        "spark.master": master_url(spark, environ),
        "spark.submit.deployMode": "client",
        "spark.kubernetes.namespace": str(meta.get("namespace", "")),
        "spark.kubernetes.driver.pod.name": str(meta.get("name", "")),  # the executors' owner
        "spark.kubernetes.container.image": str(main.get("image", "")),
        "spark.kubernetes.container.image.pullPolicy": str(main.get("imagePullPolicy", "IfNotPresent")),
        "spark.kubernetes.executor.podTemplateFile": str(template),
        "spark.kubernetes.executor.podTemplateContainerName": EXECUTOR_CONTAINER,
        "spark.kubernetes.executor.podNamePrefix": _prefix(str(meta.get("name", "gpubatch"))),
        "spark.kubernetes.executor.deleteOnTermination": "false",  # delete_executors() does it
        "spark.kubernetes.driver.ownPersistentVolumeClaim": "false",
        "spark.kubernetes.driver.reusePersistentVolumeClaim": "false",
        # Spark makes a driver Service only in cluster mode; do not try to delete one at the end.
        "spark.kubernetes.driver.service.deleteOnTermination": "false",
        "spark.driver.host": ip,  # also where it binds: the pod's own address
        "spark.driver.port": str(DRIVER_PORT),
        "spark.driver.blockManager.port": str(BLOCK_MANAGER_PORT),
        "spark.executor.instances": str(spark.executor_count),
    }
    cpu = ((main.get("resources") or {}).get("requests") or {}).get("cpu")
    if cpu:  # an executor asks for the CPU its driver (spec.resources) asks for
        conf["spark.kubernetes.executor.request.cores"] = str(cpu)
    if spark.gpu_in_udf:
        conf["spark.executor.resource.gpu.vendor"] = "nvidia.com"
        conf["spark.executor.resource.gpu.discoveryScript"] = GPU_DISCOVERY
    return conf


def _prefix(pod: str) -> str:
    """Executor pods are PREFIX-exec-N: a DNS label of at most 63 characters."""
    return pod[:40].rstrip("-.") or "gpubatch"
