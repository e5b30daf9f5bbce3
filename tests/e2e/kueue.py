"""Kueue on the test cluster, as its users run it: its CRDs, its manager and its webhooks.

The manager is `kueue` built from its Go module (tests/cluster/k8s-binaries.sh,
with the module's CRDs and webhook manifests next to it), run as a process on
the host, where the API server runs too: the webhook configurations point at
it by URL (`https://127.0.0.1:PORT/...`), with a serving certificate made here
and its CA as the caBundle. A pod on the real node would need the API server to
reach a Service's ClusterIP from the host, which this cluster does not route,
and Kueue's internal certificate manager only issues certificates for the
Service's DNS name, so it is off (docs/install.md, Kueue).

Kueue's defaults are kept but these, so that a Kueue up for a test cannot touch
anyone else's Jobs on the shared cluster: only the batch/v1 Job integration,
`managedJobsNamespaceSelector` and every webhook's `namespaceSelector` limited
to the test's namespace, and `manageJobsWithoutQueueName: false` (its default).
The on-demand visibility API (feature gate VisibilityOnDemand: an aggregated
API server that writes its certificate under /visibility and needs an
APIService) is off; the tests read Workloads.
`stop()` undoes everything `start()` did: webhook configurations, CRDs (with
every Kueue object), the process; the process's only file-system change, the
metrics certificate Kueue reads from a fixed path under /etc, lives in an
overlay in a private mount namespace that goes with it.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import harness

KUEUE_VERSION = "v0.17.0"
WEBHOOK_GROUPS = {"batch", "kueue.x-k8s.io"}  # the Job integration and Kueue's own objects
CONFIG_NAMES = {"MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
                "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration"}


def manifests_dir(bin_dir: Path) -> Path:
    return bin_dir.parent / f"kueue-{KUEUE_VERSION}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificates(folder: Path) -> bytes:
    """A CA and a serving certificate for 127.0.0.1 (tls.crt, tls.key in `folder`); returns the CA's PEM."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=gpubatch-test-kueue-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "tls.crt", "-days", "2", "-extfile", "san.ext")
    return (folder / "ca.crt").read_bytes()


