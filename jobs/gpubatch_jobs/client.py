"""The Python client: from a notebook or a script to the cluster, or to this machine.

    from gpubatch import Client

    job = Client(namespace="team-a").submit("render.yaml")   # a YAML path, a dict or a model
    result = job.wait(timeout=3600)                            # the summary JSON (status.result)
    print(job.status["phase"], job.exit_code)
    print(job.logs())                                          # the pod's log, or the kept one
    job.delete()

    Client(local=True).submit("render.yaml").wait()            # the same, through `gpubatch run`

The cluster client is the official `kubernetes` client, configured as kubectl
is: the kubeconfig (`KUBECONFIG`, else ~/.kube/config) and its current
context and namespace, or `context=` and `namespace=`; inside a pod, the
in-cluster account. It creates the resource (the API server validates it,
schema and CEL; `dry_run=True` validates without creating), reads its status,
the pods' logs while they exist and, once they are gone, the log every pod
kept beside its outputs (`status.logRef`, gpubatch_jobs.podlog): from
`s3://` with this machine's AWS settings, from a claim through a short-lived
reader pod that mounts it read-only (same PodSecurity `restricted` as the job
pods, no API token). The local client runs `gpubatch run` in a subprocess,
so a notebook keeps going while the job runs and the exit codes and summary
are exactly the command's.

Exit codes are the contract's (gpubatch_jobs/contract.py): 0 succeeded, 1 bad
input, 75 the GPU was unusable and no CPU fallback was allowed, else the
failure's own code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from gpubatch_jobs import contract
from gpubatch_jobs.contract import (
    API_GROUP,
    API_VERSION,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_UNEXPECTED,
    FINAL_PHASES,
    OWNER_UID_LABEL,
)
from gpubatch_jobs.kinds import KINDS, find
from gpubatch_jobs.spec import SpecError
from gpubatch_jobs.spec.kinds import GpubatchResource
from gpubatch_jobs.spec.manifest import load_manifest, parse_manifest

Manifest = GpubatchResource | dict[str, Any] | str | os.PathLike[str]
ProgressCallback = Callable[[dict[str, Any]], None]

__all__ = ["Client", "ClusterJob", "GpubatchClientError", "LocalJob", "exit_code_of", "result_of"]

READER_IMAGE_ENV = "GPUBATCH_LOG_READER_IMAGE"
DEFAULT_READER_IMAGE = "gpubatch/gpubatch-cpu:0.1.0"  # the chart's default CPU job image
REASON_CODES = {reason: code for code, reason in contract.FAIL_AT_ONCE.items()} | {contract.INVALID_SPEC: EXIT_BAD_INPUT}


class GpubatchClientError(Exception):
    """Something the user must fix: the message names the file, field, resource or setting."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- manifests -----------------------------------------------------------------------------------

def load(job: Manifest) -> tuple[GpubatchResource, Path | None, dict[str, Any]]:
    """(the validated resource, the folder of its file, the manifest as written) from a path,
    a dict or a model. What is sent to the API server is the manifest as written (as kubectl
    sends it), so the server's defaults and CEL rules see exactly the user's fields."""
    if isinstance(job, GpubatchResource):
        return job, None, body_of(job)
    if isinstance(job, dict):
        return parse_manifest(job, source="manifest"), None, _as_written(job)
    if isinstance(job, str | os.PathLike):
        path = Path(job)
        resource = load_manifest(path)  # exactly one gpubatch resource, validated
        documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind") in KINDS]
        return resource, path.resolve().parent, _as_written(documents[0])
    raise GpubatchClientError(f"submit(): expected a manifest path, a dict or a {'/'.join(KINDS)} model, "
                              f"not {type(job).__name__}")


def _as_written(document: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(document, default=str))  # a deep copy in plain JSON types
    body.pop("status", None)
    return dict(body)


def body_of(resource: GpubatchResource) -> dict[str, Any]:
    """A model as the API server should get it: the fields that were set, in wire form, no status."""
    body = resource.model_dump(by_alias=True, mode="json", exclude_unset=True, exclude_none=True)
    body.pop("status", None)
    return body


