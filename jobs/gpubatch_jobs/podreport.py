"""How a job pod tells the operator how far it is and how it ended.

Progress: the pod patches one annotation, `gpubatch.dev/progress`, on its own
Pod (name and namespace from the downward API). The operator already watches
these pods, so it needs no extra watch, and the job's ServiceAccount needs only
`get`/`patch` on pods in its namespace. Standard library only: the job images
do not ship the kubernetes client for one PATCH every few seconds. The names
(annotation, files, variables) are the contract's (gpubatch_jobs/contract.py).

Result: the summary JSON goes to the termination-message file
(`/dev/termination-log`), which the kubelet copies into the container status,
where the operator reads it into `status.result`.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gpubatch_jobs.contract import (
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_TERMINATION_LOG,
    PROGRESS_ANNOTATION,
    TERMINATION_LIMIT,
    TERMINATION_LOG,
)
from gpubatch_jobs.errors import safe_message

log = logging.getLogger("gpubatch")

__all__ = ["PROGRESS_ANNOTATION", "PodAnnotationProgress", "termination_message", "write_termination_log"]
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class PodAnnotationProgress:
    """A progress sink that merge-patches the pod's own progress annotation."""

    def __init__(self, pod: str, namespace: str, host: str, port: str, sa_dir: Path = SA_DIR) -> None:
        self.url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{pod}"
        # The projected token is rotated by the kubelet: read it at each patch (every few seconds at most).
        self.token_path = sa_dir / "token"
        self.ssl = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))

    @classmethod
    def from_environment(cls) -> PodAnnotationProgress | None:
        pod, namespace = os.environ.get(ENV_POD_NAME), os.environ.get(ENV_POD_NAMESPACE)
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not (pod and namespace and host and (SA_DIR / "token").exists()):
            return None
        return cls(pod, namespace, host, port)

    def __call__(self, event: dict[str, Any]) -> None:
        body = json.dumps({"metadata": {"annotations": {PROGRESS_ANNOTATION: json.dumps(event)}}}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="PATCH",
            headers={
                "Authorization": f"Bearer {self.token_path.read_text().strip()}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.ssl) as response:
                response.read()
        except urllib.error.HTTPError as err:
            # The API server's own reason (a Status object's message) says what to fix.
            try:
                reason = json.loads(err.read() or b"{}").get("message", "")
            except ValueError:
                reason = ""
            raise RuntimeError(f"PATCH pod annotation {PROGRESS_ANNOTATION}: HTTP {err.code} {reason}".strip()) from err


def termination_message(summary: dict[str, Any]) -> str:
    """The summary as JSON that fits the kubelet's 4 KiB limit (big fields dropped first); its
    message printable and short (errors.safe_message): it becomes status.message and an Event."""
    if isinstance(summary.get("message"), str):
        summary = {**summary, "message": safe_message(summary["message"])}
    text = json.dumps(summary, separators=(",", ":"), default=str)
    if len(text.encode()) <= TERMINATION_LIMIT:
        return text
    trimmed = dict(summary)
    for key in sorted(trimmed, key=lambda k: -len(json.dumps(trimmed[k], default=str))):
        trimmed[key] = "(truncated: see the job's output folder)"
        text = json.dumps(trimmed, separators=(",", ":"), default=str)
        if len(text.encode()) <= TERMINATION_LIMIT:
            return text
    return json.dumps({"error": "summary too large"})


def write_termination_log(summary: dict[str, Any], path: str | None = None) -> None:
    target = Path(path or os.environ.get(ENV_TERMINATION_LOG, TERMINATION_LOG))
    try:
        target.write_text(termination_message(summary))
    except OSError as err:
        log.debug("cannot write the termination log %s: %s", target, err)
