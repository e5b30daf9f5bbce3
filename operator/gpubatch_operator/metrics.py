"""Prometheus metrics of the operator, served as text at :GPUBATCH_METRICS_PORT/metrics.

gpubatch_jobs{kind,phase,device}                 resources per kind, phase and effective device
                                                 (computed from the store at scrape time: never drifts)
gpubatch_fallbacks_total{kind,reason}            GPU->CPU fallbacks (NoGpuNodes, GpuUnschedulable, GpuUnusable, GpuQuotaExhausted)
gpubatch_job_creations_total{kind,device}        Jobs created
gpubatch_reconcile_duration_seconds{kind}        time per reconcile (histogram)
gpubatch_reconcile_errors_total{kind}            reconciles that failed and were retried
gpubatch_workqueue_depth                         resources waiting for a reconcile
gpubatch_job_throughput_per_second{job_namespace,name,kind,device}  a running job's items per second
gpubatch_job_progress_ratio{job_namespace,name,kind,device}         a running job's done/total (0..1)
gpubatch_job_estimated_remaining_seconds{job_namespace,name,kind,device}  the engine's ETA
                                                 (the three from status while Running, at scrape time)
plus the process_* metrics (resident memory, CPU seconds, open fds).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gpubatch_operator.store import Store

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

FALLBACKS = Counter(
    "gpubatch_fallbacks_total", "GPU to CPU fallbacks by reason.", ["kind", "reason"], registry=REGISTRY
)
JOB_CREATIONS = Counter(
    "gpubatch_job_creations_total", "batch/v1 Jobs created.", ["kind", "device"], registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "gpubatch_reconcile_duration_seconds",
    "Time spent in one reconcile of a resource.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "gpubatch_reconcile_errors_total", "Reconciles that failed and were retried.", ["kind"], registry=REGISTRY
)


class StoreCollector(Collector):
    """Gauges read from the operator's store when Prometheus scrapes."""

    def __init__(self, store: Store, queue_depth: Callable[[], int]) -> None:
        self.store = store
        self.queue_depth = queue_depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("gpubatch_jobs", "gpubatch resources by kind, phase and device.",
                                 labels=["kind", "phase", "device"])
        tally = Tally(
            (view.kind, view.status.get("phase") or "New", view.status.get("device") or "none")
            for view in list(self.store.resources.values())
        )
        for labels, count in sorted(tally.items()):
            jobs.add_metric(list(labels), count)
        yield jobs
        depth = GaugeMetricFamily("gpubatch_workqueue_depth", "Resources waiting for a reconcile.")
        depth.add_metric([], self.queue_depth())
        yield depth
        yield from self.per_job()

    def per_job(self) -> Iterator[GaugeMetricFamily]:
        """Running jobs' throughput, progress and ETA, as the operator last wrote them in status."""
        # job_namespace, not namespace: a scrape adds the target's own namespace label (the operator's).
        labels = ["job_namespace", "name", "kind", "device"]
        families = {
            "throughputPerSecond": GaugeMetricFamily(
                "gpubatch_job_throughput_per_second", "Items per second of a running job's current stage.",
                labels=labels),
            "progress": GaugeMetricFamily(
                "gpubatch_job_progress_ratio", "Done over total of a running job (0 to 1).", labels=labels),
            "estimatedRemainingSeconds": GaugeMetricFamily(
                "gpubatch_job_estimated_remaining_seconds", "Seconds a running job estimates it has left.",
                labels=labels),
        }
        for view in list(self.store.resources.values()):
            status = view.status
            if status.get("phase") != "Running":
                continue
            values = {key: _number(status.get(key)) for key in families}
            values["progress"] = _percent(status.get("progress"))
            for key, family in families.items():
                value = values[key]
                if value is not None:
                    family.add_metric([view.namespace, view.name, view.kind, status.get("device") or "none"], value)
        yield from families.values()


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _percent(text: object) -> float | None:
    """0.42 from status.progress "42%"."""
    if not isinstance(text, str) or not text.endswith("%"):
        return None
    try:
        return float(text[:-1]) / 100.0
    except ValueError:
        return None


_collector: StoreCollector | None = None
_serving_on: int | None = None


def serve(port: int, store: Store, queue_depth: Callable[[], int]) -> None:
    """Register the store's gauges and start the HTTP endpoint (port 0: gauges only)."""
    global _collector, _serving_on
    if _collector is not None:
        REGISTRY.unregister(_collector)
    _collector = StoreCollector(store, queue_depth)
    REGISTRY.register(_collector)
    if port and _serving_on != port:  # kopf may be started again in the same process
        start_http_server(port, registry=REGISTRY)
        _serving_on = port