def result_of(status: dict[str, Any], kind: str | None = None) -> dict[str, Any] | None:
    """The summary JSON of a finished resource: `status.result`, or (a failure before the engine
    reported) the same shape built from the status. None while it runs."""
    phase = status.get("phase")
    if phase not in FINAL_PHASES:
        return None
    result = status.get("result")
    if isinstance(result, dict) and result:
        return result
    reason = next((c.get("reason", "") for c in status.get("conditions") or []
                   if c.get("type") == phase and c.get("status") == "True"), "")
    ok = phase == "Succeeded"
    summary = {"kind": kind, "ok": ok, "exitCode": EXIT_OK if ok else REASON_CODES.get(reason, EXIT_UNEXPECTED)}
    if not ok:
        summary.update({"reason": reason or "Failed", "message": status.get("message", "")})
    return summary


def exit_code_of(status: dict[str, Any]) -> int | None:
    """The exit code `gpubatch run` would have ended with (None while it runs)."""
    result = result_of(status)
    if result is None:
        return None
    if status.get("phase") == "Succeeded":
        return EXIT_OK
    code = result.get("exitCode")
    return int(code) if isinstance(code, int) and code != EXIT_OK else REASON_CODES.get(
        str(result.get("reason", "")), EXIT_UNEXPECTED)


def progress_event(status: dict[str, Any]) -> dict[str, Any]:
    """What a progress callback gets: phase, percent, ETA, throughput and the status message."""
    percent = None
    text = status.get("progress")
    if isinstance(text, str) and text.endswith("%"):
        try:
            percent = int(text[:-1])
        except ValueError:
            percent = None
    return {"phase": status.get("phase") or "Pending", "percent": percent,
            "etaSeconds": status.get("estimatedRemainingSeconds"),
            "perSecond": status.get("throughputPerSecond"), "message": status.get("message") or "",
            "device": status.get("device")}


# --- the client ----------------------------------------------------------------------------------

