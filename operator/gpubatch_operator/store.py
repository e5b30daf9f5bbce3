"""The operator's memory of the cluster: what the watches last reported.

kopf delivers the events; the handlers put compact views here and enqueue the
resource they concern. The reconciler reads from here instead of asking the
API server, so a reconcile costs no reads. At startup the store is primed
with one list per kind of child object, so the first reconcile after a
restart already sees the Jobs made before it.

Children are matched by owner reference, never by a label anyone could write:
a Job is filed under the UID of the gpubatch resource controlling it, a pod
under the UID of the Job controlling it, and a resource's children are the
Jobs it controls in its own namespace and their pods (pod -> Job -> resource).
A resource re-created under the same name is a different owner.

A pod that reported a checkpoint or a preemption (gpubatch_jobs.preempt) is
kept a while after it is deleted (`departed`, the newest DEPARTED_KEPT per
resource): a preempted pod goes within a second or two of saving its work,
possibly before a reconcile reads it, and its checkpoint and the preemption
must still reach status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpubatch_jobs.contract import TEST_ANNOTATION_PREFIX
from gpubatch_operator.observe import JobView, Key, PodView, job_owner, owner_uid

DEPARTED_KEPT = 16


@dataclass(slots=True)
class ResourceView:
    """A gpubatch resource as last seen: just what a reconcile reads."""

    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    test_annotations: dict[str, str]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ResourceView:
        meta = body.get("metadata", {})
        annotations = meta.get("annotations") or {}
        return cls(
            kind=body.get("kind", ""),
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            test_annotations={k: v for k, v in annotations.items() if k.startswith(TEST_ANNOTATION_PREFIX)},
        )

    @property
    def key(self) -> Key:
        return self.kind, self.namespace, self.name


@dataclass
class Store:
    resources: dict[Key, ResourceView] = field(default_factory=dict)
    owners: dict[str, Key] = field(default_factory=dict)  # resource UID -> key
    jobs: dict[str, dict[str, JobView]] = field(default_factory=dict)  # by owner UID, then name
    job_owners: dict[str, str] = field(default_factory=dict)  # Job UID -> owner UID
    pods: dict[str, dict[str, PodView]] = field(default_factory=dict)  # by Job UID, then name
    departed: dict[str, dict[str, PodView]] = field(default_factory=dict)  # by resource UID: deleted pods with a checkpoint
    gpu_nodes: dict[str, int] = field(default_factory=dict)
    nodes_known: bool = False

    def put_resource(self, body: dict[str, Any], deleted: bool = False) -> Key:
        view = ResourceView.parse(body)
        if deleted:
            old = self.resources.pop(view.key, None)
            self.owners.pop(view.uid, None)
            self.departed.pop(view.uid, None)
            if old is not None:
                self.owners.pop(old.uid, None)
                self.departed.pop(old.uid, None)
        else:
            old = self.resources.get(view.key)
            if old is not None and old.uid != view.uid:
                self.owners.pop(old.uid, None)
            self.resources[view.key] = view
            self.owners[view.uid] = view.key
        return view.key

    def owner(self, uid: str | None) -> Key | None:
        """The resource with this UID, if it is known."""
        return self.owners.get(uid) if uid else None

    def put_job(self, body: dict[str, Any], deleted: bool = False) -> str | None:
        """File a Job under the UID of the resource controlling it (owner reference); returns that
        UID (None: no gpubatch resource controls it, not one of ours)."""
        meta = body.get("metadata", {})
        key = owner_uid(meta)
        if key is None:
            return None
        job = JobView.parse(body)
        children = self.jobs.setdefault(key, {})
        if deleted:
            children.pop(job.name, None)
            self.job_owners.pop(job.uid, None)
            if not children:
                self.jobs.pop(key, None)
        else:
            children[job.name] = job
            if job.uid:
                self.job_owners[job.uid] = key
        return key

    def put_pod(self, body: dict[str, Any], deleted: bool = False) -> str | None:
        """File a pod under the UID of the Job controlling it; returns the UID of the resource that
        controls that Job, when the Job is known (None: not one of ours, or its Job not seen yet;
        the Job's own event enqueues the resource then)."""
        meta = body.get("metadata", {})
        owner = job_owner(meta)
        if owner is None:
            return None
        job_uid = owner[0]
        pods = self.pods.setdefault(job_uid, {})
        resource_uid = self.job_owners.get(job_uid)
        if deleted:
            pods.pop(meta.get("name", ""), None)
            if not pods:
                self.pods.pop(job_uid, None)
            view = PodView.parse(body)
            if resource_uid is not None and (view.preempted or view.checkpoint is not None):
                kept = self.departed.setdefault(resource_uid, {})
                kept.pop(view.name, None)
                kept[view.name] = view
                while len(kept) > DEPARTED_KEPT:
                    kept.pop(next(iter(kept)))
        else:
            pods[meta.get("name", "")] = PodView.parse(body)
        return resource_uid

    def departed_pods(self, uid: str) -> list[PodView]:
        """Deleted pods of this resource that had reported a checkpoint or a preemption."""
        return list(self.departed.get(uid, {}).values())

    def put_node(self, body: dict[str, Any], gpu_resource: str, deleted: bool = False) -> None:
        name = body.get("metadata", {}).get("name", "")
        gpus = _quantity((body.get("status") or {}).get("allocatable", {}).get(gpu_resource))
        if deleted or gpus <= 0 or (body.get("spec") or {}).get("unschedulable"):
            self.gpu_nodes.pop(name, None)
        else:
            self.gpu_nodes[name] = gpus

    def gpu_node_count(self) -> int | None:
        return len(self.gpu_nodes) if self.nodes_known else None

    def children(self, uid: str, namespace: str | None = None) -> tuple[list[JobView], list[PodView]]:
        """The Jobs the resource with this UID controls, in its namespace, and those Jobs' pods."""
        jobs = [j for j in self.jobs.get(uid, {}).values() if namespace is None or j.namespace == namespace]
        pods = [p for j in jobs for p in self.pods.get(j.uid, {}).values() if p.namespace == j.namespace]
        return jobs, pods

    def namespace_empty(self, namespace: str) -> bool:
        """No gpubatch resource of this namespace is known any more."""
        return not any(view.namespace == namespace for view in self.resources.values())


def _quantity(value: Any) -> int:
    try:
        return int(str(value or "0"))
    except ValueError:
        return 0
