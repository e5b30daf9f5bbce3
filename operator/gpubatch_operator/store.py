"""The operator's memory of the cluster: what the watches last reported.

kopf delivers the events; the handlers put compact views here and enqueue the
resource they concern. The reconciler reads from here instead of asking the
API server, so a reconcile costs no reads. At startup the store is primed
with one list per kind of child object, so the first reconcile after a
restart already sees the Jobs made before it.

Children (Jobs, pods) are filed under their resource's UID, from the
`gpubatch.dev/owner-uid` label: unlike a name, a UID always fits a label
value, and a resource re-created under the same name is a different owner.

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
from gpubatch_operator.observe import JobView, Key, PodView, owner_uid

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
    pods: dict[str, dict[str, PodView]] = field(default_factory=dict)
    departed: dict[str, dict[str, PodView]] = field(default_factory=dict)  # deleted pods with a checkpoint
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
        """File a Job under its owner's UID; returns that UID (None: not one of ours)."""
        return self._put(self.jobs, body, deleted, JobView.parse)

    def put_pod(self, body: dict[str, Any], deleted: bool = False) -> str | None:
        if deleted:
            view = PodView.parse(body)
            uid = owner_uid(body.get("metadata", {}))
            if uid is not None and (view.preempted or view.checkpoint is not None):
                kept = self.departed.setdefault(uid, {})
                kept.pop(view.name, None)
                kept[view.name] = view
                while len(kept) > DEPARTED_KEPT:
                    kept.pop(next(iter(kept)))
        return self._put(self.pods, body, deleted, PodView.parse)

    def departed_pods(self, uid: str) -> list[PodView]:
        """Deleted pods of this resource that had reported a checkpoint or a preemption."""
        return list(self.departed.get(uid, {}).values())

    @staticmethod
    def _put(table: dict[str, dict[str, Any]], body: dict[str, Any], deleted: bool, parse: Any) -> str | None:
        meta = body.get("metadata", {})
        key = owner_uid(meta)
        if key is None:
            return None
        children = table.setdefault(key, {})
        if deleted:
            children.pop(meta.get("name", ""), None)
            if not children:
                table.pop(key, None)
        else:
            children[meta.get("name", "")] = parse(body)
        return key

    def put_node(self, body: dict[str, Any], gpu_resource: str, deleted: bool = False) -> None:
        name = body.get("metadata", {}).get("name", "")
        gpus = _quantity((body.get("status") or {}).get("allocatable", {}).get(gpu_resource))
        if deleted or gpus <= 0 or (body.get("spec") or {}).get("unschedulable"):
            self.gpu_nodes.pop(name, None)
        else:
            self.gpu_nodes[name] = gpus

    def gpu_node_count(self) -> int | None:
        return len(self.gpu_nodes) if self.nodes_known else None

    def children(self, uid: str) -> tuple[list[JobView], list[PodView]]:
        """The Jobs and pods of the resource with this UID."""
        return list(self.jobs.get(uid, {}).values()), list(self.pods.get(uid, {}).values())


def _quantity(value: Any) -> int:
    try:
        return int(str(value or "0"))
    except ValueError:
        return 0