class Client:
    """Submit gpubatch jobs to a cluster (kubeconfig or in-cluster) or, with `local=True`, here."""

    def __init__(self, namespace: str | None = None, *, context: str | None = None,
                 kubeconfig: str | None = None, local: bool = False,
                 mounts: dict[str, str | os.PathLike[str]] | None = None, device: str | None = None,
                 reader_image: str | None = None, api_client: Any = None) -> None:
        self.local = local
        self.mounts = {claim: Path(folder).expanduser().resolve() for claim, folder in (mounts or {}).items()}
        self.device = device
        self.reader_image = reader_image or os.environ.get(READER_IMAGE_ENV)
        if local:
            self.namespace = namespace or "local"
            self.api = None
            return
        if mounts or device:
            raise GpubatchClientError("mounts= and device= are for Client(local=True); on a cluster the "
                                      "manifest's pvc:// claims are mounted and the operator picks the device")
        self.api, default_namespace = api_client, "default"
        if self.api is None:
            self.api, default_namespace = _connect(context, kubeconfig)
        self.namespace = namespace or default_namespace
        self.namespace_given = namespace is not None

    # The cluster's APIs, made on first use.
    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def submit(self, job: Manifest, *, dry_run: bool = False) -> ClusterJob | LocalJob:
        """Create the resource (a YAML path, a dict or a pydantic model); return its handle.

        `dry_run=True` has the API server validate it (schema, CEL rules, admission) and create
        nothing. A bad manifest raises SpecError (the fields at fault) or GpubatchClientError."""
        resource, folder, body = load(job)
        if self.local:
            if dry_run:
                return LocalJob.validated(resource)
            return LocalJob.start(body, resource, folder, self.mounts, self.device)
        namespace = resource.metadata.namespace or self.namespace
        if resource.metadata.namespace and self.namespace_given and resource.metadata.namespace != self.namespace:
            raise GpubatchClientError(f"the manifest's metadata.namespace ({resource.metadata.namespace}) differs "
                                      f"from the namespace asked for ({self.namespace}); drop one of them")
        body["metadata"]["namespace"] = namespace
        info = KINDS[resource.kind].info  # type: ignore[attr-defined]
        from kubernetes.client.exceptions import ApiException

        try:
            created = self._custom().create_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, info.plural, body, dry_run="All" if dry_run else None)
        except ApiException as err:
            raise api_error(err, f"{resource.kind} {resource.metadata.name}",  # type: ignore[attr-defined]
                            namespace) from None
        return ClusterJob(self, info.kind, created["metadata"]["name"], namespace,
                          created["metadata"].get("uid", ""), dry_run=dry_run)

    def get(self, name: str, kind: str | None = None) -> ClusterJob:
        """The handle of an existing resource: `name`, `kind/name` or `rj/name`."""
        if self.local:
            raise GpubatchClientError("Client(local=True) keeps no resources; use the handle submit() returned")
        kind, name = split_name(name, kind)
        found = [(k, obj) for k in ([kind] if kind else list(KINDS)) if (obj := self._read(k, name))]
        if not found:
            what = kind or " or ".join(KINDS)
            raise GpubatchClientError(f"no {what} named {name!r} in namespace {self.namespace}; "
                                      f"`gpubatch get -n {self.namespace}` lists them")
        if len(found) > 1:
            raise GpubatchClientError(f"{name!r} names a {' and a '.join(k for k, _ in found)} in namespace "
                                      f"{self.namespace}; say which, e.g. {found[0][0].lower()}/{name}")
        kind, obj = found[0]
        return ClusterJob(self, kind, name, self.namespace, obj["metadata"].get("uid", ""))

    def list(self) -> list[dict[str, Any]]:
        """Every TrainJob, PredictJob and RenderJob of the namespace (the API objects), oldest first."""
        if self.local:
            return []
        items: list[dict[str, Any]] = []
        for plugin in KINDS.values():
            items += self._custom().list_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, plugin.plural).get("items") or []
        return sorted(items, key=lambda o: (o["metadata"].get("creationTimestamp", ""), o["metadata"]["name"]))

    def _read(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._custom().get_namespaced_custom_object(  # type: ignore[no-any-return]
                API_GROUP, API_VERSION, namespace or self.namespace, KINDS[kind].plural, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise api_error(err, f"{kind} {name}", namespace or self.namespace) from None


def _connect(context: str | None, kubeconfig: str | None) -> tuple[Any, str]:
    """An ApiClient and the default namespace, as kubectl finds them."""
    from kubernetes import config

    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path("~/.kube/config").expanduser())
    if Path(path).expanduser().exists() or kubeconfig or context:
        try:
            contexts, active = config.list_kube_config_contexts(config_file=path)
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            if chosen is None:
                names = ", ".join(c["name"] for c in contexts)
                raise GpubatchClientError(f"--context {context}: no such context in {path} (it has: {names})")
            namespace = (chosen.get("context") or {}).get("namespace") or "default"
            return config.new_client_from_config(config_file=path, context=chosen["name"]), namespace
        except config.ConfigException as err:
            raise GpubatchClientError(f"{path}: cannot use this kubeconfig: {err}") from None
    try:
        config.load_incluster_config()
    except config.ConfigException:
        raise GpubatchClientError(f"no kubeconfig ({path} does not exist; set KUBECONFIG or --kubeconfig) "
                                  "and not inside a pod") from None
    from kubernetes import client

    ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return client.ApiClient(), ns_file.read_text().strip() if ns_file.exists() else "default"


def split_name(name: str, kind: str | None = None) -> tuple[str | None, str]:
    """`renderjob/x`, `rj/x`, `RenderJob/x` or plain `x` (with `kind`)."""
    if "/" in name:
        word, _, name = name.partition("/")
        kind = word
    if kind:
        word = kind.lower().split(".")[0]
        try:
            kind = find(word).kind
        except KeyError:
            shorts = ", ".join(plugin.info.short_name for plugin in KINDS.values())
            raise GpubatchClientError(f"{kind!r}: not a gpubatch kind; use one of "
                                      f"{', '.join(KINDS)} (or {shorts})") from None
    return kind, name


def api_error(err: Any, what: str, namespace: str) -> GpubatchClientError:
    """The API server's refusal in a user's words: the fields it names, and what to do."""
    try:
        body = json.loads(err.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") or err.reason or str(err)
    causes = [f"  - {c.get('field', '')}: {c.get('message', '')}".rstrip(": ")
              for c in (body.get("details") or {}).get("causes") or []]
    if err.status == 409:
        return GpubatchClientError(f"{what} already exists in namespace {namespace}: its spec cannot change; "
                                   f"`gpubatch delete {what.split()[-1]}` first, or pick another name")
    if err.status in (400, 422):
        return GpubatchClientError("\n".join([f"{what}: the API server refused it: {message}", *causes]))
    if err.status == 403:
        return GpubatchClientError(f"{what}: forbidden in namespace {namespace}: {message}")
    if err.status == 404 and (body.get("details") or {}).get("kind") == "namespaces":
        return GpubatchClientError(f"{what}: namespace {namespace} does not exist (-n/--namespace, or the "
                                   "kube context's namespace)")
    if err.status == 404:
        return GpubatchClientError(f"{what}: not found in namespace {namespace} (are the gpubatch CRDs "
                                   f"installed? `kubectl get crd renderjobs.gpubatch.dev`): {message}")
    return GpubatchClientError(f"{what}: {err.status} {message}", EXIT_UNEXPECTED)


# --- a job on the cluster ------------------------------------------------------------------------

class ClusterJob:
    """A TrainJob, PredictJob or RenderJob on the cluster."""

    def __init__(self, client: Client, kind: str, name: str, namespace: str, uid: str,
                 *, dry_run: bool = False) -> None:
        self.client, self.kind, self.name, self.namespace, self.uid = client, kind, name, namespace, uid
        self.dry_run = dry_run

    def __repr__(self) -> str:
        return f"<{self.kind} {self.namespace}/{self.name}>"

    @property
    def object(self) -> dict[str, Any]:
        obj = self.client._read(self.kind, self.name, self.namespace)
        if obj is None:
            raise GpubatchClientError(f"{self.kind} {self.name} no longer exists in namespace {self.namespace}")
        return obj

    @property
    def status(self) -> dict[str, Any]:
        """The resource's status now (phase, device, progress, ETA, message, result, logRef)."""
        return dict(self.object.get("status") or {})

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    @property
    def result(self) -> dict[str, Any] | None:
        """The summary JSON once it ended (the same object `gpubatch run` prints), else None."""
        return result_of(self.status, self.kind)

    @property
    def exit_code(self) -> int | None:
        return exit_code_of(self.status)

    def wait(self, timeout: float | None = None, *, on_progress: ProgressCallback | None = None,
             poll_s: float = 1.0) -> dict[str, Any]:
        """Wait until it succeeded or failed; return the summary. TimeoutError past `timeout` s."""
        if self.dry_run:
            raise GpubatchClientError(f"{self.kind} {self.name} was a dry run: nothing runs")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status
            if on_progress is not None:
                on_progress(progress_event(status))
            result = result_of(status, self.kind)
            if result is not None:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.kind} {self.name} is still {status.get('phase') or 'Pending'} after "
                                   f"{timeout:g}s: {status.get('message', '')}")
            time.sleep(poll_s)

    def pods(self) -> list[dict[str, Any]]:
        """The resource's pods now, oldest first (filed under its UID, every attempt)."""
        listing = self.client._core().list_namespaced_pod(self.namespace, label_selector=f"{OWNER_UID_LABEL}={self.uid}")
        from kubernetes.client import ApiClient

        serialize = (self.client.api or ApiClient()).sanitize_for_serialization
        pods = [serialize(p) for p in listing.items]
        return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))

    def logs(self, follow: bool = False, *, source: str = "auto") -> str | Iterator[str]:
        """The engine's log: from the pods while they exist, else the log each pod kept beside the
        outputs (`status.logRef`). `source`: auto, pods or stored. `follow=True`: an iterator of
        lines until the job ends (through a CPU re-run, too)."""
        if follow:
            return self._follow()
        if source not in ("auto", "pods", "stored"):
            raise GpubatchClientError(f"source={source!r}: must be auto, pods or stored")
        pods = self.pods() if source != "stored" else []
        live = {p["metadata"]["name"]: text for p in pods if (text := self._pod_log(p)) is not None}
        if live or source == "pods":
            return _joined(live)
        if source == "auto" and not self.status.get("logRef"):
            raise GpubatchClientError(f"{self.kind} {self.name}: no pod has started yet, and none kept a log; "
                                      f"`gpubatch get {self.name}` says why it waits")
        return _joined(self.stored_logs())

    def _pod_log(self, pod: dict[str, Any]) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return str(self.client._core().read_namespaced_pod_log(
                pod["metadata"]["name"], self.namespace, container=contract.CONTAINER_NAME))
        except ApiException:  # not started yet, or gone meanwhile
            return None

    def _follow(self) -> Iterator[str]:
        seen: set[str] = set()
        while True:
            pods = [p for p in self.pods() if p["metadata"]["name"] not in seen]
            started = [p for p in pods if (p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")]
            if started:
                pod = started[0]
                seen.add(pod["metadata"]["name"])
                yield from self._stream(pod["metadata"]["name"])
                continue
            if result_of(self.status) is not None:
                return
            time.sleep(1.0)

    def _stream(self, pod: str) -> Iterator[str]:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.client._core().read_namespaced_pod_log(
                pod, self.namespace, container=contract.CONTAINER_NAME, follow=True, _preload_content=False)
        except ApiException:
            return
        pending = b""
        try:
            for chunk in response.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace") + "\n"
            if pending:
                yield pending.decode(errors="replace")
        finally:
            response.release_conn()

    def stored_logs(self) -> dict[str, str]:
        """Every pod's kept log, {pod name: text}, from `status.logRef` (claim, s3:// or a path)."""
        ref = self.status.get("logRef")
        if not ref:
            raise GpubatchClientError(f"{self.kind} {self.name} has no status.logRef yet (no Job was made), "
                                      "so no pod kept a log")
        return read_stored_logs(self, str(ref))

    def delete(self, *, wait: bool = False, timeout: float = 120.0) -> None:
        """Delete the resource; its Jobs and pods go with it (their owner). Kept logs stay."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.client._custom().delete_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, KINDS[self.kind].plural, self.name,
                propagation_policy="Foreground")
        except ApiException as err:
            if err.status != 404:
                raise api_error(err, f"{self.kind} {self.name}", self.namespace) from None
        deadline = time.monotonic() + timeout
        while wait and self.client._read(self.kind, self.name, self.namespace) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} {self.name} still exists {timeout:g}s after its deletion")
            time.sleep(0.5)


def _joined(logs: dict[str, str]) -> str:
    if len(logs) == 1:
        return next(iter(logs.values()))
    return "".join(f"==> {name} <==\n{text}{'' if text.endswith(chr(10)) or not text else chr(10)}"
                   for name, text in logs.items())


# --- kept logs -----------------------------------------------------------------------------------

READER_SCRIPT = """
import os, sys
folder = sys.argv[1]
names = sorted((n for n in os.listdir(folder) if n.endswith('.log') and not n.startswith('.')),
               key=lambda n: (os.path.getmtime(os.path.join(folder, n)), n)) if os.path.isdir(folder) else []
for n in names:
    sys.stdout.write('==> gpubatch-log ' + n[:-4] + ' <==' + chr(10))
    sys.stdout.write(open(os.path.join(folder, n), errors='replace').read())
    sys.stdout.write(chr(10) + '==> gpubatch-end <==' + chr(10))
sys.stdout.write('==> gpubatch-done <==' + chr(10))
"""
# One file per section between marker lines (no line is too long for the kubelet's log).
START = re.compile(r"^==> gpubatch-log (\S+) <==$")


def parse_reader_output(text: str) -> dict[str, str]:
    """{pod: text} from the reader pod's log; an incomplete output is an error."""
    lines = text.split("\n")
    if "==> gpubatch-done <==" not in lines:
        raise GpubatchClientError("the log reader pod's output is incomplete")
    logs: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []
    for line in lines:
        if name is None:
            match = START.match(line)
            if match:
                name, body = match.group(1), []
            continue
        if line == "==> gpubatch-end <==":
            logs[name] = "\n".join(body)
            name = None
            continue
        body.append(line)
    return logs


def read_stored_logs(job: ClusterJob, ref: str) -> dict[str, str]:
    """{pod: text} of the logs under `ref` (oldest first)."""
    from gpubatch_jobs import storage

    if storage.object_store(ref) is not None:
        infos = sorted(storage.list_objects(ref), key=lambda i: (getattr(i, "mtime_ns", 0) or 0, i.key))
        return {info.key.rsplit("/", 1)[-1].removesuffix(".log"): storage.read_bytes(
            storage.join(ref, info.key)).decode(errors="replace")
            for info in infos if info.key.endswith(".log")}
    pvc = storage.split_pvc(ref)
    if pvc is None:
        folder = Path(ref)
        if not folder.is_dir():
            raise GpubatchClientError(f"status.logRef {ref}: no such folder here (a path on the job's node)")
        files = sorted(folder.glob("*.log"), key=lambda p: (p.stat().st_mtime, p.name))
        return {p.name.removesuffix(".log"): p.read_text(errors="replace") for p in files}
    return _read_claim(job, *pvc)


def _read_claim(job: ClusterJob, claim: str, sub: str, timeout: float = 180.0) -> dict[str, str]:
    """Read the log folder on a claim through a reader pod: the claim mounted read-only, PodSecurity
    `restricted`, no API token, the job's CPU image (python), deleted afterwards."""
    from kubernetes.client.exceptions import ApiException

    core = job.client._core()
    spec = job.object.get("spec") or {}
    image = job.client.reader_image or ((spec.get("image") or {}).get("cpu")) or DEFAULT_READER_IMAGE
    folder = f"{contract.POD_PVC_ROOT}/{claim}/{sub}".rstrip("/")
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": f"{job.name[:40]}-logs-",
                     "labels": {"app.kubernetes.io/managed-by": "gpubatch-cli", OWNER_UID_LABEL: job.uid}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "nodeSelector": spec.get("nodeSelector") or None,
            "tolerations": spec.get("tolerations") or None,
            "containers": [{
                "name": contract.CONTAINER_NAME, "image": image,
                "imagePullPolicy": (spec.get("image") or {}).get("pullPolicy") or "IfNotPresent",
                "command": ["python3", "-c", READER_SCRIPT, folder],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "claim", "mountPath": f"{contract.POD_PVC_ROOT}/{claim}", "readOnly": True}],
            }],
            "volumes": [{"name": "claim", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        },
    }
    pod["spec"] = {k: v for k, v in pod["spec"].items() if v is not None}
    try:
        created = core.create_namespaced_pod(job.namespace, pod)
    except ApiException as err:
        raise api_error(err, f"the log reader pod for claim {claim}", job.namespace) from None
    name = created.metadata.name
    try:
        deadline = time.monotonic() + timeout
        while True:
            phase = core.read_namespaced_pod(name, job.namespace).status.phase
            if phase in ("Succeeded", "Failed"):
                break
            if time.monotonic() > deadline:
                raise GpubatchClientError(f"the log reader pod {name} (image {image}, claim {claim}) did not "
                                          f"finish within {timeout:g}s; `kubectl describe pod {name}` says why "
                                          f"(set {READER_IMAGE_ENV} to an image the cluster can run)")
            time.sleep(0.5)
        text = core.read_namespaced_pod_log(name, job.namespace, container=contract.CONTAINER_NAME)
        if phase != "Succeeded":
            raise GpubatchClientError(f"the log reader pod {name} failed reading {folder}: {text.strip()[-500:]}")
        return parse_reader_output(text)
    finally:
        try:
            core.delete_namespaced_pod(name, job.namespace, grace_period_seconds=0)
        except ApiException:
            pass