def webhook_configurations(manifest: Path, namespace: str, port: int, ca: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, each webhook pointed at https://127.0.0.1:PORT and scoped to `namespace`.

    Only the webhooks on batch/v1 Jobs and on Kueue's own kinds are kept: the
    integrations that are off (pods, Deployments, JobSets, ...) would only
    ever say no.
    """
    out = []
    for doc in yaml.safe_load_all(manifest.read_text()):
        if not doc:
            continue
        doc["metadata"] = {"name": CONFIG_NAMES[doc["kind"]], "labels": {"app.kubernetes.io/part-of": "gpubatch-tests"}}
        kept = []
        for hook in doc["webhooks"]:
            groups = {g for rule in hook["rules"] for g in rule["apiGroups"]}
            if not groups <= WEBHOOK_GROUPS:
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}",
                                    "caBundle": base64.b64encode(ca).decode()}
            hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            kept.append(hook)
        doc["webhooks"] = kept
        out.append(doc)
    return out


def crds(folder: Path, port: int, ca: bytes) -> list[dict[str, Any]]:
    """The module's CRDs, with the conversion webhook its kustomization enables where it does."""
    converted = {}
    for patch in sorted((folder / "crd-patches").glob("webhook_in_*.yaml")):
        body = yaml.safe_load(patch.read_text())
        converted[body["metadata"]["name"]] = body["spec"]["conversion"]
    enabled = {line.split("patches/", 1)[1].strip() for line in
               (folder / "crd-patches" / "kustomization.yaml").read_text().splitlines()
               if line.strip().startswith("- path: patches/webhook_in_")}
    enabled_names = {yaml.safe_load((folder / "crd-patches" / name).read_text())["metadata"]["name"] for name in enabled}
    out = []
    for path in sorted((folder / "crd").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        if name in enabled_names:
            conversion = copy.deepcopy(converted[name])
            service = conversion["webhook"]["clientConfig"].pop("service")
            conversion["webhook"]["clientConfig"] = {"url": f"https://127.0.0.1:{port}{service['path']}",
                                                     "caBundle": base64.b64encode(ca).decode()}
            crd["spec"]["conversion"] = conversion
        out.append(crd)
    return out


def config(namespace: str, own_namespace: str, webhook_port: int, health_port: int,
           cert_dir: Path) -> dict[str, Any]:
    """Kueue's defaults but: Jobs only, in `namespace` only; no leader election, no certificate manager."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": own_namespace,  # Kueue's own (it refuses to manage Jobs there)
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "integrations": {"frameworks": ["batch/job"]},
    }


class Kueue:
    def __init__(self, cluster: harness.Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.binary = cluster.bin_dir / "kueue"
        self.manifests = manifests_dir(cluster.bin_dir)
        self.work = Path(tempfile.mkdtemp(prefix="gpubatch-kueue-"))
        self.log_path = self.work / "kueue.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.crd_names: list[str] = []
        self.own_namespace = ""

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def start(self) -> None:
        if not self.binary.exists() or not self.manifests.is_dir():
            raise harness.ClusterUnavailable(
                f"{self.binary} or {self.manifests} is missing; run `bash tests/cluster/k8s-binaries.sh`")
        certs = self.work / "certs"
        certs.mkdir()
        ca = make_certificates(certs)
        webhook_port, health_port = free_port(), free_port()
        cfg = self.work / "config.yaml"
        self.own_namespace = self.cluster.create_namespace(harness.unique_name("kueue-system"), pod_security=None,
                                                           nodes=None)
        cfg.write_text(yaml.safe_dump(config(self.namespace, self.own_namespace, webhook_port, health_port, certs)))
        # Kueue reads its metrics certificate from /etc/kueue/metrics/certs when its own
        # certificate manager is off: an overlay over /etc in a private mount namespace.
        upper = self.work / "etc-upper"
        (upper / "kueue" / "metrics").mkdir(parents=True)
        (upper / "kueue" / "metrics" / "certs").symlink_to(certs)
        (self.work / "etc-work").mkdir()
        script = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={self.work / 'etc-work'} /etc"
                  f" && exec {self.binary} --config={cfg} --feature-gates=VisibilityOnDemand=false --zap-log-level=2")
        crd_objects = crds(self.manifests, webhook_port, ca)
        self.crd_names = [c["metadata"]["name"] for c in crd_objects]
        self.cluster.apply(*crd_objects)
        for name in self.crd_names:
            self.cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s", check=True)
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        harness.wait_until(lambda: self._ready(health_port), timeout=120,
                           what=f"Kueue's readyz (log {self.log_path}):\n{self.log()}")
        self.cluster.apply(*webhook_configurations(self.manifests / "webhook" / "manifests.yaml",
                                                   self.namespace, webhook_port, ca))

    def _ready(self, port: int) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"kueue exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Kueue's objects go while the manager still runs (it removes its finalizers), then the rest."""
        if self.crd_names:
            self.cluster.kubectl("delete", "crd", *self.crd_names, "--ignore-not-found", "--timeout=90s",
                                 timeout=120)
            for name in self.crd_names:  # whatever a finalizer still holds
                plural, group = name.split(".", 1)
                listed = self.cluster.kubectl("get", f"{plural}.{group}", "-A", "-o", "name")
                for ref in listed.stdout.split():
                    self.cluster.kubectl("-n", self.namespace, "patch", ref, "--type=merge",
                                         "-p", '{"metadata":{"finalizers":null}}')
            self.cluster.kubectl("delete", "crd", *self.crd_names, "--ignore-not-found", "--timeout=60s",
                                 timeout=90)
        for kind, name in CONFIG_NAMES.items():
            self.cluster.kubectl("delete", kind.lower(), name, "--ignore-not-found")
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.own_namespace:
            self.cluster.delete_namespace(self.own_namespace)
        shutil.rmtree(self.work, ignore_errors=True)
