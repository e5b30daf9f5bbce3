"""Fluent helpers that keep operator test setup to one line.

`make_job("x").gpus(2).shards(4).obj()` is the Job the builder makes for a
RenderJob `x` asking for two GPUs in four shards; `make_world("x")...` is the
input of `decide()`; `job_body(...)` / `pod_body(...)` are child objects as
the API server would report them. Shared by tests/unit and tests/operator.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from gpubatch_jobs.kinds import find
from gpubatch_jobs.spec import parse_spec
from gpubatch_operator.builders import JobRequest, build_job
from gpubatch_operator.decide import World, iso
from gpubatch_operator.naming import ATTEMPT_LABEL, DEVICE_LABEL, job_name, owner_labels
from gpubatch_operator.observe import JobView, PodView
from gpubatch_operator.settings import Settings

UID = "0b7c3c2e-0000-4000-8000-000000000001"
BASE_SPECS: dict[str, dict[str, Any]] = {
    "RenderJob": {"input": {"path": "pvc://data/series.h5"}, "output": {"path": "pvc://out/images.h5"}},
    "TrainJob": {"model": {"type": "dnn"}, "input": {"path": "pvc://data/t.csv"}, "output": {"path": "pvc://out/m"}},
    "PredictJob": {"model": "pvc://models/m", "input": {"path": "pvc://data/p.csv"},
                   "output": {"path": "pvc://out/p.parquet"}},
}


def resource(kind: str = "RenderJob", name: str = "x", namespace: str = "ns", **spec: Any) -> dict[str, Any]:
    """A gpubatch resource body as the watch delivers it."""
    return {
        "apiVersion": "gpubatch.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "uid": UID, "generation": 1},
        "spec": {**copy.deepcopy(BASE_SPECS[kind]), **spec},
    }


class JobMaker:
    def __init__(self, name: str, kind: str = "RenderJob") -> None:
        self._kind, self._name = kind, name
        self._spec: dict[str, Any] = copy.deepcopy(BASE_SPECS[kind])
        self._device, self._attempt = "cpu", 1
        self._annotations: dict[str, str] = {}
        self._settings = Settings()

    def set(self, **fields: Any) -> JobMaker:
        self._spec.update(fields)
        return self

    def gpus(self, count: int = 1) -> JobMaker:
        self._device = "gpu"
        self._spec.setdefault("device", {})["gpus"] = count
        return self

    def cpu(self) -> JobMaker:
        self._device = "cpu"
        return self

    def shards(self, count: int) -> JobMaker:
        return self.set(shards=count)

    def queue(self, name: str) -> JobMaker:
        return self.set(queueName=name)

    def annotate(self, key: str, value: str) -> JobMaker:
        self._annotations[key] = value
        return self

    def settings(self, **overrides: Any) -> JobMaker:
        self._settings = Settings(**overrides)
        return self

    def request(self) -> JobRequest:
        command = find(self._kind).command
        return JobRequest(
            plugin=find(self._kind), name=self._name, namespace="ns", uid=UID,
            spec=parse_spec(self._kind, self._spec), job_name=job_name(self._name, command),
            device=self._device, attempt=self._attempt, test_hooks=self._annotations,
        )

    def obj(self) -> dict[str, Any]:
        return build_job(self.request(), self._settings)


def make_job(name: str = "x", kind: str = "RenderJob") -> JobMaker:
    return JobMaker(name, kind)


def job_body(name: str, *, device: str = "gpu", kind: str = "RenderJob", owner: str = "x", uid: str = UID,
             conditions: dict[str, tuple[str, str]] | None = None, suspend: bool = False,
             deleting: bool = False, suspended_for: float | None = None) -> dict[str, Any]:
    """A Job as reported by the API server; `conditions` maps type -> (reason, message), all True;
    `suspended_for`: seconds since the Job controller set its Suspended condition."""
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"job-uid-{name}",
                            "labels": {**owner_labels(kind, owner, uid), DEVICE_LABEL: device, ATTEMPT_LABEL: "1"},
                            "ownerReferences": [{"apiVersion": "gpubatch.dev/v1alpha1", "kind": kind, "name": owner,
                                                 "uid": uid, "controller": True, "blockOwnerDeletion": True}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"startTime": "2026-01-01T00:00:00Z", "active": 1,
              "conditions": [{"type": t, "status": "True", "reason": r, "message": m}
                             for t, (r, m) in (conditions or {}).items()]}
    if suspended_for is not None:
        status["conditions"].append({"type": "Suspended", "status": "True", "reason": "JobSuspended",
                                     "lastTransitionTime": iso(time.time() - suspended_for)})
    return {"metadata": meta, "spec": {"suspend": suspend}, "status": status}


def pod_body(job: str, *, phase: str = "Running", kind: str = "RenderJob", owner: str = "x", uid: str = UID,
             unschedulable_for: float | None = None, unschedulable_message: str = "0/4 nodes are available: "
             "2 Insufficient nvidia.com/gpu.", exit_code: int | None = None, message: str = "",
             progress: str | None = None, index: int | None = None, now: float | None = None,
             finished_ago: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    annotations: dict[str, str] = {}
    if progress is not None:
        annotations["gpubatch.dev/progress"] = progress
    if index is not None:
        annotations["batch.kubernetes.io/job-completion-index"] = str(index)
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if unschedulable_for is not None:
        status["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": unschedulable_message,
                                     "lastTransitionTime": iso(now - unschedulable_for)})
    if exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code, "message": message}
        if finished_ago is not None:
            terminated["finishedAt"] = iso(now - finished_ago)
        status["containerStatuses"] = [{"name": "main", "state": {"terminated": terminated}}]
    name = f"{job}-{index if index is not None else 0}-abcde"
    return {"metadata": {"name": name, "namespace": "ns", "annotations": annotations,
                         "labels": {**owner_labels(kind, owner, uid), "job-name": job},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                                              "uid": f"job-uid-{job}", "controller": True}]},
            "spec": {}, "status": status}


class WorldMaker:
    def __init__(self, name: str, kind: str) -> None:
        self._body = resource(kind, name)
        self._status: dict[str, Any] = {}
        self._jobs: list[JobView] = []
        self._pods: list[PodView] = []
        self._gpu_nodes: int | None = 2
        self._now = time.time()
        self._defaults: dict[str, str] = {}

    def spec(self, **fields: Any) -> WorldMaker:
        self._body["spec"].update(fields)
        return self

    def device(self, **fields: Any) -> WorldMaker:
        self._body["spec"].setdefault("device", {}).update(fields)
        return self

    def status(self, **fields: Any) -> WorldMaker:
        self._status.update(fields)
        return self

    def gpu_nodes(self, count: int | None) -> WorldMaker:
        self._gpu_nodes = count
        return self

    def job(self, body: dict[str, Any]) -> WorldMaker:
        self._jobs.append(JobView.parse(body))
        return self

    def pod(self, body: dict[str, Any]) -> WorldMaker:
        self._pods.append(PodView.parse(body))
        return self

    def defaults(self, policy: str = "auto", pending_timeout: str = "5m") -> WorldMaker:
        self._defaults = {"default_policy": policy, "default_pending_timeout": pending_timeout}
        return self

    def obj(self) -> World:
        kind = self._body["kind"]
        return World(
            plugin=find(kind), name=self._body["metadata"]["name"], namespace="ns", uid=UID, generation=1,
            spec=parse_spec(kind, self._body["spec"]), spec_error=None, status=self._status,
            jobs=self._jobs, pods=self._pods, gpu_nodes=self._gpu_nodes, now=self._now, **self._defaults,
        )


def make_world(name: str = "x", kind: str = "RenderJob") -> WorldMaker:
    return WorldMaker(name, kind)