# --- a job on this machine -----------------------------------------------------------------------

class LocalJob:
    """`gpubatch run` of one manifest in a subprocess, with the cluster handle's methods."""

    def __init__(self, resource: GpubatchResource, workdir: Path, process: subprocess.Popen[bytes] | None) -> None:
        self.resource = resource
        self.kind = resource.kind  # type: ignore[attr-defined]
        self.name = resource.metadata.name
        self.namespace = "local"
        self.workdir = workdir
        self.process = process
        self.log_path = workdir / "log.txt"
        self.progress_path = workdir / "progress.json"

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name} (local)>"

    @classmethod
    def validated(cls, resource: GpubatchResource) -> LocalJob:
        return cls(resource, Path(tempfile.mkdtemp(prefix="gpubatch-local-")), None)

    @classmethod
    def start(cls, body: dict[str, Any], resource: GpubatchResource, folder: Path | None,
              mounts: dict[str, Path], device: str | None) -> LocalJob:
        workdir = Path(tempfile.mkdtemp(prefix=f"gpubatch-{resource.metadata.name}-"))
        manifest = workdir / "manifest.yaml"
        manifest.write_text(yaml.safe_dump(body, sort_keys=False))
        command = [sys.executable, "-m", "gpubatch_jobs.cli", "run", str(manifest), "--quiet",
                   "--base-dir", str(folder or Path.cwd()), "--progress-file", str(workdir / "progress.json"),
                   *(f"--mount={claim}={path}" for claim, path in mounts.items()),
                   *(["--device", device] if device else [])]
        job = cls(resource, workdir, None)
        log = open(job.log_path, "wb")  # noqa: SIM115 - the child owns it until it ends
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        job.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       stdin=subprocess.DEVNULL)
        log.close()
        return job

    @property
    def status(self) -> dict[str, Any]:
        if self.process is None:
            return {"phase": "Pending", "message": "a dry run: validated, nothing runs"}
        code = self.process.poll()
        status: dict[str, Any] = {"phase": "Running" if code is None else ("Succeeded" if code == 0 else "Failed")}
        try:
            event = json.loads(self.progress_path.read_text())
            total = max(1, int(event["total"]))
            status["progress"] = f"{min(100, int(100 * int(event['done']) / total))}%"
            if code is None and event.get("etaSeconds") is not None:
                status["estimatedRemainingSeconds"] = int(round(event["etaSeconds"]))
                status["throughputPerSecond"] = event.get("perSecond")
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if code is not None:
            summary = self._summary()
            status["result"] = summary
            status["message"] = (summary or {}).get("message", "") if code else "completed"
            if summary and summary.get("device"):
                status["device"] = summary["device"]
        return status

    def _summary(self) -> dict[str, Any] | None:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            if line.startswith("{"):
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue
                if isinstance(parsed, dict) and "ok" in parsed:
                    return parsed
        return None

    @property
    def phase(self) -> str:
        return str(self.status["phase"])

    @property
    def result(self) -> dict[str, Any] | None:
        if self.process is None or self.process.poll() is None:
            return None
        return self._summary()

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait(self, timeout: float | None = None, *, on_progress: ProgressCallback | None = None,
             poll_s: float = 0.5) -> dict[str, Any]:
        if self.process is None:
            raise GpubatchClientError(f"{self.kind} {self.name} was a dry run: nothing runs")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.process.poll() is None:
            if on_progress is not None:
                on_progress(progress_event(self.status))
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.kind} {self.name} is still running after {timeout:g}s")
            time.sleep(poll_s)
        if on_progress is not None:
            on_progress(progress_event(self.status))
        summary = self._summary()
        if summary is None:
            summary = {"kind": self.kind, "ok": False, "reason": "NoSummary", "exitCode": self.process.returncode,
                       "message": f"`gpubatch run` ended with {self.process.returncode} and printed no summary; "
                                  f"see {self.log_path}"}
        return summary

    def logs(self, follow: bool = False, *, source: str = "auto") -> str | Iterator[str]:
        if not follow:
            return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return self._follow()

    def _follow(self) -> Iterator[str]:
        with open(self.log_path, "rb") as log:
            pending = b""
            while True:
                chunk = log.read(65536)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    yield from (line.decode(errors="replace") + "\n" for line in lines)
                    continue
                if self.process is None or self.process.poll() is not None:
                    rest = log.read()
                    pending += rest
                    if not rest:
                        if pending:
                            yield pending.decode(errors="replace")
                        return
                    continue
                time.sleep(0.2)

    def delete(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Stop the run (SIGTERM, as a deleted pod gets); outputs are published only when complete."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


__all__ += ["SpecError"]
